//! End-to-end tests of `--sample-bytes`: the real BPF program samples real fixture processes,
//! and the scaled-up figures must be unbiased estimates of known truths, within tolerances
//! derived from the estimator's variance. Root and BPF needed (a skip fails in CI=true).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::io::{BufReader, Write};
use std::time::Duration;

use leak_format::{Losses, Sampling};

mod common;
use common::*;

/// A function's uprobes are one kernel object, shared by every tracer of the file: detaching
/// any of them takes its breakpoint out of every process that no remaining probe is for, a
/// forked child included. The test that checks that a child keeps its breakpoint holds this
/// alone (`bpf_alone`); the other BPF tests of this file, which attach and detach malloc's
/// probes at any time, share it (`bpf_shared`). (Test files run one after another.)
static PROBES: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// `bpf_ready`, and a share of `PROBES` for the test's length.
fn bpf_shared() -> Option<std::sync::RwLockReadGuard<'static, ()>> {
    bpf_ready().then(|| PROBES.read().unwrap_or_else(|e| e.into_inner()))
}

/// `bpf_ready`, and `PROBES` alone for the test's length.
fn bpf_alone() -> Option<std::sync::RwLockWriteGuard<'static, ()>> {
    bpf_ready().then(|| PROBES.write().unwrap_or_else(|e| e.into_inner()))
}

/// The sampling period of the accuracy tests: small, so that a few hundred thousand
/// allocations give thousands of samples and a tight tolerance.
const N: u64 = 1024;

/// Leaks `k` blocks of `s` bytes from `leak_here` under `--sample-bytes N` and checks that the
/// estimated outstanding bytes and blocks are within 5 standard deviations of the truth.
///
/// Why that tolerance: each thread counts down an exponential gap of mean N bytes, so for any
/// allocation the chance that the gap ends inside it is p = 1 - exp(-s/N), independently of
/// every other allocation (the gap is memoryless; bpf/leak.h). The estimate of the leak's bytes
/// is the sum over its k blocks of X_i * s/p, X_i ~ Bernoulli(p) independent: its mean is k*s
/// (unbiased) and its variance k * (s/p)^2 * p(1-p), so its relative standard deviation is
/// sqrt((1-p) / (k p)). Likewise for the block count (weight 1/p). The discrete gap table moves
/// p by under 4e-5 relative (docs/performance.md, "Sampling"); rounding moves the estimate by
/// under one byte per sampled block. 5 sigma makes a false failure a one-in-a-million event,
/// while the chosen k keep 5 sigma below 10%, so that a scaling wrong by 10% fails.
fn assert_unbiased(k: u64, s: u64) {
    assert_unbiased_with(&[], k, s);
}

/// `assert_unbiased` with leak-record's environment `env`.
fn assert_unbiased_with(env: &[(&str, &str)], k: u64, s: u64) {
    let (k_arg, s_arg, n_arg) = (k.to_string(), s.to_string(), N.to_string());
    let r = record_with_env(
        env,
        &[
            "-q",
            "-i",
            "1s",
            "--sample-bytes",
            &n_arg,
            "--",
            &fixture("leaky"),
            "basic",
            &k_arg,
            &s_arg,
        ],
    );
    r.assert_clean();
    assert_eq!(r.state.sampling, Some(Sampling { bytes: N }));
    let p = 1.0 - (-(s as f64) / N as f64).exp();
    let rel_sd = ((1.0 - p) / (k as f64 * p)).sqrt();
    let tolerance = 5.0 * rel_sd;
    assert!(
        tolerance < 0.1,
        "k = {k} is too small to detect a 10% error"
    );
    let leak = r.by_function("leak_here");
    assert_eq!(leak.stacks, 1, "{}", r.stderr);
    let truth = (k * s) as f64;
    let bytes_err = (leak.bytes as f64 - truth) / truth;
    let count_err = (leak.count as f64 - k as f64) / k as f64;
    assert!(
        bytes_err.abs() <= tolerance,
        "{k} x {s} B at 1 per {N} B: estimated {} B, {:+.2}% off (5 sd = {:.2}%)",
        leak.bytes,
        bytes_err * 100.0,
        tolerance * 100.0
    );
    assert!(
        count_err.abs() <= tolerance,
        "{k} x {s} B at 1 per {N} B: estimated {} blocks, {:+.2}% off (5 sd = {:.2}%)",
        leak.count,
        count_err * 100.0,
        tolerance * 100.0
    );
    // The churn around the leak (basic mode) is balanced: nothing outstanding on its stacks.
    let churn = r.by_function("churn_balanced");
    assert_eq!((churn.bytes, churn.count), (0, 0));
    assert_no_losses(&r.state.losses);
}

