//! Record real fixture processes, then symbolize offline as leak-report does, after the
//! binaries are gone: bundled symbols must give what `addr2line -f -i` gives on the original
//! file; a stripped binary's debug file is found through --debug-dir by build ID; a rebuilt
//! binary with another build ID is refused; a copy under --sysroot serves a path that is gone.
//! Root and BPF required (see record.rs).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::Command;

use leak_format::AllocKind;
use leak_report::symbolize::{Options, Resolver, SymFrame, NOT_CODE};
use leak_report::{input, series};
use object::{Object, ObjectSegment};

mod common;
use common::{bpf_ready, copy_program, fixtures, RECORDER};

/// A private copy of the fixture `leaky` at `dir/name`.
fn copy_fixture(dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    copy_program(&fixtures().join("leaky"), &dst);
    dst
}

fn record(dir: &Path, exe: &Path, extra: &[&str]) -> series::Recording {
    let out = dir.join("run.zst");
    let status = Command::new(RECORDER)
        .args(["-q", "-i", "1s", "--force", "-o"])
        .arg(&out)
        .args(extra)
        .arg("--")
        .arg(exe)
        .args(["basic", "100", "100"])
        .status()
        .unwrap();
    assert!(status.success());
    input::read(&out, series::DEFAULT_CAP).unwrap()
}

/// The symbolized frames of the stack holding the 100 x 100-byte leak.
fn leak_frames(rec: &series::Recording, opts: &Options) -> (Vec<SymFrame>, Vec<String>) {
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, opts);
    let (&(id, _), _) = rec
        .series
        .iter()
        .find(|((_, kind), s)| *kind == AllocKind::Heap && s.last.outstanding_bytes() == 10_000)
        .expect("the leak's stack");
    let frames = &rec.stacks[&id].frames;
    let out = resolver.symbolize(&[frames.as_slice()]).remove(0);
    (out, resolver.warnings.clone())
}

/// Splits `exe` the distribution way: its DWARF and symbols go to `debug`, and it is stripped.
fn split_debug(exe: &Path, debug: &Path) {
    let ok = |c: &mut Command| assert!(c.status().unwrap().success());
    std::fs::create_dir_all(debug.parent().unwrap()).unwrap();
    ok(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(exe)
        .arg(debug));
    ok(Command::new("strip").arg("--strip-all").arg(exe));
}

/// `ROOT/.build-id/xx/yyyy.debug` for the build ID of `elf`.
fn build_id_path(root: &Path, elf: &Path) -> PathBuf {
    let hex: String = leak_report::symbolize::build_id(elf)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    root.join(".build-id")
        .join(&hex[..2])
        .join(format!("{}.debug", &hex[2..]))
}

