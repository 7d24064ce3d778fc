//! Kernel-mode recordings (format 1.1) built in code: kernel frames are named from the
//! recording's saved kernel symbols only, marked as kernel stacks in JSON and folded output,
//! and a steadily growing kernel stack is a continuous leak.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
use leak_format::{AllocKind, EndReason, Losses, RecordingBuilder, StackStats, TargetMode};
use leak_report::analysis::{analyze, Detector, Settings};
use leak_report::output::{folded, json, FoldedWeight};
use leak_report::symbolize::{Options, Resolver};
use leak_report::{detect, input, series};

const FILE_SIZE: u64 = 256;

fn kernel_recording(dir: &std::path::Path) -> std::path::PathBuf {
    let mut b = RecordingBuilder::new();
    b.header_mut().target.mode = TargetMode::Kernel;
    b.header_mut().target.command_line = vec!["--pid".into(), "42".into()];
    // Return addresses inside kmem_cache_alloc_noprof's caller chain; each saved with the
    // entry after it, as the recorder does.
    b.kernel_symbols("6.18.0", &[])
        .kernel_symbols(
            "6.18.0",
            &[
                (0xffff_ffff_8163_6000, "kmem_cache_alloc_noprof"),
                (0xffff_ffff_8163_7000, "kmem_cache_free"),
                (0xffff_ffff_816b_b390, "alloc_empty_file"),
                (0xffff_ffff_816b_b4a0, "alloc_file"),
                (0xffff_ffff_816d_0000, "path_openat"),
                (0xffff_ffff_816d_1000, "do_filp_open"),
                (0xffff_ffff_8161_f000, "__alloc_frozen_pages_noprof"),
                (0xffff_ffff_8161_f800, "alloc_pages_mpol"),
                (0xffff_ffff_8158_9000, "__filemap_get_folio"),
                (0xffff_ffff_8158_9800, "filemap_add_folio"),
            ],
        )
        .kernel_stack(
            16,
            &[
                0xffff_ffff_8163_6237,
                0xffff_ffff_816b_b3cc,
                0xffff_ffff_816d_0620,
            ],
        );
    // A log file's page cache, growing as steadily: reclaimable, not a leak.
    b.kernel_stack(17, &[0xffff_ffff_8161_f42b, 0xffff_ffff_8158_9123]);
    for i in 1..=40u64 {
        b.snapshot_with(
            vec![
                StackStats {
                    stack: 16,
                    kind: AllocKind::KernelSlab,
                    alloc_bytes: 10 * i * FILE_SIZE,
                    alloc_count: 10 * i,
                    free_bytes: 0,
                    free_count: 0,
                },
                StackStats {
                    stack: 17,
                    kind: AllocKind::KernelPage,
                    alloc_bytes: 4096 * i,
                    alloc_count: i,
                    free_bytes: 0,
                    free_count: 0,
                },
            ],
            // Expected in kernel mode (free paths without a tracepoint): not lost data, but
            // said for what it does to the stacks.
            Losses {
                missed_free: i,
                ..Losses::default()
            },
        );
    }
    b.end(EndReason::Duration);
    let path = dir.join("kernel.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    path
}

/// The analysis of `rec` as leak-report makes it by default (kernel frames named from the
/// recording's own symbols).
fn analyzed(rec: &series::Recording) -> leak_report::analysis::Analysis {
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default())
        .with_kernel_symbols(&rec.kernel_symbols);
    let settings = Settings {
        detector: Detector::Robust,
        detect: detect::Config::default(),
        memory_limit: None,
    };
    analyze(rec, &resolver, &settings)
}