fn assert_no_losses(l: &Losses) {
    assert_eq!(l.total_drops(), 0, "{l:?}");
    // Frees of blocks that were not sampled are expected and are not losses.
    assert_eq!(l.unknown_free, 0, "{l:?}");
}

#[test]
fn small_blocks_sampled_give_unbiased_estimates() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // s = N/16: p = 0.061, about 12,000 samples; 5 sd = 4.4%.
    assert_unbiased(200_000, N / 16);
}

#[test]
fn small_blocks_sampled_without_session_probes_give_unbiased_estimates() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // The classic pair (an entry and a return probe on malloc), as on kernels before 6.13:
    // there every unsampled call still opens and closes its call.
    assert_unbiased_with(&[("LEAK_RECORD_NO_SESSIONS", "1")], 200_000, N / 16);
}

#[test]
fn blocks_larger_than_the_period_sampled_give_unbiased_estimates() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // s = 2N: p = 0.865, each sampled block counts for 1.156 blocks; 5 sd = 1.4%, so
    // forgetting the weight (13.5% low) fails.
    assert_unbiased(20_000, 2 * N);
}

#[test]
fn blocks_of_sixteen_periods_or_more_are_all_recorded_exactly() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // A gap never exceeds 10.7 N (the table's tail), so every block of 16 N or more ends one:
    // p = 1 and the figures are exact.
    let r = record(
        &["-q", "-i", "1s", "--sample-bytes", &N.to_string()],
        &[&fixture("leaky"), "basic", "500", &(16 * N).to_string()],
    );
    r.assert_clean();
    let leak = r.by_function("leak_here");
    assert_eq!(
        (leak.bytes, leak.count),
        (500 * 16 * N, 500),
        "{}",
        r.stderr
    );
    assert_no_losses(&r.state.losses);
}

#[test]
fn sampled_churn_leaves_nothing_outstanding_and_no_losses() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // Two threads, each 100,000 malloc(64)/free pairs: most frees are of unsampled blocks.
    let r = record(
        &["-q", "-i", "1s", "--sample-bytes", "512"],
        &[&fixture("leaky"), "churn", "100000", "2"],
    );
    r.assert_clean();
    let churn = r.by_function("churn_loop");
    assert_eq!((churn.bytes, churn.count), (0, 0), "{}", r.stderr);
    // Some blocks were sampled (about 200,000 * 64 / 512 = 25,000), and every one was freed.
    assert!(
        churn.allocs > 20_000 && churn.allocs == churn.frees,
        "{churn:?}"
    );
    // Nothing else is outstanding, except what an exact recording also shows: glibc keeps a
    // finished thread's stack cached with its TLS vector (allocate_dtv's calloc in the dynamic
    // loader, 272 B each), and a sampled one of those stays outstanding.
    for ((stack, kind), t) in &r.state.totals {
        if t.outstanding_bytes() != 0 {
            let path = r.innermost_frame(*stack).map_or("?", |(path, _)| path);
            assert!(
                path.contains("ld-linux-x86-64"),
                "stack {stack} {kind:?} in {path}: {t:?}"
            );
        }
    }
    assert_no_losses(&r.state.losses);
}

#[test]
fn an_exact_recording_has_no_sampling_record() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    let r = record(
        &["-q", "-i", "1s"],
        &[&fixture("leaky"), "basic", "10", "100"],
    );
    r.assert_clean();
    assert_eq!(r.state.sampling, None);
    assert_eq!(r.by_function("leak_here").bytes, 1000);
}