/// `addr2line -f -i` for a file offset (return address - 1), innermost first.
fn addr2line(elf: &Path, file_offset: u64) -> Vec<(String, String)> {
    let data = std::fs::read(elf).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let at = file_offset - 1;
    let vaddr = obj
        .segments()
        .find_map(|s| {
            let (off, size) = s.file_range();
            (at >= off && at < off + size).then(|| s.address() + (at - off))
        })
        .unwrap();
    let out = Command::new("addr2line")
        .args(["-f", "-i", "-e"])
        .arg(elf)
        .arg(format!("{vaddr:#x}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|c| (c[0].to_string(), c.get(1).unwrap_or(&"").to_string()))
        .collect()
}

#[test]
fn bundled_symbols_match_addr2line_after_the_binary_is_gone() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_fixture(dir.path(), "app");
    let rec = record(dir.path(), &exe, &["--bundle-symbols"]);
    let moved = dir.path().join("app.moved");
    std::fs::rename(&exe, &moved).unwrap();
    let (frames, warnings) = leak_frames(&rec, &Options::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(frames[0].function.as_deref(), Some("leak_here"));
    // Every frame in the fixture, physical frame by physical frame, as addr2line says.
    let exe_path = exe.display().to_string();
    let mut checked = 0;
    let mut i = 0;
    while i < frames.len() {
        let f = &frames[i];
        if f.module != exe_path {
            i += 1;
            continue;
        }
        let want = addr2line(&moved, f.offset);
        let got: Vec<(String, String)> = frames[i..i + want.len()]
            .iter()
            .map(|g| {
                let loc = format!(
                    "{}:{}",
                    g.file.clone().unwrap_or_default(),
                    g.line.unwrap_or(0)
                );
                (g.function.clone().unwrap_or_default(), loc)
            })
            .collect();
        let want: Vec<(String, String)> = want
            .into_iter()
            // addr2line may append " (discriminator N)".
            .map(|(f, l)| (f, l.split(' ').next().unwrap_or("").to_string()))
            .collect();
        assert_eq!(got, want, "frame at offset {:#x}", f.offset);
        checked += want.len();
        i += want.len();
    }
    assert!(checked >= 3, "leak_here, mode_basic, main: {frames:?}");
}

/// Bundles are written as their modules appear (format 1.8), not at the end: a recorder killed
/// part way (SIGKILL: no end record; here after 5 snapshots, the leak's stack declared in the
/// first, or the second on a slow start, each followed by its bundles) keeps them, and the leak
/// is named after the binary is gone, as in a finished recording. Before, the bundles came last
/// and were lost with it.
#[test]
fn bundles_are_kept_when_the_recorder_is_killed() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_fixture(dir.path(), "app");
    let out = dir.path().join("run.zst");
    // --wait-end: the command leaks, then waits on the recorder's stdin (a pipe kept open).
    let mut rec = Command::new(RECORDER)
        .args(["-i", "200ms", "--bundle-symbols", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&exe)
        .args(["--wait-end", "basic", "100", "100"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(rec.stderr.take().unwrap());
    common::wait_for_line(
        &mut err,
        "snapshot 5 ",
        std::time::Duration::from_secs(60),
        "recorder",
    );
    rec.kill().unwrap();
    rec.wait().unwrap();
    std::fs::remove_file(&exe).unwrap();
    let recording = input::read(&out, series::DEFAULT_CAP).unwrap();
    assert!(recording.end.is_none(), "killed: no end record");
    let module = recording
        .modules
        .values()
        .find(|m| Path::new(&m.path) == exe)
        .expect("the program is a module");
    assert!(
        recording.bundles.contains_key(&module.id),
        "{:?}",
        recording.bundles.keys()
    );
    let (frames, warnings) = leak_frames(&recording, &Options::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    let names: Vec<Option<&str>> = frames.iter().map(|f| f.function.as_deref()).collect();
    assert_eq!(
        names[..3],
        [Some("leak_here"), Some("mode_basic"), Some("main")]
    );
}

#[test]
fn a_copy_of_the_hosts_files_is_used_through_sysroot() {
    if !bpf_ready() {
        return;
    }
    // The recorded path is gone from this machine; a copy of the host's (or a container's)
    // files under --sysroot, at the same path inside it, serves instead.
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_fixture(dir.path(), "app");
    let rec = record(dir.path(), &exe, &[]);
    let sysroot = dir.path().join("sysroot");
    let copy = sysroot.join(exe.strip_prefix("/").unwrap());
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::rename(&exe, &copy).unwrap();
    let (frames, _) = leak_frames(&rec, &Options::default());
    assert_eq!(frames[0].function, None, "{frames:?}");
    let opts = Options {
        sysroot: Some(sysroot),
        ..Options::default()
    };
    let (frames, warnings) = leak_frames(&rec, &opts);
    assert!(warnings.is_empty(), "{warnings:?}");
    let names: Vec<_> = frames.iter().map(|f| f.function.as_deref()).collect();
    assert_eq!(
        names[..3],
        [Some("leak_here"), Some("mode_basic"), Some("main")]
    );
}

#[test]
fn stripped_binary_is_symbolized_from_its_debug_file_by_build_id() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_fixture(dir.path(), "app");
    let debug_root = dir.path().join("debug");
    split_debug(&exe, &build_id_path(&debug_root, &exe));
    let rec = record(dir.path(), &exe, &[]);
    let opts = Options {
        debug_dirs: vec![debug_root],
        ..Options::default()
    };
    // The stripped binary at its recorded path (it has no .gnu_debuglink, so blazesym alone
    // would not look up its build ID), then the debug file alone, once the binary is gone.
    for gone in [false, true] {
        if gone {
            std::fs::remove_file(&exe).unwrap();
        }
        // Without the debug directory nothing serves the stripped module; the analysis says
        // so while the stripped file is there (once it is gone: "no usable file").
        let (function, _, _) = leak_site(&rec, &Options::default());
        assert_eq!(function, None, "binary gone: {gone}");
        let said = |opts: &Options| {
            let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, opts);
            let settings = leak_report::analysis::Settings {
                detector: leak_report::analysis::Detector::Robust,
                detect: leak_report::detect::Config::default(),
                memory_limit: None,
            };
            let a = leak_report::analysis::analyze(&rec, &resolver, &settings);
            let exe = exe.display().to_string();
            a.warnings
                .iter()
                .any(|w| w.contains("have no symbol for some of their frames") && w.contains(&exe))
        };
        assert_eq!(said(&Options::default()), !gone, "binary gone: {gone}");
        assert!(!said(&opts), "binary gone: {gone}");
        let (function, lines, warnings) = leak_site(&rec, &opts);
        assert!(warnings.is_empty(), "binary gone: {gone}: {warnings:?}");
        assert_eq!(
            function.as_deref(),
            Some("leak_here"),
            "binary gone: {gone}"
        );
        assert!(lines, "binary gone: {gone}: no file:line");
    }
}

#[test]
fn a_rebuilt_binary_with_another_build_id_is_refused() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_fixture(dir.path(), "app");
    let rec = record(dir.path(), &exe, &[]);
    // Same code, another build ID: it must not be trusted for the recording's addresses.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/src/leaky.c");
    let status = Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-pthread",
            "-Wl,--build-id=0x0123456789abcdef",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success());
    let (frames, warnings) = leak_frames(&rec, &Options::default());
    assert_eq!(
        frames[0].function, None,
        "the rebuilt file was used: {frames:?}"
    );
    assert_eq!(frames[0].module, exe.display().to_string());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("0123456789abcdef") && w.contains("not used")),
        "{warnings:?}"
    );
}

