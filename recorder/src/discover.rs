//! Finds the allocator functions that really serve the target: each function is probed in the
//! first object that defines it in the dynamic linker's lookup order (executable, LD_PRELOAD,
//! DT_NEEDED breadth-first, then dlopened objects), so jemalloc, tcmalloc, mimalloc or a static
//! binary's own malloc are found without flags.
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use object::elf;
use object::read::elf::{Dyn, ElfFile64, ProgramHeader};
use object::{
    Endianness, Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, ReadCache, SymbolKind,
};

use crate::placement::{self, Placement, Reads};
use crate::procfs;

/// Which BPF program handles a function's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    Malloc,
    Calloc,
    Memalign,
    Realloc,
    Reallocarray,
    PosixMemalign,
    Free,
    /// An operator delete that frees the block itself (`delete_enter`).
    Delete,
    Mmap,
    Munmap,
}

/// Which BPF program handles a function's return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Return {
    Alloc,
    PosixMemalign,
}

type Family = &'static [(&'static str, Entry, Option<Return>)];

/// The C allocator API and jemalloc's extended API (probed with prefixes too).
const C_API: Family = &[
    ("malloc", Entry::Malloc, Some(Return::Alloc)),
    ("calloc", Entry::Calloc, Some(Return::Alloc)),
    ("realloc", Entry::Realloc, Some(Return::Alloc)),
    ("reallocarray", Entry::Reallocarray, Some(Return::Alloc)),
    (
        "posix_memalign",
        Entry::PosixMemalign,
        Some(Return::PosixMemalign),
    ),
    ("aligned_alloc", Entry::Memalign, Some(Return::Alloc)),
    ("memalign", Entry::Memalign, Some(Return::Alloc)),
    ("valloc", Entry::Malloc, Some(Return::Alloc)),
    ("pvalloc", Entry::Malloc, Some(Return::Alloc)),
    ("free", Entry::Free, None),
    ("free_sized", Entry::Free, None),
    ("free_aligned_sized", Entry::Free, None),
    ("mallocx", Entry::Malloc, Some(Return::Alloc)),
    ("rallocx", Entry::Realloc, Some(Return::Alloc)),
    ("dallocx", Entry::Free, None),
    ("sdallocx", Entry::Free, None),
];

/// C++ operator new (all take the size first). Probing them puts the caller of `new` on the
/// stack even though libstdc++ has no frame pointers; the malloc inside is a nested call.
const CXX_NEW: Family = &[
    ("_Znwm", Entry::Malloc, Some(Return::Alloc)),
    ("_Znam", Entry::Malloc, Some(Return::Alloc)),
    ("_ZnwmRKSt9nothrow_t", Entry::Malloc, Some(Return::Alloc)),
    ("_ZnamRKSt9nothrow_t", Entry::Malloc, Some(Return::Alloc)),
    ("_ZnwmSt11align_val_t", Entry::Malloc, Some(Return::Alloc)),
    ("_ZnamSt11align_val_t", Entry::Malloc, Some(Return::Alloc)),
    (
        "_ZnwmSt11align_val_tRKSt9nothrow_t",
        Entry::Malloc,
        Some(Return::Alloc),
    ),
    (
        "_ZnamSt11align_val_tRKSt9nothrow_t",
        Entry::Malloc,
        Some(Return::Alloc),
    ),
];

/// C++ operator delete (all take the pointer first). libstdc++'s call free, which is probed;
/// an allocator's own (jemalloc's, tcmalloc's, mimalloc's) may free the block without calling
/// free (jemalloc's and tcmalloc's sized deletes do), so they are probed where the allocator
/// that serves free defines them and the program would call them (`plan`).
const CXX_DELETE: &[&str] = &[
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
];

const MMAP_API: Family = &[
    ("mmap", Entry::Mmap, Some(Return::Alloc)),
    ("mmap64", Entry::Mmap, Some(Return::Alloc)),
    ("munmap", Entry::Munmap, None),
];