#[test]
fn kernel_stacks_are_named_from_the_recording_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let rec = input::read(&kernel_recording(dir.path()), series::DEFAULT_CAP).unwrap();
    assert_eq!(rec.kernel_release.as_deref(), Some("6.18.0"));
    let mut a = analyzed(&rec);
    assert!(
        !a.warnings.iter().any(|w| w.contains("lost data")),
        "{:?}",
        a.warnings
    );
    assert!(
        a.warnings.iter().any(|w| w.starts_with(
            "40 kernel objects freed without a free event (in bulk: kfree_rcu batches, \
             kfree_bulk, slab sheaves) stayed counted as outstanding until their address was \
             allocated again"
        )),
        "{:?}",
        a.warnings
    );
    // The page cache's stack is a continuous leak by its shape, and left out as page cache.
    let pages = a.stacks.iter().find(|s| s.id == 17).unwrap();
    assert_eq!(pages.verdict, leak_report::detect::Verdict::ContinuousLeak);
    leak_report::analysis::leave_out_cache_pages(&mut a);
    assert_eq!((a.cache_pages, a.cache_pages_bytes), (1, 40 * 4096));
    assert_eq!(a.stacks.len(), 1);
    assert_eq!(a.leak_rate, a.stacks[0].detection.rate);
    let said = leak_report::output::left_out(&a).unwrap();
    assert!(said.contains("1 kernel stack(s) of page-cache or slab pages holding 160.0 KiB"));
    let doc: serde_json::Value = serde_json::from_str(&json(&rec, &a)).unwrap();
    assert_eq!(doc["summary"]["cache_page_stacks"], 1);
    assert_eq!(doc["summary"]["cache_page_bytes"], 40 * 4096);
    assert_eq!(doc["recording"]["target"]["mode"], "kernel");
    let s = &doc["stacks"][0];
    assert_eq!(s["kind"], "kernel_slab");
    assert_eq!(s["kernel"], true);
    assert_eq!(s["verdict"], "continuous_leak", "{s:#}");
    assert_eq!(s["outstanding_count"], 400);
    assert_eq!(s["outstanding_bytes"], 400 * FILE_SIZE);
    let names: Vec<&str> = s["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["kmem_cache_alloc_noprof", "alloc_empty_file", "path_openat"]
    );
    assert_eq!(s["frames"][1]["module"], "[kernel]");
    // Offsets in the function, never the address (KASLR).
    assert_eq!(s["frames"][1]["offset"], 0x3c);
    let f = folded(&a, FoldedWeight::Outstanding);
    assert_eq!(
        f.trim(),
        format!(
            "path_openat_[k];alloc_empty_file_[k];kmem_cache_alloc_noprof_[k] {}",
            400 * FILE_SIZE
        )
    );
}