/// The first frame's function, and whether it has a file and line.
fn leak_site(rec: &series::Recording, opts: &Options) -> (Option<String>, bool, Vec<String>) {
    let (frames, warnings) = leak_frames(rec, opts);
    let f = &frames[0];
    let lines = f.file.as_deref().is_some_and(|f| f.ends_with("leaky.c")) && f.line.is_some();
    (f.function.clone(), lines, warnings)
}

#[test]
fn a_bundled_or_sysroot_copy_finds_its_debug_file_as_the_recorded_path_would() {
    if !bpf_ready() {
        return;
    }
    // A binary split the distribution way (stripped, with a .gnu_debuglink to its debug file).
    // Its copy in the recording's bundle or under --sysroot is not at the recorded path, so
    // blazesym cannot follow the link to a debug directory that mirrors the recorded path;
    // and a copy of the host's files holds the host's /usr/lib/debug.
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_fixture(dir.path(), "app");
    let debug = dir.path().join("app.debug");
    split_debug(&exe, &debug);
    let ok = |c: &mut Command| assert!(c.status().unwrap().success());
    ok(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&exe));
    let bundled = record(dir.path(), &exe, &["--bundle-symbols"]);
    std::fs::rename(dir.path().join("run.zst"), dir.path().join("bundled.zst")).unwrap();
    let plain = record(dir.path(), &exe, &[]);
    let relative = exe.parent().unwrap().strip_prefix("/").unwrap();
    let put = |to: PathBuf| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&debug, &to).unwrap();
    };
    // The debug directory mirrors the recorded directory: DIR/<recorded dir>/app.debug.
    let mirror = dir.path().join("mirror");
    put(mirror.join(relative).join("app.debug"));
    // A sysroot holding the stripped binary and, by build ID, its debug file.
    let sysroot = dir.path().join("sysroot");
    put(build_id_path(&sysroot.join("usr/lib/debug"), &exe));
    let copy = sysroot.join(exe.strip_prefix("/").unwrap());
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::rename(&exe, &copy).unwrap();
    // The link's target next to the binary would be found at the recorded path: gone too.
    std::fs::remove_file(&debug).unwrap();

    let mirrored = Options {
        debug_dirs: vec![mirror.clone()],
        ..Options::default()
    };
    let in_sysroot = Options {
        sysroot: Some(sysroot.clone()),
        ..Options::default()
    };
    // Without a debug file, the stripped copies name nothing.
    assert_eq!(leak_site(&bundled, &Options::default()).0, None);
    assert_eq!(leak_site(&plain, &Options::default()).0, None);
    for (what, rec, opts) in [
        (
            "bundled copy, mirrored debug directory",
            &bundled,
            &mirrored,
        ),
        (
            "bundled copy, the sysroot's /usr/lib/debug",
            &bundled,
            &in_sysroot,
        ),
        ("sysroot copy, its /usr/lib/debug", &plain, &in_sysroot),
    ] {
        let (function, lines, warnings) = leak_site(rec, opts);
        assert_eq!(function.as_deref(), Some("leak_here"), "{what}");
        assert!(lines, "{what}: no file:line");
        assert!(warnings.is_empty(), "{what}: {warnings:?}");
    }
    // A debug file of another build at the mirrored path is refused, with a warning.
    let other = mirror.join(relative).join("app.debug");
    ok(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(fixtures().join("leaky_cpp"))
        .arg(&other));
    let (function, _, warnings) = leak_site(&bundled, &mirrored);
    assert_eq!(function, None);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("debug file") && w.contains("not used")),
        "{warnings:?}"
    );
}