/// The functions that may skip their return probe when it has nothing to do (bpf::Sessions):
/// those that call no other probed function while they run, since only an open call marks a
/// call made inside it as nested. Not calloc (musl's calls malloc), nor operator new (which
/// calls malloc), nor the aligned and realloc families (glibc's call malloc or realloc). The
/// rule goes by name: a malloc of one's own (in the executable, or preloaded) that calls
/// calloc or memalign would have those calls sampled as calls of their own, and its blocks
/// would then have two chances to be sampled (LEAK_RECORD_NO_SESSIONS=1 avoids that). Names
/// under a `--symbol-prefix` never skip.
const SELF_CONTAINED: &[&str] = &["malloc", "mallocx"];

/// Whether `function` (possibly under a known prefix) is one of `SELF_CONTAINED`.
fn is_self_contained(function: &str) -> bool {
    let base = KNOWN_PREFIXES
        .iter()
        .find_map(|p| function.strip_prefix(p))
        .unwrap_or(function);
    SELF_CONTAINED.contains(&base)
}

/// Prefixes under which allocators export their API beside (or instead of) the plain names:
/// jemalloc built with `--with-jemalloc-prefix=je_`, and Rust's tikv-jemallocator (`_rjem_`).
const KNOWN_PREFIXES: &[&str] = &["je_", "_rjem_"];

/// What the recorder needs to know about one ELF file.
#[derive(Debug, Default)]
pub struct ElfInfo {
    pub soname: Option<String>,
    pub needed: Vec<String>,
    pub interp: Option<String>,
    pub is_go: bool,
    /// x86-64 code (entry probes can then be placed instruction by instruction).
    pub x86_64: bool,
    /// Defined global function symbols of interest: name -> where.
    pub functions: HashMap<String, Function>,
    /// File offsets of every function symbol, sorted: entry points a jump may target.
    pub starts: Vec<u64>,
    /// The operator deletes whose first instruction jumps to a function of this file (directly,
    /// or through the PLT to a symbol this file defines): their offset -> the target's.
    pub tail_jumps: HashMap<u64, u64>,
}

/// A function symbol in file coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    pub offset: u64,
    /// Symbol size in bytes (0 when the symbol table does not say).
    pub size: u64,
}

/// The names any allocator family could use, with every prefix.
fn wanted_names(extra_prefix: Option<&str>) -> HashSet<String> {
    let mut names = HashSet::new();
    let prefixes = KNOWN_PREFIXES.iter().copied().chain(extra_prefix);
    for p in [""].into_iter().chain(prefixes) {
        for (n, ..) in C_API.iter().chain(MMAP_API) {
            names.insert(format!("{p}{n}"));
        }
    }
    for (n, ..) in CXX_NEW {
        names.insert(n.to_string());
    }
    names.extend(CXX_DELETE.iter().map(|n| n.to_string()));
    names
}

/// Reads the facts of an ELF file without loading it whole.
pub fn read_elf(path: &Path, extra_prefix: Option<&str>) -> Result<ElfInfo> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let cache = ReadCache::new(file);
    let elf = ElfFile64::<Endianness, _>::parse(&cache)
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    let endian = elf.endian();
    let data = elf.data();
    let mut info = ElfInfo {
        x86_64: elf.architecture() == object::Architecture::X86_64,
        is_go: elf.section_by_name(".go.buildinfo").is_some()
            || elf.section_by_name(".gopclntab").is_some(),
        ..ElfInfo::default()
    };
    for ph in elf.elf_program_headers() {
        if ph.p_type(endian) == elf::PT_INTERP {
            if let Ok(Some(bytes)) = ph.interpreter(endian, data) {
                info.interp = Some(String::from_utf8_lossy(bytes).into_owned());
            }
        }
    }
    let sections = elf.elf_section_table();
    if let Ok(Some((dyns, link))) = sections.dynamic(endian, data) {
        if let Ok(strings) = sections.strings(endian, data, link) {
            for d in dyns {
                let tag = d.tag(endian);
                let value = || {
                    d.string(endian, strings)
                        .ok()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                };
                match tag {
                    elf::DT_NEEDED => info.needed.extend(value()),
                    elf::DT_SONAME => info.soname = value(),
                    _ => {}
                }
            }
        }
    }
    let wanted = wanted_names(extra_prefix);
    // Shared objects interpose through .dynsym; a static executable has only .symtab.
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        if !sym.is_definition() || sym.kind() != SymbolKind::Text {
            continue;
        }
        let Some(offset) = file_offset(&elf, &sym) else {
            continue;
        };
        info.starts.push(offset);
        let Ok(name) = sym.name() else { continue };
        if sym.is_local() || !wanted.contains(name) || info.functions.contains_key(name) {
            continue;
        }
        let size = sym.size();
        info.functions
            .insert(name.to_string(), Function { offset, size });
    }
    info.starts.sort_unstable();
    info.starts.dedup();
    if info.x86_64 && CXX_DELETE.iter().any(|n| info.functions.contains_key(*n)) {
        info.tail_jumps = delete_tail_jumps(&elf);
    }
    Ok(info)
}

