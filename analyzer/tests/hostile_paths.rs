//! Paths inside a recording come from another machine: leak-report may read files they name
//! (only accepted when the build ID matches), but never writes anywhere they point. Bundled
//! binaries go to a private scratch folder under names the analysis chooses, removed at exit;
//! the outputs are exactly the files asked for.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
use std::path::Path;
use std::process::Command;

use leak_format::{BundleContent, EndReason, RecordingBuilder};

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn recorded_paths_never_choose_where_leak_report_writes() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work"); // the current directory, outputs go here
    let tmp = root.path().join("tmp"); // TMPDIR: the scratch folder's parent
    let victim = root.path().join("victim"); // where hostile paths point
    for d in [&work, &tmp, &victim] {
        std::fs::create_dir(d).unwrap();
    }
    let escape = format!("../../../../../../..{}", victim.join("pwned.so").display());
    let absolute = victim.join("abs.so").display().to_string();
    let mut b = RecordingBuilder::new();
    b.module(1, &escape, Some(vec![0xab; 20]))
        .module(2, &absolute, None)
        .module(3, "/proc/self/cwd/../victim/x.so", None)
        .module(
            4,
            &format!("{}/../victim/\n<script>.so", tmp.display()),
            None,
        )
        .stack(16, &[(1, 0x1234), (2, 0x10), (3, 0x20), (4, 0x30)]);
    for i in 1..=40u64 {
        b.snapshot(&[(16, 1000 * i, i)]);
    }
    // Bundles for the hostile modules: an "ELF file" and a symbol table.
    b.bundle(1, BundleContent::ElfFile, b"\x7fELF not really".to_vec())
        .bundle(2, BundleContent::SymbolTable, vec![0xff; 64])
        .end(EndReason::Duration);
    let recording = root.path().join("hostile.zst");
    std::fs::write(&recording, b.to_bytes()).unwrap();

    let o = Command::new(env!("CARGO_BIN_EXE_leak-report"))
        .current_dir(&work)
        .env("TMPDIR", &tmp)
        .arg(&recording)
        .args([
            "-o",
            "report.html",
            "--json",
            "out.json",
            "--folded",
            "out.folded",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    // Exactly the outputs asked for; nothing where the paths point; the scratch folder (which
    // held the bundled "ELF") is gone.
    assert_eq!(tree(&work), ["out.folded", "out.json", "report.html"]);
    assert!(tree(&victim).is_empty(), "{:?}", tree(&victim));
    assert!(tree(&tmp).is_empty(), "{:?}", tree(&tmp));
    // The damaged symbol table is reported, not trusted.
    let json = std::fs::read_to_string(work.join("out.json")).unwrap();
    assert!(json.contains("bundled symbols of"), "{json}");
}