/// A `--pid` kernel recording of a process that leaked files until it exited: its exit closed
/// them all, and the recorder's last snapshot, taken after the exit, shows nothing
/// outstanding. That snapshot is left out of the verdicts, which judge the process as it ran:
/// the leak is found, and the JSON gives what stayed after the exit (0 here). Before, it was
/// "No continuous growth found", and --fail-on-leak passed every descriptor leak of a test
/// that exits. The same recording stopped by leak-record (not by the exit) is judged whole.
#[test]
fn a_process_that_leaked_files_until_it_exited_is_judged_as_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let build = |end: EndReason| {
        let mut b = RecordingBuilder::kernel_pid(42);
        b.process(
            42,
            "fileleak",
            &["./fileleak", "leak", "--token=s3cret"],
            "/opt/fileleak",
        );
        b.kernel_symbols(
            "6.18.0",
            &[
                (0xffff_ffff_8110_0000, "__send_signal_locked"),
                (0xffff_ffff_816b_b390, "alloc_empty_file"),
            ],
        )
        .kernel_stack(16, &[0xffff_ffff_816b_b3cc])
        .kernel_stack(18, &[0xffff_ffff_8110_0040]);
        let files = |i: u64, freed: u64| StackStats {
            stack: 16,
            kind: AllocKind::KernelSlab,
            alloc_bytes: 10 * i * FILE_SIZE,
            alloc_count: 10 * i,
            free_bytes: freed * FILE_SIZE,
            free_count: freed,
        };
        for i in 1..=40u64 {
            b.snapshot_with(vec![files(i, 0)], Losses::default());
        }
        // After the exit: every file closed, and the signal to its parent queued.
        let signal = StackStats {
            stack: 18,
            kind: AllocKind::KernelSlab,
            alloc_bytes: 80,
            alloc_count: 1,
            free_bytes: 0,
            free_count: 0,
        };
        b.snapshot_with(vec![files(40, 400), signal], Losses::default());
        let name = format!("{end:?}.zst").replace(['{', '}', ' ', ':', '(', ')'], "");
        b.end(end);
        let path = dir.path().join(name);
        std::fs::write(&path, b.to_bytes()).unwrap();
        path
    };
    let judge = |path: &std::path::Path| {
        let rec = input::read(path, series::DEFAULT_CAP).unwrap();
        let a = analyzed(&rec);
        (rec, a)
    };
    let exited = build(EndReason::TargetExited {
        code: Some(0),
        signal: None,
    });
    let (rec, a) = judge(&exited);
    // The snapshots analyzed; the one after the exit apart.
    assert_eq!(rec.snapshots, 40);
    assert_eq!(rec.after_exit.as_ref().map(|x| x.snapshots), Some(1));
    assert_eq!(
        a.stacks.len(),
        1,
        "the stack first seen after the exit has no series"
    );
    let s = &a.stacks[0];
    assert_eq!(s.verdict, leak_report::detect::Verdict::ContinuousLeak);
    assert_eq!(s.outstanding_bytes, 400 * FILE_SIZE);
    assert_eq!(s.after_exit_bytes, Some(0));
    assert!(
        a.warnings.iter().any(|w| w
            == ("PID 42 exited, and the snapshot 205.0 s into the recording, after its exit, is \
             left out of the verdicts and figures, which judge the process as it ran: its exit \
             freed 100.0 KiB of the 100.0 KiB outstanding before it, and 80 B on 1 stack \
             stayed allocated after it (page cache and slab pages apart; JSON: \
             after_exit_bytes), 1 of them first seen after the exit: stack 18 \
             (__send_signal_locked)")),
        "{:?}",
        a.warnings
    );
    let doc: serde_json::Value = serde_json::from_str(&json(&rec, &a)).unwrap();
    assert_eq!(doc["stacks"][0]["after_exit_bytes"], 0);
    // The text and the report give it per stack too.
    let text = leak_report::output::text(&rec, &a, 5);
    let line = text.lines().find(|l| l.contains("from stack 16")).unwrap();
    assert!(line.ends_with("; 0 B after the exit"), "{line}");
    let opts = leak_report::html::HtmlOptions {
        top: 5,
        timestamp: None,
    };
    let html = leak_report::html::render(&rec, &a, &opts).unwrap();
    assert_eq!(html.matches("0 B after the exit</small>").count(), 1);
    // Each names the process by its Process record (format 1.6), not by its PID alone.
    let named = "PID 42 (./fileleak leak --token=s3cret) on ";
    assert!(
        text.starts_with(&format!("Kernel recording of {named}")),
        "{text}"
    );
    assert!(html.contains("<title>leak-report: ./fileleak leak --token=s3cret</title>"));
    assert!(html.contains("PID 42: ./fileleak leak --token=s3cret</"));
    let process = &doc["recording"]["process"];
    assert_eq!(process["name"], "fileleak");
    assert_eq!(process["command_line"][2], "--token=s3cret");
    assert_eq!(process["exe"], "/opt/fileleak");
    // A redacted copy keeps the filters and the process's name, not its arguments.
    let redacted = dir.path().join("redacted.zst");
    leak_report::redact::redact(exited.to_str().unwrap(), redacted.to_str().unwrap()).unwrap();
    let (rec, a) = judge(&redacted);
    let p = rec.process.as_ref().unwrap();
    assert_eq!(
        (p.pid, p.name.as_str(), p.exe.as_str()),
        (42, "fileleak", "/opt/fileleak")
    );
    assert_eq!(p.command_line, ["fileleak"]);
    assert_eq!(
        rec.header.as_ref().unwrap().target.command_line,
        ["--pid", "42"]
    );
    let text = leak_report::output::text(&rec, &a, 5);
    assert!(text.starts_with("Kernel recording of PID 42 (fileleak) on "));
    // Filters beside --pid are said after the name.
    let mut rec = rec;
    let filters = &mut rec.header.as_mut().unwrap().target.command_line;
    filters.extend(["--cache".to_string(), "filp".to_string()]);
    let text = leak_report::output::text(&rec, &a, 5);
    assert!(text.starts_with("Kernel recording of PID 42 (fileleak) with --cache filp on "));
    assert!(!leak_report::html::render(&rec, &a, &opts)
        .unwrap()
        .contains("s3cret"));
    // A snapshot missing from the middle: the one after the exit is still the one left out
    // (told by its number, not by counting).
    let bytes = std::fs::read(&exited).unwrap();
    let mut reader = leak_format::Reader::new(&bytes[..]).unwrap();
    let records: Vec<leak_format::Record> = std::iter::from_fn(|| reader.next_record())
        .map(Result::unwrap)
        .filter(|r| !matches!(r, leak_format::Record::Snapshot(s) if s.seq == 20))
        .collect();
    let leak_format::Record::Header(h) = &records[0] else {
        panic!("no header first")
    };
    let mut w = leak_format::Writer::new(Vec::new(), h).unwrap();
    for r in &records[1..] {
        w.write(r).unwrap();
    }
    let gap = dir.path().join("gap.zst");
    std::fs::write(&gap, w.into_inner()).unwrap();
    let (rec, a) = judge(&gap);
    assert_eq!((rec.snapshots, rec.order.missing_snapshots), (39, 1));
    assert_eq!(
        a.stacks[0].verdict,
        leak_report::detect::Verdict::ContinuousLeak
    );
    assert_eq!(a.stacks[0].after_exit_bytes, Some(0));
    // Stopped by leak-record with the process alive: the last snapshot is the process's, and
    // it holds nothing.
    let (rec, a) = judge(&build(EndReason::Signal(2)));
    assert!(rec.after_exit.is_none());
    let s = a.stacks.iter().find(|s| s.id == 16).unwrap();
    assert_ne!(s.verdict, leak_report::detect::Verdict::ContinuousLeak);
    assert_eq!((s.outstanding_bytes, s.after_exit_bytes), (0, None));
    assert!(!leak_report::output::text(&rec, &a, 5).contains("after the exit"));
}