/// Where each operator delete defined in `elf` jumps with its first instruction, when that is
/// a jump to a function of this file: jemalloc's plain delete is `jmp free@plt`, mimalloc's
/// sized one `jmp mi_free@plt` (mi_free is its free). Such a delete needs no probe of its own
/// when it lands on the probed free (`plan`). A jump through the PLT is taken to land on this
/// file's definition of its symbol: if another object's interposes, the delete is probed,
/// which costs a trap but loses nothing.
fn delete_tail_jumps<'data, R: object::ReadRef<'data>>(
    elf: &ElfFile64<'data, Endianness, R>,
) -> HashMap<u64, u64> {
    let section_of = |vaddr: u64| {
        elf.sections()
            .find(|s| s.address() <= vaddr && vaddr < s.address() + s.size())
    };
    // The first instruction at `vaddr` (after an `endbr64`), decoded.
    let decode_at = |vaddr: u64| -> Option<iced_x86::Instruction> {
        let section = section_of(vaddr)?;
        let data = section.data().ok()?;
        let start = usize::try_from(vaddr - section.address()).ok()?;
        let code = data.get(start..data.len().min(start + 32))?;
        let mut decoder = iced_x86::Decoder::with_ip(64, code, vaddr, 0);
        let mut insn = decoder.decode();
        if insn.code() == iced_x86::Code::Endbr64 {
            insn = decoder.decode();
        }
        (!insn.is_invalid()).then_some(insn)
    };
    let offset_of = |vaddr: u64| {
        let section = section_of(vaddr)?;
        let (start, _) = section.file_range()?;
        Some(start + (vaddr - section.address()))
    };
    // GOT slots -> the symbols they are bound to.
    let mut slots: HashMap<u64, String> = HashMap::new();
    if let (Some(relocations), Some(table)) =
        (elf.dynamic_relocations(), elf.dynamic_symbol_table())
    {
        for (slot, r) in relocations {
            if let object::RelocationTarget::Symbol(index) = r.target() {
                if let Some(name) = table
                    .symbol_by_index(index)
                    .ok()
                    .and_then(|s| s.name().ok())
                {
                    slots.insert(slot, name.to_string());
                }
            }
        }
    }
    let defined: HashMap<&str, u64> = elf
        .dynamic_symbols()
        .chain(elf.symbols())
        .filter(|s| s.is_definition() && s.kind() == SymbolKind::Text)
        .filter_map(|s| Some((s.name().ok()?, s.address())))
        .collect();
    let mut jumps = HashMap::new();
    for name in CXX_DELETE {
        let Some(&vaddr) = defined.get(name) else {
            continue;
        };
        let Some(first) = decode_at(vaddr) else {
            continue;
        };
        if first.flow_control() != iced_x86::FlowControl::UnconditionalBranch
            || first.op0_kind() != iced_x86::OpKind::NearBranch64
        {
            continue;
        }
        let mut target = first.near_branch64();
        if section_of(target)
            .and_then(|s| s.name().ok())
            .is_some_and(|n| n.starts_with(".plt"))
        {
            // A PLT stub: `jmp *slot(%rip)`, bound to the slot's symbol.
            let Some(stub) = decode_at(target).filter(|i| i.is_ip_rel_memory_operand()) else {
                continue;
            };
            let Some(&to) = slots
                .get(&stub.ip_rel_memory_address())
                .and_then(|symbol| defined.get(symbol.as_str()))
            else {
                continue;
            };
            target = to;
        }
        if let (Some(from), Some(to)) = (offset_of(vaddr), offset_of(target)) {
            jumps.insert(from, to);
        }
    }
    jumps
}