/// The file offset of a variable of an ELF file, through the loadable segment holding it.
fn variable_offset(elf: &Path, name: &str) -> u64 {
    use object::ObjectSymbol;
    let data = std::fs::read(elf).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("{name} in {}", elf.display()));
    let seg = file
        .segments()
        .find(|s| s.address() <= sym.address() && sym.address() < s.address() + s.size())
        .unwrap();
    sym.address() - seg.address() + seg.file_range().0
}

/// Code without frame pointers leaves anything in %rbp, and a walk through it may take a
/// variable's address for a return address. That frame is kept (nothing recorded is dropped),
/// and leak-report says it is no code, with a warning, instead of naming it after whatever
/// symbol the file offset falls in.
#[test]
fn a_return_address_in_data_is_said_to_be_no_code() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_fixture(dir.path(), "leaky");
    let out = dir.path().join("run.zst");
    let status = Command::new(RECORDER)
        .args(["-q", "-i", "1s", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&exe)
        .args(["bogus_fp", "1000", "data"])
        .status()
        .unwrap();
    assert!(status.success());
    let rec = input::read(&out, series::DEFAULT_CAP).unwrap();
    let (&(id, _), _) = rec
        .series
        .iter()
        .find(|((_, kind), s)| *kind == AllocKind::Heap && s.last.outstanding_bytes() == 100_000)
        .expect("the leak's stack");
    let frames = &rec.stacks[&id].frames;
    assert_eq!(frames.len(), 2, "{frames:x?}");
    // bogus_datum[2], in the program's data.
    let datum = variable_offset(&exe, "bogus_datum") + 16;
    assert_eq!(frames[1].offset, datum, "{frames:x?}");
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default());
    let named = resolver.symbolize(&[frames.as_slice()]).remove(0);
    let names: Vec<Option<&str>> = named.iter().map(|f| f.function.as_deref()).collect();
    assert_eq!(
        names,
        [Some("malloc_with_rbp"), Some(NOT_CODE)],
        "{named:?}"
    );
    assert_eq!(named[1].offset, datum);
    let settings = leak_report::analysis::Settings {
        detector: leak_report::analysis::Detector::Robust,
        detect: leak_report::detect::Config::default(),
        memory_limit: None,
    };
    let analysis = leak_report::analysis::analyze(&rec, &resolver, &settings);
    let warning = format!(
        "1 stack holds an address outside its module's code (stack {id}: {NOT_CODE} (leaky+{datum:#x}))"
    );
    assert!(
        analysis.warnings.iter().any(|w| w.starts_with(&warning)),
        "{warning}\n{:#?}",
        analysis.warnings
    );
}
