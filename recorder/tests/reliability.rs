//! Reliability end-to-end tests (issue 7): the recorder killed at random moments and on a full
//! disk keeps every complete snapshot; the traced program behaves the same with and without
//! recording; a target that forks, execs, dlopens/dlcloses and churns threads is recorded
//! exactly. Real processes, real BPF, as root (see common::bpf_ready).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leak_format::{EndReason, Reader, Record, TailProblem};
use leak_report::analysis::{self, Detector, Settings};
use leak_report::corpus::Rng; // seeded, so a failing run can be replayed
use leak_report::symbolize::{Options, Resolver};
use leak_report::{input, output, series};

mod common;
use common::*;

/// The seed from LEAK_TEST_SEED, else from the clock; printed either way.
fn seed() -> u64 {
    let seed = std::env::var("LEAK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("random seed {seed} (replay with LEAK_TEST_SEED={seed})");
    seed
}

/// A process started by the test, killed and reaped however the test ends.
struct Target(Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a fixture that prints "ready" and waits for a line on stdin (--wait-start).
fn start_waiting(args: &[&str]) -> (Target, BufReader<std::process::ChildStdout>) {
    let (child, out) = spawn_waiting(args);
    (Target(child), out)
}

/// Starts a `--wait-start` target, attaches a recorder (`-p`, `-i interval`), lets the target
/// go once the recorder records, and waits for the target: the recorder, the target's output
/// and its exit status.
fn attach_then_go(args: &[&str], interval: &str) -> (Running, Vec<u8>, std::process::ExitStatus) {
    let (mut target, mut t_out) = start_waiting(args);
    let pid = target.0.id().to_string();
    let mut rec = start_recorder(&["-p", &pid, "-i", interval]);
    wait_for_line(
        &mut rec.stderr,
        "recording PID",
        Duration::from_secs(60),
        "recorder",
    );
    target.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut printed = Vec::new();
    t_out.read_to_end(&mut printed).unwrap();
    let status = target.0.wait().unwrap();
    (rec, printed, status)
}

/// What leak-report (the same library calls as the binary) makes of a recording: its text
/// summary, or its one-line error.
fn leak_report_text(path: &Path) -> Result<(String, series::Recording), String> {
    let rec = input::read(path, series::DEFAULT_CAP)?;
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default());
    let a = analysis::analyze(&rec, &resolver, &settings());
    Ok((output::text(&rec, &a, 10), rec))
}

fn settings() -> Settings {
    Settings {
        detector: Detector::Robust,
        detect: leak_report::detect::Config::default(),
        memory_limit: None,
    }
}

/// Byte offsets where each complete zstd frame after the preamble ends, found by frame
/// headers and block sizes alone (independently of leak_format's reader).
fn complete_frames(bytes: &[u8]) -> Vec<usize> {
    let preamble = 8 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let mut ends = Vec::new();
    let mut at = preamble;
    while at < bytes.len() {
        match zstd::zstd_safe::find_frame_compressed_size(&bytes[at..]) {
            Ok(n) if n > 0 && at + n <= bytes.len() => {
                at += n;
                ends.push(at);
            }
            _ => break,
        }
    }
    ends
}

/// What a SIGKILLed recorder left.
#[derive(Debug, PartialEq, Eq)]
enum Left {
    /// Killed before it created the file.
    Nothing,
    /// Killed before the header was written: leak-report refuses it in one line.
    NoHeader,
    /// A header and this many snapshots, all read back.
    Snapshots(u32),
}

/// Checks everything a killed recording must satisfy, and says what it held.
fn check_killed(path: &Path, what: &str) -> Left {
    if !path.exists() {
        return Left::Nothing;
    }
    let bytes = fs::read(path).unwrap();
    if bytes.len() < 20 || complete_frames(&bytes).is_empty() {
        // Not even the header record: the analyzer says so in one line, never panics.
        let e = leak_report_text(path).map(|_| ()).unwrap_err();
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
        return Left::NoHeader;
    }
    let ends = complete_frames(&bytes);
    let mut records = Vec::new();
    let mut tail = None;
    for r in Reader::open(path).unwrap() {
        match r {
            Ok(rec) => records.push(rec),
            Err(e) => tail = Some(e),
        }
    }
    // Every complete frame is read back as a record; only an incomplete last frame is not.
    assert_eq!(records.len(), ends.len(), "{what}: {tail:?}");
    let last_end = *ends.last().unwrap();
    match &tail {
        None => assert_eq!(last_end, bytes.len(), "{what}: unread bytes, no tail"),
        Some(leak_format::Error::Tail { offset, problem }) => {
            assert_eq!(*offset, last_end as u64, "{what}");
            assert_eq!(*problem, TailProblem::Truncated, "{what}");
        }
        Some(e) => panic!("{what}: {e}"),
    }
    assert!(matches!(records[0], Record::Header(_)), "{what}");
    let mut seq = 0;
    let mut leaked = std::collections::HashMap::new();
    for r in &records[1..] {
        match r {
            Record::Snapshot(s) => {
                assert_eq!(s.seq, seq, "{what}: snapshots are consecutive");
                seq += 1;
                for st in &s.stats {
                    // The fixture leaks 100-byte blocks: totals only grow, in whole blocks.
                    let prev = leaked.insert((st.stack, st.kind), st.alloc_bytes);
                    assert!(prev.unwrap_or(0) <= st.alloc_bytes, "{what}: {st:?}");
                }
            }
            Record::End(_) => panic!("{what}: a killed recorder wrote an end record"),
            _ => {}
        }
    }
    // leak-report analyzes it and says why it is incomplete; with no snapshot, it says there is
    // nothing to analyze, in one line.
    if seq == 0 {
        let e = leak_report_text(path).map(|_| ()).unwrap_err();
        assert!(e.contains("nothing to analyze"), "{what}: {e}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
        return Left::Snapshots(0);
    }
    let (text, rec) = leak_report_text(path).unwrap();
    assert_eq!(rec.snapshots, seq, "{what}");
    let expected = if tail.is_some() {
        let s = if seq == 1 { "" } else { "s" };
        format!("analyzed the {seq} complete snapshot{s} before it")
    } else {
        "the recording has no end record: the recorder was killed".to_string()
    };
    assert!(text.contains(&expected), "{what}: {text}");
    Left::Snapshots(seq)
}

#[test]
fn sigkill_at_fifty_random_moments_keeps_every_complete_snapshot() {
    if !bpf_ready() {
        return;
    }
    const WORKERS: u64 = 5;
    const KILLS_EACH: u64 = 10;
    let seed = seed();
    let leaky = fixture("leaky");
    // Each worker has its own target and attaches a recorder to it again and again; the
    // recorders' setup (mostly waiting for the kernel) overlaps across workers.
    let outcomes: Vec<(u64, u64, Left)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let leaky = leaky.clone();
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ w.wrapping_mul(0x5851_F42D_4C95_7F2D));
                    let mut target = Target(
                        Command::new(&leaky)
                            .args(["slow", "4000000", "100", "2"])
                            .stdout(Stdio::null())
                            .spawn()
                            .unwrap(),
                    );
                    let pid = target.0.id().to_string();
                    // Attach once the dynamic loader has mapped libc: before that, the
                    // process has no allocator to probe, and the recorder says so.
                    wait_for_libc(&mut target.0);
                    let mut out = Vec::new();
                    for k in 0..KILLS_EACH {
                        // One kill in five lands anywhere in setup, the others while recording.
                        let in_setup = rng.int(0, 4) == 0;
                        let delay = Duration::from_millis(if in_setup {
                            rng.int(0, 2999)
                        } else {
                            rng.int(50, 599)
                        });
                        let mut rec = start_recorder(&["-p", &pid, "-i", "100ms"]);
                        if !in_setup {
                            let what = format!("worker {w} kill {k}");
                            wait_for_line(
                                &mut rec.stderr,
                                "recording PID",
                                Duration::from_secs(60),
                                &what,
                            );
                        }
                        std::thread::sleep(delay);
                        rec.child.kill().unwrap(); // SIGKILL
                        rec.child.wait().unwrap();
                        let what = format!(
                            "worker {w} kill {k} ({} ms{}, seed {seed})",
                            delay.as_millis(),
                            if in_setup { " from start" } else { "" }
                        );
                        out.push((w, k, check_killed(&rec.out, &what)));
                    }
                    drop(target);
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(outcomes.len() as u64, WORKERS * KILLS_EACH);
    let with_snapshots = outcomes
        .iter()
        .filter(|(_, _, l)| matches!(l, Left::Snapshots(n) if *n > 0))
        .count();
    eprintln!("outcomes: {outcomes:?}");
    // Most kills landed mid-recording, so the checks above really ran on snapshots.
    assert!(with_snapshots >= 25, "{outcomes:?}");
}

#[test]
fn a_full_disk_stops_the_recorder_with_one_line_and_keeps_every_snapshot() {
    if !bpf_ready() {
        return;
    }
    let leaky = fixture("leaky");
    let disk = record_onto_full_disk(
        &["-i", "100ms", "--", &leaky, "slow", "100000", "100", "5"],
        "64k",
        &[
            "| outstanding",
            "attached",
            "recording PID",
            "leak-record:   ",
        ],
    );
    // The command was ended, and the error's one line says so.
    let (state, out) = (&disk.state, &disk.out);
    let pid = state.header.as_ref().unwrap().target.pid;
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let said = format!(
        "leak-record: recording failed, so the command it started (PID {pid}) was ended: cannot \
         write to "
    );
    assert!(disk.error.starts_with(&said), "{}", disk.error);
    // leak-report reads it and says the recording stopped early.
    let (text, rec) = leak_report_text(out).unwrap();
    assert_eq!(rec.snapshots, state.snapshots);
    assert!(
        text.contains("no end record") || text.contains("the recorder stopped on an error"),
        "{text}"
    );
    drop(disk);
}

// ---- Traced process safety -------------------------------------------------------------

#[test]
fn a_closed_stderr_loses_nothing_and_the_command_is_still_ended() {
    if !bpf_ready() {
        return;
    }
    // `leak-record ... 2>&1 | head -1`: stderr's reader is gone after the first line. Writing a
    // status line then failed with EPIPE, eprintln! panicked, and the recording had no
    // snapshot while the command ran on past -d.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.zst");
    let mut rec = Command::new(RECORDER)
        .args(["-d", "2s", "-i", "200ms", "-o"])
        .arg(&out)
        .args(["--", &fixture("leaky"), "slow", "100", "100", "100"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = only_child(rec.id());
    let _guard = KillOnDrop(vec![child]);
    drop(rec.stderr.take());
    let status = wait_exit(
        &mut rec,
        Duration::from_secs(30),
        "the recorder did not end",
    );
    assert_eq!(status.code(), Some(0));
    let (state, tail) = read_recording(&out);
    assert!(tail.is_none());
    assert!(state.snapshots >= 5, "{} snapshots", state.snapshots);
    assert_eq!(state.end.unwrap().reason, EndReason::Duration);
    assert!(ended(child), "the command outlived -d");
}

/// A stop signal while leak-record sets up (attaching takes a few hundred ms) ends it cleanly
/// once recording starts: status 0, a whole recording with its End record (or, before the file
/// exists, kills it with nothing left). Before, the
/// signal's default action killed it and left an empty file, which also blocked the next run
/// ("exists; pass --force").
#[test]
fn a_stop_signal_during_the_setup_still_leaves_a_whole_recording() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, delay_ms) in [30u64, 100, 200, 300].into_iter().enumerate() {
        let out = dir.path().join(format!("run{i}.zst"));
        let mut rec = Command::new(RECORDER)
            .args(["-q", "-i", "500ms", "-o"])
            .arg(&out)
            .args(["--", &fixture("leaky"), "slow", "100", "100", "100"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill has no memory-safety preconditions; the PID is our own live child.
        unsafe { libc::kill(rec.id() as i32, libc::SIGTERM) };
        let status = wait_exit(
            &mut rec,
            Duration::from_secs(30),
            "the recorder did not end",
        );
        let mut err = String::new();
        rec.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        // Before the file exists, the default action may still kill it: then nothing is left.
        if status.code().is_none() {
            assert!(
                !out.exists(),
                "{delay_ms} ms: killed, and left {}",
                out.display()
            );
            continue;
        }
        assert_eq!(status.code(), Some(0), "{delay_ms} ms: {err}");
        let (state, tail) = read_recording(&out);
        assert!(tail.is_none(), "{delay_ms} ms");
        assert!(state.end.is_some(), "{delay_ms} ms: no End record");
    }
}

#[test]
fn a_started_command_dies_with_a_killed_recorder() {
    if !bpf_ready() {
        return;
    }
    // `timeout -s KILL 600 leak-record -- ./svc` in CI: the command must not run on,
    // orphaned, untraced and unrecorded (50 s of work left when the recorder is killed).
    let mut rec = start_recorder(&[
        "-i",
        "100ms",
        "--",
        &fixture("leaky"),
        "slow",
        "1000",
        "100",
        "50",
    ]);
    let child = only_child(rec.child.id());
    let _guard = KillOnDrop(vec![child]);
    wait_for_line(
        &mut rec.stderr,
        "recording PID",
        Duration::from_secs(60),
        "recorder start",
    );
    rec.child.kill().unwrap(); // SIGKILL
    rec.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ended(child) {
        assert!(
            Instant::now() < deadline,
            "the command outlived its recorder"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_target_that_exits_during_the_attach_is_one_line_and_status_2() {
    if !bpf_ready() {
        return;
    }
    // Targets that live 0.05 to 0.5 s, attached to once libc is mapped: most end while the
    // probes are being attached, whose perf events then fail with ESRCH. That was a runtime
    // failure (status 1) over several lines; it is the process's exit, said in one line, like
    // "no process with PID N".
    let mut exited = 0;
    for ms in (50..=500).step_by(50) {
        let mut target = Target(
            Command::new("sleep")
                .arg(format!("{}", ms as f64 / 1000.0))
                .spawn()
                .unwrap(),
        );
        let pid = target.0.id().to_string();
        // Before the loader has mapped libc, the process has no allocator yet, and "no
        // allocator found" is the truth.
        wait_for_libc(&mut target.0);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run.zst");
        let (code, stderr) =
            run_recorder(&["-q", "-i", "200ms", "-p", &pid, "-o", out.to_str().unwrap()]);
        let _ = target.0.wait();
        // libbpf's own lines for the failed probes are not shown: ours says it all.
        let ours: Vec<&str> = stderr.lines().collect();
        match code {
            Some(0) => assert!(out.exists(), "{ms} ms: {stderr}"),
            Some(2) => {
                assert_eq!(ours.len(), 1, "{ms} ms: {stderr}");
                assert!(
                    ours[0].contains("exited while leak-record was attaching to it")
                        || ours[0].contains("no process with PID"),
                    "{ms} ms: {stderr}"
                );
                exited += usize::from(ours[0].contains("exited while"));
                assert!(!out.exists(), "{ms} ms: a file was left");
            }
            _ => panic!("{ms} ms: status {code:?}: {stderr}"),
        }
    }
    eprintln!("{exited} of 10 targets exited during the attach");
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_after_the_grace_and_the_recording_is_whole() {
    if !bpf_ready() {
        return;
    }
    // The shell ignores SIGTERM, and its program inherits that through exec.
    let body = format!("trap '' TERM; exec {} slow 1000 100 50", fixture("leaky"));
    let started = Instant::now();
    let mut rec = start_recorder(&["-d", "1s", "-i", "200ms", "--", "/bin/sh", "-c", &body]);
    let child = only_child(rec.child.id());
    let _guard = KillOnDrop(vec![child]);
    let status = wait_exit(
        &mut rec.child,
        Duration::from_secs(60),
        "the recorder did not end",
    );
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "the 5 s grace was cut short"
    );
    let r = rec.finish();
    assert_eq!(status.code(), Some(0), "-d ended it: {}", r.stderr);
    let said: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("killing it"))
        .collect();
    assert_eq!(said.len(), 1, "{}", r.stderr);
    // -d, not the command, ended the run: said, since the exit status (0) is not the command's.
    assert!(
        r.stderr.contains(&format!(
            "leak-record: warning: -d ended the recording with the command (PID {child}) still \
             running; ending it."
        )),
        "{}",
        r.stderr
    );
    assert!(
        said[0].contains(&format!(
            "leak-record: warning: PID {child} was still running 5."
        )) && said[0].ends_with(" s after SIGTERM; killing it"),
        "{}",
        said[0]
    );
    assert_eq!(r.state.end.as_ref().unwrap().reason, EndReason::Duration);
    assert!(r.by_function("leak_slowly").count > 0);
    assert!(ended(child));
}

/// When -d ends a command, the processes it started end too: a shell does not pass SIGTERM on,
/// and its commands ran on, orphaned (a CI runner's stray processes). Those that ignore
/// SIGTERM (inherited from `trap '' TERM`) are killed after the grace, and said.
#[test]
fn the_processes_a_command_started_end_with_it() {
    if !bpf_ready() {
        return;
    }
    for (body, ignores) in [
        ("sleep 30; true", false),
        ("trap '' TERM; sleep 30; true", true),
    ] {
        let mut rec = start_recorder(&["-d", "1s", "-i", "200ms", "--", "/bin/sh", "-c", body]);
        let shell = only_child(rec.child.id());
        let sleep = only_child(shell);
        let _guard = KillOnDrop(vec![shell, sleep]);
        wait_exit(
            &mut rec.child,
            Duration::from_secs(60),
            "the recorder did not end",
        );
        let r = rec.finish();
        assert!(ended(shell) && ended(sleep), "{body}: {}", r.stderr);
        let said = format!("1 process(es) started by PID {shell} still running 5.");
        assert_eq!(r.stderr.contains(&said), ignores, "{body}: {}", r.stderr);
    }
}

/// Attached to a running process, a cache that renews entries allocated before the attach
/// gains a block at each renewal, and the free of the old one is of a block never seen
/// allocated (`unknown_free`): by every test on its series that growth is a leak, and it was
/// reported as one. leak-report calls it turnover since the attach (a leak gate passes no run
/// with one), while a real leak in the same process, gaining blocks faster than those frees
/// come, stays a continuous leak.
#[test]
fn a_cache_renewing_entries_from_before_the_attach_is_turnover_not_a_leak() {
    if !bpf_ready() {
        return;
    }
    let (mut target, mut t_out) =
        spawn_until(&[&fixture("leaky"), "turnover", "4096", "800"], "full");
    let pid = target.id().to_string();
    let mut rec = start_recorder(&["-p", &pid, "-i", "200ms"]);
    wait_for_line(
        &mut rec.stderr,
        "recording PID",
        Duration::from_secs(60),
        "recorder",
    );
    let mut t_in = target.stdin.take().unwrap();
    t_in.write_all(b"go\n").unwrap();
    wait_for_line(&mut t_out, "done", Duration::from_secs(120), "fixture");
    // One snapshot after the work, so that the growth lasts to the end.
    wait_for_line(
        &mut rec.stderr,
        "snapshot",
        Duration::from_secs(10),
        "recorder",
    );
    // SAFETY: kill(2) of our own child, by its PID.
    assert_eq!(
        unsafe { libc::kill(rec.child.id() as i32, libc::SIGTERM) },
        0
    );
    assert!(rec.child.wait().unwrap().success());
    drop(t_in);
    let _ = target.wait();
    let rec_file = input::read(&rec.out, series::DEFAULT_CAP).unwrap();
    assert_eq!(rec_file.losses.unknown_free, 800, "{:?}", rec_file.losses);
    let resolver = Resolver::new(
        &rec_file.modules,
        &rec_file.bundles,
        &rec_file.maps,
        &Options::default(),
    );
    let mut a = analysis::analyze(&rec_file, &resolver, &settings());
    analysis::warn_turnover(&rec_file, &mut a);
    let stack = |function: &str| {
        a.stacks
            .iter()
            .find(|s| s.frames.first().and_then(|f| f.function.as_deref()) == Some(function))
            .unwrap_or_else(|| panic!("no {function} stack"))
    };
    let (renew, leak) = (stack("ring_renew"), stack("leak_steady"));
    assert_eq!(
        (renew.outstanding_bytes, renew.outstanding_count),
        (800 * 256, 800)
    );
    assert_eq!(
        (leak.outstanding_bytes, leak.outstanding_count),
        (4000 * 64, 4000)
    );
    assert_eq!(
        renew.verdict,
        leak_report::detect::Verdict::AttachTurnover,
        "{:#?}",
        renew.detection.gates
    );
    assert_eq!(
        renew.detection.gates.last().map(|g| (g.name, g.passed)),
        Some(("attach_turnover", false))
    );
    assert_eq!(
        leak.verdict,
        leak_report::detect::Verdict::ContinuousLeak,
        "{:#?}",
        leak.detection.gates
    );
    let said = format!(
        "1 stack gained blocks at most twice as fast as the process freed blocks allocated \
         before the attach (stack {}:",
        renew.id
    );
    assert!(
        a.warnings.iter().any(|w| w.starts_with(&said)),
        "{said}\n{:#?}",
        a.warnings
    );
}

/// A recorder stopped (Ctrl-Z, SIGSTOP) takes no snapshot meanwhile. Its counters go on, so
/// nothing is lost, but what happened then shows as one step: leak-report says how long the
/// snapshots stopped, which it did not before.
#[test]
fn a_stopped_recorder_leaves_a_gap_that_leak_report_names() {
    if !bpf_ready() {
        return;
    }
    let (target, _t_out) = start_waiting(&[&fixture("leaky"), "--wait-start", "basic", "1", "1"]);
    let pid = target.0.id().to_string();
    let mut rec = start_recorder(&["-p", &pid, "-i", "200ms"]);
    wait_for_line(
        &mut rec.stderr,
        "snapshot 2 ",
        Duration::from_secs(60),
        "recorder",
    );
    let signal = |sig| {
        // SAFETY: kill(2) of our own child, by its PID.
        unsafe { libc::kill(rec.child.id() as i32, sig) }
    };
    assert_eq!(signal(libc::SIGSTOP), 0);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(signal(libc::SIGCONT), 0);
    let after = wait_for_line(
        &mut rec.stderr,
        "snapshot",
        Duration::from_secs(10),
        "recorder",
    );
    wait_for_line(
        &mut rec.stderr,
        "snapshot",
        Duration::from_secs(10),
        "recorder",
    );
    assert_eq!(signal(libc::SIGTERM), 0);
    let status = rec.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{after}");
    let (text, recording) = leak_report_text(&rec.out).unwrap();
    let (at, gap) = recording.longest_gap.unwrap();
    assert!((6.0..30.0).contains(&gap), "{gap} s at {at} s");
    let said = format!(
        "no snapshot for {} from {} into the recording (one every 0.2 s otherwise): leak-record \
         was stopped",
        output::human_duration(gap),
        output::human_duration(at)
    );
    assert!(text.contains(&said), "{said}\n{text}");
    drop(target);
}

#[test]
fn a_started_command_gets_the_signal_dispositions_a_shell_gives() {
    if !bpf_ready() {
        return;
    }
    // The Rust runtime ignores SIGPIPE, and the raw fork that starts the command kept that:
    // `yes | head -1` inside it then ended `yes` with status 1, not SIGPIPE's 141, and a
    // pipefail script failed only under leak-record.
    let script = "yes | head -1 >/dev/null; echo ${PIPESTATUS[0]}; grep -E '^Sig(Ign|Blk)' /proc/self/status";
    let bare = Command::new("bash").args(["-c", script]).output().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.zst");
    let rec = Command::new(RECORDER)
        .args(["-q", "-o"])
        .arg(&out)
        .args(["--", "bash", "-c", script])
        .output()
        .unwrap();
    assert_eq!(
        rec.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let (bare, recorded) = (
        String::from_utf8_lossy(&bare.stdout),
        String::from_utf8_lossy(&rec.stdout),
    );
    assert!(bare.starts_with("141\n"), "{bare}");
    assert_eq!(recorded, bare);
}

/// The state letter of /proc/PID/stat (R, S, T stopped, t tracing stop, Z zombie, ...); None
/// once the process is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// The process's state once `wanted` holds for it, or its last state at the deadline.
fn state_within(pid: u32, limit: Duration, wanted: impl Fn(Option<char>) -> bool) -> Option<char> {
    let deadline = Instant::now() + limit;
    loop {
        let state = proc_state(pid);
        if wanted(state) || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the process has ended: gone, or a zombie waiting for its parent to reap it.
fn ended(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some('Z'))
}

/// Processes the test SIGKILLs if it fails before they end (the vector is emptied once they
/// did).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill(2) on PIDs this test started and has not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// The started command's PID: the recorder's only child.
fn only_child(recorder: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children: Vec<u32> = std::fs::read_dir(format!("/proc/{recorder}/task"))
            .unwrap()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect::<Vec<u32>>()
            })
            .collect();
        if let [pid] = children[..] {
            return pid;
        }
        assert!(Instant::now() < deadline, "children: {children:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_started_command_stopped_and_continued_runs_on_as_it_would_bare() {
    if !bpf_ready() {
        return;
    }
    // SIGSTOP (or Ctrl-Z's SIGTSTP), then SIGCONT: the child stops, resumes, and finishes its
    // 40 leaks of 100 bytes. Listening again at SIGCONT's wake-up kept it in a tracing stop
    // for good. (The recorder runs in its own process group, as under a shell: the kernel
    // discards SIGTSTP in an orphaned one.)
    for (name, stop) in [("SIGSTOP", libc::SIGSTOP), ("SIGTSTP", libc::SIGTSTP)] {
        let mut rec = start_recorder(&[
            "-q",
            "-i",
            "100ms",
            "--",
            &fixture("leaky"),
            "slow",
            "40",
            "100",
            "50",
        ]);
        let child = only_child(rec.child.id());
        // A failed assertion must not leave a frozen child, nor its recorder, behind.
        let mut guard = KillOnDrop(vec![child, rec.child.id()]);
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: signalling the test's own grandchild by PID; it is alive (a zombie at worst).
        assert_eq!(unsafe { libc::kill(child as i32, stop) }, 0);
        let stopped = |s: Option<char>| matches!(s, Some('T' | 't'));
        let state = state_within(child, Duration::from_secs(10), stopped);
        assert!(stopped(state), "{name}: state {state:?}");
        // It stays stopped: the recorder does not resume it.
        std::thread::sleep(Duration::from_millis(300));
        let state = proc_state(child);
        assert!(stopped(state), "{name}: state {state:?} 300 ms later");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(child as i32, libc::SIGCONT) }, 0);
        // It runs again (a deadline, not a delay: a loaded CI host is slow, a stuck child
        // stays in its tracing stop for good).
        let running = |s: Option<char>| matches!(s, Some('R' | 'S' | 'D' | 'Z') | None);
        let state = state_within(child, Duration::from_secs(10), running);
        assert!(running(state), "{name}: state {state:?} 10 s after SIGCONT");
        wait_exit(
            &mut rec.child,
            Duration::from_secs(30),
            "the command did not finish after SIGCONT",
        );
        guard.0.clear();
        let r = rec.finish();
        assert_eq!(r.code, Some(0), "{name}: {}", r.stderr);
        assert_eq!(
            r.state.end.as_ref().unwrap().reason,
            EndReason::TargetExited {
                code: Some(0),
                signal: None
            }
        );
        let t = r.by_function("leak_slowly");
        assert_eq!((t.bytes, t.count), (4_000, 40), "{name}");
    }
}

#[test]
fn a_command_stopped_before_it_starts_runs_once_continued_or_ends_with_the_recorder() {
    if !bpf_ready() {
        return;
    }
    // SIGSTOP reaches the command while leak-record is still setting up (the command waits,
    // forked, for its go): the setup finishes and hands it over stopped; it runs at SIGCONT.
    // leak-record waited for its exec without handling its stops: both hung for good. A stop
    // request for leak-record while the command stays stopped ends the recording.
    for continued in [true, false] {
        let mut rec = start_recorder(&[
            "-q",
            "-i",
            "100ms",
            "--",
            &fixture("leaky"),
            "slow",
            "20",
            "100",
            "10",
        ]);
        let child = only_child(rec.child.id());
        // SAFETY: signalling the test's own grandchild by PID.
        assert_eq!(unsafe { libc::kill(child as i32, libc::SIGSTOP) }, 0);
        let mut guard = KillOnDrop(vec![child, rec.child.id()]);
        // Still leak-record's fork, not the command: the stop came before the exec.
        let exe = fs::read_link(format!("/proc/{child}/exe")).unwrap();
        assert!(
            exe.ends_with("leak-record"),
            "the command started before the test stopped it: {exe:?}"
        );
        // Until the setup has handed it over (the recorder's first snapshot is on disk).
        std::thread::sleep(Duration::from_millis(2_000));
        let state = proc_state(child);
        assert!(matches!(state, Some('T' | 't')), "state {state:?}");
        let stop = if continued {
            libc::SIGCONT
        } else {
            libc::SIGTERM
        };
        let pid = if continued { child } else { rec.child.id() };
        // SAFETY: as above; the recorder is the test's own child.
        assert_eq!(unsafe { libc::kill(pid as i32, stop) }, 0);
        wait_exit(
            &mut rec.child,
            Duration::from_secs(30),
            "leak-record did not end",
        );
        guard.0.clear();
        let r = rec.finish();
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let end = r.state.end.as_ref().unwrap();
        if continued {
            assert_eq!(
                end.reason,
                EndReason::TargetExited {
                    code: Some(0),
                    signal: None
                }
            );
            let t = r.by_function("leak_slowly");
            assert_eq!((t.bytes, t.count), (2_000, 20));
        } else {
            assert_eq!(end.reason, EndReason::Signal(libc::SIGTERM));
            assert!(ended(child), "the command outlived leak-record");
        }
    }
}

#[test]
fn a_command_killed_before_it_starts_is_one_line_and_its_status() {
    if !bpf_ready() {
        return;
    }
    // Ctrl-C during the set-up kills the command, which waits, forked, for its go. The attach
    // then failed on the dead process: libbpf's lines, "failed to attach a uprobe", status 1.
    let mut rec = start_recorder(&["-i", "1s", "--", &fixture("leaky"), "basic", "10", "100"]);
    let child = only_child(rec.child.id());
    let mut guard = KillOnDrop(vec![rec.child.id()]);
    // SAFETY: signalling the test's own grandchild by PID.
    assert_eq!(unsafe { libc::kill(child as i32, libc::SIGINT) }, 0);
    let status = wait_exit(
        &mut rec.child,
        Duration::from_secs(30),
        "leak-record did not end",
    );
    guard.0.clear();
    assert_eq!(status.code(), Some(130), "128 + SIGINT, as a shell says");
    let mut stderr = String::new();
    rec.stderr.read_to_string(&mut stderr).unwrap();
    let name = fixture("leaky");
    if rec.out.exists() {
        // Killed between the attach and its start: a whole recording of its end.
        let (state, _) = read_recording(&rec.out);
        assert_eq!(
            state.end.unwrap().reason,
            EndReason::TargetExited {
                code: None,
                signal: Some(libc::SIGINT)
            }
        );
    } else {
        assert_eq!(
            stderr,
            format!(
                "leak-record: {name} (PID {child}) was killed by signal 2 before it started; \
                 nothing was recorded\n"
            )
        );
    }
}

#[test]
fn attaching_to_a_busy_process_is_not_counted_as_lost_data() {
    if !bpf_ready() {
        return;
    }
    // A return probe is placed before its entry probe; the calls under way meanwhile return
    // without an entry. In a malloc/free loop that made 1-22 "lost" events per attach here
    // (257,767 in a review), and leak-record warned of lost data. Three attaches, none.
    let mut churn = Command::new(fixture("leaky"))
        .args(["churn", "4000000000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = churn.id().to_string();
    let guard = KillOnDrop(vec![churn.id()]);
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let out = dir.path().join(format!("p{round}.zst"));
        let (code, stderr) = run_recorder(&[
            "-q",
            "-p",
            &pid,
            "-i",
            "1s",
            "-d",
            "2s",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stderr, "", "round {round}: nothing to say under -q");
        let (state, tail) = read_recording(&out);
        let l = state.losses;
        assert_eq!(l.total_drops(), 0, "round {round}: {l:?}");
        // It was recorded while it churned (how many of its frees met a block from before
        // the attach depends on the scheduling: none on a loaded CI host).
        let r = Recorded {
            state,
            tail,
            stdout: String::new(),
            stderr,
            code,
        };
        let churned = r.by_function("churn_loop");
        assert!(
            churned.allocs > 0 && churned.frees > 0,
            "round {round}: {churned:?}"
        );
    }
    assert_eq!(churn.try_wait().unwrap(), None, "the target runs on");
    drop(guard);
    let _ = churn.wait();
}

#[test]
fn ctrl_c_lets_the_command_end_in_its_own_way_and_passes_its_status_on() {
    if !bpf_ready() {
        return;
    }
    // Ctrl-C on a terminal goes to the whole foreground job: leak-record and the command. A
    // command that cleans up on SIGINT (1 s here) and exits 42 must get to, and its status be
    // leak-record's, as a shell would report it. leak-record sent it SIGTERM at once before:
    // the clean-up cut short, exit status 0. (script(1) gives the job a terminal; ^C written
    // to it is a real Ctrl-C. It runs the job with $SHELL -c: `exec`, so that the shell does
    // not stay between the terminal and leak-record. A non-interactive dash, CI's /bin/sh,
    // dies of the Ctrl-C itself, and script(1) reported its 130.)
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cc.zst");
    let command = format!(
        "exec '{RECORDER}' -q -i 1s -o '{}' -- sh -c 'trap \"sleep 1; echo cleaned; exit 42\" INT; \
         echo ready; while :; do sleep 0.1; done'",
        out.display()
    );
    let mut job = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script(1), util-linux");
    let mut tty = BufReader::new(job.stdout.take().unwrap());
    wait_for_line(&mut tty, "ready", Duration::from_secs(60), "the command");
    let mut keys = job.stdin.take().unwrap();
    keys.write_all(b"\x03").unwrap();
    keys.flush().unwrap();
    let mut rest = String::new();
    tty.read_to_string(&mut rest).unwrap();
    let status = wait_exit(&mut job, Duration::from_secs(60), "the job did not end");
    drop(keys);
    assert!(
        rest.contains("cleaned"),
        "the clean-up ran to its end: {rest}"
    );
    assert_eq!(status.code(), Some(42), "{rest}");
    let (state, _) = read_recording(&out);
    assert_eq!(
        state.end.unwrap().reason,
        EndReason::TargetExited {
            code: Some(42),
            signal: None
        }
    );
}

/// How a process ended: (exit code, terminating signal).
fn ending(status: std::process::ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (status.code(), status.signal())
}

#[test]
fn the_target_prints_and_exits_the_same_with_and_without_recording() {
    if !bpf_ready() {
        return;
    }
    let lifecycle = fixture("lifecycle");
    // Exit 0, exit 7, and death by SIGUSR1 (default action: terminate).
    // leak-record passes the status on, as strace and valgrind do: 128 + N for signal N.
    for (lines, how, arg, passed_on) in [
        ("200", "output", "0", 0),
        ("200", "output", "7", 7),
        ("50", "signal", "10", 138),
    ] {
        let args = [how, lines, arg];
        let bare = Command::new(&lifecycle).args(args).output().unwrap();
        let bare_end = ending(bare.status);
        assert_eq!(
            bare.stdout.iter().filter(|&&b| b == b'\n').count(),
            lines.parse::<usize>().unwrap()
        );

        // Command form: the target's stdout is the recorder's; its status is in the end record
        // and is the recorder's own.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run.zst");
        let rec = Command::new(RECORDER)
            .args(["-q", "-i", "100ms", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&lifecycle)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&rec.stderr);
        assert_eq!(rec.status.code(), Some(passed_on), "{args:?}: {err}");
        assert_eq!(
            rec.stdout, bare.stdout,
            "{args:?}: output changed under recording"
        );
        let (state, tail) = read_recording(&out);
        assert!(tail.is_none());
        assert_eq!(
            state.end.unwrap().reason,
            EndReason::TargetExited {
                code: bare_end.0,
                signal: bare_end.1
            },
            "{args:?}"
        );
        // The probes were live: every line's buffer was seen allocated and freed.
        let r = Recorded {
            state: read_recording(&out).0,
            tail: None,
            stdout: String::new(),
            stderr: err.into_owned(),
            code: Some(0),
        };
        let n: u64 = lines.parse().unwrap();
        let t = r.by_function("alloc_line");
        assert_eq!((t.allocs, t.frees, t.bytes), (n, n, 0), "{args:?}: {t:?}");

        // -p form: the test starts the target and waits for it.
        let mut waiting = vec![lifecycle.as_str(), "--wait-start"];
        waiting.extend(args);
        let (mut rec, printed, status) = attach_then_go(&waiting, "100ms");
        assert_eq!(
            printed, bare.stdout,
            "{args:?} (-p): output changed under recording"
        );
        assert_eq!(ending(status), bare_end, "{args:?} (-p)");
        let rec_status = rec.child.wait().unwrap();
        let mut rest = String::new();
        rec.stderr.read_to_string(&mut rest).unwrap();
        assert!(rec_status.success(), "{args:?} (-p): {rest}");
        let (state, _) = read_recording(&rec.out);
        assert!(
            matches!(state.end.unwrap().reason, EndReason::TargetExited { .. }),
            "{args:?}"
        );
    }
}

// ---- Target lifecycle ------------------------------------------------------------------

#[test]
fn a_forked_child_is_not_recorded_and_the_parent_stays_exact() {
    if !bpf_ready() {
        return;
    }
    let r = record(
        &["-i", "100ms"],
        &[&fixture("lifecycle"), "fork", "100", "100"],
    );
    r.assert_clean();
    for f in ["leak_before_fork", "leak_after_fork"] {
        let t = r.by_function(f);
        assert_eq!((t.bytes, t.count, t.frees), (10_000, 100, 0), "{f}: {t:?}");
    }
    // The child (another PID) leaked and freed the parent's copies: none of it is recorded.
    assert_eq!(r.by_function("leak_in_child"), Totals::default());
    assert_eq!(
        r.by_function("child_frees_parent_blocks"),
        Totals::default()
    );
    let l = r.state.losses;
    assert_eq!((l.total_drops(), l.unknown_free), (0, 0), "{l:?}");
}

/// A wrapper that runs its program as a child (no exec) for less than one interval: no snapshot
/// sees the child alive, yet the recording counts it (BPF counts at the fork), names it after
/// its program, and leak-report warns with the fix. A command that starts no process gets
/// neither the record nor the warning.
#[test]
fn processes_the_target_started_are_recorded_and_warned_about() {
    if !bpf_ready() {
        return;
    }
    let leaky = fixture("leaky");
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, cmd: &[&str]| {
        let out = dir.path().join(name);
        let o = Command::new(RECORDER)
            .args(["-i", "200ms", "-o", out.to_str().unwrap(), "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        let (state, tail) = read_recording(&out);
        assert!(tail.is_none(), "{tail:?}");
        let (text, _) = leak_report_text(&out).unwrap();
        (state, text, stderr)
    };
    let warning = "which leak-record did not record (it follows one process)";
    let body = format!("{leaky} basic 10 100; true");
    let (state, text, stderr) = run("wrapper.zst", &["sh", "-c", &body]);
    let children = state.children.expect("a Children record");
    assert_eq!(children.started, 1, "{children:?}\n{stderr}");
    let [child] = &children.examples[..] else {
        panic!("{children:?}");
    };
    assert_eq!(child.name, "leaky", "named after its exec: {children:?}");
    let said = format!(
        "the target started 1 process (PID {}, leaky), {warning}",
        child.pid
    );
    assert!(text.contains(&said), "{text}");
    assert!(
        text.contains(
            "record the program itself: leak-record -- PROGRAM, or -p its PID; a \
             wrapper script should exec it"
        ),
        "{text}"
    );
    assert!(
        stderr.contains("leak-record: warning: PID ")
            && stderr.contains(" started 1 process, none of them recorded"),
        "{stderr}"
    );
    // The same program as the command: it starts none.
    let (state, text, stderr) = run("direct.zst", &[&leaky, "basic", "10", "100"]);
    assert_eq!(state.children, None, "{stderr}");
    assert!(!text.contains(warning), "{text}");
    assert!(!stderr.contains("none of them recorded"), "{stderr}");
}

/// An exec takes the old program's memory with it (PITFALLS 21): every block it had
/// outstanding is freed on its stack at the exec, and said; nothing recorded before an exec
/// outlives it.
#[test]
fn after_exec_the_new_program_is_recorded_and_the_old_programs_blocks_are_freed() {
    if !bpf_ready() {
        return;
    }
    let leaky = fixture("leaky");
    let lifecycle = fixture("lifecycle");
    let r = record(
        &["-i", "100ms"],
        &[
            &lifecycle, "exec", "50", "100", "1500", &leaky, "basic", "1000", "100",
        ],
    );
    r.assert_clean();
    // Before exec: symbolized in the old image, through the maps recorded before exec, and
    // freed at the exec.
    let before = r.by_function("leak_before_exec");
    let seen = (before.bytes, before.allocs, before.frees);
    assert_eq!(seen, (0, 50, 50), "{before:?}");
    let said = format!(
        "PID {} exec'd: the 50 blocks (4.9 KiB) the program it left had outstanding went with \
         its memory, and are freed on their stacks",
        r.state.header.as_ref().unwrap().target.pid
    );
    assert!(r.stderr.contains(&said), "{}", r.stderr);
    // After exec the probes (on libc, which the new image maps again) still fire for the
    // same PID: the new program is recorded exactly, its frames in its own binary.
    r.assert_leaky_basic(1000, 100);
    assert_eq!(
        r.state.end.as_ref().unwrap().reason,
        EndReason::TargetExited {
            code: Some(0),
            signal: None
        }
    );
    let paths: Vec<&str> = r.state.modules.values().map(|m| m.path.as_str()).collect();
    assert!(
        paths.contains(&lifecycle.as_str()) && paths.contains(&leaky.as_str()),
        "{paths:?}"
    );
    // Only the new program's leaks remain.
    assert_eq!(r.outstanding(), (100_000, 1000));
    let l = r.state.losses;
    assert_eq!(
        (l.total_drops(), l.missed_free, l.unknown_free),
        (0, 0, 0),
        "{l:?}"
    );
}

/// A process that execs between two snapshots: the old program's stacks are located in its own
/// maps, the new program's (which exits before its maps can be read) in none; neither in the
/// other's, with or without ASLR (without it both run at the same addresses). The exec comes
/// right after the old program's leak, the target's exit right after the new one's.
#[test]
fn stacks_on_either_side_of_an_exec_are_never_located_in_the_other_program() {
    if !bpf_ready() {
        return;
    }
    let leaky = fixture("leaky");
    let lifecycle = fixture("lifecycle");
    for aslr in [true, false] {
        let mut args = if aslr { vec![] } else { vec!["setarch", "-R"] };
        args.extend([
            lifecycle.as_str(),
            "--wait-start",
            "exec",
            "50",
            "100",
            "0",
            &leaky,
            "basic",
            "1000",
            "100",
        ]);
        let (mut target, _out) = spawn_waiting(&args);
        let pid = target.id().to_string();
        let mut rec = start_recorder(&["-p", &pid, "-i", "10s"]);
        let limit = Duration::from_secs(30);
        wait_for_line(&mut rec.stderr, "recording PID", limit, "recorder");
        target.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(target.wait().unwrap().success());
        let r = rec.finish();
        r.assert_clean();
        let before = r.by_function("leak_before_exec");
        let seen = (before.bytes, before.allocs, before.frees);
        assert_eq!(seen, (0, 50, 50), "aslr {aslr}");
        // The new program's leak: 1000 x 100 B on a stack in no module.
        let after: Vec<&leak_format::Stack> = r
            .state
            .totals
            .iter()
            .filter(|(_, t)| t.outstanding_bytes() == 100_000)
            .map(|((id, _), _)| &r.state.stacks[id])
            .collect();
        assert_eq!(after.len(), 1, "aslr {aslr}: {:?}", r.state.totals);
        assert!(
            after[0].frames.iter().all(|f| f.module.is_none()),
            "aslr {aslr}: located in a program it did not run in: {:?}",
            after[0]
        );
    }
}

#[test]
fn a_leak_in_a_dlclosed_library_is_symbolized_through_the_recorded_maps() {
    if !bpf_ready() {
        return;
    }
    let plugin = fixture("liblifecycle_plugin.so");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.zst");
    let status = Command::new(RECORDER)
        .args(["-q", "-i", "100ms", "-o"])
        .arg(&out)
        .args([
            "--",
            &fixture("lifecycle"),
            "dlopen",
            "100",
            "100",
            "1500",
            &plugin,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // The recorder noticed the library come and go: a map with it, then one without it.
    let maps: Vec<bool> = Reader::open(&out)
        .unwrap()
        .filter_map(|r| match r.unwrap() {
            Record::Snapshot(s) => s.maps.map(|m| m.iter().any(|e| e.path == plugin)),
            _ => None,
        })
        .collect();
    let loaded = maps
        .iter()
        .position(|&m| m)
        .expect("a snapshot saw the plugin mapped");
    assert!(
        maps[loaded..].contains(&false),
        "the dlclose was not seen: {maps:?}"
    );
    // The analyzer names the function inside the unloaded library, with exact numbers.
    let (_, rec) = leak_report_text(&out).unwrap();
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default());
    let a = analysis::analyze(&rec, &resolver, &settings());
    let innermost = |name: &str| {
        a.stacks
            .iter()
            .filter(|s| s.frames.first().and_then(|f| f.function.as_deref()) == Some(name))
            .map(|s| (s.outstanding_bytes, s.outstanding_count))
            .collect::<Vec<_>>()
    };
    assert_eq!(innermost("plugin_leak"), [(10_000, 100)]);
    assert_eq!(innermost("leak_after_dlclose"), [(100, 1)]);
    let f = &a
        .stacks
        .iter()
        .find(|s| s.outstanding_bytes == 10_000)
        .unwrap()
        .frames[0];
    assert_eq!(f.module, plugin);
}

#[test]
fn hundreds_of_short_lived_threads_lose_nothing() {
    if !bpf_ready() {
        return;
    }
    // 50 waves of 8 threads, each created, leaking 10 x 64 bytes and joined.
    let r = record(
        &["-i", "100ms"],
        &[&fixture("lifecycle"), "threads", "50", "8", "10", "64"],
    );
    r.assert_clean();
    let t = r.by_function("wave_leak");
    assert_eq!((t.bytes, t.count), (400 * 10 * 64, 4000), "{t:?}");
    let l = r.state.losses;
    assert_eq!(l.total_drops(), 0, "{l:?}");
    assert_eq!(l.abandoned_calls, 0, "{l:?}");
}

// ---- Least privilege ------------------------------------------------------------------

/// leak-record run as user nobody (65534) holding exactly `caps` (setpriv syntax, e.g.
/// "+bpf,+perfmon"), writing into a directory nobody owns.
fn as_nobody(caps: &str, out: &Path, args: &[&str]) -> Command {
    let set = if caps.is_empty() {
        "-all".to_string()
    } else {
        format!("-all,{caps}")
    };
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--")
        .arg(RECORDER)
        .args(["-i", "100ms", "-o"])
        .arg(out)
        .args(args);
    c
}

#[test]
fn an_attached_target_that_exits_before_the_first_snapshot_is_still_symbolized() {
    if !bpf_ready() {
        return;
    }
    // The map is read at attach time: a 10 s interval, and the target allocates and exits as
    // soon as the recorder says it records, so the only snapshot is the final one.
    let leaky = fixture("leaky");
    let (mut rec, _, status) =
        attach_then_go(&[&leaky, "--wait-start", "basic", "1000", "100"], "10s");
    assert!(status.success());
    assert!(rec.child.wait().unwrap().success());
    let (state, tail) = read_recording(&rec.out);
    assert_eq!(
        state.snapshots, 1,
        "exited before the first periodic snapshot"
    );
    let r = Recorded {
        state,
        tail,
        stdout: String::new(),
        stderr: String::new(),
        code: Some(0),
    };
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{t:?}");
}

#[test]
fn a_non_root_recorder_needs_exactly_the_documented_capabilities() {
    if !bpf_ready() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let out = dir.path().join("run.zst");
    // The recorder binary must be reachable by nobody (the target dir usually is).
    let leaky = fixture("leaky");
    let cmd = ["--", leaky.as_str(), "basic", "100", "100"];

    // Missing capabilities: one line naming what to grant, status 2, no file.
    for (caps, needle) in [
        ("", "not allowed to load BPF programs"),
        ("+bpf,+perfmon", "permission denied"),
    ] {
        let o = as_nobody(caps, &out, &cmd).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{caps}: {err}");
        // One line: libbpf's own ("failed to create uprobe ... -EACCES") is not repeated.
        let ours: Vec<&str> = err.lines().collect();
        assert_eq!(ours.len(), 1, "{caps}: {err}");
        assert!(ours[0].starts_with("leak-record: "), "{err}");
        assert!(
            ours[0].contains(needle) && ours[0].contains("cap_sys_admin"),
            "{err}"
        );
        assert!(!out.exists(), "{caps}: a refused run left a file");
    }

    // Another user's process (root's): CAP_SYS_PTRACE is needed as well.
    let (mut target, mut t_out) = start_waiting(&[&leaky, "--wait-start", "basic", "1000", "100"]);
    let pid = target.0.id().to_string();
    let o = as_nobody("+bpf,+perfmon,+sys_admin", &out, &["-p", &pid])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("CAP_SYS_PTRACE") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(!out.exists());

    // With the documented set it records root's process exactly, into a private file.
    let mut rec = as_nobody("+bpf,+perfmon,+sys_admin,+sys_ptrace", &out, &["-p", &pid])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r_err = BufReader::new(rec.stderr.take().unwrap());
    wait_for_line(
        &mut r_err,
        "recording PID",
        Duration::from_secs(60),
        "recorder",
    );
    target.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = Vec::new();
    t_out.read_to_end(&mut rest).unwrap();
    assert!(target.0.wait().unwrap().success());
    let status = rec.wait().unwrap();
    let mut log = String::new();
    r_err.read_to_string(&mut log).unwrap();
    assert!(status.success(), "{log}");
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(&out).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o600));
    let (state, tail) = read_recording(&out);
    let r = Recorded {
        state,
        tail,
        stdout: String::new(),
        stderr: log,
        code: status.code(),
    };
    r.assert_clean();
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{t:?}\n{}", r.stderr);

    // Kernel mode also reads kernel addresses in /proc/kallsyms, which kptr_restrict hides
    // without CAP_SYSLOG: one line naming it, status 2, no file; with it, a recording.
    let kout = dir.path().join("kernel.zst");
    let kernel = ["--kernel", "-q", "-d", "1s"];
    let o = as_nobody("+bpf,+perfmon,+sys_admin", &kout, &kernel)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cap_syslog") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(!kout.exists());
    let o = as_nobody("+bpf,+perfmon,+sys_admin,+syslog", &kout, &kernel)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let (state, _) = read_recording(&kout);
    assert!(state.snapshots > 0);
    fs::remove_file(&kout).unwrap();

    // The recommended setup: file capabilities on a copy of the binary (not ambient ones, which
    // the started command would inherit). The command form records exactly, and holds the
    // command at its exit: with a 10 s interval, the map read there is the only one, and
    // without it no frame is named (a review saw "cannot hold PID at exit (Operation not
    // permitted)" and unnamed frames in this setup; not reproduced here, so it is checked).
    let bin = dir.path().join("leak-record");
    copy_program(Path::new(RECORDER), &bin);
    let setcap = Command::new("setcap")
        .arg("cap_sys_admin,cap_bpf,cap_perfmon+ep")
        .arg(&bin)
        .status()
        .expect("setcap (libcap2-bin) is installed");
    assert!(setcap.success());
    let out = dir.path().join("filecaps.zst");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["-q", "-i", "10s", "-o"])
        .arg(&out)
        .args(["--", &leaky, "basic", "1000", "100"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err, "", "nothing to say under -q");
    let (state, tail) = read_recording(&out);
    let r = Recorded {
        state,
        tail,
        stdout: String::new(),
        stderr: String::new(),
        code: o.status.code(),
    };
    r.assert_clean();
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{t:?}");
}

// ---- What a recording holds ------------------------------------------------------------

/// Every record's decompressed bytes, concatenated (zstd skips the preamble frame).
fn plain_bytes(path: &Path) -> Vec<u8> {
    zstd::stream::decode_all(&fs::read(path).unwrap()[..]).unwrap()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_environment_is_not_recorded_and_redaction_removes_the_command_line() {
    if !bpf_ready() {
        return;
    }
    let env_secret = format!("env-secret-{}", std::process::id());
    let arg_secret = format!("ARG_SECRET=arg-secret-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.zst");
    // env(1) puts the argument secret on the recorded command line, then execs the fixture.
    let status = Command::new(RECORDER)
        .env("LEAK_TEST_SECRET", &env_secret)
        .args(["-q", "-i", "100ms", "--bundle-symbols", "-o"])
        .arg(&out)
        .args([
            "--",
            "/usr/bin/env",
            &arg_secret,
            &fixture("leaky"),
            "basic",
            "10",
            "100",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let plain = plain_bytes(&out);
    assert!(
        contains(&plain, &arg_secret),
        "argv is recorded (the control)"
    );
    assert!(
        !contains(&plain, &env_secret),
        "the environment was recorded"
    );

    let redacted = dir.path().join("redacted.zst");
    let dropped =
        leak_report::redact::redact(out.to_str().unwrap(), redacted.to_str().unwrap()).unwrap();
    assert!(dropped > 0, "bundles dropped");
    let plain = plain_bytes(&redacted);
    assert!(!contains(&plain, &arg_secret) && !contains(&plain, "basic"));
    let (state, tail) =
        leak_format::RecordingState::read(Reader::open(&redacted).unwrap()).unwrap();
    assert!(tail.is_none());
    let h = state.header.unwrap();
    assert_eq!(
        (h.host.hostname.as_str(), h.target.command_line.as_slice()),
        ("redacted", &["env".to_string()][..])
    );
    // The analysis is unchanged: the same leak, exactly.
    let (before, _) = leak_report_text(&out).unwrap();
    let (after, _) = leak_report_text(&redacted).unwrap();
    let leak_line = |t: &str| {
        t.lines()
            .find(|l| l.contains("1000 B in 10 allocations"))
            .map(|l| l.split(" from stack").next().unwrap().to_string())
    };
    assert_eq!(
        leak_line(&before),
        Some("1000 B in 10 allocations".into()),
        "{before}"
    );
    assert_eq!(leak_line(&after), leak_line(&before), "{after}");
}