/// The GNU build ID of an ELF file, if it has one and can be read.
pub fn build_id(path: &Path) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let cache = ReadCache::new(file);
    let file = object::File::parse(&cache).ok()?;
    file.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// The function symbols of an ELF file in file-offset coordinates (for `--bundle-symbols` of
/// files too large to embed): `.symtab` when the file has one, else `.dynsym`.
pub fn symbol_table(file: File) -> Result<Vec<leak_format::BundledSymbol>> {
    let cache = ReadCache::new(file);
    let obj = object::File::parse(&cache).context("not an ELF file")?;
    let mut symbols = function_symbols(&obj, false);
    if symbols.is_empty() {
        symbols = function_symbols(&obj, true);
    }
    symbols.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
    symbols.dedup_by(|a, b| a.offset == b.offset && a.size == b.size);
    Ok(symbols)
}

/// Where a symbol's first byte lies in its file (through the section that holds it).
fn file_offset<'data, O: Object<'data>>(obj: &O, sym: &O::Symbol<'_>) -> Option<u64> {
    let section = obj.section_by_index(sym.section_index()?).ok()?;
    let (file_start, _) = section.file_range()?;
    Some(file_start + sym.address().checked_sub(section.address())?)
}

fn function_symbols<'data, R: object::ReadRef<'data>>(
    obj: &object::File<'data, R>,
    dynamic: bool,
) -> Vec<leak_format::BundledSymbol> {
    let syms = if dynamic {
        obj.dynamic_symbols()
    } else {
        obj.symbols()
    };
    let mut out = Vec::new();
    for sym in syms {
        if !sym.is_definition() || sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let (Ok(name), Some(offset)) = (sym.name(), file_offset(obj, &sym)) else {
            continue;
        };
        out.push(leak_format::BundledSymbol {
            offset,
            size: sym.size(),
            name: name.to_string(),
        });
    }
    out
}

/// An object in the target's lookup order.
#[derive(Debug)]
pub struct Obj {
    /// Path as the target sees it.
    pub display: String,
    /// Path the recorder opens and attaches to (for `-p`, `procfs::open_mapped`'s).
    pub open_path: PathBuf,
    pub elf: ElfInfo,
}

/// One probe to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    pub function: String,
    pub module: String,
    pub open_path: PathBuf,
    /// File offset of the function's first instruction (where a return probe goes).
    pub offset: u64,
    /// File offset of the entry probe: `offset`, or past it (see `place_entries`).
    pub entry_offset: u64,
    /// How `entry_offset` was chosen (None until `place_entries` ran).
    pub placement: Option<Placement>,
    pub entry: Entry,
    pub ret: Option<Return>,
}

impl PlannedProbe {
    /// Whether this probe may be a session probe that skips the return of a call with nothing
    /// to record (bpf::Sessions): a malloc-like call of one of the `SELF_CONTAINED` functions.
    pub fn may_skip_return(&self) -> bool {
        self.entry == Entry::Malloc
            && self.ret == Some(Return::Alloc)
            && is_self_contained(&self.function)
    }
}

/// How to choose objects and names.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub symbol_prefix: Option<String>,
    pub mmap: bool,
}

