//! Offline symbolization: (module path, build ID, file offset) → function, file:line and inlined
//! frames, with blazesym. Each module's file is looked for, in order, in the recording's bundle,
//! under `--sysroot`, at its original path, and in the debug directories by build ID (a copy
//! without DWARF gets its separate debug file as its recorded path would); a file whose build
//! ID differs from the recorded one is never used (the frame stays `module+0xoffset`, with a
//! warning). Each module is parsed once; nothing is dropped: an unresolved frame is still shown.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use leak_format::{BundleContent, BundledSymbol, Frame, KernelSymbol, Module};
use serde::Serialize;

/// Where to look for binaries and debug files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A copy of the recorded host's file system (paths are looked up under it).
    pub sysroot: Option<PathBuf>,
    /// Debug file directories (`.build-id/xx/yyyy.debug` layout and `.gnu_debuglink`).
    pub debug_dirs: Vec<PathBuf>,
}

/// One logical frame (a physical frame expands into its inlined calls, innermost first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: String,
    pub offset: u64,
    /// True for a call inlined into the next frame.
    pub inlined: bool,
}

impl SymFrame {
    /// A frame outside its module's code ([`NOT_CODE`]): no function, and its module+offset is
    /// its identity.
    pub fn is_not_code(&self) -> bool {
        self.function.as_deref() == Some(NOT_CODE)
    }

    /// `function (file:line)` or `module+0xoffset`; a named kernel frame `function+0xoffset
    /// ([kernel])`, as the kernel prints its stacks.
    pub fn display(&self) -> String {
        match (&self.function, &self.file, self.line) {
            (Some(f), Some(file), Some(line)) => format!("{f} ({file}:{line})"),
            (Some(f), _, _) if self.module.starts_with('[') => {
                format!("{f}+{:#x} ({})", self.offset, self.module)
            }
            (Some(f), _, _) => format!("{f} ({}+{:#x})", short(&self.module), self.offset),
            (None, ..) => format!("{}+{:#x}", self.module, self.offset),
        }
    }
}

fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

enum ModuleSource {
    Elf(PathBuf),
    /// A separate debug file (`objcopy --only-keep-debug`): its segments keep their virtual
    /// addresses but not their file offsets, so frames are placed by address, through the
    /// recorded memory map: (file, virtual address of each executable segment's page start).
    DebugOnly(PathBuf, Vec<u64>),
    /// A binary without DWARF and its separate debug file: file offsets become virtual
    /// addresses through the binary's loadable segments (file offset, file size, virtual
    /// address), which the debug file shares; no memory map needed.
    Split(PathBuf, Vec<(u64, u64, u64)>),
    Table(Vec<BundledSymbol>),
    Missing,
}

/// The module of a frame in no recorded mapping.
pub const UNMAPPED: &str = "[unknown]";

/// The function of a frame outside its module's code (no executable segment holds it): not a
/// return address, but what a stack walk without frame pointers read from the stack.
pub const NOT_CODE: &str = "[not code]";