/// The end-of-recording count of malloc calls whose session probe skipped the return; None if
/// leak-record did not say it (no call skipped).
fn skipped_returns(stderr: &str) -> Option<u64> {
    let line = stderr
        .lines()
        .find(|l| l.contains("malloc calls with nothing to record skipped their return"))?;
    let n = line.trim_start_matches("leak-record: ").split(' ').next()?;
    Some(n.parse().expect("a count"))
}

#[test]
fn filtered_mallocs_skip_their_return_probe_and_change_nothing() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // leak_here's 1000 malloc(100) and churn_balanced's 5000 malloc(16..4096) are all above
    // --max-size 15: none has anything to record at its return.
    let args = [
        "-i",
        "1s",
        "--max-size",
        "15",
        "--",
        &fixture("leaky"),
        "basic",
        "1000",
        "100",
    ];
    let r = record_with_env(&[], &args);
    r.assert_clean();
    if !sessions_in_kernel(&r.stderr) {
        return;
    }
    let skipped = skipped_returns(&r.stderr);
    assert_eq!(skipped, Some(6000), "{}", r.stderr);
    assert_eq!(r.by_function("leak_here"), Totals::default());
    assert_eq!(r.state.losses.total_drops(), 0, "{}", r.stderr);
    // The classic pair: the same recording, every return run, and leak-record says why.
    let c = record_with_env(&[("LEAK_RECORD_NO_SESSIONS", "1")], &args);
    c.assert_clean();
    assert_eq!(skipped_returns(&c.stderr), None, "{}", c.stderr);
    assert!(
        c.stderr.contains(
            "malloc: every call traps at its return too, also when nothing is recorded: \
             LEAK_RECORD_NO_SESSIONS is set"
        ),
        "{}",
        c.stderr
    );
    assert_eq!(c.by_function("leak_here"), Totals::default());
    assert_eq!(c.state.losses.total_drops(), 0, "{}", c.stderr);
}

#[test]
fn a_malloc_inside_operator_new_stays_nested_with_session_probes() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // operator new keeps its entry and return probes (it calls malloc), so even a `new` with
    // nothing to record stays open while it runs, and the malloc inside it is nested: never
    // a call of its own, so it neither skips as one nor is recorded twice. --max-size 1:
    // nothing is recorded, and only leaky_cpp's few other mallocs (start-up) skip.
    let r = record(
        &["-i", "1s", "--max-size", "1"],
        &[&fixture("leaky_cpp"), "1000"],
    );
    r.assert_clean();
    if !sessions_in_kernel(&r.stderr) {
        return;
    }
    let l = &r.state.losses;
    // 1000 `new Widget` and 1000 `new char[200]` (new[] tail-jumps into new, and new calls
    // malloc: at least 2 nested calls each for new[]).
    assert!(l.nested_calls >= 3000, "{l:?}");
    let skipped = skipped_returns(&r.stderr).unwrap_or(0);
    assert!(
        skipped < 100,
        "{skipped} top-level mallocs skipped\n{}",
        r.stderr
    );
    assert_eq!((l.return_without_entry, l.abandoned_calls), (0, 0), "{l:?}");
    assert_eq!(r.by_function("_Z8leak_newm"), Totals::default());
    // Sampled: new draws once and stays open; its malloc draws nothing and is nested.
    let r = record(
        &["-i", "1s", "--sample-bytes", "64M"],
        &[&fixture("leaky_cpp"), "1000"],
    );
    r.assert_clean();
    let skipped = skipped_returns(&r.stderr).unwrap_or(0);
    assert!(
        skipped < 100,
        "{skipped} top-level mallocs skipped\n{}",
        r.stderr
    );
    assert!(r.state.losses.nested_calls >= 3000, "{:?}", r.state.losses);
    // Filtered by size only (--min-size 1): every call has work, and new's blocks are exact,
    // once each, on new's caller.
    let r = record(
        &["-i", "1s", "--min-size", "1"],
        &[&fixture("leaky_cpp"), "1000"],
    );
    r.assert_clean();
    let new = r.by_function("_Z8leak_newm");
    let arr = r.by_function("_Z14leak_new_arraym");
    assert_eq!((new.bytes, new.count), (48_000, 1000), "{new:?}");
    assert_eq!((arr.bytes, arr.count), (200_000, 1000), "{arr:?}");
    assert!(r.state.losses.nested_calls >= 3000, "{:?}", r.state.losses);
}