/// The objects of a running process, in lookup order.
pub fn objects_of_process(pid: u32, prefix: Option<&str>) -> Result<Vec<Obj>> {
    let text = procfs::maps_text(pid).with_context(|| format!("cannot read /proc/{pid}/maps"))?;
    let mut mapped: Vec<leak_format::MapEntry> = Vec::new();
    for m in procfs::parse_maps(&text) {
        if m.path.starts_with('/') && m.inode != 0 && !mapped.iter().any(|o| o.path == m.path) {
            mapped.push(m);
        }
    }
    let exe = procfs::exe(pid).with_context(|| format!("cannot read /proc/{pid}/exe"))?;
    let mut objs: Vec<Obj> = mapped
        .iter()
        .filter_map(|m| {
            let (open_path, _) = procfs::open_mapped(pid, m)?;
            let elf = read_elf(&open_path, prefix).ok()?;
            Some(Obj {
                display: procfs::mapped_path(m).to_string(),
                open_path,
                elf,
            })
        })
        .collect();
    let preload = procfs::ld_preload(pid);
    let order = lookup_order(&objs, &exe, &preload);
    let mut slots: Vec<Option<Obj>> = objs.drain(..).map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// The file name at the end of a path.
fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The object a path, soname or file name (as `DT_NEEDED` and `LD_PRELOAD` give them) names.
fn position_of(objs: &[Obj], name: &str) -> Option<usize> {
    objs.iter().position(|o| {
        o.display == name || o.elf.soname.as_deref() == Some(name) || base(&o.display) == name
    })
}

/// Whether every library the mapped objects need is mapped too: false while the dynamic
/// linker of a program that has just started is still loading them.
pub fn libraries_mapped(objs: &[Obj]) -> bool {
    objs.iter()
        .all(|o| o.elf.needed.iter().all(|n| position_of(objs, n).is_some()))
}

/// Indices of `objs` in the dynamic linker's lookup order.
fn lookup_order(objs: &[Obj], exe: &str, preload: &[String]) -> Vec<usize> {
    let find = |name: &str| position_of(objs, name);
    let mut order = Vec::new();
    let mut queue = VecDeque::new();
    let push = |i: usize, order: &mut Vec<usize>, queue: &mut VecDeque<usize>| {
        if !order.contains(&i) {
            order.push(i);
            queue.push_back(i);
        }
    };
    if let Some(i) = find(exe) {
        push(i, &mut order, &mut queue);
    }
    for p in preload {
        if let Some(i) = find(p).or_else(|| find(base(p))) {
            push(i, &mut order, &mut queue);
        }
    }
    while let Some(i) = queue.pop_front() {
        for n in &objs[i].elf.needed {
            if let Some(j) = find(n) {
                push(j, &mut order, &mut queue);
            }
        }
    }
    for i in 0..objs.len() {
        if !order.contains(&i) {
            order.push(i); // dlopened, in map order
        }
    }
    order
}

/// The objects a command will load, in lookup order, from its dynamic linker's `--list`.
pub fn objects_of_command(exe: &Path, prefix: Option<&str>) -> Result<Vec<Obj>> {
    objects_of_program(exe, prefix, None)
}

/// [`objects_of_command`] for a program run with the environment `env` (its `LD_PRELOAD` and
/// `LD_LIBRARY_PATH` decide what its dynamic linker loads) instead of ours.
pub fn objects_of_program(
    exe: &Path,
    prefix: Option<&str>,
    env: Option<&[(OsString, OsString)]>,
) -> Result<Vec<Obj>> {
    let elf = read_elf(exe, prefix)?;
    let mut objs = Vec::new();
    let interp = elf.interp.clone();
    objs.push(Obj {
        display: exe.display().to_string(),
        open_path: exe.to_path_buf(),
        elf,
    });
    let Some(interp) = interp else {
        return Ok(objs); // statically linked: the executable is the whole program
    };
    let mut list = Command::new(&interp);
    list.arg("--list").arg(exe);
    if let Some(env) = env {
        list.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    let out = output_within(list, LIST_TIMEOUT)
        .with_context(|| format!("cannot run the dynamic linker {interp} --list"))?;
    if !out.status.success() {
        bail!(
            "the dynamic linker could not list the libraries of {}: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for path in parse_ld_list(&String::from_utf8_lossy(&out.stdout)) {
        let open_path = PathBuf::from(&path);
        match read_elf(&open_path, prefix) {
            Ok(elf) => objs.push(Obj {
                display: path,
                open_path,
                elf,
            }),
            Err(e) => say!("leak-record: skipping {path}: {e:#}"),
        }
    }
    Ok(objs)
}

/// How long a dynamic linker gets to list a program's libraries (it lists, it runs nothing of
/// the program; a held command waits meanwhile).
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `cmd` to the end, its output captured, or kills it after `limit`.
fn output_within(
    mut cmd: Command,
    limit: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions. Only the waiter reaps the
            // child, and it has not answered: `pid` is still the child (unless it was reaped
            // in this very instant and the PID reused at once).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = waiter.join();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", limit.as_secs()),
            ));
        }
    };
    let _ = waiter.join();
    out
}

/// Library paths from `ld.so --list` output, in order.
fn parse_ld_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