/// Symbolizes the frames of one recording.
pub struct Resolver {
    inner: Symbolizer,
    sources: HashMap<u32, ModuleSource>,
    modules: BTreeMap<u32, Module>,
    maps: Vec<leak_format::MapEntry>,
    /// Each module's code, where the file used for it says: the file ranges of its executable
    /// segments (sorted).
    code: HashMap<u32, Vec<(u64, u64)>>,
    /// Kernel symbols saved by a kernel-mode recording, by address.
    kernel: BTreeMap<u64, KernelSymbol>,
    /// What could not be used, and why (one line each).
    pub warnings: Vec<String>,
    _scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What symbolization needs to know of an ELF file, from one read of it (a bundled libc and
/// its debug file are megabytes; each was read once per question before).
#[derive(Default)]
struct ElfFacts {
    build_id: Option<Vec<u8>>,
    /// For a debug-only file (executable segments without file contents): the page-aligned
    /// virtual address of each executable segment.
    debug_only: Option<Vec<u64>>,
    /// It has DWARF (`.debug_info`).
    dwarf: bool,
    /// The file name in its `.gnu_debuglink`, if it is a plain name (never a path: a hostile
    /// recording must not point the search elsewhere).
    debug_link: Option<PathBuf>,
    /// Its loadable segments with contents: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
    /// The file ranges (start, end) of its executable segments with contents, sorted.
    code: Vec<(u64, u64)>,
}

impl ElfFacts {
    /// The facts of the file at `path`; all empty if it cannot be read or parsed.
    fn of(path: &Path) -> Self {
        fs::read(path).map_or_else(|_| ElfFacts::default(), |data| ElfFacts::parse(&data))
    }

    fn parse(data: &[u8]) -> Self {
        use object::read::elf::{ElfFile64, ProgramHeader};
        use object::{Endianness, Object};
        let mut facts = ElfFacts::default();
        if let Ok(file) = object::File::parse(data) {
            facts.build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
            facts.dwarf = file.section_by_name(".debug_info").is_some();
            facts.debug_link = file
                .gnu_debuglink()
                .ok()
                .flatten()
                .and_then(|(name, _crc)| std::str::from_utf8(name).ok())
                .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..")
                .map(PathBuf::from);
        }
        let Ok(elf) = ElfFile64::<Endianness, &[u8]>::parse(data) else {
            return facts;
        };
        let e = elf.endian();
        let load = || {
            elf.elf_program_headers()
                .iter()
                .filter(move |ph| ph.p_type(e) == object::elf::PT_LOAD)
        };
        facts.segments = load()
            .filter(|ph| ph.p_filesz(e) > 0)
            .map(|ph| (ph.p_offset(e), ph.p_filesz(e), ph.p_vaddr(e)))
            .collect();
        let exec: Vec<_> = load()
            .filter(|ph| ph.p_flags(e).0 & object::elf::PF_X.0 != 0)
            .collect();
        facts.code = exec
            .iter()
            .filter(|ph| ph.p_filesz(e) > 0)
            .map(|ph| {
                (
                    ph.p_offset(e),
                    ph.p_offset(e).saturating_add(ph.p_filesz(e)),
                )
            })
            .collect();
        facts.code.sort_unstable();
        if !exec.is_empty() && exec.iter().all(|ph| ph.p_filesz(e) == 0) {
            facts.debug_only = Some(
                exec.iter()
                    .map(|ph| ph.p_vaddr(e) & !(ph.p_align(e).max(1) - 1))
                    .collect(),
            );
        }
        facts
    }
}

/// The directories that may hold separate debug files, in order: each `--debug-dir`, the
/// sysroot's `/usr/lib/debug`, then this machine's.
fn debug_roots(opts: &Options) -> Vec<PathBuf> {
    let mut dirs = opts.debug_dirs.clone();
    if let Some(root) = &opts.sysroot {
        dirs.push(root.join("usr/lib/debug"));
    }
    dirs.push(PathBuf::from("/usr/lib/debug"));
    dirs
}

/// `.build-id/xx/yyyy.debug` in each debug directory, for a module with a build ID.
fn build_id_files(m: &Module, opts: &Options) -> Vec<PathBuf> {
    let Some(b) = m.build_id.as_deref().filter(|b| b.len() > 1) else {
        return Vec::new();
    };
    let h = hex(b);
    debug_roots(opts)
        .into_iter()
        .map(|d| {
            d.join(".build-id")
                .join(&h[..2])
                .join(format!("{}.debug", &h[2..]))
        })
        .collect()
}

/// The GNU build ID of an ELF file.
pub fn build_id(path: &Path) -> Option<Vec<u8>> {
    ElfFacts::of(path).build_id
}

impl Resolver {
    /// Chooses a source for every module of the recording.
    pub fn new(
        modules: &BTreeMap<u32, Module>,
        bundles: &BTreeMap<u32, (BundleContent, Vec<u8>)>,
        maps: &[leak_format::MapEntry],
        opts: &Options,
    ) -> Self {
        let inner = Symbolizer::builder()
            .set_debug_dirs(Some(&debug_roots(opts)))
            .build();
        let mut r = Resolver {
            inner,
            sources: HashMap::new(),
            modules: modules.clone(),
            maps: maps.to_vec(),
            code: HashMap::new(),
            kernel: BTreeMap::new(),
            warnings: Vec::new(),
            _scratch: None,
        };
        for (id, m) in modules {
            let source = r.choose(*id, m, bundles.get(id), opts);
            r.sources.insert(*id, source);
        }
        r
    }

    fn choose(
        &mut self,
        id: u32,
        m: &Module,
        bundle: Option<&(BundleContent, Vec<u8>)>,
        opts: &Options,
    ) -> ModuleSource {
        match bundle {
            Some((BundleContent::SymbolTable, bytes)) => {
                match leak_format::decode_symbol_table(bytes) {
                    Ok(t) => return ModuleSource::Table(t),
                    Err(e) => self
                        .warnings
                        .push(format!("bundled symbols of {} are damaged: {e}", m.path)),
                }
            }
            Some((BundleContent::ElfFile, bytes)) => {
                // Bundled files are written under names the analysis chooses, never the
                // recorded path, so a hostile recording cannot write outside the scratch folder.
                if let Some(path) = self.scratch_file(id, bytes) {
                    let facts = ElfFacts::of(&path);
                    if let Some(source) = self.accept(m, &path, &facts, "bundled copy") {
                        return self.with_debug_file(m, source, &facts, opts);
                    }
                }
            }
            _ => {}
        }
        let mut candidates: Vec<(PathBuf, &str)> = Vec::new();
        if let Some(root) = &opts.sysroot {
            candidates.push((root.join(m.path.trim_start_matches('/')), "sysroot copy"));
        }
        candidates.push((PathBuf::from(&m.path), "file"));
        candidates.extend(
            build_id_files(m, opts)
                .into_iter()
                .map(|p| (p, "debug file")),
        );
        for (path, what) in candidates {
            if path.is_file() {
                let facts = ElfFacts::of(&path);
                if let Some(source) = self.accept(m, &path, &facts, what) {
                    return self.with_debug_file(m, source, &facts, opts);
                }
            }
        }
        ModuleSource::Missing
    }

    /// For a binary without DWARF of its own (at its recorded path, bundled, or under
    /// `--sysroot`): its separate debug file, found as gdb finds one for the recorded path: by
    /// build ID in each debug directory, then by its `.gnu_debuglink` name in the recorded
    /// directory (under the sysroot, and on this machine), its `.debug` subdirectory, and each
    /// debug directory with the recorded directory appended. (blazesym follows a debug link
    /// only from the file's own path, wrong for a copy, and looks up a build ID only through
    /// a debug link.) Only a file with the recorded build ID is used.
    fn with_debug_file(
        &mut self,
        m: &Module,
        source: ModuleSource,
        copy: &ElfFacts,
        opts: &Options,
    ) -> ModuleSource {
        if !matches!(source, ModuleSource::Elf(_)) || m.build_id.is_none() || copy.dwarf {
            return source;
        }
        let mut candidates = build_id_files(m, opts);
        if let Some(link) = &copy.debug_link {
            let recorded = Path::new(&m.path).parent().unwrap_or(Path::new("/"));
            let relative = recorded.strip_prefix("/").unwrap_or(recorded);
            let mut dirs: Vec<PathBuf> = Vec::new();
            if let Some(root) = &opts.sysroot {
                dirs.push(root.join(relative));
            }
            dirs.push(recorded.to_path_buf());
            for d in dirs {
                candidates.push(d.join(link));
                candidates.push(d.join(".debug").join(link));
            }
            for root in debug_roots(opts) {
                candidates.push(root.join(relative).join(link));
            }
        }
        for path in candidates {
            if path.is_file() {
                match self.accept(m, &path, &ElfFacts::of(&path), "debug file") {
                    Some(ModuleSource::DebugOnly(debug, _)) if !copy.segments.is_empty() => {
                        return ModuleSource::Split(debug, copy.segments.clone());
                    }
                    Some(found) => return found,
                    None => {}
                }
            }
        }
        source
    }

    fn scratch_file(&mut self, id: u32, bytes: &[u8]) -> Option<PathBuf> {
        if self._scratch.is_none() {
            self._scratch = tempfile::Builder::new()
                .prefix("leak-report-")
                .tempdir()
                .ok();
        }
        let path = self
            ._scratch
            .as_ref()?
            .path()
            .join(format!("module-{id}.elf"));
        fs::write(&path, bytes).ok()?;
        Some(path)
    }

    /// Uses `path` (whose `facts` are known) for `m` only if its build ID is the recorded one;
    /// without one, only if a binary (not a debug file) has the recorded size (a program
    /// rebuilt at its path without a build ID, as lld links by default, would name every frame
    /// wrong).
    fn accept(
        &mut self,
        m: &Module,
        path: &Path,
        facts: &ElfFacts,
        what: &str,
    ) -> Option<ModuleSource> {
        let source = self.check(m, path, facts, what)?;
        // A debug file without code (DebugOnly) keeps the code of the binary it completes.
        if !facts.code.is_empty() {
            self.code.insert(m.id, facts.code.clone());
        }
        Some(source)
    }

    /// `accept`'s checks.
    fn check(
        &mut self,
        m: &Module,
        path: &Path,
        facts: &ElfFacts,
        what: &str,
    ) -> Option<ModuleSource> {
        match (&m.build_id, &facts.build_id) {
            (Some(want), Some(got)) if want != got => {
                self.warnings.push(format!(
                    "{what} {} has build ID {}, the recording needs {}: not used",
                    path.display(),
                    hex(got),
                    hex(want)
                ));
                None
            }
            (Some(want), None) => {
                self.warnings.push(format!(
                    "{what} {} has no build ID, the recording needs {}: not used",
                    path.display(),
                    hex(want)
                ));
                None
            }
            (None, _) if m.file_size != 0 && facts.debug_only.is_none() => {
                match fs::metadata(path).map(|md| md.len()) {
                    Ok(size) if size != m.file_size => {
                        self.warnings.push(format!(
                            "{what} {} is {size} bytes, the one recorded was {} (neither has a \
                             build ID to tell them apart): not used, as it was probably rebuilt \
                             or replaced since; give the original with --sysroot, or record \
                             with --bundle-symbols (or link with -Wl,--build-id)",
                            path.display(),
                            m.file_size
                        ));
                        None
                    }
                    _ => Some(ModuleSource::Elf(path.to_path_buf())),
                }
            }
            _ => Some(match &facts.debug_only {
                Some(segments) => ModuleSource::DebugOnly(path.to_path_buf(), segments.clone()),
                None => ModuleSource::Elf(path.to_path_buf()),
            }),
        }
    }

    /// Uses the kernel symbols saved in a kernel-mode recording for kernel stacks. The live
    /// kernel (`/proc/kallsyms`, `/boot`) is never read: the recording is all there is, and it
    /// is exact for the recorded addresses (each was saved with the symbol after it).
    pub fn with_kernel_symbols(mut self, symbols: &BTreeMap<u64, KernelSymbol>) -> Self {
        self.kernel = symbols.clone();
        self
    }

    /// Symbolizes a kernel stack (frames are kernel addresses, `module` unused). Every frame is
    /// a return address, looked up at `address - 1` so that a call at a function's very end
    /// names the caller. A named frame's offset is the return address's offset in its function:
    /// an absolute address would tell a reader of the report where the kernel was loaded
    /// (KASLR). An unnamed one keeps its address.
    pub fn symbolize_kernel(&self, frames: &[Frame]) -> Vec<SymFrame> {
        frames
            .iter()
            .map(|f| {
                let sym = self.kernel_symbol(f.addr.saturating_sub(1));
                SymFrame {
                    function: sym.map(|s| s.name.clone()),
                    file: None,
                    line: None,
                    module: match sym.and_then(|s| s.module.as_deref()) {
                        Some(m) => format!("[{m}]"),
                        None => "[kernel]".to_string(),
                    },
                    offset: sym.map_or(f.addr, |s| f.addr - s.addr),
                    inlined: false,
                }
            })
            .collect()
    }

    /// The saved symbol covering `addr`: the entry at or below it, if the next saved entry
    /// (which the recorder saved with it) starts above it.
    fn kernel_symbol(&self, addr: u64) -> Option<&KernelSymbol> {
        let (_, sym) = self.kernel.range(..=addr).next_back()?;
        let (_, next) = self.kernel.range(addr + 1..).next()?;
        // The recorder saved, for every recorded address, its covering entry and the entry
        // after it, so for those addresses this pair is the kallsyms pair: exact.
        (addr < next.addr).then_some(sym)
    }

    /// Modules symbolized from an ELF file (a bundled or local binary, or a debug file), not
    /// from a bundled symbol table and not missing.
    pub fn modules_from_files(&self) -> Vec<&str> {
        self.modules
            .iter()
            .filter(|(id, _)| {
                matches!(
                    self.sources.get(id),
                    Some(
                        ModuleSource::Elf(_)
                            | ModuleSource::DebugOnly(..)
                            | ModuleSource::Split(..)
                    )
                )
            })
            .map(|(_, m)| m.path.as_str())
            .collect()
    }

    /// Modules for which no usable file was found.
    pub fn missing_modules(&self) -> Vec<&str> {
        self.modules
            .iter()
            .filter(|(id, _)| matches!(self.sources.get(id), Some(ModuleSource::Missing) | None))
            .map(|(_, m)| m.path.as_str())
            .collect()
    }

    /// Symbolizes the physical frames of many stacks at once (one batch per module).
    /// Frames are return addresses: each is looked up at `offset - 1`.
    pub fn symbolize(&self, stacks: &[&[Frame]]) -> Vec<Vec<SymFrame>> {
        let mut by_module: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        for frames in stacks {
            for f in frames.iter() {
                if let Some(m) = f.module {
                    by_module.entry(m).or_default().push((f.offset, f.addr));
                }
            }
        }
        let mut resolved: HashMap<(u32, u64), Vec<SymFrame>> = HashMap::new();
        for (module, mut frames) in by_module {
            frames.sort_unstable();
            frames.dedup_by_key(|f| f.0);
            let path = self
                .modules
                .get(&module)
                .map_or_else(|| "?".to_string(), |m| m.path.clone());
            // Offsets outside the module's code are not return addresses: no symbol of theirs
            // (a variable, or a function the file offset happens to map to) is asked for.
            if let Some(code) = self.code.get(&module) {
                frames.retain(|&(off, _)| {
                    let at = off.saturating_sub(1);
                    let i = code.partition_point(|&(start, _)| start <= at);
                    let inside = i > 0 && at < code[i - 1].1;
                    if !inside {
                        resolved.insert((module, off), not_code_frame(&path, off));
                    }
                    inside
                });
            }
            let symbolized = self.resolve_module(module, &path, &frames);
            for ((off, _), f) in frames.into_iter().zip(symbolized) {
                resolved.insert((module, off), f);
            }
        }
        stacks
            .iter()
            .map(|frames| {
                frames
                    .iter()
                    .flat_map(
                        |f| match f.module.and_then(|m| resolved.get(&(m, f.offset))) {
                            Some(list) => list.clone(),
                            None => vec![SymFrame {
                                function: None,
                                file: None,
                                line: None,
                                module: UNMAPPED.into(),
                                offset: f.addr,
                                inlined: false,
                            }],
                        },
                    )
                    .collect()
            })
            .collect()
    }

    /// The ELF virtual address of a runtime address, through the recorded executable mapping
    /// that holds it and the debug file's executable segment in the same position.
    fn virtual_address(&self, path: &str, addr: u64, segments: &[u64]) -> Option<u64> {
        let exec = |m: &&leak_format::MapEntry| m.path == path && m.perms.contains('x');
        let m = self
            .maps
            .iter()
            .filter(exec)
            .find(|m| m.start <= addr && addr < m.end)?;
        let index = self
            .maps
            .iter()
            .filter(exec)
            .filter(|x| x.start < m.start)
            .count();
        Some(addr - m.start + *segments.get(index)?)
    }

    /// Symbolizes, in one batch, the frames at `offsets` of module `path` whose virtual
    /// address in `file` (a debug file) is known; the others stay module+offset.
    fn by_address(
        &self,
        file: &Path,
        path: &str,
        offsets: &[u64],
        addresses: &[Option<u64>],
    ) -> Vec<Vec<SymFrame>> {
        let known: Vec<u64> = addresses.iter().flatten().copied().collect();
        let src = Source::Elf(Elf::new(file));
        let mut symbolized = self
            .inner
            .symbolize(&src, Input::VirtOffset(&known))
            .unwrap_or_default()
            .into_iter();
        offsets
            .iter()
            .zip(addresses)
            .map(|(&off, address)| {
                let sym = address.and_then(|_| symbolized.next());
                match sym {
                    Some(Symbolized::Sym(sym)) => expand(&sym, path, off),
                    _ => bare_frame(path, off),
                }
            })
            .collect()
    }

    fn resolve_module(&self, module: u32, path: &str, frames: &[(u64, u64)]) -> Vec<Vec<SymFrame>> {
        let offsets: Vec<u64> = frames.iter().map(|f| f.0).collect();
        let bare = |off: u64| bare_frame(path, off);
        match self.sources.get(&module) {
            Some(ModuleSource::Elf(file)) => {
                let lookup: Vec<u64> = offsets.iter().map(|o| o.saturating_sub(1)).collect();
                let src = Source::Elf(Elf::new(file));
                match self.inner.symbolize(&src, Input::FileOffset(&lookup)) {
                    Ok(syms) => syms
                        .iter()
                        .zip(offsets.iter())
                        .map(|(s, &off)| match s {
                            Symbolized::Sym(sym) => expand(sym, path, off),
                            Symbolized::Unknown(_) => bare(off),
                        })
                        .collect(),
                    Err(_) => offsets.iter().map(|&o| bare(o)).collect(),
                }
            }
            Some(ModuleSource::DebugOnly(file, segments)) => {
                let lookup: Vec<Option<u64>> = frames
                    .iter()
                    .map(|&(_, addr)| {
                        let vaddr = self.virtual_address(path, addr, segments)?;
                        Some(vaddr.saturating_sub(1))
                    })
                    .collect();
                self.by_address(file, path, &offsets, &lookup)
            }
            Some(ModuleSource::Split(debug, segments)) => {
                let lookup: Vec<Option<u64>> = offsets
                    .iter()
                    .map(|&off| {
                        let at = off.saturating_sub(1);
                        let &(start, _, vaddr) =
                            segments.iter().find(|s| s.0 <= at && at < s.0 + s.1)?;
                        Some(at - start + vaddr)
                    })
                    .collect();
                self.by_address(debug, path, &offsets, &lookup)
            }
            Some(ModuleSource::Table(table)) => offsets
                .iter()
                .map(|&off| {
                    let at = off.saturating_sub(1);
                    let i = table.partition_point(|s| s.offset <= at);
                    match i.checked_sub(1).map(|i| &table[i]) {
                        Some(s) if at < s.offset + s.size => vec![SymFrame {
                            function: Some(demangle(&s.name)),
                            file: None,
                            line: None,
                            module: path.to_string(),
                            offset: off,
                            inlined: false,
                        }],
                        _ => bare(off),
                    }
                })
                .collect(),
            _ => offsets.iter().map(|&o| bare(o)).collect(),
        }
    }
}

/// A frame outside its module's code (see [`NOT_CODE`]).
fn not_code_frame(module: &str, offset: u64) -> Vec<SymFrame> {
    let mut frame = bare_frame(module, offset);
    frame[0].function = Some(NOT_CODE.to_string());
    frame
}

/// A frame left as module+offset.
fn bare_frame(module: &str, offset: u64) -> Vec<SymFrame> {
    vec![SymFrame {
        function: None,
        file: None,
        line: None,
        module: module.to_string(),
        offset,
        inlined: false,
    }]
}

/// A physical frame as logical frames: the innermost inlined call first, the containing
/// function last (the order `addr2line -f -i` prints).
fn expand(sym: &blazesym::symbolize::Sym<'_>, module: &str, offset: u64) -> Vec<SymFrame> {
    let loc = |ci: Option<&blazesym::symbolize::CodeInfo<'_>>| match ci {
        Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
        None => (None, None),
    };
    let mut out = Vec::with_capacity(1 + sym.inlined.len());
    // blazesym reports f, g, h for f calling inlined g calling inlined h; the code info of the
    // innermost entry is the instruction's location, each outer one the call site it contains.
    let mut names: Vec<(String, Option<&blazesym::symbolize::CodeInfo<'_>>)> =
        vec![(sym.name.to_string(), sym.code_info.as_deref())];
    names.extend(
        sym.inlined
            .iter()
            .map(|i| (i.name.to_string(), i.code_info.as_ref())),
    );
    let n = names.len();
    for (depth, (name, ci)) in names.into_iter().enumerate().rev() {
        let (file, line) = loc(ci);
        out.push(SymFrame {
            function: Some(name),
            file,
            line,
            module: module.to_string(),
            offset,
            inlined: depth + 1 < n,
        });
    }
    // The outermost function (`f`) is the physical frame; everything before it was inlined.
    if let Some(last) = out.last_mut() {
        last.inlined = false;
    }
    for f in out.iter_mut().take(n.saturating_sub(1)) {
        f.inlined = true;
    }
    out
}

fn demangle(name: &str) -> String {
    // Rust (legacy and v0) and C++ (Itanium) manglings.
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if let Ok(sym) = cpp_demangle::Symbol::new(name) {
        if let Ok(s) = sym.demangle() {
            return s;
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(addr: u64, name: &str, module: Option<&str>) -> (u64, KernelSymbol) {
        let s = KernelSymbol {
            addr,
            name: name.into(),
            module: module.map(str::to_string),
        };
        (addr, s)
    }

    /// The file offset of a symbol of `kind` with at least 16 bytes in `data` (an ELF file),
    /// in a loadable segment that is (`code`) or is not executable, and its name.
    fn symbol_in(data: &[u8], kind: object::SymbolKind, code: bool) -> Option<(u64, String)> {
        use object::read::elf::{ElfFile64, ProgramHeader};
        use object::{Endianness, Object, ObjectSymbol};
        let elf = ElfFile64::<Endianness, &[u8]>::parse(data).ok()?;
        let e = elf.endian();
        let segments: Vec<_> = elf
            .elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(e) == object::elf::PT_LOAD && ph.p_filesz(e) > 0)
            .map(|ph| {
                let exec = ph.p_flags(e).0 & object::elf::PF_X.0 != 0;
                (ph.p_vaddr(e), ph.p_filesz(e), ph.p_offset(e), exec)
            })
            .collect();
        elf.symbols().find_map(|sym| {
            if sym.kind() != kind || sym.size() < 16 {
                return None;
            }
            let a = sym.address();
            let &(vaddr, _, offset, _) = segments
                .iter()
                .find(|&&(v, size, _, exec)| v <= a && a + 16 <= v + size && exec == code)?;
            Some((a - vaddr + offset, sym.name().ok()?.to_string()))
        })
    }

    /// A stack walked without frame pointers can read a data address as a return address:
    /// such a frame is said to be no code, never named after the variable stored there.
    #[test]
    fn a_frame_outside_the_code_is_not_named_after_data() {
        let exe = std::env::current_exe().unwrap();
        let data = fs::read(&exe).unwrap();
        let (datum, datum_name) = symbol_in(&data, object::SymbolKind::Data, false)
            .expect("the test binary has a variable outside its code");
        let (code, _) = symbol_in(&data, object::SymbolKind::Text, true)
            .expect("the test binary has a function");
        let module = Module {
            id: 1,
            path: exe.display().to_string(),
            build_id: ElfFacts::parse(&data).build_id,
            file_size: data.len() as u64,
        };
        let modules = BTreeMap::from([(1, module)]);
        let r = Resolver::new(&modules, &BTreeMap::new(), &[], &Options::default());
        // Return addresses: looked up one byte before.
        let frame = |offset| Frame {
            addr: 0x10_0000 + offset,
            module: Some(1),
            offset,
        };
        let got = r.symbolize(&[&[frame(code + 9), frame(datum + 9)]]);
        let frames = &got[0];
        let last = frames.last().unwrap();
        assert!(
            frames[0].function.as_deref().is_some_and(|f| f != NOT_CODE),
            "{frames:?}"
        );
        assert_eq!(
            last.function.as_deref(),
            Some(NOT_CODE),
            "{datum_name}: {last:?}"
        );
        assert_eq!((last.offset, last.file.as_deref()), (datum + 9, None));
        assert_eq!(
            last.display(),
            format!(
                "{NOT_CODE} ({}+{:#x})",
                short(&exe.display().to_string()),
                datum + 9
            )
        );
    }

    #[test]
    fn kernel_frames_are_named_from_the_saved_pairs_only() {
        let saved: BTreeMap<u64, KernelSymbol> = [
            sym(0x1000, "alloc_empty_file", None),
            sym(0x1100, "alloc_file", None),
            sym(0x9000, "ext4_fill_super", Some("ext4")),
        ]
        .into_iter()
        .collect();
        let r = Resolver::new(&BTreeMap::new(), &BTreeMap::new(), &[], &Options::default())
            .with_kernel_symbols(&saved);
        let frame = |addr| Frame {
            addr,
            module: None,
            offset: 0,
        };
        let got = r.symbolize_kernel(&[frame(0x1011), frame(0x1100), frame(0x9010)]);
        // 0x1100 is a return address: its call is in alloc_empty_file.
        let names: Vec<Option<&str>> = got.iter().map(|f| f.function.as_deref()).collect();
        assert_eq!(
            names,
            [Some("alloc_empty_file"), Some("alloc_empty_file"), None]
        );
        assert_eq!(got[0].module, "[kernel]");
        // Offsets in their functions, not addresses (KASLR).
        assert_eq!(got[0].offset, 0x11);
        assert_eq!(got[1].offset, 0x100);
        assert_eq!(got[0].display(), "alloc_empty_file+0x11 ([kernel])");
        // Nothing bounds the last entry: no name rather than a guess, and its address.
        assert_eq!(got[2].module, "[kernel]");
        assert_eq!(got[2].offset, 0x9010);
    }
}