#[test]
fn refused_session_probes_fall_back_to_the_classic_pair() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // A kernel that announces sessions and then refuses the program (load) or the link
    // (attach): leak-record says so, uses the classic pair, and records exactly as without.
    for at in ["load", "attach"] {
        let r = record_with_env(
            &[("LEAK_RECORD_TEST_REFUSE_SESSIONS", at)],
            &[
                "-i",
                "1s",
                "--min-size",
                "1",
                "--",
                &fixture("leaky"),
                "basic",
                "1000",
                "100",
            ],
        );
        r.assert_clean();
        if !sessions_in_kernel(&r.stderr) {
            return;
        }
        assert!(
            r.stderr.contains(
                "malloc: every call traps at its return too, also when nothing is recorded: \
                 the kernel refused the session probe"
            ),
            "{at}: {}",
            r.stderr
        );
        assert_eq!(skipped_returns(&r.stderr), None, "{at}: {}", r.stderr);
        r.assert_leaky_basic(1000, 100);
        assert_eq!(
            r.state.losses.total_drops(),
            0,
            "{at}: {:?}",
            r.state.losses
        );
    }
}

/// The int3 bytes among the first 32 of malloc that `leaky fork` reports for `who`.
fn malloc_traps(out: &str, who: &str) -> u32 {
    let prefix = format!("{who} traps ");
    let line = out.lines().find_map(|l| l.strip_prefix(&prefix));
    line.and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

/// What `leaky fork` prints for an unrecorded run: the int3 bytes in malloc's first 32 where
/// no probe is (the same in parent and child).
fn malloc_traps_unprobed() -> u32 {
    let mut bare = std::process::Command::new(fixture("leaky"))
        .args(["fork", "1", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    bare.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let bare = bare.wait_with_output().unwrap();
    let bare = String::from_utf8_lossy(&bare.stdout).into_owned();
    let none = malloc_traps(&bare, "child");
    assert_eq!(malloc_traps(&bare, "parent"), none, "{bare}");
    none
}

/// Records `leaky fork 1000 100` by PID with session probes (--min-size 1) and leak-record's
/// variables `env`: the parent leaks 1000 x 100 B, forks, churns malloc and realloc(NULL) in
/// two threads until leak-record has said `said` (about the fork), then leaks 1000 x 100 B
/// more. Returns the fixture's output and the recording; None where the kernel has no
/// sessions (outside CI).
fn record_fork(env: &[(&str, &str)], said: &str, how: Target) -> Option<(String, Recorded)> {
    record_forking(env, said, how, &["fork", "1000", "100"])
}

/// `record_fork` of `leaky MODE...` (`mode`), which prints "forked" after its fork and then
/// waits for a line.
fn record_forking(
    env: &[(&str, &str)],
    said: &str,
    how: Target,
    mode: &[&str],
) -> Option<(String, Recorded)> {
    let options = ["-i", "200ms", "--min-size", "1"];
    let (mut rec, mut t_in, mut t_out, attached) = match how {
        Target::Attached => {
            let fixture_args = leaky_waiting(mode);
            let (mut target, t_out) = spawn_waiting(&as_strs(&fixture_args));
            let pid = target.id().to_string();
            let args = [&["-p", pid.as_str()][..], &options].concat();
            let rec = start_recorder_with_env(env, &args);
            (rec, target.stdin.take().unwrap(), t_out, Some(target))
        }
        Target::Started => {
            let (rec, t_in, t_out) = start_leaky_piped(env, &options, mode);
            (rec, t_in, t_out, None)
        }
    };
    let limit = Duration::from_secs(30);
    let head = wait_for_line(&mut rec.stderr, "recording PID", limit, "recorder");
    if !sessions_in_kernel(&head) {
        drop(t_in);
        if let Some(mut target) = attached {
            let _ = target.wait();
        }
        let _ = rec.finish();
        return None;
    }
    t_in.write_all(b"go\n").unwrap();
    let mut out = wait_for_line(&mut t_out, "forked", limit, "fixture");
    let mut stderr = head;
    stderr += &wait_for_line(&mut rec.stderr, said, limit, "recorder");
    t_in.write_all(b"go\n").unwrap();
    out += &wait_for_line(&mut t_out, "done", limit, "fixture");
    stderr += &wait_for_line(&mut rec.stderr, "snapshot", limit, "recorder");
    drop(t_in);
    if let Some(mut target) = attached {
        assert!(target.wait().unwrap().success());
    }
    let mut r = rec.finish();
    r.assert_clean();
    // All leak-record said, these lines read on the way included.
    r.stderr = stderr + &r.stderr;
    Some((out, r))
}

/// `leaky --wait-start --wait-end MODE...`.
fn leaky_waiting(mode: &[&str]) -> Vec<String> {
    let head = [fixture("leaky"), "--wait-start".into(), "--wait-end".into()];
    head.into_iter()
        .chain(mode.iter().map(|m| m.to_string()))
        .collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// leak-record with `env` and `options` starting `leaky_waiting(mode)` with its stdin and
/// stdout piped (returned), once the fixture is ready.
fn start_leaky_piped(
    env: &[(&str, &str)],
    options: &[&str],
    mode: &[&str],
) -> (
    Running,
    std::process::ChildStdin,
    BufReader<std::process::ChildStdout>,
) {
    let fixture_args = leaky_waiting(mode);
    let args = [options, &["--"], &as_strs(&fixture_args)].concat();
    let mut rec = start_recorder_piped(env, &args);
    let t_in = rec.child.stdin.take().unwrap();
    let mut t_out = BufReader::new(rec.child.stdout.take().unwrap());
    wait_for_line(&mut t_out, "ready", Duration::from_secs(30), "fixture");
    (rec, t_in, t_out)
}

/// How `record_fork` records `leaky fork`.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// Started on its own and attached to with `-p`.
    Attached,
    /// Started by leak-record (`-- CMD`).
    Started,
}

/// The parent's truths in a recording of `leaky fork 1000 100` (`record_fork`): its 2,000
/// blocks exact, every churned block seen and freed, the malloc inside each realloc(NULL)
/// nested, nothing lost.
fn assert_fork_parent_exact(r: &Recorded) {
    let leak = r.by_function("leak_here");
    assert_eq!((leak.bytes, leak.count), (200_000, 2000), "{}", r.stderr);
    for name in ["churn_balanced", "churn_realloc"] {
        let churn = r.by_function(name);
        assert_eq!((churn.bytes, churn.count), (0, 0), "{name}: {churn:?}");
        let pairs = (churn.allocs, churn.frees);
        assert!(pairs.0 >= 200 && pairs.0 == pairs.1, "{name}: {churn:?}");
    }
    let l = &r.state.losses;
    assert_no_losses(l);
    assert_eq!(l.abandoned_calls, 0, "{l:?}");
    // glibc's realloc(NULL, n) jumps into malloc: a classic call with a malloc call inside.
    let nested = r.by_function("churn_realloc").allocs;
    assert_eq!(l.nested_calls, nested, "{l:?}");
}

#[test]
fn a_fork_makes_session_probes_give_way_to_the_classic_pair() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    let none = malloc_traps_unprobed();
    // Three times: the two churning threads meet the hand-over at different points. The
    // last time with the fixture started by leak-record, which watches it differently.
    for how in [Target::Attached, Target::Attached, Target::Started] {
        let said = "malloc has the classic pair from now on";
        let Some((out, r)) = record_fork(&[], said, how) else {
            return;
        };
        // The child reads its malloc free of breakpoints, as classic probes leave a process
        // they do not trace; the parent's has the classic pair's.
        assert_eq!(malloc_traps(&out, "child"), none, "{out}");
        assert!(malloc_traps(&out, "parent") > none, "{out}");
        assert_fork_parent_exact(&r);
    }
}

/// A thread held inside a malloc trap while the hand-over begins, as preemption or a
/// descheduled virtual CPU can hold one (`LEAK_RECORD_TEST_HANDOVER_HOLD`: leak-record holds a
/// thread up to 300 ms; bpf_loop's bound may end it sooner). It must not be lost.
/// - `attach`, `hand-over`: held in the session probe's entry, in a trap begun before
///   leak-record attaches the classic pair or before it hands malloc over. The entry opens the
///   call after leak-record looked for open calls, and the call returns once the session
///   probe is gone. Waiting a fixed millisecond for traps under way, as leak-record did, loses
///   the first; a classic return probe that leaves such a call to the session probe, the
///   second.
/// - `pair-entry`: held between the classic pair's entry, which left the call to the session
///   entry, and that entry, through the hand-over and the session probe's detach: the session
///   entry never runs. A classic return that does not then record the call loses it.
///   `pair-entry-nested`: the same in the malloc glibc's realloc(NULL, n) tail-jumps into:
///   judged as of its return's stack pointer, it would abandon realloc's call (an abandoned
///   call, and a return without entry).
/// - `pair-return`: held between the classic pair's return and the session probe's, at the
///   return of a call the session probe opened before the hand-over, for longer than the
///   100 ms leak-record waits for such calls: the session probe's return never runs. A
///   classic return that leaves the call to it before the hand-over loses it (counted as
///   abandoned).
///
/// Each loss shows in the losses `assert_fork_parent_exact` checks: an unknown free (the held
/// call's block, freed but never seen allocated), with or without an abandoned call; for
/// `pair-entry-nested`, an abandoned call and a return without entry.
#[test]
fn a_thread_held_in_a_trap_through_the_hand_over_loses_no_call() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    let places = [
        "attach",
        "hand-over",
        "pair-entry",
        "pair-entry-nested",
        "pair-return",
    ];
    for at in places {
        let env = [("LEAK_RECORD_TEST_HANDOVER_HOLD", at)];
        for how in [Target::Attached, Target::Started] {
            let said = "malloc has the classic pair from now on";
            let Some((_, r)) = record_fork(&env, said, how) else {
                return;
            };
            let held = "test hook: 1 trap(s) held at the hand-over";
            assert!(r.stderr.contains(held), "{at}: {}", r.stderr);
            assert_fork_parent_exact(&r);
        }
    }
}

/// A malloc call open through the whole hand-over: `leaky fork_blocked` forks while its main
/// thread waits inside malloc(4000) for a lock another thread keeps, and frees the lock only
/// after leak-record has spoken. The iterator sees the call for the whole grace (a scan that
/// always said 0 would not warn), the session probe goes with the call open, and its return
/// goes unseen: one abandoned call, counted when the thread next calls malloc, and one free
/// of the block no probe saw returned. Everything after it is exact.
#[test]
fn a_malloc_running_through_the_hand_over_is_said_and_counted_as_abandoned() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    let said = "warning: 1 malloc call(s) of PID";
    let mode = ["fork_blocked", "1000", "100"];
    // Started by leak-record: every block the fixture frees was seen allocated, but one.
    let Some((_, r)) = record_forking(&[], said, Target::Started, &mode) else {
        return;
    };
    // (leak-record warns after a hand-over that succeeded, once the session probes are gone.)
    let leak = r.by_function("leak_here");
    assert_eq!((leak.bytes, leak.count), (100_000, 1000), "{}", r.stderr);
    let blocked = r.by_function("blocked_malloc");
    assert_eq!((blocked.allocs, blocked.frees), (0, 0), "{blocked:?}");
    let expected = Losses {
        abandoned_calls: 1,
        unknown_free: 1,
        ..Losses::default()
    };
    assert_eq!(r.state.losses, expected);
}