/// An object given with `--obj`.
pub fn single_object(path: &Path, pid: Option<u32>, prefix: Option<&str>) -> Result<Vec<Obj>> {
    let display = path.display().to_string();
    let open_path = match pid {
        Some(pid) if path.is_absolute() => procfs::in_root(pid, &display),
        _ => path.to_path_buf(),
    };
    // The path as the user typed it (not the target's root under /proc), and status 2.
    let elf = read_elf(&open_path, prefix).map_err(|e| {
        let why = match e.root_cause().downcast_ref::<std::io::Error>() {
            Some(io) => format!("cannot open it: {io}"),
            None => "it is not a 64-bit ELF file".into(),
        };
        crate::UsageError(format!(
            "--obj {display}: {why}; give the allocator's library as the target sees it (e.g. \
             /usr/lib/x86_64-linux-gnu/libjemalloc.so.2, from /proc/PID/maps)"
        ))
    })?;
    Ok(vec![Obj {
        display,
        open_path,
        elf,
    }])
}

/// Chooses the probes: for each function, the first object defining it.
pub fn plan(objs: &[Obj], ov: &Overrides) -> Result<Vec<PlannedProbe>> {
    let mut probes: Vec<PlannedProbe> = Vec::new();
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut add = |o: &Obj, name: &str, entry: Entry, ret: Option<Return>| {
        let Some(&Function { offset, .. }) = o.elf.functions.get(name) else {
            return false;
        };
        // Aliases (memalign = aligned_alloc in some libcs) share an address: probe it once.
        if seen.insert((o.display.clone(), offset)) {
            probes.push(PlannedProbe {
                function: name.to_string(),
                module: o.display.clone(),
                open_path: o.open_path.clone(),
                offset,
                entry_offset: offset,
                placement: None,
                entry,
                ret,
            });
        }
        true
    };
    let user_prefix = ov.symbol_prefix.as_deref().unwrap_or("");
    let mut families: Vec<(Family, &str)> = vec![(C_API, user_prefix), (CXX_NEW, "")];
    if ov.mmap {
        families.push((MMAP_API, ""));
    }
    for (family, prefix) in families {
        for &(name, entry, ret) in family {
            let name = format!("{prefix}{name}");
            for o in objs {
                if add(o, &name, entry, ret) {
                    break;
                }
            }
        }
    }
    // The deletes the program calls, where they are the allocator's own: defined first (in
    // lookup order) by the object whose free is probed. Those that are free itself (tcmalloc's
    // and mimalloc's plain delete) are already probed as free.
    let free_name = format!("{user_prefix}free");
    let first_defining = |name: &str| objs.iter().position(|o| o.elf.functions.contains_key(name));
    let free_object = first_defining(&free_name);
    for name in CXX_DELETE {
        let Some(o) = first_defining(name)
            .filter(|&i| Some(i) == free_object)
            .map(|i| &objs[i])
        else {
            continue;
        };
        // A delete that is free (an alias), or jumps straight to it, is seen by free's probe.
        let free_at = o.elf.functions.get(&free_name).map(|f| f.offset);
        let mut at = o.elf.functions.get(*name).map(|f| f.offset);
        let mut hops = 0;
        while at.is_some() && at != free_at && hops < 4 {
            at = at.and_then(|a| o.elf.tail_jumps.get(&a).copied());
            hops += 1;
        }
        if at != free_at {
            add(o, name, Entry::Delete, None);
        }
    }
    if ov.symbol_prefix.is_none() {
        // Allocators exporting a prefixed API beside libc's (Rust's jemallocator, je_ builds).
        for o in objs {
            for p in KNOWN_PREFIXES {
                for &(name, entry, ret) in C_API {
                    add(o, &format!("{p}{name}"), entry, ret);
                }
            }
        }
    }
    let allocates = probes
        .iter()
        .any(|p| p.ret.is_some() && p.entry != Entry::Mmap);
    let frees = probes.iter().any(|p| p.entry == Entry::Free);
    if !allocates || !frees {
        let names: Vec<&str> = objs.iter().map(|o| o.display.as_str()).collect();
        bail!(crate::UsageError(format!(
            "no allocator found: none of [{}] defines {user_prefix}malloc and {user_prefix}free; \
             pass --obj PATH (and --symbol-prefix if the allocator's names are prefixed)",
            names.join(", ")
        )));
    }
    Ok(probes)
}

