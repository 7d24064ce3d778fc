//! The built leak-report binary on committed recordings: outputs, gates, exit codes, and the
//! JSON document against docs/json.md. No root, no BPF.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use leak_format::{EndReason, TargetMode};

const BIN: &str = env!("CARGO_BIN_EXE_leak-report");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demo() -> String {
    root()
        .join("fixtures/recordings/demo.zst")
        .display()
        .to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON document of the demo recording, analyzed with `args`.
fn json(args: &[&str]) -> serde_json::Value {
    json_at(&demo(), args)
}

/// Whether a warning of JSON document `doc` contains `needle`.
fn warns(doc: &serde_json::Value, needle: &str) -> bool {
    doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains(needle))
}

/// The JSON document of the recording at `path`, analyzed with `args`.
fn json_at(path: &str, args: &[&str]) -> serde_json::Value {
    let o = run(&[&[path, "--json", "-"], args].concat());
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_demo_names_its_leak_with_verdict_and_rate() {
    let o = run(&[&demo()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("1 continuous leak growing"), "{text}");
    assert!(
        text.contains("leak_per_request (/work/main/fixtures/src/leaky.c:388)"),
        "{text}"
    );
    let doc = json(&[]);
    let first = &doc["stacks"][0];
    assert_eq!(first["verdict"], "continuous_leak");
    assert_eq!(first["frames"][0]["function"], "leak_per_request");
    // The fixture leaks 512 bytes 20 times a second: 10,240 B/s, allowing for the 50 ms sleep's
    // overshoot (requests take slightly longer than 50 ms).
    let rate = first["rate_bytes_per_sec"].as_f64().unwrap();
    let ci = &first["rate_ci"];
    assert!(rate > 9_500.0 && rate < 10_300.0, "{rate}");
    assert!(ci[0].as_f64().unwrap() <= rate && rate <= ci[1].as_f64().unwrap());
    assert_eq!(first["mean_object_size"].as_f64(), Some(512.0));
    assert_eq!(first["outstanding_bytes"].as_u64().unwrap() % 512, 0);
    assert_eq!(doc["summary"]["continuous_leaks"], 1);
    // Balanced churn is never a leak.
    let churn = doc["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frames"][0]["function"] == "handle_request")
        .unwrap();
    assert_eq!(churn["outstanding_bytes"], 0);
    assert_ne!(churn["verdict"], "continuous_leak");
}

fn paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                paths(v, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            let p = format!("{prefix}[]");
            out.insert(p.clone());
            for v in a {
                if v.is_object() || v.is_array() {
                    paths(v, &p, out);
                }
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn json_matches_its_documentation_both_ways() {
    let doc_text = std::fs::read_to_string(root().join("docs/json.md")).unwrap();
    let documented: BTreeSet<String> = doc_text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let mut actual = BTreeSet::new();
    paths(&json(&[]), "", &mut actual);
    // `recording.ended` is null for killed recorders; the demo ended cleanly, so all are present.
    // `recording.process` is null but in `--kernel --pid` recordings and after an exec: one of
    // those too.
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel-pid.zst");
    let mut b = leak_format::RecordingBuilder::kernel_pid(42);
    b.process(42, "svc", &["./svc"], "/srv/svc");
    b.snapshot_with(Vec::new(), leak_format::Losses::default());
    b.end(EndReason::Duration);
    std::fs::write(&kernel, b.to_bytes()).unwrap();
    let process = json_at(kernel.to_str().unwrap(), &[]);
    assert_eq!(process["recording"]["process"]["exe"], "/srv/svc");
    paths(&process, "", &mut actual);
    let undocumented: Vec<_> = actual.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&actual).collect();
    assert!(
        undocumented.is_empty(),
        "fields missing from docs/json.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "documented fields not in the output: {missing:?}"
    );
    assert_eq!(json(&[])["schema_version"], 1);
}

#[test]
fn gates_set_the_exit_status() {
    let d = demo();
    assert_eq!(run(&[&d, "--fail-on-leak"]).status.code(), Some(1));
    let o = run(&[&d, "--fail-on-leak", "--json", "/dev/null"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("gate failed: 1 continuous leak"),
        "{}",
        stderr(&o)
    );
    assert_eq!(run(&[&d, "--max-rate", "1K"]).status.code(), Some(1));
    assert_eq!(run(&[&d, "--max-rate", "1M"]).status.code(), Some(0));
    assert_eq!(run(&[&d, "--max-outstanding", "1M"]).status.code(), Some(1));
    assert_eq!(run(&[&d, "--max-outstanding", "1G"]).status.code(), Some(0));
    assert_eq!(run(&[&d]).status.code(), Some(0), "no gate asked: 0");
}

/// A recording too short for any verdict (a 10 s test at the default 5 s interval) makes a leak
/// gate exit 2, not pass; it is said in every output; the size gate still judges it.
#[test]
fn a_leak_gate_on_a_recording_too_short_to_judge_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
    for s in 1..=8u64 {
        b.snapshot(&[(16, 4096 * s, s)]);
    }
    std::fs::write(&path, b.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    for gate in [&["--fail-on-leak"][..], &["--max-rate", "1K"]] {
        let o = run(&[&[p], gate].concat());
        assert_eq!(o.status.code(), Some(2), "{gate:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("cannot judge this recording"), "{err}");
        assert!(err.contains("samples a verdict needs"), "{err}");
    }
    let o = run(&[p]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("no stack has the 12 usable samples"),
        "{text}"
    );
    // Its rate is unknown, not zero; and it grew from the first snapshot: the recording is
    // short, not the leak late.
    assert!(text.contains("insufficient data, rate unknown"), "{text}");
    assert!(
        text.contains("needs 12: the recording is too short to judge it; record for longer\n"),
        "{text}"
    );
    assert!(!text.contains("started late"), "{text}");
    let doc = json_at(p, &[]);
    let stack = &doc["stacks"][0];
    for key in ["rate_bytes_per_sec", "rate_ci", "kendall_tau", "p_value"] {
        assert!(stack[key].is_null(), "{key}: {stack:#}");
    }
    assert!(warns(&doc, "no leak can be found"), "{}", doc["warnings"]);
    assert_eq!(run(&[p, "--max-outstanding", "1K"]).status.code(), Some(1));
    // The demo (91 snapshots) is judged.
    assert_eq!(run(&[&demo(), "--fail-on-leak"]).status.code(), Some(1));
    // A moment's recording (leak-record -d 0.0001s: one snapshot, no stack yet) passes no gate
    // either: it judged nothing.
    let moment = dir.path().join("moment.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.snapshot(&[]).end(EndReason::Duration);
    std::fs::write(&moment, b.to_bytes()).unwrap();
    let o = run(&[moment.to_str().unwrap(), "--fail-on-leak"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot judge this recording"));
    // Nor 12 snapshots of nothing: after the warm-up of the first, no stack could have had
    // the 12 samples a verdict needs. 13 are judged.
    for (snapshots, code) in [(12, 2), (13, 0)] {
        let quiet = dir.path().join(format!("quiet{snapshots}.zst"));
        let mut b = leak_format::RecordingBuilder::new();
        for _ in 0..snapshots {
            b.snapshot(&[]);
        }
        b.end(EndReason::Duration);
        std::fs::write(&quiet, b.to_bytes()).unwrap();
        let o = run(&[quiet.to_str().unwrap(), "--fail-on-leak"]);
        assert_eq!(o.status.code(), Some(code), "{snapshots}: {}", stderr(&o));
    }
    // Stacks holding nothing at the end need no verdict: a churn loop seen in 8 snapshots (it
    // appeared late in a recording that was long enough) does not stop the gate.
    let churn = dir.path().join("churn.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
    for _ in 0..12 {
        b.snapshot(&[]);
    }
    for s in 1..=8u64 {
        let stats = leak_format::StackStats {
            stack: 16,
            kind: leak_format::AllocKind::Heap,
            alloc_bytes: 4096 * s,
            alloc_count: s,
            free_bytes: 4096 * s,
            free_count: s,
        };
        b.snapshot_with(vec![stats], Default::default());
    }
    b.end(EndReason::Duration);
    std::fs::write(&churn, b.to_bytes()).unwrap();
    let o = run(&[churn.to_str().unwrap(), "--fail-on-leak"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("\nNo continuous growth found.\n"),
        "{}",
        stdout(&o)
    );
}

/// A program that frees at its exit what it leaked while it ran (an interpreter's finalization,
/// destructors): the snapshot taken at the exit is left out of the verdicts, which judge the
/// program as it ran, and said in every output. Before, the fall at the exit made the leak
/// `freed` and --fail-on-leak passed (a Python script that leaked 1.8 MiB in 40 s, in a user's
/// trial). The same fall after a run too short to judge on its own, or an exit that freed
/// nothing, is the run's last point, as before.
#[test]
fn a_leak_freed_by_the_programs_teardown_is_judged_as_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let build = |name: &str, running: u64, teardown_frees: bool| {
        let mut b = leak_format::RecordingBuilder::new();
        b.module(1, "/usr/bin/svc", None)
            .stack(16, &[(1, 0x1000)])
            .stack(17, &[(1, 0x2000)]);
        let leak = |s: u64, freed: u64| leak_format::StackStats {
            stack: 16,
            kind: leak_format::AllocKind::Heap,
            alloc_bytes: 4096 * s,
            alloc_count: s,
            free_bytes: 4096 * freed,
            free_count: freed,
        };
        let kept = |s: u64| leak_format::StackStats {
            stack: 17,
            kind: leak_format::AllocKind::Heap,
            alloc_bytes: 1000 + s,
            alloc_count: 1,
            free_bytes: s,
            free_count: 0,
        };
        for s in 1..=running {
            b.snapshot_with(vec![leak(s, 0), kept(s)], Default::default());
        }
        let last = running + 1;
        let freed = if teardown_frees { last } else { 0 };
        b.snapshot_with(vec![leak(last, freed)], Default::default());
        b.end(EndReason::TargetExited {
            code: Some(0),
            signal: None,
        });
        let path = dir.path().join(name);
        std::fs::write(&path, b.to_bytes()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let torn = build("torn.zst", 20, true);
    let o = run(&[&torn, "--fail-on-leak"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(
            "warning: PID 4242 exited, and the snapshot 105.0 s into the recording, at its exit, \
             is left out of the verdicts and figures, which judge the program as it ran: its \
             teardown (atexit handlers, destructors, an interpreter's finalization) freed 80.0 \
             KiB of the 81.0 KiB outstanding before it, and 1000 B on 1 stack was still \
             allocated at the exit (JSON: after_exit_bytes)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("80.0 KiB in 20 allocations from stack 16: continuous leak"),
        "{text}"
    );
    assert!(text.contains("; 0 B at the exit\n"), "{text}");
    let doc = json_at(&torn, &[]);
    assert_eq!(doc["recording"]["snapshots"], 20, "{doc:#}");
    let leak = &doc["stacks"][0];
    assert_eq!(
        (
            &leak["verdict"],
            &leak["outstanding_bytes"],
            &leak["after_exit_bytes"]
        ),
        (&"continuous_leak".into(), &81920.into(), &0.into()),
        "{leak:#}"
    );
    assert_eq!(doc["stacks"][1]["after_exit_bytes"], 1000, "{doc:#}");
    let html = dir.path().join("torn.html");
    let o = run(&[&torn, "-o", html.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let html = std::fs::read_to_string(html).unwrap();
    assert_eq!(html.matches("<small>0 B at the exit</small>").count(), 1);
    // 12 snapshots before the fall: not enough to judge without it; and an exit that freed
    // nothing: the last point of the run.
    for (name, running, frees) in [("short.zst", 12, true), ("kept.zst", 20, false)] {
        let path = build(name, running, frees);
        let doc = json_at(&path, &[]);
        assert_eq!(doc["recording"]["snapshots"], running + 1, "{name}");
        let stacks = doc["stacks"].as_array().unwrap();
        let leak = stacks.iter().find(|s| s["id"] == 16).unwrap();
        assert!(leak["after_exit_bytes"].is_null(), "{name}: {leak:#}");
        let verdict = if frees { "freed" } else { "continuous_leak" };
        assert_eq!(leak["verdict"], verdict, "{name}: {leak:#}");
        assert!(!stdout(&run(&[&path])).contains("at its exit"), "{name}");
    }
}

/// A binary without a build ID is checked by its size: one of another size at the recorded
/// path (rebuilt since; in a user's trial, every frame was named after the wrong function) is
/// not used, and said; one of the recorded size is.
#[test]
fn a_binary_without_a_build_id_rebuilt_since_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_leak-report");
    let size = std::fs::metadata(exe).unwrap().len();
    for (recorded, used) in [(size + 696, false), (size, true)] {
        let mut b = leak_format::RecordingBuilder::new();
        b.module_of_size(1, exe, recorded).stack(16, &[(1, 0x1000)]);
        for s in 1..=20u64 {
            b.snapshot(&[(16, 4096 * s, s)]);
        }
        b.end(EndReason::Duration);
        let path = dir.path().join(format!("{recorded}.zst"));
        std::fs::write(&path, b.to_bytes()).unwrap();
        let doc = json_at(path.to_str().unwrap(), &[]);
        let said = format!(
            "{exe} is {size} bytes, the one recorded was {recorded} (neither has a build ID to \
             tell them apart): not used"
        );
        let warnings = &doc["warnings"];
        assert_eq!(warns(&doc, &said), !used, "{warnings:#}");
        assert_eq!(warns(&doc, "no usable file"), !used, "{warnings:#}");
    }
}

/// A recording that does not cover the whole run (no end record: the recorder was killed, by
/// the OOM killer say, or is still running; or it stopped on an error) is analyzed, but no leak
/// gate passes on it: in a user's trial, a recorder killed mid-test passed --fail-on-leak.
#[test]
fn a_leak_gate_does_not_pass_an_incomplete_recording() {
    let dir = tempfile::tempdir().unwrap();
    let ends = [
        (None, Some(2)),
        (Some(EndReason::Error("cannot write".into())), Some(2)),
        (Some(EndReason::Duration), Some(0)),
    ];
    for (i, (end, code)) in ends.into_iter().enumerate() {
        let mut b = leak_format::RecordingBuilder::new();
        b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
        for _ in 0..40 {
            b.snapshot(&[(16, 4096, 1)]);
        }
        let error = matches!(end, Some(EndReason::Error(_)));
        if let Some(end) = end {
            b.end(end);
        }
        let path = dir.path().join(format!("{i}.zst"));
        std::fs::write(&path, b.to_bytes()).unwrap();
        let o = run(&[path.to_str().unwrap(), "--fail-on-leak"]);
        assert_eq!(o.status.code(), code, "{i}: {}", stderr(&o));
        if code == Some(2) {
            let why = if error {
                "the recorder stopped on an error (cannot write), so the rest of the run was not \
                 seen"
            } else {
                "the recording has no end record (the recorder was killed, or is still running), \
                 so the rest of the run was not seen"
            };
            assert!(stderr(&o).contains(why), "{i}: {}", stderr(&o));
            assert!(
                stdout(&o).contains(
                    "No continuous leak found in what was recorded, but the recording is \
                     incomplete"
                ),
                "{i}: {}",
                stdout(&o)
            );
        }
        // The size gate judges what it holds.
        let budget = run(&[path.to_str().unwrap(), "--max-outstanding", "1K"]);
        assert_eq!(budget.status.code(), Some(1), "{i}");
    }
}

/// Anonymous memory that grows much more than the traced allocations is warned of, with
/// --mmap named when the recording has no mmap probes; growth the traced allocations account
/// for is not.
#[test]
fn memory_the_probes_do_not_see_growing_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mib = 1u64 << 20;
    for (traced_per_snapshot, mmap, warned) in
        [(4096, false, true), (4096, true, true), (mib, false, false)]
    {
        let mut b = leak_format::RecordingBuilder::new();
        b.header_mut().config.mmap = mmap;
        b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
        for s in 1..=40u64 {
            b.snapshot(&[(16, traced_per_snapshot * s, s)])
                .memory(leak_format::ProcMemory {
                    rss: (10 + s) * mib,
                    rss_anon: (8 + s) * mib,
                    rss_file: 2 * mib,
                    swap: 0,
                });
        }
        b.end(EndReason::Duration);
        let path = dir.path().join(format!("{traced_per_snapshot}-{mmap}.zst"));
        std::fs::write(&path, b.to_bytes()).unwrap();
        let text = stdout(&run(&[path.to_str().unwrap()]));
        let said = "warning: the target's anonymous memory (RssAnon and swap) grew 39.0 MiB in \
                    195 s, while the traced allocations grew 156.0 KiB: memory the probes do not \
                    see is growing (";
        assert_eq!(text.contains(said), warned, "{text}");
        assert_eq!(
            text.contains("(record with --mmap)"),
            warned && !mmap,
            "{text}"
        );
        assert!(!warned || !text.contains("traced allocations grew 39.0 MiB"));
    }
}

/// A target killed by a signal (a crash) is said in every output, with the signal's name; its
/// command line is quoted as a shell would take it back.
#[test]
fn a_target_killed_by_a_signal_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = leak_format::RecordingBuilder::new();
    b.header_mut().target.command_line = vec![
        "python3".into(),
        "-c".into(),
        "import os\nos.abort()".into(),
        "".into(),
    ];
    b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
    for s in 1..=3u64 {
        b.snapshot(&[(16, 4096 * s, s)]);
    }
    b.end(EndReason::TargetExited {
        code: None,
        signal: Some(11),
    });
    let path = dir.path().join("crash.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    let text = stdout(&run(&[path.to_str().unwrap()]));
    assert!(
        text.starts_with("Recording of PID 4242 (python3 -c $'import os\\nos.abort()' '') on "),
        "{text}"
    );
    assert!(
        text.contains(
            "warning: PID 4242 was killed by signal 11 (SIGSEGV) 15.0 s into the recording (a \
             crash, or a kill): the recording ends there\n"
        ),
        "{text}"
    );
    let doc = json_at(path.to_str().unwrap(), &[]);
    assert!(warns(&doc, "(SIGSEGV)"));
}

/// A stack still growing, more slowly (`decelerating_growth`: a cache still filling) passes
/// the gates, but the headline is no all-clear: in a user's trial, "No continuous growth found"
/// stood above a cache growing 247 KiB/s.
#[test]
fn growth_that_slows_is_no_all_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
    // ln(1 + t/10 s) MiB, with a deterministic wobble of a KiB.
    for s in 1..=720u64 {
        let t = s as f64 * 5.0;
        let wobble = if s % 2 == 0 { 1024.0 } else { -1024.0 };
        let bytes = ((1.0 + t / 10.0).ln() * 1048576.0 + wobble).max(0.0) as u64;
        b.snapshot(&[(16, bytes, s)]);
    }
    b.end(EndReason::Duration);
    let path = dir.path().join("slowing.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let o = run(&[p, "--fail-on-leak"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(": decelerating growth, "), "{text}");
    assert!(
        text.contains(
            "\nNo continuous leak found, but 1 stack is still growing, more slowly (stack 16, "
        ),
        "{text}"
    );
    assert!(!text.contains("No continuous growth found"), "{text}");
    let html = dir.path().join("slowing.html");
    assert_eq!(
        run(&[p, "-o", html.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let html = std::fs::read_to_string(html).unwrap();
    assert!(html.contains("class=\"banner unsure\""));
}

/// A recording of stacks 16, 17, ... gaining `gains[i]` blocks of 100 B per 5 s snapshot, while
/// the process has freed `frees(s)` blocks it never saw allocated by snapshot `s`, in mode
/// `mode`.
fn turnover_recording(
    path: &Path,
    mode: TargetMode,
    gains: &[u64],
    frees: impl Fn(u64) -> u64,
    tweak: impl FnOnce(&mut leak_format::RecordingBuilder),
) {
    let mut b = leak_format::RecordingBuilder::new();
    b.header_mut().target.mode = mode;
    tweak(&mut b);
    b.module(1, "/usr/bin/svc", None);
    for i in 0..gains.len() as u32 {
        b.stack(16 + i, &[(1, 0x1000 + u64::from(i) * 0x100)]);
    }
    for s in 1..=60u64 {
        let stats = gains
            .iter()
            .zip(16..)
            .map(|(&gain, stack)| leak_format::StackStats {
                stack,
                kind: leak_format::AllocKind::Heap,
                alloc_bytes: 100 * gain * s,
                alloc_count: gain * s,
                free_bytes: 0,
                free_count: 0,
            })
            .collect();
        let losses = leak_format::Losses {
            unknown_free: frees(s),
            ..Default::default()
        };
        b.snapshot_with(stats, losses);
    }
    b.end(EndReason::Duration);
    std::fs::write(path, b.to_bytes()).unwrap();
}

/// In a recording attached to a running process (`-p`), stacks gaining blocks at most twice as
/// fast, together, as the process frees blocks allocated before the attach are turnover since
/// the attach (a cache renewing its entries looks so), not continuous leaks: the leak gates
/// exit 2. One stream of such frees excuses no more than that: the slowest stacks first, a leak
/// beyond it stays a leak. A started command's recording is judged as before, and one that
/// cannot count those frees alone (sampled, filtered by size) warns that it cannot tell.
#[test]
fn growth_that_frees_of_blocks_from_before_an_attach_explain_is_turnover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turnover.zst");
    let p = path.to_str().unwrap();
    let verdicts = |doc: &serde_json::Value| -> Vec<(u64, String)> {
        doc["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_u64().unwrap(),
                    s["verdict"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let turnover = "attach_turnover".to_string();
    let leak = "continuous_leak".to_string();
    // (mode, gains per snapshot, unknown frees per snapshot, verdicts, --fail-on-leak status)
    let cases = [
        (
            TargetMode::Attach,
            &[10][..],
            10,
            vec![(16, turnover.clone())],
            2,
        ),
        (
            TargetMode::Attach,
            &[10],
            6,
            vec![(16, turnover.clone())],
            2,
        ),
        (TargetMode::Attach, &[10], 4, vec![(16, leak.clone())], 1),
        (TargetMode::Command, &[10], 10, vec![(16, leak.clone())], 1),
        // A budget of 2 x 9 = 18 blocks per snapshot: the slower stack's 6 and the faster's 10
        // fit it together; at 7 frees (a budget of 14), only the slower one (17) does.
        (
            TargetMode::Attach,
            &[10, 6],
            9,
            vec![(16, turnover.clone()), (17, turnover.clone())],
            2,
        ),
        (
            TargetMode::Attach,
            &[10, 6],
            7,
            vec![(16, leak.clone()), (17, turnover.clone())],
            1,
        ),
    ];
    for (mode, gains, frees, want, code) in cases {
        turnover_recording(&path, mode, gains, |s| frees * s, |_| {});
        let case = format!("{mode:?}, gains {gains:?}, {frees} frees per snapshot");
        let doc = json_at(p, &[]);
        let mut got = verdicts(&doc);
        got.sort();
        assert_eq!(got, want, "{case}");
        let marked = want.iter().filter(|(_, v)| *v == turnover).count();
        assert_eq!(
            doc["summary"]["attach_turnovers"].as_u64(),
            Some(marked as u64),
            "{case}"
        );
        assert_eq!(
            warns(
                &doc,
                "blocks at most twice as fast as the process freed blocks allocated before the \
                 attach (stack "
            ),
            marked > 0,
            "{case}"
        );
        let o = run(&[p, "--fail-on-leak"]);
        assert_eq!(o.status.code(), Some(code), "{case}: {}", stderr(&o));
        assert_eq!(
            stdout(&o)
                .contains("(leaks first, then turnover since the attach, then by outstanding"),
            marked > 0,
            "{case}: {}",
            stdout(&o)
        );
        if marked == want.len() {
            assert!(
                stdout(&o).contains(&format!(
                    "\nNo continuous leak found, but {marked} growing stack{} may be turnover \
                     since the attach.\n",
                    if marked == 1 { "" } else { "s" }
                )),
                "{case}: {}",
                stdout(&o)
            );
            assert!(
                stderr(&o).contains("gained blocks at most twice as fast as the process freed"),
                "{case}: {}",
                stderr(&o)
            );
        }
    }
    // The reason, with the rates: 2.0 frees/s against this stack's 2.0 new blocks/s.
    turnover_recording(&path, TargetMode::Attach, &[10], |s| 10 * s, |_| {});
    assert_eq!(
        gate(&json_at(p, &[]), 16, "attach_turnover"),
        (
            false,
            "2.0 frees/s of blocks allocated before the attach in the last 40% >= 0.5 x 2.0 new \
             blocks/s (this stack's 2.0, with any slower one so marked): its growth may be \
             blocks replacing those"
                .to_string()
        )
    );
    // One burst of 600 such frees (a purge) in the last 40% is no steady rate of them: the
    // leak stays a leak.
    turnover_recording(
        &path,
        TargetMode::Attach,
        &[10],
        |s| if s >= 50 { 600 } else { 0 },
        |_| {},
    );
    assert_eq!(verdicts(&json_at(p, &[])), [(16, leak.clone())], "a burst");
    // Sampled, or filtered by size: the counter holds other frees or none; a leak stays a
    // leak, with a warning that it may be turnover.
    let sampled = |b: &mut leak_format::RecordingBuilder| {
        b.sampling(4096);
    };
    let filtered = |b: &mut leak_format::RecordingBuilder| {
        b.header_mut().config.min_size = Some(64);
    };
    for (what, tweak) in [
        (
            "sampled",
            &sampled as &dyn Fn(&mut leak_format::RecordingBuilder),
        ),
        ("filtered", &filtered),
    ] {
        turnover_recording(&path, TargetMode::Attach, &[10], |s| 10 * s, tweak);
        let doc = json_at(p, &[]);
        assert_eq!(verdicts(&doc), [(16, leak.clone())], "{what}");
        assert!(
            warns(
                &doc,
                "a continuous leak cannot be told from a cache renewing entries"
            ),
            "{what}: {}",
            doc["warnings"]
        );
        assert_eq!(
            doc["summary"]["unknown_free_rate_per_sec"],
            serde_json::Value::Null
        );
    }
}

/// An output is written whole or not at all: a write that fails (a full disk; here a file size
/// limit, `ulimit -f`) leaves the previous report as it was, and no cut file or scratch file
/// beside it. In a user's trial, a full disk left a cut report over a good one.
#[test]
fn a_failed_write_keeps_the_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.html");
    std::fs::write(&out, "the previous report").unwrap();
    let script = format!(
        "trap '' XFSZ; ulimit -f 8; exec '{}' '{}' -o '{}'",
        env!("CARGO_BIN_EXE_leak-report"),
        demo(),
        out.display()
    );
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!(
            "leak-report: cannot write {}: File too large",
            out.display()
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "the previous report"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["report.html"]);
    // Without the limit, it is replaced whole.
    assert_eq!(
        run(&[&demo(), "-o", out.to_str().unwrap()]).status.code(),
        Some(0)
    );
    assert!(std::fs::read_to_string(&out).unwrap().ends_with("</html>"));
}

/// An output that names an existing recording (`-o old.zst`, a typo) is refused, and the
/// recording left whole; a file that only looks like one at first is overwritten as any.
#[test]
fn an_output_never_overwrites_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.zst");
    std::fs::copy(demo(), &old).unwrap();
    let before = std::fs::read(&old).unwrap();
    let d = demo();
    for flag in ["-o", "--json", "--folded"] {
        let o = run(&[&d, flag, old.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert_eq!(
            stderr(&o),
            format!(
                "leak-report: {flag} {} is a leak-record recording, which the output would \
                 overwrite; write the output elsewhere (or delete the recording first)\n",
                old.display()
            )
        );
        assert_eq!(std::fs::read(&old).unwrap(), before, "{flag}");
    }
    // A named pipe is not opened to be looked at (that would wait for a writer): its reader
    // gets the JSON.
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    assert_eq!(
        run(&[&d, "--json", fifo.to_str().unwrap()]).status.code(),
        Some(0)
    );
    assert!(reader.join().unwrap().starts_with('{'));
    // The preamble's frame magic alone is not a recording.
    let other = dir.path().join("other.bin");
    std::fs::write(&other, &before[..12]).unwrap();
    assert_eq!(
        run(&[&d, "--json", other.to_str().unwrap()]).status.code(),
        Some(0)
    );
}

/// Stacks are listed as every output says: continuous leaks first, fastest first, then the
/// others by outstanding bytes (not by rate, which would put a small stack that grew late
/// above the largest holders and push those out of `--top`).
#[test]
fn stacks_are_ordered_leaks_first_then_by_outstanding_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None);
    for id in 16..=19 {
        b.stack(id, &[(1, 0x1000 * u64::from(id))]);
    }
    for s in 1..=40u64 {
        b.snapshot(&[
            // 1 MiB from the start, flat: the largest holder.
            (16, 1 << 20, 1),
            // Grows for 20 snapshots, then stops: a rate, but no leak.
            (17, 500 * s.min(20), s.min(20)),
            // Two steady leaks, 1 KB and 2 KB per snapshot.
            (18, 1000 * s, s),
            (19, 2000 * s, s),
        ]);
    }
    std::fs::write(&path, b.to_bytes()).unwrap();
    let doc = json_at(path.to_str().unwrap(), &[]);
    let order: Vec<(u64, &str)> = doc["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_u64().unwrap(), s["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order[..2],
        [(19, "continuous_leak"), (18, "continuous_leak")]
    );
    assert_eq!(order[2].0, 16, "{order:?}");
    assert_eq!(order[3].0, 17, "{order:?}");
    assert_ne!(order[3].1, "continuous_leak");
    // The text lists --top of them, and counts the rest.
    let o = run(&[path.to_str().unwrap(), "--top", "1"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("3 more stacks not listed, 1 of them a continuous leak"),
        "{text}"
    );
    assert!(doc["stacks"][3]["rate_bytes_per_sec"].as_f64().unwrap() > 0.0);
}

/// The `detail` of gate `name` of the stack with id `id` in a JSON document.
fn gate(doc: &serde_json::Value, id: u64, name: &str) -> (bool, String) {
    let stack = doc["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap();
    let g = stack["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap();
    (
        g["passed"].as_bool().unwrap(),
        g["detail"].as_str().unwrap().to_string(),
    )
}

#[test]
fn detector_and_summary_options_do_what_they_say() {
    // The demo: 91 snapshots; stack 17 leaks (p = 9.6e-13), 18 is a cache that filled early.
    let d = json(&[]);
    let (_, points) = gate(&d, 17, "points");
    assert_eq!(points, "82 points used (warm-up dropped 9 samples)");
    for (warmup, want) in [
        ("0", "91 points used (warm-up dropped 0 samples)"),
        ("0.5", "46 points used (warm-up dropped 45 samples)"),
    ] {
        assert_eq!(gate(&json(&["--warmup", warmup]), 17, "points").1, want);
    }
    // --alpha: the leak's p-value is below the default 0.01, not below 1e-13.
    let (passed, trend) = gate(&d, 17, "trend");
    assert!(passed && trend.ends_with("p = 9.6e-13 < 0.01"), "{trend}");
    let strict = json(&["--alpha", "1e-13"]);
    let (passed, trend) = gate(&strict, 17, "trend");
    assert!(
        !passed && trend.ends_with("p = 9.6e-13 >= 1e-13"),
        "{trend}"
    );
    assert_eq!(strict["summary"]["continuous_leaks"], 0);
    // --memory-limit: the recorded host's memory by default; the time to exhaustion is what
    // is left of the limit above the last RSS, at the pessimistic rate, so two limits differ
    // in it by their difference over that rate.
    let host = d["recording"]["host"]["mem_total_bytes"].as_f64().unwrap();
    assert_eq!(d["summary"]["memory_limit_bytes"].as_f64(), Some(host));
    let one_gib = json(&["--memory-limit", "1G"]);
    assert_eq!(one_gib["summary"]["memory_limit_bytes"], 1u64 << 30);
    let tte = |doc: &serde_json::Value| doc["summary"]["time_to_exhaustion_seconds"].as_f64();
    let rate = d["summary"]["leak_rate_high_bytes_per_sec"]
        .as_f64()
        .unwrap();
    let apart = tte(&d).unwrap() - tte(&one_gib).unwrap();
    let want = (host - (1u64 << 30) as f64) / rate;
    assert!((apart - want).abs() < 1e-6 * want, "{apart} != {want}");
    let o = run(&[&demo(), "--memory-limit", "1G"]);
    assert!(stdout(&o).contains("; 29.2 h to reach 1.0 GiB at the pessimistic rate"));
    // --min-outstanding: only the 2 MiB cache has 1 MiB or more at the end.
    let big = json(&["--min-outstanding", "1M"]);
    let ids: Vec<_> = big["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert_eq!(ids, [18]);
    // --top: the text summary lists that many stacks (the default 10 covers the demo's 3).
    for (top, want) in [
        ("1", "Top 1 stack ("),
        ("2", "Top 2 stacks ("),
        ("10", "Top 3 stacks ("),
    ] {
        let text = stdout(&run(&[&demo(), "--top", top]));
        assert!(text.contains(want), "--top {top}: {text}");
        let listed = text.matches(" from stack ").count();
        assert_eq!(listed, want[4..5].parse::<usize>().unwrap(), "--top {top}");
    }
    let text = stdout(&run(&[&demo()]));
    assert!(text.contains("Top 3 stacks ("), "{text}");
    // --timestamp: the HTML report is byte for byte the same from run to run, unless asked.
    let dir = tempfile::tempdir().unwrap();
    let html = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        let p = path.to_str().unwrap();
        assert!(run(&[&[demo().as_str(), "-o", p], extra].concat())
            .status
            .success());
        std::fs::read_to_string(path).unwrap()
    };
    let (a, b) = (html("a.html", &[]), html("b.html", &[]));
    assert_eq!(a, b);
    assert!(!a.contains(", generated "));
    let stamped = html("c.html", &["--timestamp"]);
    let generated = format!("leak-report {}, generated 20", env!("CARGO_PKG_VERSION"));
    assert!(stamped.contains(&generated), "no generation time");
}

#[test]
fn suppressions_and_baseline_remove_known_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let supp = dir.path().join("lsan.supp");
    std::fs::write(&supp, "# known\nleak:leak_per_*\n").unwrap();
    let d = demo();
    let s = supp.to_str().unwrap();
    assert_eq!(
        run(&[&d, "--fail-on-leak", "--suppressions", s])
            .status
            .code(),
        Some(0)
    );
    let doc = json(&["--suppressions", s]);
    assert_eq!(doc["summary"]["suppressed_stacks"], 1);
    assert_eq!(doc["summary"]["continuous_leaks"], 0);
    // The same leak at the same rate in the baseline: nothing new.
    assert_eq!(
        run(&[&d, "--fail-on-leak", "--baseline", &d]).status.code(),
        Some(0)
    );
    assert_eq!(json(&["--baseline", &d])["summary"]["baseline_stacks"], 1);
    assert!(stdout(&run(&[&d, "--baseline", &d]))
        .contains("Left out: 1 leak(s) already in the baseline, as fast."));
    // What each option left out is said in every output.
    let o = run(&[&d, "--suppressions", s]);
    assert!(
        stdout(&o).contains("Left out: 1 stack(s) suppressed."),
        "{}",
        stdout(&o)
    );
    let html = dir.path().join("r.html");
    run(&[&d, "--suppressions", s, "-o", html.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&html)
        .unwrap()
        .contains("Left out: 1 stack(s) suppressed."));
    let o = run(&[&d, "--fail-on-leak", "--min-outstanding", "1M"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "Left out: 2 stack(s) below --min-outstanding 1.0 MiB (1 of them continuous leaks)."
        ),
        "{}",
        stdout(&o)
    );
    let doc = json(&["--min-outstanding", "1M"]);
    assert_eq!(doc["summary"]["min_outstanding_bytes"], 1 << 20);
    assert_eq!(doc["summary"]["below_min_outstanding_stacks"], 2);
    assert_eq!(doc["summary"]["below_min_outstanding_leaks"], 1);
    assert_eq!(doc["stacks"].as_array().unwrap().len(), 1);
    // A damaged baseline's problems are the comparison's: shown, prefixed.
    let bytes = std::fs::read(&d).unwrap();
    let cut = dir.path().join("cut.zst");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let doc = json(&["--baseline", cut.to_str().unwrap()]);
    let warnings = doc["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(&format!(
                "baseline {}: recording is truncated",
                cut.display()
            ))),
        "{warnings:?}"
    );
    std::fs::write(&supp, "race:foo\n").unwrap();
    let o = run(&[&d, "--suppressions", s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 1: expected `leak:PATTERN`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn strict_detector_is_selectable_and_always_reported() {
    let doc = json(&["--detector", "strict"]);
    let first = &doc["stacks"][0];
    assert_eq!(first["strict_monotonic"], true);
    assert_eq!(first["verdict"], "continuous_leak");
    for s in doc["stacks"].as_array().unwrap() {
        assert!(s["strict_monotonic"].is_boolean());
    }
}

#[test]
fn folded_stacks_weigh_outstanding_bytes_or_growth() {
    let o = run(&[&demo(), "--folded", "-"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    let total: u64 = text
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let doc = json(&[]);
    let expected: u64 = doc["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outstanding_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(total, expected);
    let leak = text
        .lines()
        .find(|l| l.contains("leak_per_request"))
        .unwrap();
    assert!(
        leak.starts_with("[unknown]") || leak.contains(";main;mode_service;leak_per_request "),
        "{leak}"
    );
    let growth = stdout(&run(&[
        &demo(),
        "--folded",
        "-",
        "--folded-weight",
        "growth",
    ]));
    assert!(growth.lines().count() >= 1);
}

#[test]
fn a_truncated_recording_is_analyzed_up_to_its_last_complete_snapshot() {
    let bytes = std::fs::read(demo()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.zst");
    // Cut inside the bundles and the end record: every snapshot survives.
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let o = run(&[cut.to_str().unwrap(), "--json", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["recording"]["truncated"], true);
    assert!(doc["recording"]["tail_problem"]
        .as_str()
        .unwrap()
        .contains("truncated at byte"));
    assert!(warns(&doc, "truncated"));
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some text\n").unwrap();
    let empty = dir.path().join("empty.zst");
    std::fs::write(&empty, "").unwrap();
    let cut = dir.path().join("cut.zst");
    std::fs::write(&cut, &std::fs::read(demo()).unwrap()[..12]).unwrap();
    for (args, needle) in [
        (vec!["/nonexistent.zst"], "cannot open /nonexistent.zst"),
        (
            vec![text.to_str().unwrap()],
            "neither a leak-record recording nor a memleak log",
        ),
        (
            vec![empty.to_str().unwrap()],
            "empty.zst is empty; give a recording",
        ),
        (
            vec![cut.to_str().unwrap()],
            "nothing to analyze: recording is truncated at byte 12, within its preamble; copy \
             the file whole",
        ),
        (
            vec![&demo(), "-o", "/nonexistent-dir/report.html"],
            "cannot write /nonexistent-dir/report.html",
        ),
        (
            vec![&demo(), "--min-rate", "5/fortnight"],
            "unknown rate unit",
        ),
        (
            vec![&demo(), "--warmup", "0.9"],
            "--warmup 0.9 is outside 0 to 0.5",
        ),
        (
            vec![&demo(), "--alpha", "0"],
            "--alpha 0 is outside 0 to 0.5, both excluded",
        ),
        (
            vec![&demo(), "--memory-limit", "0"],
            "a memory limit must be above 0 (e.g. 512M, 4G)",
        ),
        (
            vec![&demo(), "--sysroot", "/nonexistent-root"],
            "--sysroot /nonexistent-root: no such directory",
        ),
        (
            vec![
                &demo(),
                "--debug-dir",
                "/tmp",
                "--debug-dir",
                "/nonexistent-debug",
            ],
            "--debug-dir /nonexistent-debug: no such directory",
        ),
        // Options for an output that is not written: clap names the missing one on the
        // second line.
        (
            vec![&demo(), "--timestamp"],
            "required arguments were not provided:\n  --output <FILE>",
        ),
        (
            vec![&demo(), "--report-top", "3"],
            "required arguments were not provided:\n  --output <FILE>",
        ),
        (
            vec![&demo(), "--folded-weight", "growth"],
            "required arguments were not provided:\n  --folded <FILE>",
        ),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        // The problem and its fix first (clap adds a "try --help" hint below).
        let head: Vec<&str> = err.lines().take(needle.lines().count()).collect();
        assert!(head.join("\n").contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn the_html_report_stays_bounded_with_many_stacks() {
    // 260 leaking stacks and 100 stable ones over 60 snapshots.
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None);
    for id in 0..360u32 {
        b.stack(16 + id, &[(1, 0x1000 + u64::from(id) * 16)]);
    }
    for s in 1..=60u64 {
        let rows: Vec<(u32, u64, u64)> = (0..360u32)
            .map(|id| {
                if id < 260 {
                    (16 + id, 1000 * s, s)
                } else {
                    (16 + id, 4096, 1)
                }
            })
            .collect();
        b.snapshot(&rows);
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("many.zst");
    std::fs::write(&rec, b.to_bytes()).unwrap();
    let html = dir.path().join("many.html");
    let o = run(&[rec.to_str().unwrap(), "-o", html.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    // 200 leak rows (the floor for leaks) + the 50 top others; 60 leaks and 50 others summed.
    assert_eq!(page.matches("<tr class=\"v-").count(), 250);
    assert!(
        page.contains("110 more stacks (60 of them continuous leaks)"),
        "aggregate line"
    );
    // Charts only for the first 50 rows.
    assert_eq!(page.matches("<figure class=\"chart\">").count(), 50);
    assert!(page.len() < 3_000_000, "{} bytes", page.len());
}

#[test]
fn every_output_says_when_figures_are_sampled_estimates() {
    let write = |sampled: bool, dir: &Path| {
        let mut b = leak_format::RecordingBuilder::new();
        if sampled {
            b.sampling(64 << 10);
        }
        b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
        for s in 1..=20u64 {
            b.snapshot(&[(16, 4096 * s, s)]);
        }
        let path = dir.join(if sampled { "sampled.zst" } else { "exact.zst" });
        std::fs::write(&path, b.to_bytes()).unwrap();
        path.display().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let note = "Sampled at 1 per 64.0 KiB: every figure is an estimate";
    for sampled in [true, false] {
        let rec = write(sampled, dir.path());
        let text = stdout(&run(&[&rec]));
        assert_eq!(text.contains(note), sampled, "{text}");
        let o = run(&[&rec, "--json", "-"]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let expected = if sampled {
            serde_json::json!(65536)
        } else {
            serde_json::Value::Null
        };
        assert_eq!(j["recording"]["sample_bytes"], expected);
        assert_eq!(j["recording"]["estimates"], sampled);
        let html = dir.path().join("r.html");
        run(&[&rec, "-o", html.to_str().unwrap()]);
        let page = std::fs::read_to_string(&html).unwrap();
        assert_eq!(page.contains(note), sampled);
    }
}

#[test]
fn probes_attached_while_the_target_ran_are_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let malloc = leak_format::Probe {
        function: "malloc".into(),
        module: "/usr/lib/libjemalloc.so.2".into(),
        offset: 0x1000,
        side: leak_format::ProbeSide::Entry,
    };
    let new_allocator = "the target exec'd /usr/bin/svc, whose allocator \
                         (/usr/lib/libjemalloc.so.2) was probed only 2.5 s into the recording, \
                         while it ran";
    let attached_again = "the target's probes in /usr/lib/libjemalloc.so.2 were attached again \
                          2.5 s into the recording, while it ran /usr/bin/svc: the thread the \
                          kernel ties probes to had ended";
    // (held, the places were probed from the start: attached again, the warning expected)
    for (held, again, warning) in [
        (true, false, None),
        (false, false, Some(new_allocator)),
        (false, true, Some(attached_again)),
    ] {
        let mut b = leak_format::RecordingBuilder::new();
        let start = b.header_mut().start_mono_ns;
        if again {
            b.header_mut().probes.push(malloc.clone());
        }
        b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
        b.snapshot(&[(16, 4096, 1)]);
        b.late_probes(leak_format::LateProbes {
            mono_ns: start + 2_500_000_000,
            exe: "/usr/bin/svc".into(),
            probes: vec![malloc.clone()],
            held,
        });
        b.snapshot(&[(16, 8192, 2)]);
        let path = dir.path().join("late.zst");
        std::fs::write(&path, b.to_bytes()).unwrap();
        let j = json_at(path.to_str().unwrap(), &[]);
        let warned: Vec<&str> = j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w.as_str())
            .filter(|w| w.starts_with("the target exec'd") || w.starts_with("the target's probes"))
            .collect();
        let expected: Vec<&str> = warning.into_iter().collect();
        assert_eq!(warned.len(), expected.len(), "held {held}: {j:#}");
        for (w, e) in warned.iter().zip(&expected) {
            assert!(w.starts_with(e), "held {held}, again {again}: {w}");
        }
    }
}

/// Processes the target started (a wrapper that runs its program without exec) are a warning
/// in every output, with the count, the first one's name and the fix; none started, none said.
#[test]
fn processes_the_target_started_are_a_warning_in_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let leaky = leak_format::StartedProcess {
        pid: 4242,
        name: "leaky".into(),
    };
    let fix = "record the program itself: leak-record -- PROGRAM, or -p its PID; a wrapper \
               script should exec it";
    for (children, said) in [
        (None, None),
        (
            Some((1, vec![leaky.clone()])),
            Some("the target started 1 process (PID 4242, leaky), which leak-record did not"),
        ),
        (
            Some((3, vec![leaky.clone()])),
            Some("the target started 3 processes (the first: PID 4242, leaky), which"),
        ),
        (
            Some((2, Vec::new())),
            Some("the target started 2 processes, which leak-record did not record"),
        ),
    ] {
        let mut b = leak_format::RecordingBuilder::new();
        b.module(1, "/bin/sh", None).stack(16, &[(1, 0x1000)]);
        if let Some((started, examples)) = children.clone() {
            b.children(leak_format::Children { started, examples });
        }
        b.snapshot(&[(16, 4096, 1)]).snapshot(&[(16, 4096, 1)]);
        let path = dir.path().join("wrapper.zst");
        std::fs::write(&path, b.to_bytes()).unwrap();
        let path = path.to_str().unwrap();
        let text = stdout(&run(&[path]));
        let j = json_at(path, &[]);
        let warned: Vec<&str> = j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w.as_str())
            .filter(|w| w.starts_with("the target started"))
            .collect();
        let html = dir.path().join("r.html");
        run(&[path, "-o", html.to_str().unwrap()]);
        let page = std::fs::read_to_string(&html).unwrap();
        match said {
            None => {
                assert!(warned.is_empty(), "{warned:?}");
                assert!(!text.contains("the target started"), "{text}");
                assert!(!page.contains("the target started"));
            }
            Some(said) => {
                let [w] = warned[..] else {
                    panic!("{children:?}: {warned:?}");
                };
                assert!(w.starts_with(said) && w.ends_with(fix), "{w}");
                assert!(text.contains(said) && text.contains(fix), "{text}");
                assert!(page.contains(said), "{children:?}");
            }
        }
    }
}

/// A target that exec'd (a wrapper: `env`, `sh -c 'exec ...'`) is named after the program it
/// became, the last one named, in every output, with what was started beside it; redacted like
/// the header; and a program that could not be read at all leaves the header's name alone.
#[test]
fn a_target_that_execd_is_named_after_its_program_in_every_output() {
    let dir = tempfile::tempdir().unwrap();
    for readable in [true, false] {
        let mut b = leak_format::RecordingBuilder::new();
        b.header_mut().target.command_line = vec!["./run.sh".into(), "--fast".into()];
        b.module(1, "/srv/svc", None).stack(16, &[(1, 0x1000)]);
        b.process(4242, "env", &["env", "A=1", "./svc"], "/usr/bin/env");
        b.snapshot(&[(16, 4096, 1)]);
        if readable {
            b.process(4242, "svc", &["./svc", "--port", "8080"], "/srv/svc");
        } else {
            b.process(4242, "", &[], "");
        }
        b.snapshot(&[(16, 4096, 1)]).end(EndReason::Duration);
        let path = dir.path().join("execd.zst");
        std::fs::write(&path, b.to_bytes()).unwrap();
        let path = path.to_str().unwrap();
        let text = stdout(&run(&[path]));
        let j = json_at(path, &[]);
        let html = dir.path().join("r.html");
        run(&[path, "-o", html.to_str().unwrap()]);
        let page = std::fs::read_to_string(&html).unwrap();
        assert_eq!(j["recording"]["target"]["command_line"][0], "./run.sh");
        if readable {
            let said = "Recording of PID 4242 (./run.sh --fast, which exec'd ./svc --port 8080) on";
            assert!(text.starts_with(said), "{text}");
            assert_eq!(j["recording"]["process"]["command_line"][2], "8080");
            assert_eq!(j["recording"]["process"]["exe"], "/srv/svc");
            assert!(page.contains("<title>leak-report: ./svc --port 8080</title>"));
            assert!(
                page.contains("started as"),
                "the started command is shown too"
            );
            assert!(page.contains("./run.sh --fast"));
        } else {
            // Exec'd and gone before it could be read: the header names it, as before 1.7.
            assert!(
                text.starts_with("Recording of PID 4242 (./run.sh --fast) on"),
                "{text}"
            );
            assert_eq!(j["recording"]["process"]["name"], "");
            assert!(page.contains("<title>leak-report: ./run.sh --fast</title>"));
            assert!(!page.contains("started as"));
        }
        // Redacted: the argv of both becomes the executable's file name.
        let redacted = dir.path().join("execd-redacted.zst");
        let _ = std::fs::remove_file(&redacted);
        leak_report::redact::redact(path, redacted.to_str().unwrap()).unwrap();
        let j = json_at(redacted.to_str().unwrap(), &[]);
        let argv = if readable { vec!["svc"] } else { Vec::new() };
        assert_eq!(
            j["recording"]["process"]["command_line"],
            serde_json::json!(argv)
        );
        assert!(!j.to_string().contains("8080"), "{j:#}");
    }
}

/// `leak-record -- env A=1 ./svc`: env's own stacks are walked before any memory map of it
/// is read (it execs at once), so none of their frames is located. They are said to be the
/// wrapper's, not blamed on missing frame pointers or on code unloaded between snapshots, and
/// only when the recording names an exec and they hold nothing at the end.
#[test]
fn stacks_of_a_wrapper_execd_away_are_not_blamed_on_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let unlocated = |addrs: &[u64]| -> Vec<leak_format::Frame> {
        addrs
            .iter()
            .map(|&addr| leak_format::Frame {
                addr,
                module: None,
                offset: 0,
            })
            .collect()
    };
    for (execd, wrapper_end) in [(true, 0), (false, 0), (true, 64)] {
        let mut b = leak_format::RecordingBuilder::new();
        b.module(1, "/srv/svc", None)
            .stack(16, &[(1, 0x1000), (1, 0x2000), (1, 0x3000)]);
        b.stack_frames(17, unlocated(&[0x7f00_0000_1221]));
        b.stack_frames(18, unlocated(&[0x7f00_0000_41fb, 0x7f00_0000_0b99]));
        if execd {
            b.process(4242, "svc", &["./svc"], "/srv/svc");
        }
        // (stack, allocated bytes and blocks, freed bytes and blocks), cumulative.
        let stats = |s: &[(u32, u64, u64, u64, u64)]| -> Vec<leak_format::StackStats> {
            s.iter()
                .map(|&(stack, ab, ac, fb, fc)| leak_format::StackStats {
                    stack,
                    kind: leak_format::AllocKind::Heap,
                    alloc_bytes: ab,
                    alloc_count: ac,
                    free_bytes: fb,
                    free_count: fc,
                })
                .collect()
        };
        let losses = leak_format::Losses::default();
        b.snapshot_with(
            stats(&[(16, 4096, 1, 0, 0), (17, 128, 2, 0, 0), (18, 128, 2, 0, 0)]),
            losses,
        );
        let freed = 128 - wrapper_end;
        b.snapshot_with(
            stats(&[
                (16, 8192, 2, 0, 0),
                (17, 128, 2, freed, freed / 64),
                (18, 128, 2, 128, 2),
            ]),
            losses,
        )
        .end(EndReason::Duration);
        let path = dir.path().join("wrapper.zst");
        std::fs::write(&path, b.to_bytes()).unwrap();
        let text = stdout(&run(&[path.to_str().unwrap()]));
        let wrapper = "stacks of the program the target ran before its exec (a wrapper such as env";
        let unmapped = "in no memory mapping the recording holds";
        let shallow = "at most 2 frames deep";
        match (execd, wrapper_end) {
            (true, 0) => {
                assert!(text.contains(&format!("warning: 2 {wrapper}")), "{text}");
                assert!(
                    text.contains("they hold nothing since the exec\n"),
                    "{text}"
                );
                assert!(
                    !text.contains(unmapped) && !text.contains(shallow),
                    "{text}"
                );
            }
            // No exec named, or a stack that still holds memory: as before.
            (false, _) => {
                assert!(!text.contains(wrapper), "{text}");
                let said = format!("3 frame addresses on 2 stacks lie {unmapped}");
                assert!(text.contains(&said), "{text}");
                assert!(
                    text.contains("2 of 3 stacks are at most 2 frames deep"),
                    "{text}"
                );
            }
            (true, _) => {
                let one = "warning: 1 stack of the program the target ran before its exec";
                assert!(text.contains(one), "{text}");
                let besides = format!("; besides, 1 frame address on 1 stack lies {unmapped}");
                assert!(text.contains(&besides), "{text}");
            }
        }
    }
}

/// A stack cut at the deepest walk (64 frames: deep recursion) has lost its callers, and
/// allocations from different callers share it: every output says so, not only the JSON.
#[test]
fn a_stack_cut_at_the_deepest_walk_is_marked_in_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = leak_format::RecordingBuilder::new();
    let deep: Vec<(u32, u64)> = (0..64).map(|i| (1, 0x1000 + 0x10 * i)).collect();
    b.module(1, "/srv/svc", None)
        .truncated_stack(16, &deep)
        .stack(17, &[(1, 0x2000), (1, 0x3000), (1, 0x4000)]);
    for s in 1..=20u64 {
        b.snapshot(&[(16, 100 * s, s), (17, 4096, 1)]);
    }
    b.end(EndReason::Duration);
    let path = dir.path().join("deep.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let text = stdout(&run(&[p]));
    let warning = "warning: 1 stack reached the deepest walk leak-record takes (64 frames): its \
                   outer callers are not recorded";
    assert!(text.contains(warning), "{text}");
    let cut = "        ... (cut at the deepest walk: outer callers not recorded)\n";
    assert_eq!(text.matches(cut).count(), 1, "{text}");
    // After the 64th frame of stack 16, not after stack 17's.
    assert!(text.contains(&format!("/srv/svc+0x13f0\n{cut}")), "{text}");
    let folded = stdout(&run(&[p, "--folded", "-"]));
    let lines: Vec<&str> = folded.lines().collect();
    assert_eq!(lines.len(), 2, "{folded}");
    assert!(
        lines[1].starts_with("[truncated];/srv/svc+0x13f0;"),
        "{folded}"
    );
    assert!(lines[0].starts_with("/srv/svc+0x4000;"), "{folded}");
    let html = dir.path().join("r.html");
    run(&[p, "-o", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("(cut at the deepest walk: outer callers not recorded)"));
    assert!(page.contains("[truncated]"), "the flame graph's root");
    let j = json_at(p, &[]);
    assert!(warns(&j, "reached the deepest walk"));
}

/// A full allocation table: what was left untracked is said in allocations and bytes (they are
/// in no stack's figures, and may be leaks bigger than those found), with the option to raise.
#[test]
fn allocations_left_untracked_are_said_in_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/srv/svc", None)
        .stack(16, &[(1, 0x1000), (1, 0x2000), (1, 0x3000)]);
    let losses = leak_format::Losses {
        allocs_full: 40,
        allocs_full_bytes: 40 * 4096,
        ..Default::default()
    };
    for s in 1..=3u64 {
        let stats = leak_format::StackStats {
            stack: 16,
            kind: leak_format::AllocKind::Heap,
            alloc_bytes: 100 * s,
            alloc_count: s,
            free_bytes: 0,
            free_count: 0,
        };
        b.snapshot_with(vec![stats], losses);
    }
    let path = dir.path().join("full.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    let text = stdout(&run(&[path.to_str().unwrap()]));
    let max = leak_format::RecordingBuilder::new()
        .header_mut()
        .config
        .max_allocs;
    let said = format!(
        "warning: the recorder lost data: 40 allocations untracked (160.0 KiB; table full: in no \
         stack's figures, leaks included), 0 on unknown stacks (stack table full 0, walk failed \
         0, counters full 0), 0 pending-call overflows, 0 returns without entry, 0 missed frees; \
         record again with a larger --max-allocs (it was {max})\n"
    );
    assert!(text.contains(&said), "{text}");
}

#[test]
fn a_recording_piped_in_reads_as_the_file_does() {
    use std::io::Write;
    use std::process::Stdio;
    // `ssh HOST 'sudo leak-record ... -o -' | leak-report -`
    let piped = |input: &[u8], args: &[&str]| {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let bytes = std::fs::read(demo()).unwrap();
    let o = piped(&bytes, &["-", "--json", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let from_pipe: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(from_pipe, json(&[]));
    let o = piped(b"not a recording\n", &["-"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.starts_with("leak-report: standard input is neither"),
        "{err}"
    );
    // Not from a terminal (util-linux's script(1) gives it one; BSD's takes other options).
    if cfg!(not(target_os = "linux")) {
        return;
    }
    let tty = Command::new("script")
        .args(["-q", "-e", "-c", &format!("'{BIN}' -"), "/dev/null"])
        .output()
        .expect("run script(1), util-linux");
    let err = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(2), "{err}");
    assert!(
        err.contains("standard input is a terminal; pipe a recording in"),
        "{err}"
    );
}

#[test]
#[cfg(unix)]
fn outputs_may_not_collide_with_each_other_or_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = demo();
    let html = dir.path().join("r.html");
    let h = html.to_str().unwrap();
    let dotted = format!("{}/./r.html", dir.path().display());
    let link = dir.path().join("link.zst");
    std::os::unix::fs::symlink(&d, &link).unwrap();
    for (args, needle) in [
        (
            vec![d.as_str(), "--json", "-", "--folded", "-"],
            "--json and --folded both write standard output",
        ),
        (
            vec![d.as_str(), "-o", "-", "--json", "-"],
            "-o and --json both write standard output",
        ),
        // Standard output by another name (here a pipe: the test reads it).
        (
            vec![d.as_str(), "-o", "/dev/stdout", "--json", "-"],
            "-o and --json both write standard output",
        ),
        (vec![d.as_str(), "-o", h, "--json", &dotted], "both write"),
        (
            vec![link.to_str().unwrap(), "--folded", &d],
            "would overwrite the recording",
        ),
        (
            vec![d.as_str(), "--baseline", h, "-o", h],
            "would overwrite --baseline",
        ),
        (
            vec!["-", "--baseline", "-"],
            "the recording and --baseline cannot both be standard input",
        ),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!html.exists(), "{args:?}: nothing is written");
    }
    assert_eq!(
        std::fs::read(&d).unwrap()[..4],
        0x184D_2A5Cu32.to_le_bytes()
    );
    // JSON ends its last line.
    assert!(run(&[&d, "--json", "-"]).stdout.ends_with(b"}\n"));
}

#[test]
#[cfg(unix)]
fn a_recording_named_by_a_pipe_path_reads_as_the_file_does() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let bytes = std::fs::read(demo()).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, bytes).unwrap())
    };
    let doc = json_at(fifo.to_str().unwrap(), &[]);
    writer.join().unwrap();
    assert_eq!(doc, json(&[]));
}

#[test]
fn a_memleak_log_with_nothing_outstanding_is_a_clean_log() {
    // What a program without leaks gives: every interval lists no stack. It is a memleak log,
    // not a recording that lost its Header.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("empty.log");
    let lines: String = (0..14)
        .map(|i| {
            format!(
                "[11:16:{:02}] Top 0 stacks with outstanding allocations:\n",
                5 * i
            )
        })
        .collect();
    std::fs::write(&log, lines).unwrap();
    let o = run(&[log.to_str().unwrap(), "--fail-on-leak"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with("memleak log: 14 snapshots over 65 s\n"),
        "{text}"
    );
    assert!(!text.contains("warning"), "{text}");
    let doc = json_at(log.to_str().unwrap(), &[]);
    assert_eq!(doc["warnings"], serde_json::json!([]));
}

#[test]
#[cfg(unix)]
fn outputs_to_a_character_device_do_not_collide() {
    // `-o /dev/null --json /dev/null`: silencing outputs in a script is harmless.
    let o = run(&[&demo(), "-o", "/dev/null", "--json", "/dev/null"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A recording of 40 snapshots: stack 16 steady at 1 MiB, stack 17 (in libplugin.so) appearing at snapshot
/// `40 - late` and growing 4 KiB at each of its snapshots, and `losses` in the last snapshot.
fn late_leak(dir: &Path, late: u64, losses: leak_format::Losses) -> String {
    let path = dir.join(format!("late{late}.zst"));
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None)
        .module(2, "/usr/lib/libplugin.so", None)
        .stack(16, &[(1, 0x1000)])
        .stack(17, &[(2, 0x2000)]);
    for s in 0..40u64 {
        let mut stats = vec![(16, 1 << 20, 256)];
        if s >= 40 - late {
            let k = s - (40 - late) + 1;
            stats.push((17, 4096 * k, k));
        }
        let stats = stats
            .into_iter()
            .map(|(stack, bytes, count)| leak_format::StackStats {
                stack,
                kind: leak_format::AllocKind::Heap,
                alloc_bytes: bytes,
                alloc_count: count,
                free_bytes: 0,
                free_count: 0,
            })
            .collect();
        let l = if s == 39 { losses } else { Default::default() };
        b.snapshot_with(stats, l);
    }
    b.end(EndReason::Duration);
    std::fs::write(&path, b.to_bytes()).unwrap();
    path.display().to_string()
}

/// A stack that grows at every one of its too few samples (a leak that started late in the
/// run) is no all-clear: every output warns, the headline says it, and the leak gates exit 2.
/// Before, "No continuous growth found" and exit 0. Grown for long enough, it is a leak.
#[test]
fn a_leak_that_started_too_late_to_judge_fails_no_gate_silently() {
    let dir = tempfile::tempdir().unwrap();
    let p = late_leak(dir.path(), 8, Default::default());
    for gate in [&["--fail-on-leak"][..], &["--max-rate", "1M"]] {
        let o = run(&[&[p.as_str()], gate].concat());
        assert_eq!(o.status.code(), Some(2), "{gate:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("cannot judge this recording: stack 17 grew 28.0 KiB with 7 usable samples, and a verdict needs 12"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let text = stdout(&run(&[&p]));
    assert!(
        text.contains("No continuous leak found, but 1 growing stack could not be judged."),
        "{text}"
    );
    assert!(text.contains("warning: stack 17 grew 28.0 KiB"), "{text}");
    let doc = json_at(&p, &[]);
    let warnings = doc["warnings"].to_string();
    assert!(warnings.contains("a leak that started late"), "{warnings}");
    let page = dir.path().join("r.html");
    assert_eq!(
        run(&[&p, "-o", page.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("class=\"banner unsure\""),
        "the banner is not the all-clear"
    );
    // Suppressed, it no longer stops the gate; the size gate never minded it.
    let supp = dir.path().join("s.supp");
    std::fs::write(&supp, "leak:libplugin.so\n").unwrap();
    let o = run(&[
        &p,
        "--fail-on-leak",
        "--suppressions",
        supp.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(run(&[&p, "--max-outstanding", "1G"]).status.code(), Some(0));
    // Judged (20 samples of steady growth): a continuous leak, and the gate fails with 1.
    let judged = late_leak(dir.path(), 30, Default::default());
    assert_eq!(run(&[&judged, "--fail-on-leak"]).status.code(), Some(1));
    // A stack with nothing growing: the all-clear, exit 0.
    let flat = stdout(&run(&[&demo_flat(dir.path())]));
    assert!(flat.contains("\nNo continuous growth found."), "{flat}");
}

/// 40 snapshots of one steady stack.
fn demo_flat(dir: &Path) -> String {
    let path = dir.join("flat.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
    for _ in 0..40 {
        b.snapshot(&[(16, 1 << 20, 256)]);
    }
    b.end(EndReason::Duration);
    std::fs::write(&path, b.to_bytes()).unwrap();
    let p = path.display().to_string();
    assert_eq!(run(&[&p, "--fail-on-leak"]).status.code(), Some(0));
    p
}

/// Allocations the recorder could not track (a full table) may hide a leak: a leak gate that
/// found none exits 2 naming the option to raise, and the warning names it too (leak-record's
/// closing line sends the user there). Before, the gate passed.
#[test]
fn a_leak_gate_does_not_pass_over_allocations_lost_to_a_full_table() {
    let dir = tempfile::tempdir().unwrap();
    let lost = leak_format::Losses {
        allocs_full: 2147,
        ..Default::default()
    };
    let p = late_leak(dir.path(), 0, lost);
    let o = run(&[&p, "--fail-on-leak"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2147 allocations were untracked (allocation table full), and a leak may be among them; record again with a larger --max-allocs"),
        "{}",
        stderr(&o)
    );
    let text = stdout(&run(&[&p]));
    assert!(
        text.contains("; record again with a larger --max-allocs"),
        "{text}"
    );
    // The headline is no all-clear either.
    assert!(
        text.contains(
            "\nNo continuous leak found, but 2147 allocations were lost to a full table.\n"
        ),
        "{text}"
    );
    let stacks = leak_format::Losses {
        stack_table_full: 5,
        ..Default::default()
    };
    let p = late_leak(dir.path(), 0, stacks);
    let o = run(&[&p, "--max-rate", "1M"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("larger --max-stacks"), "{}", stderr(&o));
    // The size gate judges what was recorded.
    assert_eq!(run(&[&p, "--max-outstanding", "1G"]).status.code(), Some(0));
}

/// A target that started processes leak-record did not record (a wrapper such as `timeout`,
/// or a script that runs its program without exec) cannot be vouched for: the work may have run
/// in them. The headline says so and the leak gates exit 2, unless --allow-children. Before,
/// "No continuous growth found" and exit 0 for a recording of `timeout` alone.
#[test]
fn a_leak_gate_does_not_pass_a_run_whose_work_went_to_unrecorded_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrapper.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/timeout", None)
        .stack(16, &[(1, 0x1000)])
        .children(leak_format::Children {
            started: 1,
            examples: vec![leak_format::StartedProcess {
                pid: 4242,
                name: "integration-test".into(),
            }],
        });
    for _ in 0..40 {
        b.snapshot(&[(16, 4096, 1)]);
    }
    b.end(EndReason::Duration);
    std::fs::write(&path, b.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    for gate in [&["--fail-on-leak"][..], &["--max-rate", "1M"]] {
        let o = run(&[&[p], gate].concat());
        assert_eq!(o.status.code(), Some(2), "{gate:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.ends_with(
                "cannot judge this recording: the target started 1 process (PID 4242, \
                 integration-test) that leak-record did not record, and a leak in it would not \
                 show; record the program itself (leak-record -- PROGRAM, or -p its PID; a \
                 wrapper script should exec it), or pass --allow-children if only the target's \
                 own allocations are to be judged\n"
            ),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let text = stdout(&o);
        assert!(
            text.contains(
                "\nNo continuous leak found in the recorded process, but it started 1 process \
                 that was not recorded.\n"
            ),
            "{text}"
        );
        // Accepted: the gate judges the target alone, and it has no leak.
        let o = run(&[&[p, "--allow-children"], gate].concat());
        assert_eq!(o.status.code(), Some(0), "{gate:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("\nNo continuous growth found.\n"));
    }
    let page = dir.path().join("r.html");
    assert_eq!(
        run(&[p, "-o", page.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("class=\"banner unsure\""),
        "not the all-clear"
    );
    // The size gate judges what was recorded.
    assert_eq!(run(&[p, "--max-outstanding", "1G"]).status.code(), Some(0));
}

/// A frame in no recorded mapping (a library loaded and unloaded between two snapshots) shows
/// as [unknown]+address, and a warning says why; before, without a word.
#[test]
fn frames_in_no_recorded_mapping_are_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unmapped.zst");
    let mut b = leak_format::RecordingBuilder::new();
    let frame = |addr, module, offset| leak_format::Frame {
        addr,
        module,
        offset,
    };
    b.module(1, "/usr/bin/svc", None)
        .stack(16, &[(1, 0x1000)])
        .stack_frames(
            17,
            vec![
                frame(0x7f00_0000_7000, None, 0),
                frame(0x5500_0000_1000, Some(1), 0x1000),
            ],
        );
    for s in 1..=20u64 {
        b.snapshot(&[(16, 4096, 1), (17, 100 * s, s)]);
    }
    std::fs::write(&path, b.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let text = stdout(&run(&[p]));
    assert!(
        text.contains(
            "warning: 1 frame address on 1 stack lies in no memory mapping the recording holds, \
             shown as [unknown]+address: code loaded and unloaded between two snapshots"
        ),
        "{text}"
    );
    assert!(text.contains("[unknown]+0x"), "{text}");
    // None, none said.
    let flat = stdout(&run(&[&demo_flat(dir.path())]));
    assert!(!flat.contains("no memory mapping"), "{flat}");
}

/// The exit status is the gates' whatever happens to the outputs: standard output closed early
/// (`leak-report x --fail-on-leak | head -1`) or standard error closed. Before, a closed pipe
/// exited 0 (the gate passed) and a closed stderr panicked (101).
#[test]
fn a_closed_pipe_does_not_change_the_exit_status() {
    use std::io::Read;
    use std::process::Stdio;
    let d = demo();
    for args in [
        &["--fail-on-leak"][..],
        &["--fail-on-leak", "--json", "-"],
        &["--max-outstanding", "1M", "--folded", "-"],
    ] {
        let mut child = Command::new(BIN)
            .arg(&d)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the pipe before the output is written (the analysis takes longer than this):
        // the output meets a closed pipe. (Output read in part would fit the pipe's buffer.)
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("gate failed"), "{args:?}: {err}");
        // Stderr closed at once: the status still says the gate failed.
        let child = Command::new(BIN)
            .arg(&d)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        drop(child.stderr.take());
        assert_eq!(
            child.wait().unwrap().code(),
            Some(1),
            "{args:?}: stderr closed"
        );
    }
}

/// --max-outstanding is a memory budget over every stack, as its help says: the filters that
/// leave stacks out of the findings do not free their bytes; and the sum saturates instead of
/// wrapping. Before, --min-outstanding 1M passed a 2.9 MiB budget of 2.5 MiB.
#[test]
fn max_outstanding_counts_every_stack_whatever_the_filters() {
    let d = demo();
    assert_eq!(
        run(&[&d, "--max-outstanding", "2560K"]).status.code(),
        Some(1)
    );
    let supp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(supp.path(), "leak:cache_insert\n").unwrap();
    for filter in [
        &["--min-outstanding", "1M"][..],
        &["--baseline", &d],
        &["--suppressions", supp.path().to_str().unwrap()],
    ] {
        let o = run(&[&[d.as_str(), "--max-outstanding", "2560K"], filter].concat());
        assert_eq!(o.status.code(), Some(1), "{filter:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("3018752 bytes outstanding, above --max-outstanding 2621440"),
            "{filter:?}: {}",
            stderr(&o)
        );
    }
    // Two stacks of 2^63 bytes each: the total saturates at u64::MAX, above any budget.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None)
        .stack(16, &[(1, 0x1000)])
        .stack(17, &[(1, 0x2000)]);
    b.snapshot(&[(16, 1 << 63, 1), (17, 1 << 63, 1)]);
    std::fs::write(&path, b.to_bytes()).unwrap();
    let o = run(&[path.to_str().unwrap(), "--max-outstanding", "1T"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{} bytes outstanding", u64::MAX)),
        "{}",
        stderr(&o)
    );
}

/// The text summary's small words: "1 snapshot", no "Top 0 stacks" heading over nothing, and a
/// footer that sends the user to the output listing every stack (the HTML lists --report-top).
#[test]
fn the_text_summary_counts_in_words_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
    b.snapshot(&[(16, 4096, 1)]);
    std::fs::write(&path, b.to_bytes()).unwrap();
    let text = stdout(&run(&[path.to_str().unwrap()]));
    assert!(text.contains(": 1 snapshot over "), "{text}");
    let text = stdout(&run(&[&demo(), "--top", "0"]));
    assert!(!text.contains("Top 0"), "{text}");
    assert!(
        text.contains(
            "3 more stacks not listed, 1 of them a continuous leak (--top N lists more; --json \
             lists every one)"
        ),
        "{text}"
    );
}

/// A command that -d ended (still running) did not finish: every output warns, since
/// leak-record's exit status (0) was not the command's. One that exited by itself, or -d on an
/// attached process, is no warning.
#[test]
fn a_command_that_d_ended_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let warning = "-d ended the recording with the command still running";
    for (mode, reason, warned) in [
        (TargetMode::Command, EndReason::Duration, true),
        (TargetMode::Attach, EndReason::Duration, false),
        (
            TargetMode::Command,
            EndReason::TargetExited {
                code: Some(0),
                signal: None,
            },
            false,
        ),
    ] {
        let path = dir.path().join("run.zst");
        let mut b = leak_format::RecordingBuilder::new();
        b.header_mut().target.mode = mode;
        b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
        for _ in 0..20 {
            b.snapshot(&[(16, 4096, 1)]);
        }
        b.end(reason.clone());
        std::fs::write(&path, b.to_bytes()).unwrap();
        let doc = json_at(path.to_str().unwrap(), &[]);
        let said = doc["warnings"].to_string().contains(warning);
        assert_eq!(said, warned, "{mode:?} {reason:?}: {}", doc["warnings"]);
    }
}

/// Events the recorder could not see (`Record::Unseen`; the kernel skipped its program's run,
/// or a table was busy) are said with what they do to the figures, and counted in the JSON. The
/// last record supersedes the earlier ones (the counts are cumulative).
#[test]
fn unseen_allocator_events_are_said_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unseen.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None).stack(16, &[(1, 0x1000)]);
    b.unseen(0, 1);
    b.snapshot(&[(16, 4096, 1)]);
    b.unseen(2, 5);
    b.snapshot(&[(16, 4096, 1)]);
    std::fs::write(&path, b.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let o = run(&[p]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "warning: up to 2 allocations and 5 frees were not recorded (the kernel skips a \
             tracing program that would run inside itself on one CPU, as for an interrupt that \
             allocates or frees while it runs, and counts such runs whether or not the \
             recording's filters would have kept them; or a table's lock was busy): up to 5 \
             blocks counted as outstanding were in fact freed, and up to 2 allocations are \
             counted on no stack\n"
        ),
        "{}",
        stdout(&o)
    );
    let o = run(&[p, "--json", "-"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let r = &json["recording"];
    assert_eq!(r["unseen"], serde_json::json!({"allocs": 2, "frees": 5}));
    assert_eq!(r["total_drops"], 7);
}

/// A stack that grew with 12 to 29 usable samples, significantly only at the plain alpha, is
/// insufficient data because a verdict on it needs 30 samples (`detect::FULL_POINTS`): the
/// warning says that number, not the 12 any verdict needs (it said "with 22 usable samples,
/// and a verdict needs 12" before).
#[test]
fn weak_growth_in_too_few_samples_names_the_samples_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weak.zst");
    let mut b = leak_format::RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None).stack(17, &[(1, 0x1000)]);
    let noise = [
        0u64, 9, 2, 7, 4, 11, 1, 8, 5, 12, 3, 10, 6, 0, 9, 2, 13, 4, 7, 1, 11, 5, 8, 3,
    ];
    for s in 0..40u64 {
        // It appears at snapshot 16 and grows, noisily, to the end.
        if s < 16 {
            b.snapshot(&[]);
            continue;
        }
        let k = 20 + (s - 16) + noise[(s - 16) as usize] * 6 / 4;
        b.snapshot(&[(17, 4096 * k, k)]);
    }
    std::fs::write(&path, b.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let o = run(&[p, "--fail-on-leak"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "stack 17 grew 108.0 KiB with 22 usable samples, and a verdict on growth this weak \
             needs 30;"
        ),
        "{}",
        stderr(&o)
    );
}