/// Children that exec or exit at once (`leaky fork_exec`: one of each) take malloc's
/// breakpoints with them: the session probes stay to the end of the recording, and the
/// exec'd program's malloc is free of breakpoints. Also when a thread other than the child's
/// first execs (`thread`: the process keeps its PID).
#[test]
fn children_that_exec_or_exit_leave_the_session_probes_in_place() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    for mode in [
        &["fork_exec", "1000", "100"][..],
        &["fork_exec", "1000", "100", "thread"],
    ] {
        children_exec_or_exit(mode);
    }
}

fn children_exec_or_exit(mode: &[&str]) {
    let none = malloc_traps_unprobed();
    // --min-size 100: leak_here's 100-byte blocks are recorded, churn_loop's 64-byte ones
    // skip their return (a session probe's saving, which the hand-over would end).
    let options = ["-i", "200ms", "--min-size", "100"];
    // 3 s for the children to exec or exit, on a loaded machine.
    let env = [("LEAK_RECORD_TEST_FORK_EXEC_WAIT_MS", "3000")];
    let (mut rec, mut t_in, mut t_out) = start_leaky_piped(&env, &options, mode);
    let limit = Duration::from_secs(30);
    let mut said = wait_for_line(&mut rec.stderr, "recording PID", limit, "recorder");
    if !sessions_in_kernel(&said) {
        drop(t_in);
        let _ = rec.finish();
        return;
    }
    t_in.write_all(b"go\n").unwrap();
    let mut out = wait_for_line(&mut t_out, "exec'd traps", limit, "fixture");
    // Time for leak-record to look at the children while the exec'd one runs (it looks 3 s
    // after their fork): twenty snapshots. Then the exec'd child reads its line.
    for _ in 0..20 {
        said += &wait_for_line(&mut rec.stderr, "snapshot", limit, "recorder");
    }
    t_in.write_all(b"go\n").unwrap();
    out += &wait_for_line(&mut t_out, "done", limit, "fixture");
    said += &wait_for_line(&mut rec.stderr, "snapshot", limit, "recorder");
    drop(t_in);
    let r = rec.finish();
    r.assert_clean();
    said += &r.stderr;
    assert!(!said.contains("classic pair"), "{mode:?}: {said}");
    // The session probes skipped returns to the end, none handed over.
    assert!(
        !said.contains("when a forked process kept running"),
        "{mode:?}: {said}"
    );
    assert!(skipped_returns(&said) >= Some(1000), "{mode:?}: {said}");
    assert_eq!(malloc_traps(&out, "exec'd"), none, "{mode:?}: {out}");
    let leak = r.by_function("leak_here");
    assert_eq!(
        (leak.bytes, leak.count),
        (200_000, 2000),
        "{mode:?}: {said}"
    );
    // churn_loop's frees are of blocks below --min-size, which were never recorded.
    let expected = Losses {
        unknown_free: 1000,
        ..Losses::default()
    };
    assert_eq!(r.state.losses, expected, "{mode:?}");
}