impl Entry {
    /// What this entry's BPF program reads (bpf/leak.bpf.c): the System V argument registers
    /// it takes, and the stack pointer for every program that goes through `enter()`.
    pub fn reads(self) -> Reads {
        use iced_x86::Register::{R8, RCX, RDI, RDX, RSI};
        let (regs, sp): (&'static [_], bool) = match self {
            Entry::Malloc => (&[RDI], true),
            Entry::Calloc | Entry::Memalign | Entry::Realloc => (&[RDI, RSI], true),
            Entry::Reallocarray | Entry::PosixMemalign => (&[RDI, RSI, RDX], true),
            Entry::Mmap => (&[RDI, RSI, RDX, RCX, R8], true),
            Entry::Free | Entry::Delete => (&[RDI], false),
            Entry::Munmap => (&[RDI, RSI], false),
        };
        Reads {
            regs,
            sp,
            ret: false,
        }
    }
}

/// Largest function body decoded to check its branches (glibc's free is ~200 bytes).
const MAX_BODY: u64 = 1 << 20;

/// Places each entry probe on the first instruction the kernel emulates when that is safe
/// (see `placement`). A function's return probe goes with its entry probe, so both share one
/// trap; `placement` then also checks that the return address is still at `*%rsp` there.
pub fn place_entries(probes: &mut [PlannedProbe], objs: &[Obj]) {
    for p in probes {
        let Some(obj) = objs.iter().find(|o| o.display == p.module) else {
            continue;
        };
        let placed = decode_entry(obj, p);
        p.entry_offset = p.offset + placed.offset;
        p.placement = Some(placed);
    }
}