/// A `--pid` kernel target that exited before the first interval: the recording's one snapshot
/// comes after the exit, and holds nothing. No verdict can judge the process, so no gate may
/// pass it: the gates' "cannot judge" (exit 2), not "No continuous growth found".
#[test]
fn a_process_that_exited_before_the_first_snapshot_is_not_judged_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = RecordingBuilder::kernel_pid(42);
    b.kernel_symbols("6.18.0", &[(0xffff_ffff_816b_b390, "alloc_empty_file")])
        .kernel_stack(16, &[0xffff_ffff_816b_b3cc]);
    let closed = StackStats {
        stack: 16,
        kind: AllocKind::KernelSlab,
        alloc_bytes: 100 * FILE_SIZE,
        alloc_count: 100,
        free_bytes: 100 * FILE_SIZE,
        free_count: 100,
    };
    b.snapshot_with(vec![closed], Losses::default());
    b.end(EndReason::TargetExited {
        code: Some(0),
        signal: None,
    });
    let path = dir.path().join("short.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    let rec = input::read(&path, series::DEFAULT_CAP).unwrap();
    assert_eq!(rec.snapshots, 0);
    let a = analyzed(&rec);
    assert!(a.unjudged, "{:?}", a.warnings);
    assert!(leak_report::analysis::cannot_vouch(&rec, &a).is_some());
}

/// A `--kernel --pid` recording of a kernel thread: no command line and no executable, named
/// `[name]` as ps names it, and redacted without gaining a command line.
#[test]
fn a_kernel_thread_is_named_as_ps_names_it_and_stays_so_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = RecordingBuilder::kernel_pid(7);
    b.process(7, "kworker/0:1", &[], "");
    b.snapshot_with(Vec::new(), Losses::default());
    b.end(EndReason::Duration);
    let path = dir.path().join("kthread.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    let redacted = dir.path().join("redacted.zst");
    leak_report::redact::redact(path.to_str().unwrap(), redacted.to_str().unwrap()).unwrap();
    for p in [&path, &redacted] {
        let rec = input::read(p, series::DEFAULT_CAP).unwrap();
        assert_eq!(
            rec.process.as_ref().unwrap().command_line,
            Vec::<String>::new()
        );
        let text = leak_report::output::text(&rec, &analyzed(&rec), 5);
        assert!(
            text.starts_with("Kernel recording of PID 7 ([kworker/0:1]) on "),
            "{text}"
        );
    }
    // Redacted without an executable: the name stands for the command line; with neither,
    // nothing does.
    for (name, redacted_argv) in [("x", vec!["x".to_string()]), ("", Vec::new())] {
        let mut b = RecordingBuilder::kernel_pid(8);
        b.process(8, name, &["./x", "--secret"], "");
        b.snapshot_with(Vec::new(), Losses::default());
        let (from, to) = (dir.path().join("x.zst"), dir.path().join("x-redacted.zst"));
        let _ = std::fs::remove_file(&to);
        std::fs::write(&from, b.to_bytes()).unwrap();
        leak_report::redact::redact(from.to_str().unwrap(), to.to_str().unwrap()).unwrap();
        let rec = input::read(&to, series::DEFAULT_CAP).unwrap();
        assert_eq!(rec.process.unwrap().command_line, redacted_argv, "{name}");
    }
    // What could not be read at all (a process gone): said so, not shown as a kernel thread.
    let gone = leak_format::Process {
        pid: 9,
        ..Default::default()
    };
    assert_eq!(leak_report::output::process_label(&gone), "name unknown");
    let exe_only = leak_format::Process {
        exe: "/srv/svc".into(),
        ..gone
    };
    assert_eq!(leak_report::output::process_label(&exe_only), "/srv/svc");
}