/// A grandchild that runs the target's program, its parent gone (`leaky fork_grandchild`: a
/// double fork), is followed as well, and makes the session probes give way; also when its
/// parent shared the target's memory (`vm`: clone(CLONE_VM), as vfork and posix_spawn do),
/// or forked it from a thread other than its first (`thread`).
#[test]
fn a_grandchild_without_exec_makes_session_probes_give_way() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    let none = malloc_traps_unprobed();
    let said = "malloc has the classic pair from now on";
    // 3 s for the child that exits to do so, on a loaded machine: the grandchild is the one.
    let env = [("LEAK_RECORD_TEST_FORK_EXEC_WAIT_MS", "3000")];
    // The grandchild of a forked child, of a CLONE_VM child, and of a second thread of a
    // forked child (the fork's parent task is then not the process's leader).
    let modes = [
        &["fork_grandchild"][..],
        &["fork_grandchild", "vm"],
        &["fork_grandchild", "thread"],
    ];
    for mode in modes {
        let Some((out, r)) = record_forking(&env, said, Target::Started, mode) else {
            return;
        };
        let grandchild = out
            .lines()
            .find_map(|l| l.strip_prefix("grandchild PID "))
            .unwrap_or_else(|| panic!("no grandchild PID in:\n{out}"));
        let named = format!("PID {grandchild}, forked from PID");
        assert!(
            r.stderr.contains(&named),
            "{mode:?}: {named:?} not in:\n{}",
            r.stderr
        );
        assert_eq!(malloc_traps(&out, "grandchild"), none, "{mode:?}: {out}");
        assert_eq!(r.state.losses, Losses::default(), "{mode:?}");
    }
}