fn decode_entry(obj: &Obj, p: &PlannedProbe) -> Placement {
    use std::io::{Read, Seek, SeekFrom};
    if !obj.elf.x86_64 {
        return Placement::undecoded("not x86-64 code");
    }
    let size = obj
        .elf
        .functions
        .get(&p.function)
        .map_or(0, |f| f.size)
        .min(MAX_BODY);
    if size == 0 {
        return Placement::undecoded("the symbol has no size, so its branches cannot be checked");
    }
    let mut body = vec![0u8; size as usize];
    let read = File::open(&obj.open_path).and_then(|mut f| {
        f.seek(SeekFrom::Start(p.offset))?;
        f.read_exact(&mut body)
    });
    if let Err(e) = read {
        return Placement::undecoded(format!("cannot read its code: {e}"));
    }
    let end = p.offset + size;
    let from = obj.elf.starts.partition_point(|&s| s <= p.offset);
    let others: Vec<u64> = obj.elf.starts[from..]
        .iter()
        .take_while(|&&s| s < end)
        .map(|&s| s - p.offset)
        .collect();
    let reads = Reads {
        ret: p.ret.is_some(),
        ..p.entry.reads()
    };
    placement::place(&body, reads, &others)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(display: &str, soname: Option<&str>, needed: &[&str], funcs: &[(&str, u64)]) -> Obj {
        Obj {
            display: display.into(),
            open_path: display.into(),
            elf: ElfInfo {
                soname: soname.map(Into::into),
                needed: needed.iter().map(|s| s.to_string()).collect(),
                functions: funcs
                    .iter()
                    .map(|&(n, offset)| (n.to_string(), Function { offset, size: 0 }))
                    .collect(),
                ..ElfInfo::default()
            },
        }
    }

    #[test]
    fn ld_list_output_parses() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibjemalloc.so.2 => /lib/x86_64-linux-gnu/libjemalloc.so.2 (0x7f1)\n\
                    \tlibmissing.so => not found\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x7f3)\n";
        assert_eq!(
            parse_ld_list(text),
            [
                "/lib/x86_64-linux-gnu/libjemalloc.so.2",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn lookup_order_is_exe_preload_then_needed_breadth_first() {
        // Mapped in address order, which is not the load order.
        let objs = vec![
            obj("/lib/libc.so.6", Some("libc.so.6"), &[], &[]),
            obj("/lib/libdl.so", Some("libdl.so"), &["libc.so.6"], &[]),
            obj(
                "/usr/bin/svc",
                None,
                &["libjemalloc.so.2", "libc.so.6"],
                &[],
            ),
            obj(
                "/lib/libjemalloc.so.2",
                Some("libjemalloc.so.2"),
                &["libc.so.6"],
                &[],
            ),
            obj("/opt/pre.so", None, &[], &[]),
        ];
        let order = lookup_order(&objs, "/usr/bin/svc", &["/opt/pre.so".into()]);
        let names: Vec<&str> = order.iter().map(|&i| objs[i].display.as_str()).collect();
        assert_eq!(
            names,
            [
                "/usr/bin/svc",
                "/opt/pre.so",
                "/lib/libjemalloc.so.2",
                "/lib/libc.so.6",
                "/lib/libdl.so"
            ]
        );
    }

    #[test]
    fn first_definer_wins_and_aliases_are_probed_once() {
        let objs = vec![
            obj("/usr/bin/svc", None, &[], &[]),
            obj(
                "/lib/libjemalloc.so.2",
                None,
                &[],
                &[("malloc", 0x10), ("free", 0x20)],
            ),
            obj(
                "/lib/libc.so.6",
                None,
                &[],
                &[
                    ("malloc", 0x100),
                    ("free", 0x200),
                    ("memalign", 0x300),
                    ("aligned_alloc", 0x300),
                ],
            ),
        ];
        let probes = plan(&objs, &Overrides::default()).unwrap();
        let find = |f: &str| {
            probes
                .iter()
                .find(|p| p.function == f)
                .map(|p| (p.module.as_str(), p.offset))
        };
        assert_eq!(find("malloc"), Some(("/lib/libjemalloc.so.2", 0x10)));
        assert_eq!(find("free"), Some(("/lib/libjemalloc.so.2", 0x20)));
        assert_eq!(find("aligned_alloc"), Some(("/lib/libc.so.6", 0x300)));
        assert_eq!(
            find("memalign"),
            None,
            "an alias at the same address is probed once"
        );
    }

    /// Rust's tikv-jemallocator (`_rjem_`, also tested on a real process: rust-jemalloc) and
    /// a jemalloc built with `--with-jemalloc-prefix=je_` (Redis's bundled one).
    #[test]
    fn prefixed_allocators_are_found_beside_libc() {
        let objs = vec![
            obj(
                "/usr/bin/rustsvc",
                None,
                &[],
                &[("_rjem_malloc", 0x1), ("_rjem_sdallocx", 0x2)],
            ),
            obj(
                "/usr/lib/libsvc.so",
                None,
                &[],
                &[("je_malloc", 0x10), ("je_free", 0x20), ("je_realloc", 0x30)],
            ),
            obj(
                "/lib/libc.so.6",
                None,
                &[],
                &[("malloc", 0x100), ("free", 0x200)],
            ),
        ];
        let probes = plan(&objs, &Overrides::default()).unwrap();
        let names: Vec<&str> = probes.iter().map(|p| p.function.as_str()).collect();
        assert!(
            names.contains(&"malloc") && names.contains(&"_rjem_malloc"),
            "{names:?}"
        );
        assert!(names.contains(&"_rjem_sdallocx"));
        for name in ["je_malloc", "je_free", "je_realloc"] {
            let p = probes.iter().find(|p| p.function == name);
            assert_eq!(
                p.map(|p| p.module.as_str()),
                Some("/usr/lib/libsvc.so"),
                "{name}"
            );
        }
    }

    #[test]
    fn no_allocator_is_a_clear_error() {
        let objs = vec![obj("/usr/bin/x", None, &[], &[])];
        let e = plan(&objs, &Overrides::default()).unwrap_err().to_string();
        assert!(
            e.contains("no allocator found") && e.contains("--obj"),
            "{e}"
        );
    }

    #[test]
    fn this_libc_defines_the_c_api() {
        let exe = std::env::current_exe().unwrap();
        let objs = objects_of_command(&exe, None).unwrap();
        let probes = plan(&objs, &Overrides::default()).unwrap();
        let libc = probes.iter().find(|p| p.function == "malloc").unwrap();
        assert!(libc.module.contains("libc.so"), "{libc:?}");
        assert!(probes.iter().any(|p| p.function == "free"));
        assert!(probes.iter().any(|p| p.function == "posix_memalign"));
    }
}