/// More children running the target's program than the BPF map follows: the one left out
/// still loses its breakpoints, as leak-record hands over at once and says why. (A map of
/// one: the double fork's child fits, the grandchild does not.)
#[test]
fn children_beyond_the_followed_ones_make_session_probes_give_way_at_once() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    let none = malloc_traps_unprobed();
    let said = "more than leak-record follows: such a process traps on every malloc";
    let env = [
        ("LEAK_RECORD_TEST_IMAGE_CHILDREN", "1"),
        // Not the child's wait: the hand-over is for the one left out.
        ("LEAK_RECORD_TEST_FORK_EXEC_WAIT_MS", "60000"),
    ];
    let mode = ["fork_grandchild"];
    let Some((out, r)) = record_forking(&env, said, Target::Started, &mode) else {
        return;
    };
    assert_eq!(malloc_traps(&out, "grandchild"), none, "{out}");
    assert_eq!(r.state.losses, Losses::default());
}

#[test]
fn a_failed_hand_over_keeps_the_session_probes_and_says_so() {
    let Some(_probes) = bpf_alone() else {
        return;
    };
    let none = malloc_traps_unprobed();
    let env = [("LEAK_RECORD_TEST_REFUSE_SESSIONS", "hand-over")];
    // The warning, with the way out.
    let said = "could not make way for the classic pair: refused \
                (LEAK_RECORD_TEST_REFUSE_SESSIONS=hand-over). Record a forking process with \
                LEAK_RECORD_NO_SESSIONS=1";
    let Some((out, r)) = record_fork(&env, said, Target::Attached) else {
        return;
    };
    // The session probe stays in both processes, and the recording stays exact.
    assert!(malloc_traps(&out, "child") > none, "{out}");
    assert!(malloc_traps(&out, "parent") > none, "{out}");
    assert_fork_parent_exact(&r);
}

#[test]
fn threads_are_not_forks_and_keep_the_session_probes() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // Threads share the target's address space: starting them is no reason to leave session
    // probes. Their 1000 malloc(16) each are filtered out, and skip their returns.
    let r = record(
        &["-i", "1s", "--max-size", "15"],
        &[&fixture("leaky"), "threads", "4", "1000", "16"],
    );
    r.assert_clean();
    if !sessions_in_kernel(&r.stderr) {
        return;
    }
    assert!(!r.stderr.contains("classic pair"), "{}", r.stderr);
    // Exactly the threads' mallocs: glibc's thread set-up makes no malloc call of its own.
    assert_eq!(skipped_returns(&r.stderr), Some(4000), "{}", r.stderr);
    assert_eq!(r.by_function("thread_leak"), Totals::default());
}

#[test]
fn with_mmap_probed_mallocs_keep_their_return_probe() {
    let Some(_probes) = bpf_shared() else {
        return;
    };
    // glibc's malloc serves 200 KB with mmap (above its 128 KiB threshold); only the open
    // malloc call marks that mmap as malloc's own, so with --mmap malloc keeps its return
    // probe even when sampling. At 1 per 64 MiB hardly any of the 20 blocks is sampled: a
    // malloc that skipped its return would leave its mmap to be counted as one of its own.
    let r = record(
        &["-i", "1s", "--mmap", "--sample-bytes", "64M"],
        &[&fixture("leaky"), "basic", "20", "200000"],
    );
    r.assert_clean();
    assert!(
        r.stderr
            .contains("--mmap needs the return to tell malloc's own mmap calls"),
        "{}",
        r.stderr
    );
    assert_eq!(skipped_returns(&r.stderr), None, "{}", r.stderr);
    let mmap_bytes = r.state.outstanding_bytes(leak_format::AllocKind::Mmap);
    assert!(
        mmap_bytes < 200_000,
        "malloc's own mmaps were counted: {mmap_bytes}"
    );
}

// Bad input: a clear error, exit status 2, nothing written. No BPF needed.

#[test]
fn bad_sample_bytes_are_refused_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.zst");
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["-o", o, "--sample-bytes", "0", "-p", "1"],
            "must be at least 1 byte",
        ),
        (vec!["-o", o, "--sample-bytes", "lots", "-p", "1"], "'lots'"),
        (
            vec!["-o", o, "--sample-bytes", "5G", "-p", "1"],
            "too large",
        ),
        // Kernel mode samples too (tests/kernel.rs), and refuses the same bad values.
        (
            vec!["-o", o, "--kernel", "--sample-bytes", "0"],
            "must be at least 1 byte",
        ),
    ] {
        let (code, err) = run_recorder(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.lines().next().unwrap_or("").contains(needle),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?} left a file behind");
    }
}
