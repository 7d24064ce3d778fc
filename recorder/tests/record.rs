//! End-to-end tests of leak-record: the real BPF program traces real fixture processes (built
//! from fixtures/ with frame pointers), and the recordings must hold exact, known numbers.
//! They need root and BPF. Outside CI they skip with a printed reason when that is missing; in
//! CI (CI=true) a skip is a failure.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leak_format::{AllocKind, Reader, Record, RecordingState, StackLoss};

mod common;
use common::*;

#[test]
fn leak_from_a_named_function_is_exact_and_churn_is_zero() {
    if !bpf_ready() {
        return;
    }
    let r = record(&["-i", "1s"], &[&fixture("leaky"), "basic", "1000", "100"]);
    r.assert_clean();
    // main's very first allocation is a churn malloc: all 5000 are there.
    r.assert_leaky_basic(1000, 100);
    assert_eq!(r.by_function("leak_here").stacks, 1);
    let l = r.state.losses;
    assert_eq!(l.total_drops(), 0, "{l:?}");
    assert_eq!(
        l.unknown_free, 0,
        "nothing from before exec may be seen: {l:?}"
    );
    // Nothing of the recorder's own forked image was recorded before exec.
    let paths: Vec<&str> = r.state.modules.values().map(|m| m.path.as_str()).collect();
    assert!(
        paths.iter().all(|p| !p.contains("leak-record")),
        "{paths:?}"
    );
    let h = r.state.header.as_ref().unwrap();
    assert_eq!(h.target.command_line[1..], ["basic", "1000", "100"]);
    // The command's own exec is its start: no program after an exec to name.
    assert_eq!(r.state.process, None);
    assert!(r.modules_of_probe("malloc")[0].contains("libc.so"));
    assert!(
        r.stderr.contains("attached"),
        "the recorder says what it attached: {}",
        r.stderr
    );
}

/// Code built without frame pointers leaves anything in %rbp. A frame pointer below the stack
/// pointer is never a frame (the stack grows down), so the walk stops there instead of reading
/// that address: reading what such a value points to cost more than the rest of alloc_exit on
/// sqlite3 (docs/performance.md), and could record a bogus frame. leak_bogus_fp calls malloc
/// with %rbp pointing at a heap block laid out as a frame record whose return address is
/// 0x4141414141414141.
#[test]
fn a_frame_pointer_below_the_stack_pointer_is_not_followed() {
    if !bpf_ready() {
        return;
    }
    // With `stack`, %rbp points above the stack pointer, into the caller's frame, at a record
    // whose return address is text, as a shell's may point at its environment: an address
    // beyond user space is no return address, and ends the walk too.
    for mode in [&["bogus_fp", "1000"][..], &["bogus_fp", "1000", "stack"]] {
        let r = record(
            &["-i", "1s"],
            &[&[fixture("leaky").as_str()][..], mode].concat(),
        );
        r.assert_clean();
        let leak = r.by_function("malloc_with_rbp");
        assert_eq!(
            (leak.bytes, leak.count, leak.stacks),
            (100_000, 1000, 1),
            "{mode:?}: {}",
            r.stderr
        );
        let stack = r.stack_of("malloc_with_rbp");
        let frames: Vec<u64> = stack.frames.iter().map(|f| f.addr).collect();
        assert!(!frames.contains(&0x4141_4141_4141_4141), "{frames:x?}");
        assert_eq!(
            frames.len(),
            1,
            "{mode:?}: the walk ends at the bogus frame pointer: {frames:x?}"
        );
        assert!(!stack.truncated);
    }
}

#[test]
fn a_shallow_stack_after_a_deep_one_keeps_only_its_own_frames() {
    if !bpf_ready() {
        return;
    }
    // Each shallow walk follows one through 70 frames, which fills the whole trace; the
    // shallow stack must end where its own frames end, and the deep one be cut at the limit.
    let r = record(&["-i", "1s"], &[&fixture("leaky"), "depths", "500"]);
    r.assert_clean();
    let deep = r.by_function("leak_deep");
    let shallow = r.by_function("leak_shallow");
    assert_eq!((deep.bytes, deep.count, deep.stacks), (50_000, 500, 1));
    assert_eq!(
        (shallow.bytes, shallow.count, shallow.stacks),
        (100_000, 500, 1)
    );
    let deep = r.stack_of("leak_deep");
    assert_eq!(deep.frames.len(), 64, "MAX_STACK_DEPTH in bpf/leak.h");
    assert!(deep.truncated);
    // Every frame past the innermost is a return into the recursion. Its records lie 64 bytes
    // apart over 4 KiB, so the walk takes them from several reads of the stack: the first at
    // the stack pointer, the next ones each starting at the first record beyond the last.
    assert_outer_frames_return_into(deep, "recurse_then_leak");
    let shallow = r.stack_of("leak_shallow");
    let deep_frames: std::collections::HashSet<u64> = deep.frames.iter().map(|f| f.addr).collect();
    let own: Vec<u64> = shallow.frames.iter().map(|f| f.addr).collect();
    // leak_shallow, main and the C library's start-up frames at most: none of the recursion's.
    assert!(
        own.len() < 8 && !own.iter().any(|a| deep_frames.contains(a)),
        "{own:x?}"
    );
    assert!(!shallow.truncated);
}

/// Every frame of a `leaky` stack past the innermost returns into `function`.
fn assert_outer_frames_return_into(stack: &leak_format::Stack, function: &str) {
    let leaky = fixture("leaky");
    for (i, f) in stack.frames.iter().enumerate().skip(1) {
        assert_eq!(
            function_at(&leaky, f.offset).as_deref(),
            Some(function),
            "frame {i} of {:x?}",
            stack.frames
        );
    }
}

/// The offsets of a stack's frames (the same in every run of one binary, unlike addresses).
fn frame_offsets(stack: &leak_format::Stack) -> Vec<u64> {
    stack.frames.iter().map(|f| f.offset).collect()
}

#[test]
fn a_walk_without_stack_chunks_finds_the_same_frames() {
    if !bpf_ready() {
        return;
    }
    // A walk whose CPU's chunk is held by a preempted walk reads every record on its own. The
    // test hook makes every walk do so; the deep stack (64-byte frames over 4 KiB) and the
    // shallow one after it must come out frame for frame as with chunks.
    let args = ["-i", "1s", "--", &fixture("leaky"), "depths", "200"];
    let chunks = record_with_env(&[], &args);
    let alone = record_with_env(&[("LEAK_RECORD_TEST_NO_STACK_CHUNKS", "1")], &args);
    for r in [&chunks, &alone] {
        r.assert_clean();
        assert_eq!(r.by_function("leak_deep").bytes, 20_000);
        assert_eq!(r.by_function("leak_shallow").bytes, 40_000);
    }
    // Every walk is counted and said once without chunks; none with them (one thread: no walk
    // can hold the chunk while another runs, unless a walk failed to release it).
    let said = "stack walks read their frames one at a time";
    assert!(
        alone.stderr.contains(&format!("leak-record: 400 {said}")),
        "{}",
        alone.stderr
    );
    assert!(!chunks.stderr.contains(said), "{}", chunks.stderr);
    for f in ["leak_deep", "leak_shallow"] {
        assert_eq!(
            frame_offsets(alone.stack_of(f)),
            frame_offsets(chunks.stack_of(f)),
            "{f}"
        );
    }
    assert_eq!(alone.stack_of("leak_deep").frames.len(), 64);
}

#[test]
fn a_deep_churn_is_balanced_on_one_truncated_stack() {
    if !bpf_ready() {
        return;
    }
    // `leaky deep_churn` (the deep-stack benchmark): every malloc/free pair under 64 levels of
    // 64-byte frames, so the 64 frames kept span 4 KiB and come from several reads of the
    // stack. All on one stack, balanced, every outer frame a return into the recursion.
    let r = record(
        &["-i", "1s"],
        &[&fixture("leaky"), "deep_churn", "1000", "64"],
    );
    r.assert_clean();
    let t = r.by_function("churn_loop");
    assert_eq!((t.allocs, t.frees, t.bytes, t.stacks), (1000, 1000, 0, 1));
    let stack = r.any_stack_of("churn_loop");
    assert_eq!(stack.frames.len(), 64, "MAX_STACK_DEPTH in bpf/leak.h");
    assert!(stack.truncated);
    assert_outer_frames_return_into(stack, "churn_deeper");
}

#[test]
fn each_allocation_function_lands_on_its_own_stack_with_exact_sizes() {
    if !bpf_ready() {
        return;
    }
    let r = record(&["-i", "1s"], &[&fixture("leaky"), "paths", "10"]);
    // glibc's realloc(p, 0) frees p and returns NULL.
    r.assert_leaky_paths("glibc", (1, 1));
    let l = r.state.losses;
    // glibc's reallocarray tail-jumps into realloc: one call, counted once.
    assert!(l.nested_calls >= 10, "{l:?}");
}

#[test]
fn eight_threads_leaking_concurrently_lose_nothing() {
    if !bpf_ready() {
        return;
    }
    let r = record(
        &["-i", "1s"],
        &[&fixture("leaky"), "threads", "8", "5000", "64"],
    );
    r.assert_clean();
    let t = r.by_function("thread_leak");
    assert_eq!((t.bytes, t.count), (8 * 5000 * 64, 8 * 5000), "{t:?}");
    assert_eq!(r.state.losses.total_drops(), 0, "{:?}", r.state.losses);
}

#[test]
fn cxx_new_is_attributed_to_its_caller() {
    if !bpf_ready() {
        return;
    }
    let r = record(&["-i", "1s"], &[&fixture("leaky_cpp"), "1000"]);
    r.assert_clean();
    let new = r.by_function("_Z8leak_newm");
    let arr = r.by_function("_Z14leak_new_arraym");
    assert_eq!(
        (new.bytes, new.count),
        (48_000, 1000),
        "{new:?}\n{}",
        r.stderr
    );
    assert_eq!((arr.bytes, arr.count), (200_000, 1000), "{arr:?}");
    assert!(r.modules_of_probe("_Znwm")[0].contains("libstdc++"));
    // Debian 12's libstdc++: `operator new` and `operator new[]` start with `endbr64`, which
    // the kernel single-steps; both probes of each moved past it together (new[] to its tail
    // jump into new, whose return probe then sees a chained return), and every call returned
    // through them.
    for f in ["_Znwm", "_Znam"] {
        let (lib, at) = r.entry_probe(f);
        let start = symbol_offset(&lib, f).expect("libstdc++ defines operator new");
        assert!(at > start, "{f} moved past endbr64: {}", r.stderr);
        assert_eq!(r.probe(f, leak_format::ProbeSide::Return), (lib, at), "{f}");
    }
    let l = &r.state.losses;
    assert_eq!((l.return_without_entry, l.abandoned_calls), (0, 0), "{l:?}");
}

/// A C++ program linked with jemalloc, tcmalloc or mimalloc calls the allocator's own operator
/// delete, and the sized ones free the block without calling free (jemalloc's and tcmalloc's):
/// unprobed, those frees were missed (17,443 "missed free" on this fixture) and a block deleted
/// and never reused stayed outstanding. They are probed; a delete that is free itself
/// (tcmalloc's and mimalloc's plain delete, aliases) or jumps straight to it (jemalloc's plain
/// delete: `jmp free@plt`; mimalloc's sized one: `jmp mi_free@plt`) is left to free's probe,
/// so no block costs two traps.
#[test]
fn cxx_delete_of_an_allocator_that_frees_by_itself_is_seen() {
    if !bpf_ready() {
        return;
    }
    // (fixture, library, whether the plain and the sized delete get probes of their own)
    for (name, library, plain, sized) in [
        ("leaky_cpp_jemalloc", "libjemalloc.so", false, true),
        ("leaky_cpp_tcmalloc", "libtcmalloc_minimal.so", false, true),
        ("leaky_cpp_mimalloc", "libmimalloc.so", false, false),
    ] {
        let r = record(&["-i", "1s"], &[&fixture(name), "1000"]);
        r.assert_clean();
        let new = r.by_function("_Z8leak_newm");
        let arr = r.by_function("_Z14leak_new_arraym");
        assert_eq!((new.bytes, new.count), (48_000, 1000), "{name}: {new:?}");
        assert_eq!((arr.bytes, arr.count), (200_000, 1000), "{name}: {arr:?}");
        // churn_containers' vectors and strings (1000 of each, twice): every block freed, on
        // stacks whose innermost frame is libstdc++'s template code. The leaks aside, every
        // stack that allocated more than a few blocks is balanced.
        let mut churned = 0;
        for ((stack, kind), t) in &r.state.totals {
            let f = r.innermost(*stack).unwrap_or_default();
            if *kind != AllocKind::Heap || t.alloc_count < 100 || f.contains("leak_new") {
                continue;
            }
            churned += t.alloc_count;
            assert_eq!(
                (t.outstanding_bytes(), t.free_count),
                (0, t.alloc_count),
                "{name}: {f}: {t:?}"
            );
        }
        assert!(churned >= 4000, "{name}: {churned} churned blocks");
        let l = &r.state.losses;
        assert_eq!((l.missed_free, l.unknown_free), (0, 0), "{name}: {l:?}");
        assert_eq!(l.total_drops(), 0, "{name}: {l:?}");
        for (function, probed) in [("_ZdlPv", plain), ("_ZdlPvm", sized)] {
            let modules = r.modules_of_probe(function);
            let own = modules.len() == 1 && modules[0].contains(library);
            assert!(
                own == probed && (probed || modules.is_empty()),
                "{name} {function}: {modules:?}"
            );
        }
        if name == "leaky_cpp_mimalloc" {
            // Its sized delete is not probed: the free it jumps to is the only trap.
            assert_eq!(l.nested_calls, 0, "{name}: {l:?}");
        }
    }
    // libstdc++'s deletes call free, which is probed: they are not.
    let r = record(&["-i", "1s"], &[&fixture("leaky_cpp"), "1000"]);
    assert_eq!(r.modules_of_probe("_ZdlPvm"), Vec::<String>::new());
}

#[test]
fn rust_rc_cycles_and_box_leak_are_exact() {
    if !bpf_ready() {
        return;
    }
    // Through std's System allocator (libc malloc), and through tikv-jemallocator: jemalloc
    // linked into the executable, its API prefixed `_rjem_`, as Rust services use it.
    for (name, malloc_in) in [
        ("leaky_rs", "libc.so".to_string()),
        ("leaky_rs_jemalloc", fixture("leaky_rs_jemalloc")),
    ] {
        let r = record(&["-i", "1s"], &[&fixture(name), "500"]);
        r.assert_clean();
        let expect: HashMap<&str, u64> = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("expect "))
            .expect("the fixture prints its expected figures")
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        let rc = r.by_function("leaky::leak_rc_cycle");
        let bx = r.by_function("leaky::leak_box");
        assert_eq!(
            (rc.bytes, rc.count),
            (expect["rc_bytes"], expect["rc_count"]),
            "{name}: {rc:?}"
        );
        assert_eq!(
            (bx.bytes, bx.count),
            (expect["box_bytes"], expect["box_count"]),
            "{name}: {bx:?}"
        );
        assert_eq!(
            r.state.losses.total_drops(),
            0,
            "{name}: {:?}",
            r.state.losses
        );
        if name == "leaky_rs_jemalloc" {
            for function in ["_rjem_malloc", "_rjem_sdallocx"] {
                let modules = r.modules_of_probe(function);
                assert_eq!(modules, std::slice::from_ref(&malloc_in), "{function}");
            }
        } else {
            assert!(r.modules_of_probe("malloc")[0].contains(&malloc_in));
        }
    }
}

#[test]
fn jemalloc_linked_process_is_found_without_flags() {
    if !bpf_ready() {
        return;
    }
    let r = record(
        &["-i", "1s"],
        &[&fixture("leaky_jemalloc"), "basic", "1000", "100"],
    );
    r.assert_clean();
    let malloc = r.modules_of_probe("malloc");
    assert!(malloc[0].contains("libjemalloc"), "{malloc:?}");
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{t:?}\n{}", r.stderr);
    let churn = r.by_function("churn_balanced");
    assert_eq!((churn.bytes, churn.allocs), (0, 5000));
}

/// Writes an executable script `name` in `dir` with `text`.
fn script(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_string()
}

/// Records (with `args`) a `/bin/sh` script whose body is `body`, and checks it ended cleanly.
fn record_wrapper(args: &[&str], body: &str) -> Recorded {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = script(dir.path(), "wrapper", &format!("#!/bin/sh\n{body}\n"));
    let r = record(args, &[&wrapper]);
    r.assert_clean();
    r
}

/// A command that is a script (a wrapper, a pyenv shim) is probed in the allocator of the
/// program that runs it, and the program the script execs is recorded exactly: directly, and
/// through `env` and a second script.
#[test]
fn a_script_command_is_recorded_through_the_programs_it_execs() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let leaky = fixture("leaky");
    let direct = script(
        dir.path(),
        "direct",
        &format!("#!/bin/sh\nexec {leaky} basic \"$@\"\n"),
    );
    let via_env = script(
        dir.path(),
        "via-env",
        &format!("#!/usr/bin/env sh\nexec {direct} \"$@\"\n"),
    );
    let leaky_exe = fs::canonicalize(&leaky).unwrap().display().to_string();
    for cmd in [&direct, &via_env] {
        let r = record(&["-i", "1s"], &[cmd, "1000", "100"]);
        r.assert_clean();
        // The header keeps what was started; the recording names what it became, as read at
        // the last exec stop (for via-env: env, sh, sh again for `direct`, then leaky).
        assert_eq!(
            r.state.header.as_ref().unwrap().target.command_line,
            [cmd, "1000", "100"]
        );
        let after_exec = leak_format::Process {
            pid: r.state.header.as_ref().unwrap().target.pid,
            name: "leaky".into(),
            command_line: vec![leaky.clone(), "basic".into(), "1000".into(), "100".into()],
            exe: leaky_exe.clone(),
        };
        assert_eq!(r.state.process.as_ref(), Some(&after_exec), "{}", r.stderr);
        // The shells' own blocks went with them at their execs.
        assert_eq!(r.outstanding(), (100_000, 1000), "{}", r.stderr);
        r.assert_leaky_basic(1000, 100);
        assert!(r.stderr.contains("is a script"), "{}", r.stderr);
        assert!(!r.stderr.contains("not probed"), "{}", r.stderr);
        assert!(r.modules_of_probe("malloc")[0].contains("libc.so"));
    }
}

/// A script that runs its program as a child (no `exec`) records only the shell: the children
/// the snapshots see are named (the first three; the rest counted at the end), with how to
/// record one, instead of an empty recording without a word.
#[test]
fn child_processes_of_the_target_are_named_not_recorded() {
    if !bpf_ready() {
        return;
    }
    let leaky = fixture("leaky");
    let r = record_wrapper(
        &["-i", "500ms"],
        &format!("{leaky} slow 20 100 100 &\nsleep 2 & sleep 2 & sleep 2 &\nwait"),
    );
    let named = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| {
                l.starts_with("leak-record: warning: PID ")
                    && l.contains(" started PID ")
                    && l.contains("which is not recorded")
            })
            .map(str::to_string)
            .collect()
    };
    let said = named(&r.stderr);
    assert_eq!(said.len(), 3, "{}", r.stderr);
    assert!(
        said.iter().all(|l| l.contains("leak-record -p ")),
        "{said:?}"
    );
    assert!(
        r.stderr
            .contains("started 4 processes (3 named above), none of them recorded"),
        "{}",
        r.stderr
    );
    assert_eq!(r.by_function("leak_slowly"), Totals::default());

    // A child forked by a thread other than the main one is named too (each thread lists
    // its own children under /proc/PID/task/TID/children).
    let r = record(
        &["-i", "200ms"],
        &[&leaky, "fork_churn", "1000", "1500", "thread"],
    );
    r.assert_clean();
    let said = named(&r.stderr);
    assert_eq!(said.len(), 1, "{}", r.stderr);
    assert!(said[0].contains(&format!("({leaky})")), "{said:?}");
}

/// The recorder and the target of a test: the target's stdin and stdout, and the target
/// itself if it is ours to wait for.
type Started = (
    Running,
    std::process::ChildStdin,
    BufReader<std::process::ChildStdout>,
    Option<std::process::Child>,
);

/// `lifecycle exec 1000 100 0 --thread leaky --wait-start --wait-end basic 1000 100`, recorded
/// through `start`: the fixture execs from a second thread, which ends the main thread the
/// kernel tied every probe to; the recorder attaches them again, `check`s the new program (its
/// PID, and the recorder's) while it waits, and records it exactly once told to go.
fn record_a_thread_exec(
    start: impl FnOnce(&[&str]) -> Started,
    check: impl FnOnce(u32, u32),
) -> Recorded {
    let (lifecycle, leaky) = (fixture("lifecycle"), fixture("leaky"));
    let args = [
        lifecycle.as_str(),
        "exec",
        "1000",
        "100",
        "0",
        "--thread",
        &leaky,
        "--wait-start",
        "--wait-end",
        "basic",
        "1000",
        "100",
    ];
    let (mut rec, mut t_in, mut t_out, target) = start(&args);
    let said = wait_for_line(
        &mut rec.stderr,
        "exec'd by another thread than its main one",
        Duration::from_secs(30),
        "recorder",
    );
    assert!(said.contains(" probes again, to thread "), "{said}");
    // A snapshot reads the new program's maps (a -p target is not held at exit).
    wait_for_line(
        &mut rec.stderr,
        "snapshot",
        Duration::from_secs(10),
        "recorder",
    );
    wait_for_line(&mut t_out, "ready", Duration::from_secs(10), "fixture");
    let pid = pid_said(&said);
    check(pid, rec.child.id());
    t_in.write_all(b"go\n").unwrap();
    wait_for_line(&mut t_out, "done", Duration::from_secs(10), "fixture");
    drop(t_in);
    if let Some(mut target) = target {
        assert!(target.wait().unwrap().success());
    }
    let r = rec.finish();
    r.assert_clean();
    r.assert_leaky_basic(1000, 100);
    assert_eq!(r.outstanding(), (100_000, 1000), "{}", r.stderr);
    let l = r.state.losses;
    let seen = (
        l.total_drops(),
        l.unknown_free,
        l.nested_calls,
        l.abandoned_calls,
    );
    assert_eq!(seen, (0, 0, 0, 0), "{l:?}");
    // Recorded as probes attached while it ran: the header's, again.
    let late = &r.state.late_probes;
    assert_eq!(late.len(), 1, "{late:?}");
    assert!(!late[0].held);
    let mut again = late[0].probes.clone();
    let mut first = r.state.header.as_ref().unwrap().probes.clone();
    again.sort_by_key(|p| format!("{p:?}"));
    first.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(again, first);
    r
}

/// The PID a line of the recorder names last (`... PID 1234 ...`).
fn pid_said(said: &str) -> u32 {
    said.split("PID ")
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {said}"))
}

/// Waits (10 s at most) until the main thread of process `pid` has ended (a zombie).
fn wait_for_main_thread_end(pid: u32) {
    let stat = || fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stat().contains(") Z ") {
        assert!(Instant::now() < deadline, "the main thread did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts leak-record on process `pid` at `interval`, and waits until it records.
fn attach_recorder(pid: &str, interval: &str) -> Running {
    let mut rec = start_recorder(&["-p", pid, "-i", interval]);
    let limit = Duration::from_secs(30);
    wait_for_line(&mut rec.stderr, "recording PID", limit, "recorder");
    rec
}

/// Tells a fixture attached to with `-p` (`target`, waiting on `t_in`) to go, lets a snapshot
/// see it done, lets it exit, and reads the recording.
fn go_and_finish(
    mut rec: Running,
    mut target: std::process::Child,
    mut t_in: std::process::ChildStdin,
    t_out: &mut BufReader<std::process::ChildStdout>,
) -> Recorded {
    t_in.write_all(b"go\n").unwrap();
    wait_for_line(t_out, "done", Duration::from_secs(10), "fixture");
    let limit = Duration::from_secs(10);
    wait_for_line(&mut rec.stderr, "snapshot", limit, "recorder");
    drop(t_in);
    assert!(target.wait().unwrap().success());
    let r = rec.finish();
    r.assert_clean();
    r
}

/// Starts leak-record with `flags`, then `-- command`, with the command's stdin and stdout
/// piped to the test.
fn start_command(flags: &[&str], command: &[&str]) -> Started {
    let mut rec = start_recorder_piped(&[], &[flags, &["--"], command].concat());
    let t_in = rec.child.stdin.take().unwrap();
    let t_out = BufReader::new(rec.child.stdout.take().unwrap());
    (rec, t_in, t_out, None)
}

/// Panics unless process `pid` is traced by process `tracer`.
fn assert_traced_by(pid: u32, tracer: u32) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let traced = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .map(|v| v.trim().to_string());
    assert_eq!(traced, Some(tracer.to_string()), "{status}");
}

/// The kernel ties a uprobe to the thread it was attached for: after an exec by another
/// thread, which ends the main one, no probe fired in the new program (a silent, empty
/// recording). Now they are attached again at once, and a started command is held again at
/// its exit and execs (it is traced by the recorder once more). Also with malloc's session
/// probe (--min-size 1), which its old link, still firing for the thread group until it is
/// dropped, must not record twice.
#[test]
fn a_command_that_execs_from_another_thread_is_recorded_on() {
    if !bpf_ready() {
        return;
    }
    let start = |args: &[&str]| start_command(&["-i", "200ms"], args);
    record_a_thread_exec(start, assert_traced_by);
    let start = |args: &[&str]| start_command(&["-i", "200ms", "--min-size", "1"], args);
    let r = record_a_thread_exec(start, assert_traced_by);
    // (Which it is, in CI.)
    sessions_in_kernel(&r.stderr);
}

/// A main thread that calls pthread_exit ends the thread the probes are tied to while the
/// process runs on in its other threads: without a word, nothing more was recorded. Now the
/// probes are attached again, to a thread that runs (a started command, and `-p` of a process
/// whose main thread had ended before the attach).
#[test]
fn a_process_whose_main_thread_ends_is_recorded_on() {
    if !bpf_ready() {
        return;
    }
    let lifecycle = fixture("lifecycle");
    let command = [lifecycle.as_str(), "main_exits", "1000", "100"];
    // One unknown free: at its exit the thread frees its tcache, which glibc's malloc
    // allocates inside a malloc call, without a call of its own (one per thread that exits:
    // `lifecycle threads 1 3 10 100` has 3).
    let assert_exact = |r: &Recorded| {
        let t = r.by_function("leak_after_main_exit");
        assert_eq!((t.bytes, t.count), (100_000, 1000), "{}", r.stderr);
        let l = r.state.losses;
        assert_eq!((l.total_drops(), l.unknown_free), (0, 1), "{l:?}");
    };
    let (mut rec, mut t_in, mut t_out, _) = start_command(&["-i", "200ms"], &command);
    wait_for_line(&mut t_out, "main exits", Duration::from_secs(30), "fixture");
    let said = wait_for_line(
        &mut rec.stderr,
        "to which the kernel tied the probes",
        Duration::from_secs(10),
        "recorder",
    );
    assert!(said.contains("lives on without thread "), "{said}");
    t_in.write_all(b"go\n").unwrap();
    wait_for_line(&mut t_out, "done", Duration::from_secs(10), "fixture");
    drop(t_in);
    let r = rec.finish();
    r.assert_clean();
    assert_exact(&r);
    assert_eq!(r.state.late_probes.len(), 1, "{}", r.stderr);
    // -p after the main thread has ended: attached to a thread that runs from the start.
    let (mut target, mut t_out) = {
        let mut child = Command::new(&lifecycle)
            .args(&command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        (child, out)
    };
    wait_for_line(&mut t_out, "main exits", Duration::from_secs(10), "fixture");
    let pid = target.id();
    wait_for_main_thread_end(pid);
    let mut rec = start_recorder(&["-p", &pid.to_string(), "-i", "200ms"]);
    wait_for_line(
        &mut rec.stderr,
        "snapshot",
        Duration::from_secs(30),
        "recorder",
    );
    let t_in = target.stdin.take().unwrap();
    let r = go_and_finish(rec, target, t_in, &mut t_out);
    assert_exact(&r);
    assert!(r.state.late_probes.is_empty(), "{}", r.stderr);
}

/// A program an attached process exec'd is named by the next snapshot (`-p` has no exec or
/// exit stop to read it at), even after the program's own main thread has ended: its command
/// line and executable are read through a thread that runs, not from the ended main thread's
/// /proc entry, which has neither.
#[test]
fn a_program_execd_is_named_after_its_main_thread_has_ended() {
    if !bpf_ready() {
        return;
    }
    let lifecycle = fixture("lifecycle");
    let (target, mut t_out) = spawn_waiting(&[
        &lifecycle,
        "--wait-start",
        "exec",
        "10",
        "100",
        "0",
        "--thread",
        &lifecycle,
        "main_exits",
        "1000",
        "100",
    ]);
    let pid = target.id();
    let mut rec = attach_recorder(&pid.to_string(), "500ms");
    let mut target = target;
    let mut t_in = target.stdin.take().unwrap();
    t_in.write_all(b"go\n").unwrap();
    wait_for_line(&mut t_out, "main exits", Duration::from_secs(30), "fixture");
    wait_for_main_thread_end(pid);
    // The probes go to the thread that runs on (at once, or first to the new main thread
    // and then again), and a snapshot after that names the program: the window between
    // the exec and the main thread's end is microseconds.
    let tids: Vec<u32> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&tid| tid != pid)
        .collect();
    assert_eq!(tids.len(), 1, "{tids:?}");
    wait_for_line(
        &mut rec.stderr,
        &format!("probes again, to thread {}, ", tids[0]),
        Duration::from_secs(10),
        "recorder",
    );
    let r = go_and_finish(rec, target, t_in, &mut t_out);
    let named = leak_format::Process {
        pid,
        name: "lifecycle".into(),
        command_line: vec![
            lifecycle.clone(),
            "main_exits".into(),
            "1000".into(),
            "100".into(),
        ],
        exe: fs::canonicalize(&lifecycle).unwrap().display().to_string(),
    };
    assert_eq!(r.state.process.as_ref(), Some(&named), "{}", r.stderr);
    let t = r.by_function("leak_after_main_exit");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{}", r.stderr);
}

/// The same with `-p`.
#[test]
fn an_attached_process_that_execs_from_another_thread_is_recorded_on() {
    if !bpf_ready() {
        return;
    }
    let start = |args: &[&str]| {
        let with_wait: Vec<&str> = [&[args[0], "--wait-start"], &args[1..]].concat();
        // Waits in `lifecycle` until told to go, then in `leaky` again.
        let (mut target, t_out) = spawn_waiting(&with_wait);
        let pid = target.id().to_string();
        let rec = attach_recorder(&pid, "200ms");
        let mut t_in = target.stdin.take().unwrap();
        t_in.write_all(b"go\n").unwrap();
        (rec, t_in, t_out, Some(target))
    };
    let r = record_a_thread_exec(start, |_, _| {});
    assert_eq!(
        r.state.header.as_ref().unwrap().target.mode,
        leak_format::TargetMode::Attach
    );
}

/// The recording has one record of probes attached later, all in libjemalloc, `held` or not.
fn assert_late_jemalloc_probes(r: &Recorded, held: bool) {
    let late = &r.state.late_probes;
    assert_eq!(late.len(), 1, "{late:?}\n{}", r.stderr);
    assert_eq!(late[0].held, held, "{}", r.stderr);
    let modules: Vec<&str> = late[0].probes.iter().map(|p| p.module.as_str()).collect();
    assert!(
        modules.iter().all(|m| m.contains("libjemalloc.so")),
        "{modules:?}"
    );
}

#[test]
fn a_program_execd_with_another_allocator_is_probed_before_it_runs() {
    if !bpf_ready() {
        return;
    }
    // A wrapper (probed in libc, sh's allocator) execs a program linked with jemalloc: the
    // command is held at that exec until jemalloc is probed, so everything is exact.
    let leaky = fixture("leaky_jemalloc");
    let r = record_wrapper(&["-i", "1s"], &format!("exec {leaky} basic 1000 100"));
    r.assert_leaky_basic(1000, 100);
    assert_late_jemalloc_probes(&r, true);
    let said = format!("now runs {leaky}: attached ");
    assert!(r.stderr.contains(&said), "{}", r.stderr);
    assert!(r
        .stderr
        .contains("before it ran: nothing it allocates is missed"));
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    assert_eq!(r.state.losses.unknown_free, 0, "{:?}", r.state.losses);
    // A program with no allocator at all: said, and nothing attached.
    let none = fixture("nomalloc");
    let r = record_wrapper(&["-i", "1s"], &format!("exec {none}"));
    let warning = format!(
        "warning: PID {} now runs {none}, in which no allocator was found",
        r.state.header.as_ref().unwrap().target.pid
    );
    assert!(r.stderr.contains(&warning), "{}", r.stderr);
    assert!(r.state.late_probes.is_empty());
}

#[test]
fn a_program_execd_with_fewer_privileges_is_probed_without_running_its_linker() {
    if !bpf_ready() {
        return;
    }
    // A wrapper that drops to nobody before it execs: its dynamic linker is not run as
    // leak-record (root) to list the program's libraries. The allocator is probed from the
    // maps once they are in, while it runs, and the recording says it was not held.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("leaky_jemalloc");
    copy_program(Path::new(&fixture("leaky_jemalloc")), &exe);
    let exe = exe.to_str().unwrap();
    let drop_then_exec =
        format!("exec setpriv --reuid=65534 --regid=65534 --clear-groups -- {exe} slow 400 100 25");
    let r = record_wrapper(&["-i", "200ms"], &drop_then_exec);
    assert_late_jemalloc_probes(&r, false);
    assert!(r
        .stderr
        .contains("while it ran: what it allocated before is not recorded"));
    // Some of its 400 leaks (10 s) were seen, after the probes went in; none before.
    let t = r.by_function("leak_slowly");
    assert!(
        t.count > 0 && t.count < 400 && t.bytes == 100 * t.count,
        "{t:?}"
    );
}

#[test]
fn an_attached_process_that_execs_another_allocator_is_probed_while_it_runs() {
    if !bpf_ready() {
        return;
    }
    // -p cannot hold the process at its exec: the new allocator is probed once its libraries
    // are mapped, and the recording says that what came before was not seen. The fixture
    // allocates only when told to, after that.
    let leaky = fixture("leaky_jemalloc");
    let script = r#"read line; exec "$0" --wait-start --wait-end basic 1000 100"#;
    let (mut target, mut t_out) = {
        let mut child = Command::new("sh")
            .args(["-c", script, &leaky])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        (child, out)
    };
    let pid = target.id().to_string();
    // The shell must have mapped its libc: attached before, there is no allocator to probe
    // (CI once attached that early).
    wait_for_libc(&mut target);
    let mut rec = attach_recorder(&pid, "200ms");
    let mut t_in = target.stdin.take().unwrap();
    t_in.write_all(b"exec\n").unwrap();
    wait_for_line(&mut t_out, "ready", Duration::from_secs(10), "fixture");
    let said = format!("now runs {leaky}: attached ");
    wait_for_line(&mut rec.stderr, &said, Duration::from_secs(10), "recorder");
    let r = go_and_finish(rec, target, t_in, &mut t_out);
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{t:?}");
    let churn = r.by_function("churn_balanced");
    assert_eq!((churn.bytes, churn.allocs, churn.frees), (0, 5000, 5000));
    assert_late_jemalloc_probes(&r, false);
    // Named after the exec, as read before the next snapshot (-p holds nothing).
    let p = r
        .state
        .process
        .as_ref()
        .expect("the program after the exec is named");
    assert_eq!(p.pid.to_string(), pid);
    assert_eq!(p.name, "leaky_jemalloc");
    let argv = [&leaky, "--wait-start", "--wait-end", "basic", "1000", "100"];
    assert_eq!(p.command_line, argv);
    assert_eq!(
        p.exe,
        fs::canonicalize(&leaky).unwrap().display().to_string()
    );
}

/// tcmalloc and mimalloc (Debian's libtcmalloc_minimal and libmimalloc, linked like jemalloc
/// above) are found by the same lookup, and every allocation function is exact through them.
#[test]
fn tcmalloc_mimalloc_and_musl_processes_are_exact() {
    if !bpf_ready() {
        return;
    }
    // realloc(p, 0): tcmalloc frees p and returns NULL, as glibc does; mimalloc frees p and
    // returns a new, empty block, which realloc_to_zero then frees. (allocs, frees) of both.
    // musl (Alpine's libc): dynamic, malloc is in its dynamic loader, which is its libc;
    // static, in the executable.
    let musl_static = fixture("leaky_musl_static");
    for (name, library, realloc_zero) in [
        ("leaky_tcmalloc", "libtcmalloc_minimal.so", (1, 1)),
        ("leaky_mimalloc", "libmimalloc.so", (2, 2)),
        ("leaky_musl", "ld-musl-x86_64.so.1", (2, 2)),
        ("leaky_musl_static", musl_static.as_str(), (2, 2)),
    ] {
        let exe = fixture(name);
        let r = record(&["-i", "1s"], &[&exe, "basic", "1000", "100"]);
        r.assert_clean();
        r.assert_leaky_basic(1000, 100);
        for function in ["malloc", "free", "calloc", "realloc", "posix_memalign"] {
            let modules = r.modules_of_probe(function);
            assert!(
                modules[0].contains(library),
                "{name} {function}: {modules:?}"
            );
        }
        assert_eq!(
            r.state.losses.total_drops(),
            0,
            "{name}: {:?}",
            r.state.losses
        );
        let r = record(&["-i", "1s"], &[&exe, "paths", "10"]);
        r.assert_leaky_paths(name, realloc_zero);
    }
}

#[test]
fn statically_linked_binary_is_probed_in_the_executable() {
    if !bpf_ready() {
        return;
    }
    let exe = fixture("leaky_static");
    let r = record(&["-i", "1s"], &[&exe, "basic", "1000", "100"]);
    r.assert_clean();
    assert_eq!(r.modules_of_probe("malloc"), std::slice::from_ref(&exe));
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{t:?}\n{}", r.stderr);
}

/// Starts `args` (a fixture run with `--wait-start --wait-end`), runs `ready` once it waits,
/// attaches `leak-record -p` to it, lets it run with one snapshot of it alive, and returns the
/// recording once it exited.
fn attach_and_record(args: &[&str], ready: impl FnOnce()) -> Recorded {
    let (mut target, mut t_out) = spawn_waiting(args);
    ready();
    let pid = target.id().to_string();
    let mut rec = attach_recorder(&pid, "500ms");
    let r_err = &mut rec.stderr;
    let mut t_in = target.stdin.take().unwrap();
    t_in.write_all(b"go\n").unwrap();
    wait_for_line(&mut t_out, "done", Duration::from_secs(10), "fixture");
    // Let one snapshot see the live process, then let it exit.
    wait_for_line(r_err, "snapshot", Duration::from_secs(10), "recorder");
    drop(t_in);
    assert!(target.wait().unwrap().success());
    let r = rec.finish();
    r.assert_clean();
    assert_eq!(
        r.state.header.as_ref().unwrap().target.mode,
        leak_format::TargetMode::Attach
    );
    r
}

/// `leaky basic 1000 100`'s truths, recorded with malloc probed in a module whose path ends
/// with `library`.
fn assert_attached_basic(r: &Recorded, who: &str, library: &str) {
    let modules = r.modules_of_probe("malloc");
    assert!(modules[0].ends_with(library), "{who}: {modules:?}");
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{who}: {t:?}");
    let churn = r.by_function("churn_balanced");
    let churn_seen = (churn.bytes, churn.allocs, churn.frees);
    assert_eq!(churn_seen, (0, 5000, 5000), "{who}");
}

/// [`assert_attached_basic`], with malloc probed in `module` only.
fn assert_attached_basic_in(r: &Recorded, who: &str, module: &str) {
    assert_eq!(
        r.modules_of_probe("malloc"),
        [module],
        "{who}: {}",
        r.stderr
    );
    assert_attached_basic(r, who, module);
}

#[test]
fn attach_to_a_running_process() {
    if !bpf_ready() {
        return;
    }
    // glibc, and musl, whose libc is its dynamic loader: with -p the allocator is found from
    // the memory map, where the loader appears under its real path, not the one on the
    // command line.
    for (name, library) in [
        ("leaky", "libc.so.6"),
        ("leaky_musl", "x86_64-linux-musl/libc.so"),
    ] {
        let exe = fixture(name);
        let r = attach_and_record(
            &[&exe, "--wait-start", "--wait-end", "basic", "1000", "100"],
            || {},
        );
        assert_attached_basic(&r, name, library);
    }
}

/// A process that execs while leak-record attaches to it (a wrapper script that execs the
/// service, caught by `-p $(pidof ...)`): the probes planned for the program it left are
/// dropped, and the set-up done again for the one it runs, which is recorded exactly.
#[test]
fn an_attached_process_that_execs_during_the_set_up_is_recorded_in_its_new_program() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let planned = dir.path().join("planned");
    let leaky = fixture("leaky");
    // The wrapper execs once leak-record has planned its probes (the test hook creates the
    // file, then waits for the exec).
    let script = r#"echo ready; while [ ! -e "$1" ]; do sleep 0.01; done
        exec "$2" --wait-start --wait-end basic 1000 100"#;
    let (mut target, mut t_out) =
        spawn_waiting(&["sh", "-c", script, "sh", planned.to_str().unwrap(), &leaky]);
    let pid = target.id().to_string();
    let hook = [(
        "LEAK_RECORD_TEST_EXEC_DURING_SETUP",
        planned.to_str().unwrap(),
    )];
    let mut rec = start_recorder_with_env(&hook, &["-p", &pid, "-i", "500ms"]);
    let limit = Duration::from_secs(30);
    let said = wait_for_line(&mut rec.stderr, "recording PID", limit, "recorder");
    assert!(planned.exists(), "the hook did not run: {said}");
    assert!(
        said.contains(&format!(
            "leak-record: PID {pid} exec'd {leaky} while leak-record was attaching to it; \
             attaching to that program instead\n"
        )),
        "{said}"
    );
    wait_for_line(&mut t_out, "ready", Duration::from_secs(10), "fixture");
    let mut t_in = target.stdin.take().unwrap();
    t_in.write_all(b"go\n").unwrap();
    wait_for_line(&mut t_out, "done", Duration::from_secs(10), "fixture");
    wait_for_line(
        &mut rec.stderr,
        "snapshot",
        Duration::from_secs(10),
        "recorder",
    );
    drop(t_in);
    assert!(target.wait().unwrap().success());
    let r = rec.finish();
    r.assert_clean();
    let header = r.state.header.as_ref().unwrap();
    assert_eq!(header.target.exe, leaky);
    assert_eq!(header.target.command_line[0], leaky);
    assert_attached_basic(&r, "exec'd during the set-up", "libc.so.6");
}

/// `-p` of a program deleted since it started (an upgrade under a running service): leak-record
/// says that leak-report will not find it, and how to keep a copy; not of one still there.
#[test]
fn a_deleted_program_is_said_with_the_option_that_keeps_it() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("leaky");
    copy_program(Path::new(&fixture("leaky")), &copy);
    let copy = copy.to_str().unwrap().to_string();
    for delete in [true, false] {
        let (mut target, _t_out) = spawn_waiting(&[&copy, "--wait-start", "basic", "1", "1"]);
        if delete {
            fs::remove_file(&copy).unwrap();
        }
        let pid = target.id().to_string();
        let r = record_with_env(&[], &["-p", &pid, "-i", "200ms", "-d", "600ms"]);
        let said = format!(
            "leak-record: warning: PID {pid} runs {copy}, which was deleted or replaced since it \
             started: leak-report will not find it there to name the frames; add \
             --bundle-symbols to keep a copy in the recording\n"
        );
        assert_eq!(r.stderr.contains(&said), delete, "{}", r.stderr);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let _ = target.kill();
        let _ = target.wait();
        if delete {
            copy_program(Path::new(&fixture("leaky")), Path::new(&copy));
        }
    }
}

/// The shared objects `exe` loads, as `ldd` names them (its dynamic loader included), and of
/// them the C library.
fn loaded_objects(exe: &str) -> (Vec<String>, String) {
    let out = Command::new("ldd").arg(exe).output().expect("run ldd");
    assert!(out.status.success(), "ldd {exe}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let objects: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.trim().split(" (").next()?.trim();
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    let libc = objects
        .iter()
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("libc.so"))
        })
        .unwrap_or_else(|| panic!("no libc in ldd {exe}: {text}"))
        .clone();
    (objects, libc)
}

#[test]
fn processes_in_a_container_or_a_chroot_are_probed_in_their_own_libc() {
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = fixture("leaky");
    let (objects, libc) = loaded_objects(&exe);
    let libc = libc.as_str();
    let args = ["--wait-start", "--wait-end", "basic", "1000", "100"];
    // Each target runs a copy of libc, another file than the host's at the same path: probes
    // on the host's would see nothing, and leak_here would not be exact.
    //
    // A container: a mount namespace of its own, in which the copy is mounted over the host's
    // libc. Its maps show the path as it sees it, which /proc/PID/root resolves.
    let copy = dir.path().join("libc.so.6");
    copy_program(Path::new(libc), &copy);
    let copy = copy.to_str().unwrap();
    let mount = r#"mount --bind "$1" "$2" && shift 2 && exec "$0" "$@""#;
    let unshare = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        mount,
        &exe,
        copy,
        libc,
    ];
    let r = attach_and_record(&[&unshare[..], &args[..]].concat(), || {});
    assert_attached_basic(&r, "container", "libc.so.6");
    // A chroot whose libc and loader are copies. The kernel shows a chrooted process's
    // mappings from the reader's root (ROOT/lib/... here), so /proc/PID/root + that path is no
    // file: leak-record opens the mapping itself (/proc/PID/map_files). (The fixture sits at
    // its host path inside the root, so the test can name its functions.)
    let root = dir.path().join("root");
    for path in objects.iter().chain([&exe]) {
        let inside = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        copy_program(&fs::canonicalize(path).unwrap(), &inside);
    }
    let root = root.to_str().unwrap();
    let r = attach_and_record(&[&["chroot", root, &exe], &args[..]].concat(), || {});
    assert_attached_basic_in(&r, "chroot", &format!("{root}{libc}"));
}

#[test]
fn a_library_replaced_on_disk_is_probed_as_mapped() {
    if !bpf_ready() {
        return;
    }
    // A library upgraded under a running service: the package manager renames a new file over
    // the old one, which the process keeps mapped (its maps say "PATH (deleted)"). The probes
    // must go on the mapped file, not on the new one at the same path, which it never runs.
    let dir = tempfile::tempdir().unwrap();
    let libc = dir.path().join("libc.so.6");
    let exe = fixture("leaky");
    copy_program(Path::new(&loaded_objects(&exe).1), &libc);
    let path = format!("LD_LIBRARY_PATH={}", dir.path().display());
    let args = [
        "env",
        &path,
        &exe,
        "--wait-start",
        "--wait-end",
        "basic",
        "1000",
        "100",
    ];
    let upgrade = || {
        let new = dir.path().join("libc.so.6.new");
        copy_program(&libc, &new);
        fs::rename(&new, &libc).unwrap();
    };
    let r = attach_and_record(&args, upgrade);
    assert_attached_basic_in(&r, "replaced", &libc.display().to_string());
}

#[test]
fn a_command_started_by_a_relative_path_is_recorded_with_an_absolute_one() {
    if !bpf_ready() {
        return;
    }
    // `leak-record -- ./bin/svc`: the recording is read elsewhere, where "./bin/svc" names
    // nothing; -p gives the kernel's absolute path.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("bin")).unwrap();
    copy_program(Path::new(&fixture("leaky")), &dir.path().join("bin/leaky"));
    let out = dir.path().join("run.zst");
    let output = Command::new(RECORDER)
        .current_dir(dir.path())
        .args([
            "-q",
            "-o",
            "run.zst",
            "--",
            "./bin/leaky",
            "basic",
            "10",
            "100",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let (state, _) = read_recording(&out);
    let target = &state.header.as_ref().unwrap().target;
    assert_eq!(
        target.exe,
        dir.path().join("bin/leaky").display().to_string()
    );
    assert_eq!(target.command_line, ["./bin/leaky", "basic", "10", "100"]);
}

#[test]
fn dash_records_to_standard_output_and_the_command_prints_to_stderr() {
    if !bpf_ready() {
        return;
    }
    // `-o -` streams the recording (`ssh HOST 'leak-record -o - ...' > run.zst`); what the
    // command prints goes to stderr, never into the recording.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("streamed.zst");
    let leaky = fixture("leaky");
    let run = r#"echo marker-from-the-command; exec "$0" basic 1000 100"#;
    let output = Command::new(RECORDER)
        .current_dir(dir.path())
        .args(["-i", "1s", "-o", "-", "--", "sh", "-c", run, &leaky])
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("marker-from-the-command\n"), "{stderr}");
    assert!(stderr.contains("written to standard output"), "{stderr}");
    let (state, tail) = read_recording(&out);
    let r = Recorded {
        state,
        tail,
        stdout: String::new(),
        stderr,
        code: output.status.code(),
    };
    r.assert_clean();
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (100_000, 1000), "{t:?}");
    // Nothing else was created: no file named "-".
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["streamed.zst"]);
}

#[test]
fn sigkill_mid_run_leaves_every_complete_snapshot_readable() {
    if !bpf_ready() {
        return;
    }
    let leaky = fixture("leaky");
    let mut rec = start_recorder(&["-i", "100ms", "--", &leaky, "slow", "100000", "100", "5"]);
    wait_for_line(
        &mut rec.stderr,
        "snapshot 5 ",
        Duration::from_secs(60),
        "recorder",
    );
    std::thread::sleep(Duration::from_millis(150)); // land anywhere, maybe mid-write
    rec.child.kill().unwrap(); // SIGKILL
    rec.child.wait().unwrap();
    let out = rec.out.clone();
    let (state, tail) = read_recording(&out);
    // The fixture runs on (the kernel detached the recorder); end it. It runs for minutes
    // yet, so its PID is still its own.
    if let Some(h) = &state.header {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(h.target.pid as i32, libc::SIGKILL) };
    }
    assert!(
        state.end.is_none(),
        "a killed recorder writes no end record"
    );
    assert!(state.snapshots >= 5, "only {} snapshots", state.snapshots);
    if let Some(e) = tail {
        assert!(e.is_tail(), "{e}");
    }
    // Every snapshot that was read is complete and consistent: the leak only grows.
    let mut last = 0;
    for record in Reader::open(&out).unwrap().flatten() {
        if let Record::Snapshot(s) = record {
            for st in &s.stats {
                assert!(st.alloc_bytes >= last || st.alloc_bytes < 100, "{st:?}");
            }
            last = last.max(s.stats.iter().map(|x| x.alloc_bytes).max().unwrap_or(0));
        }
    }
}

#[test]
fn tiny_tables_produce_drop_counters_never_silence() {
    if !bpf_ready() {
        return;
    }
    let n = 2000u64;
    // Quiet: the losses are said all the same, once, at the end.
    let r = record(
        &[
            "-q",
            "-i",
            "1s",
            "--max-stacks",
            "64",
            "--max-allocs",
            "500",
        ],
        &[&fixture("leaky"), "many_stacks", &n.to_string()],
    );
    r.assert_clean();
    let l = r.state.losses;
    let said = format!(
        "leak-record: warning: {} allocator events (allocations or frees) were lost or misattributed",
        l.total_drops()
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with(&said), "{}", r.stderr);
    assert!(l.stack_table_full > 0, "{l:?}");
    assert_eq!(l.counters_full, 0, "{l:?}"); // every stack id handed out has counters
    assert!(l.allocs_full > 0, "{l:?}");
    assert_eq!(l.allocs_full_bytes, 16 * l.allocs_full, "{l:?}");
    // Exact accounting: every allocation is either tracked (on its stack or a placeholder) or
    // counted as dropped.
    let tracked: u64 = r.state.totals.values().map(|t| t.alloc_count).sum();
    assert_eq!(tracked + l.allocs_full, n, "{l:?}");
    // Allocations whose stack did not fit are on the placeholder that says so.
    let placeholder = r
        .state
        .stacks
        .values()
        .find(|s| s.lost == Some(StackLoss::TableFull))
        .expect("a table-full placeholder stack");
    let on_placeholder = r.state.totals[&(placeholder.id, AllocKind::Heap)].alloc_count;
    assert_eq!(on_placeholder, l.stack_table_full);
}

#[test]
fn mmap_made_by_malloc_is_not_counted_twice() {
    if !bpf_ready() {
        return;
    }
    // 1 MiB blocks: glibc serves them with mmap inside malloc.
    let r = record(
        &["-i", "1s", "--mmap"],
        &[&fixture("leaky"), "basic", "20", "1048576"],
    );
    r.assert_clean();
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (20 << 20, 20));
    let mmap_bytes = r.state.outstanding_bytes(AllocKind::Mmap);
    assert!(
        mmap_bytes < 1 << 20,
        "malloc's own mmaps were counted: {mmap_bytes}"
    );
    assert!(r
        .state
        .header
        .as_ref()
        .unwrap()
        .probes
        .iter()
        .any(|p| p.function == "mmap"));
}

/// With --mmap, an munmap of a whole mapping retires it, and an munmap of its head leaves the
/// rest on its stack, shorter: `leaky maps 10` maps 10 x 64 KiB, unmaps the first 16 KiB of
/// each and then the rest of every other one. Both paths take the block out of the table
/// before its bytes come off the counters (a refused delete would otherwise count them twice).
#[test]
fn munmap_of_a_whole_mapping_or_of_its_head_is_counted() {
    if !bpf_ready() {
        return;
    }
    let r = record(&["-i", "1s", "--mmap"], &[&fixture("leaky"), "maps", "10"]);
    r.assert_clean();
    let t = r.by_function_of(AllocKind::Mmap, "map_here");
    let seen = (t.bytes, t.count, t.allocs, t.frees, t.stacks);
    assert_eq!(seen, (5 * (48 << 10), 5, 10, 5, 1), "{}", r.stderr);
    let l = &r.state.losses;
    assert_eq!(l.total_drops(), 0, "{l:?}");
}

#[test]
fn bundle_symbols_embeds_the_referenced_binaries() {
    if !bpf_ready() {
        return;
    }
    let exe = fixture("leaky");
    let r = record(
        &["-i", "1s", "--bundle-symbols"],
        &[&exe, "basic", "10", "100"],
    );
    r.assert_clean();
    let m = r
        .state
        .modules
        .values()
        .find(|m| m.path == exe)
        .expect("fixture module");
    assert_eq!(
        r.state.bundled_bytes.get(&m.id),
        Some(&fs::metadata(&exe).unwrap().len())
    );
    assert!(m.build_id.as_ref().is_some_and(|b| b.len() == 20), "{m:?}");
}

#[test]
fn bundle_symbols_falls_back_to_the_symbol_table_above_the_cap() {
    if !bpf_ready() {
        return;
    }
    let exe = fixture("leaky");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("symtab.zst");
    let status = Command::new(RECORDER)
        .args([
            "-q",
            "-i",
            "1s",
            "--bundle-symbols",
            "--bundle-max",
            "1K",
            "-o",
        ])
        .arg(&out)
        .args(["--", &exe, "basic", "10", "100"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut table = Vec::new();
    let mut state = RecordingState::default();
    for record in Reader::open(&out).unwrap() {
        let record = record.unwrap();
        if let Record::Bundle(b) = &record {
            assert_eq!(b.content, leak_format::BundleContent::SymbolTable);
            table.extend_from_slice(&b.data);
        }
        state.apply(record);
    }
    let symbols = leak_format::decode_symbol_table(&table).unwrap();
    // The leak's innermost frame (a return address: look up offset - 1) is in leak_here.
    let module = state.modules.values().find(|m| m.path == exe).unwrap();
    let (&(stack, _), _) = state
        .totals
        .iter()
        .find(|(_, t)| t.outstanding_bytes() == 1000)
        .expect("the leak's stack");
    let frame = state.stacks[&stack].frames[0];
    assert_eq!(frame.module, Some(module.id));
    let at = frame.offset - 1;
    let sym = symbols
        .iter()
        .find(|s| s.offset <= at && at < s.offset + s.size)
        .unwrap();
    assert_eq!(sym.name, "leak_here");
}

// Bad input: one clear line, exit status 2, nothing written or lost. No BPF needed.

/// A kernel thread this process can see, with its name: /proc says `Kthread: 1`, or (before
/// Linux 6.9) a live task with no memory.
fn a_kernel_thread() -> Option<(u32, String)> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let status = fs::read_to_string(e.path().join("status")).ok()?;
        let field = |key: &str| {
            status.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == key).then(|| v.trim().to_string())
            })
        };
        let kernel = match field("Kthread") {
            Some(k) => k == "1",
            None => field("VmSize").is_none() && !field("State")?.starts_with('Z'),
        };
        kernel.then(|| (pid, field("Name").unwrap_or_default()))
    })
}

#[test]
fn bad_input_is_a_one_line_error_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.zst");
    let o = out.to_str().unwrap();
    let text_file = script(dir.path(), "notes.txt", "not a program\n");
    let bad_script = script(dir.path(), "bad", "#!/no/such/shell\n");
    let not_executable = dir.path().join("not-executable");
    fs::copy("/bin/true", &not_executable).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let not_executable = not_executable.to_str().unwrap();
    let missing_dir = dir.path().join("no-such-dir/x.zst");
    // A thread of this process (the test harness runs each test on a thread of its own).
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    assert_ne!(
        tid as u32,
        std::process::id(),
        "this test needs a thread of its own"
    );
    let tid = tid.to_string();
    let thread_of = format!("is a thread of process {}", std::process::id());
    // A kernel thread (kthreadd, PID 2, outside a PID namespace; inside one there may be none
    // to see).
    let kthread = a_kernel_thread();
    let (kthread_pid, kthread_says) = match &kthread {
        Some((pid, name)) => (pid.to_string(), format!("({name}) is a kernel thread")),
        None => ("999999998".into(), "no process with PID 999999998".into()),
    };
    let dir_name = dir.path().display().to_string();
    let dir_error =
        format!("output {dir_name} is a directory; give a file name, e.g. -o {dir_name}/run.zst");
    // A child of this test that has exited and is not reaped yet.
    let mut zombie = Command::new("true").spawn().unwrap();
    let zombie_pid = zombie.id().to_string();
    let zombie_stat = format!("/proc/{zombie_pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&zombie_stat).is_ok_and(|s| s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "true did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Tables of 128M live blocks and 128M stacks take about 95 GiB: refused below 190 GiB
    // available, before anything is loaded or created.
    let available_gib = fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        >> 20;
    let mut cases = vec![
        (
            vec!["-o", o, "-p", &zombie_pid],
            "has exited and its parent has not reaped it yet (a zombie)",
        ),
        (
            vec!["-o", "/proc/self/x.zst", "--", "true"],
            "directory /proc/self takes no new files",
        ),
        (
            vec!["-o", o, "-i", "1000000h", "-p", "1"],
            "duration '1000000h' is too large",
        ),
        (
            vec!["-o", o, "--max-allocs", "4G", "-p", "1"],
            "'4G' is too large: at most 128M (134217728)",
        ),
        (vec!["-o", o, "-p", &tid], thread_of.as_str()),
        (vec!["-o", o, "-p", &kthread_pid], kthread_says.as_str()),
        (vec!["-o", &dir_name, "--", "true"], &dir_error),
        (vec!["-o", &dir_name, "--force", "--", "true"], &dir_error),
        (
            vec!["-o", o, "-p", "999999999"],
            "no process with PID 999999999",
        ),
        (
            vec!["-o", o, "--", "/nonexistent/prog"],
            "cannot execute /nonexistent/prog",
        ),
        (
            vec!["-o", o, "--", "no-such-command-xyz"],
            "command not found: no-such-command-xyz",
        ),
        (
            vec!["-o", o, "--", not_executable],
            "permission denied (not executable",
        ),
        (
            vec!["-o", o, "--obj", "/etc/passwd", "--", "true"],
            "--obj /etc/passwd: it is not a 64-bit ELF file",
        ),
        (
            vec!["-o", o, "--obj", "/nonexistent.so", "--", "true"],
            "--obj /nonexistent.so: cannot open it",
        ),
        (
            vec!["-o", o, "--symbol-prefix", "zz_", "--", "true"],
            "defines zz_malloc and zz_free",
        ),
        (vec!["-o", o, "--", &dir_name], "it is a directory"),
        (
            vec!["-o", missing_dir.to_str().unwrap(), "--", "true"],
            "no-such-dir does not exist; create it or choose another -o",
        ),
        (vec!["-o", o], "nothing to trace"),
        (
            vec!["-o", o, "-i", "5x", "-p", "1"],
            "unknown duration unit",
        ),
        (vec!["-o", o, "--max-stacks", "0", "-p", "1"], "at least 1"),
        (
            vec!["-o", o, "--", &text_file],
            "is neither a program (ELF) nor a script (#!)",
        ),
        (
            vec!["-o", o, "--", &bad_script],
            "is a script for /no/such/shell, which does not exist",
        ),
    ];
    if available_gib < 190 {
        cases.push((
            vec![
                "-o",
                o,
                "--max-allocs",
                "128M",
                "--max-stacks",
                "128M",
                "--",
                "true",
            ],
            "--max-stacks 128M: the BPF tables would take",
        ));
    }
    for (args, needle) in cases {
        let (code, err) = run_recorder(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left a file behind");
        // One line, but for clap's own errors on a value (its line, then a hint to --help).
        if !err.starts_with("error: invalid value") {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
    zombie.wait().unwrap();
    // Its own PID: a shell that execs it with its own $$.
    let own = Command::new("sh")
        .args(["-c", &format!("exec '{RECORDER}' -o '{o}' -d 2s -p $$")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&own.stderr);
    assert_eq!(own.status.code(), Some(2), "{err}");
    assert!(
        err.contains(" is leak-record itself (a shell that ran"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists(), "its own PID left a file behind");
    // `-o -` on a terminal (script(1) gives it one).
    let on_tty = format!("'{RECORDER}' -o - -- true");
    let tty = Command::new("script")
        .args(["-q", "-e", "-c", &on_tty, "/dev/null"])
        .output()
        .expect("run script(1), util-linux");
    let err = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(2), "{err}");
    assert!(
        err.contains("standard output, which is a terminal; redirect it"),
        "{err}"
    );
    // `-o -` with standard output closed, or /dev/null: the recording would vanish unsaid.
    for stdout in [
        Stdio::null(),
        Stdio::from(fs::File::create("/dev/null").unwrap()),
    ] {
        let o = Command::new(RECORDER)
            .args(["-q", "-o", "-", "--", "true"])
            .stdout(stdout)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("standard output is /dev/null (or was closed)"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // An existing recording is never overwritten without --force.
    fs::write(&out, b"precious").unwrap();
    let (code, err) = run_recorder(&["-o", o, "--", "true"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(fs::read(&out).unwrap(), b"precious");
}

#[test]
fn ten_thousand_stacks_are_all_read() {
    if !bpf_ready() {
        return;
    }
    // More stacks than one batch read of the trace table returns.
    let r = record(
        &["-q", "-i", "1s"],
        &[&fixture("leaky"), "many_stacks", "10000"],
    );
    r.assert_clean();
    let t = r.by_function("leak_many");
    assert_eq!(
        (t.stacks, t.count, t.bytes),
        (10_000, 10_000, 160_000),
        "{t:?}"
    );
    assert_eq!(r.state.losses.total_drops(), 0);
}

#[test]
fn stacks_changing_between_snapshots_are_exact_when_only_changes_are_read() {
    if !bpf_ready() {
        return;
    }
    // 1000 stacks, then 150 rounds of 10 toggles, one round every 20 ms: stacks 0-499 got an
    // extra block and lost it again, stacks 500-999 keep theirs. Snapshots every 100 ms each
    // see a few rounds' worth of stacks change, and read only those.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.zst");
    let leaky = fixture("leaky");
    let (code, stderr) = run_recorder(&[
        "-q",
        "-i",
        "100ms",
        "-o",
        out.to_str().unwrap(),
        "--",
        &leaky,
        "many_stacks",
        "1000",
        "10",
        "20",
        "150",
    ]);
    let (state, tail) = read_recording(&out);
    let r = Recorded {
        state,
        tail,
        stdout: String::new(),
        stderr,
        code,
    };
    r.assert_clean();
    let t = r.by_function("leak_many");
    assert_eq!(
        (t.stacks, t.allocs, t.frees, t.count, t.bytes),
        (1000, 2000, 500, 1500, 24_000),
        "{t:?}"
    );
    let mut by_outstanding = std::collections::BTreeMap::new();
    for ((stack, kind), s) in &r.state.totals {
        if *kind == AllocKind::Heap && r.innermost(*stack).as_deref() == Some("leak_many") {
            *by_outstanding
                .entry((s.alloc_count, s.free_count, s.outstanding_bytes()))
                .or_insert(0) += 1;
        }
    }
    let expected = [((2, 1, 16), 500), ((2, 0, 32), 500)];
    assert_eq!(by_outstanding, expected.into_iter().collect(), "{t:?}");
    assert_eq!(r.state.losses.total_drops(), 0);
    // Some snapshot after the first read fewer counters than there are stacks.
    let read: Vec<u32> = Reader::open(&out)
        .unwrap()
        .flatten()
        .filter_map(|rec| match rec {
            Record::Snapshot(s) => Some(s.cost.stacks_read),
            _ => None,
        })
        .collect();
    assert!(
        read.iter().skip(1).any(|&n| 0 < n && n < 1000),
        "counters read per snapshot: {read:?}"
    );
}

#[test]
fn duration_ends_the_recording_and_the_started_command() {
    if !bpf_ready() {
        return;
    }
    let start = Instant::now();
    let r = record(
        &["-i", "500ms", "-d", "2s"],
        &[&fixture("leaky"), "slow", "100000", "64", "10"],
    );
    r.assert_clean();
    // Loading and attaching included, on a loaded machine.
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(
        r.state.end.as_ref().unwrap().reason,
        leak_format::EndReason::Duration
    );
    // Ticks at 0.5, 1 and 1.5 s and the final snapshot; a tick missed under load is skipped
    // (two of them on a machine that stalls for a second).
    let n = r.state.snapshots;
    assert!((2..=5).contains(&n), "{n} snapshots");
    // Too few for leak-report to judge, said once, as recording begins.
    assert!(
        r.stderr.contains(
            "leak-record: warning: -d 2s at -i 500ms gives 4 snapshots, fewer than the 13 \
             leak-report needs to judge growth (its leak gates exit 2 on such a recording): use \
             -i 153ms or less, or -d 6.5s or more\n"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("leak-record: note:"), "{}", r.stderr);
    let pid = r.state.header.as_ref().unwrap().target.pid;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the command was not ended"
    );
    let t = r.by_function("leak_slowly");
    assert!(t.count > 50 && t.bytes == 64 * t.count, "{t:?}");
}

/// Under `nohup` (SIGHUP ignored when it starts), a hang-up does not stop the recording: it
/// outlives the session, as nohup asks; SIGTERM still stops it. Without nohup, SIGHUP stops
/// it, with a final snapshot and an end record. In a user's trial, the hang-up of a logout cut
/// a two-hour `nohup leak-record -p ... &` short.
/// SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM end the recording as SIGTERM does, with an end record
/// naming the signal (their default action killed leak-record before, leaving no end); one
/// ignored when it started stays ignored: SIGHUP under nohup, SIGUSR1 under `trap '' USR1`.
#[test]
fn stop_signals_end_the_recording_unless_ignored_at_the_start() {
    if !bpf_ready() {
        return;
    }
    let (mut target, _t_out) =
        spawn_waiting(&[&fixture("leaky"), "--wait-start", "basic", "1", "1"]);
    let pid = target.id().to_string();
    // (ignored at the start, signal); SIGHUP is ignored by nohup, the others by the parent.
    let cases = [
        (true, libc::SIGHUP),
        (false, libc::SIGHUP),
        (false, libc::SIGUSR1),
        (false, libc::SIGUSR2),
        (false, libc::SIGALRM),
        (true, libc::SIGUSR1),
    ];
    for (ignored, sig) in cases {
        let nohup = ignored && sig == libc::SIGHUP;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run.zst");
        let args = [
            RECORDER,
            "-o",
            out.to_str().unwrap(),
            "-i",
            "200ms",
            "-p",
            &pid,
        ];
        let (program, args) = if nohup {
            ("nohup", &args[..])
        } else {
            (RECORDER, &args[1..])
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if ignored && !nohup {
            use std::os::unix::process::CommandExt;
            // SAFETY: signal(2) is async-signal-safe; it sets the child's own disposition,
            // which exec keeps (an ignored signal stays ignored), as `trap '' USR1` would.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(sig, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let mut rec = cmd.spawn().unwrap();
        let mut err = BufReader::new(rec.stderr.take().unwrap());
        wait_for_line(
            &mut err,
            "recording PID",
            Duration::from_secs(30),
            "recorder",
        );
        let rec_pid = rec.id() as i32;
        let signal = |sig| {
            // SAFETY: kill(2) of our own child, by its PID.
            unsafe { libc::kill(rec_pid, sig) }
        };
        assert_eq!(signal(sig), 0);
        let stopped_by = if ignored {
            // Still recording two snapshots later.
            wait_for_line(&mut err, "snapshot", Duration::from_secs(10), "recorder");
            wait_for_line(&mut err, "snapshot", Duration::from_secs(10), "recorder");
            assert!(rec.try_wait().unwrap().is_none(), "signal {sig} stopped it");
            assert_eq!(signal(libc::SIGTERM), 0);
            libc::SIGTERM
        } else {
            sig
        };
        let status = rec.wait().unwrap();
        assert!(
            status.success(),
            "ignored: {ignored}, signal {sig}: {status:?}"
        );
        let (state, _) = read_recording(&out);
        assert_eq!(
            state.end.unwrap().reason,
            leak_format::EndReason::Signal(stopped_by),
            "ignored: {ignored}, signal {sig}"
        );
    }
    let _ = target.kill();
    let _ = target.wait();
}

/// Past a file size limit (`ulimit -f`) a write fails with EFBIG, where SIGXFSZ used to kill
/// leak-record. Here the symbol bundles, written after the first snapshot, do not fit: they are
/// cut off, leak-record says so, and the recording goes on without them to its end, whole.
#[test]
fn symbol_bundles_past_a_file_size_limit_are_dropped_and_the_recording_goes_on() {
    use std::os::unix::process::CommandExt;
    if !bpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.zst");
    // The snapshots fit in 128 KiB; the symbol bundles of the fixture and libc (about 2 MiB) do
    // not. The command leaks at once, then waits on the recorder's stdin (kept open) until -d
    // ends it.
    const LIMIT: u64 = 128 * 1024;
    let mut cmd = Command::new(RECORDER);
    cmd.args(["-o", out.to_str().unwrap(), "-i", "1s", "-d", "3s"])
        .args(["--bundle-symbols", "--"])
        .args([&fixture("leaky"), "--wait-end", "basic", "1000", "100"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and only changes the child's own limit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut rec = cmd.spawn().unwrap();
    let stdin = rec.stdin.take();
    let mut stderr = String::new();
    rec.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = rec.wait().unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let said = stderr
        .lines()
        .filter(|l| l.starts_with("leak-record: warning: cannot write the symbol bundles to "))
        .collect::<Vec<_>>();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].contains("File too large") && said[0].contains("recording goes on without them"),
        "{stderr}"
    );
    let len = fs::metadata(&out).unwrap().len();
    assert!(len <= LIMIT, "{len}");
    let (state, tail) = read_recording(&out);
    assert!(tail.is_none(), "cut back to whole records: {tail:?}");
    // libc's bundle (one 2 MiB chunk) is not there; a module before it may be, whole.
    let libc = state
        .modules
        .values()
        .find(|m| m.path.contains("/libc.so"))
        .expect("libc is a module");
    assert_eq!(state.bundled_bytes.get(&libc.id), None, "{stderr}");
    for (id, &bytes) in &state.bundled_bytes {
        assert_eq!(bytes, state.modules[id].file_size, "module {id}");
    }
    // Every snapshot the recorder reported is in the file (3, unless one came late).
    let reported = stderr
        .lines()
        .filter_map(|l| {
            l.split(" snapshot ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(reported >= 2, "{stderr}");
    assert_eq!(state.snapshots, reported, "{stderr}");
    let end = state.end.clone().map(|e| e.reason);
    assert_eq!(end, Some(leak_format::EndReason::Duration), "{stderr}");
    let r = Recorded {
        state,
        tail: None,
        stdout: String::new(),
        stderr: stderr.clone(),
        code: status.code(),
    };
    let leak = r.by_function("leak_here");
    assert_eq!((leak.bytes, leak.count), (100_000, 1000), "{leak:?}");
}

#[test]
fn sigterm_stops_with_a_final_snapshot_and_an_end_record() {
    if !bpf_ready() {
        return;
    }
    let leaky = fixture("leaky");
    // The command shares the recorder's stdin and stdout: it says "done" after its 20 leaks,
    // then waits for a line, so the signal comes after a known amount of work, not after a
    // sleep that a loaded machine may not honour.
    let mut rec = start_recorder_piped(
        &[],
        &[
            "-i",
            "10s",
            "--",
            &leaky,
            "--wait-end",
            "slow",
            "20",
            "64",
            "10",
        ],
    );
    let stdin = rec.child.stdin.take();
    let mut stdout = BufReader::new(rec.child.stdout.take().unwrap());
    wait_for_line(&mut stdout, "done", Duration::from_secs(60), "leaky");
    // SAFETY: kill has no memory-safety preconditions; the PID is our own live child.
    unsafe { libc::kill(rec.child.id() as i32, libc::SIGTERM) };
    let status = rec.child.wait().unwrap();
    drop(stdin);
    let mut stderr = String::new();
    rec.stderr.read_to_string(&mut stderr).unwrap();
    let (state, tail) = read_recording(&rec.out);
    let r = Recorded {
        state,
        tail,
        stdout: String::new(),
        stderr,
        code: status.code(),
    };
    r.assert_clean();
    assert_eq!(
        r.state.end.as_ref().unwrap().reason,
        leak_format::EndReason::Signal(libc::SIGTERM)
    );
    // The interval is 10 s: the only snapshot is the final one, taken at the signal.
    assert_eq!(r.state.snapshots, 1);
    let t = r.by_function("leak_slowly");
    assert_eq!((t.bytes, t.count), (64 * 20, 20), "{}", r.stderr);
}

#[test]
fn size_filters_keep_only_the_sizes_asked_for() {
    if !bpf_ready() {
        return;
    }
    let r = record(
        &["-i", "1s", "--min-size", "700", "--max-size", "3000"],
        &[&fixture("leaky"), "paths", "5"],
    );
    r.assert_clean();
    for (function, size, kept) in [
        ("leak_calloc", 300, false),
        ("leak_reallocarray", 700, true),
        ("leak_posix_memalign", 1000, true),
        ("leak_aligned_alloc", 2048, true),
        ("leak_memalign", 3000, true),
        ("leak_valloc", 4000, false),
        ("leak_realloc", 5000, false),
    ] {
        let t = r.by_function(function);
        let want = if kept { (5 * size, 5) } else { (0, 0) };
        assert_eq!((t.bytes, t.count), want, "{function}");
    }
    let cfg = &r.state.header.as_ref().unwrap().config;
    assert_eq!((cfg.min_size, cfg.max_size), (Some(700), Some(3000)));
}

#[test]
fn obj_override_probes_only_that_file() {
    if !bpf_ready() {
        return;
    }
    let out = Command::new("ldd")
        .arg(fixture("leaky_jemalloc"))
        .output()
        .unwrap();
    let libjemalloc = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("libjemalloc"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .unwrap()
        .to_string();
    let r = record(
        &["-i", "1s", "--obj", &libjemalloc],
        &[&fixture("leaky_jemalloc"), "basic", "100", "100"],
    );
    r.assert_clean();
    let h = r.state.header.as_ref().unwrap();
    assert!(
        h.probes.iter().all(|p| p.module == libjemalloc),
        "{:?}",
        h.probes
    );
    let t = r.by_function("leak_here");
    assert_eq!((t.bytes, t.count), (10_000, 100));
}

#[test]
fn go_programs_are_refused_clearly() {
    // A fixture marked as a Go binary (Go's linker writes a .go.buildinfo section).
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("fake-go");
    let status = Command::new("objcopy")
        .args(["--add-section", ".go.buildinfo=/dev/null"])
        .arg(fixture("leaky"))
        .arg(&go)
        .status()
        .unwrap();
    assert!(status.success());
    let out = dir.path().join("go.zst");
    let (code, err) = run_recorder(&[
        "-o",
        out.to_str().unwrap(),
        "--",
        go.to_str().unwrap(),
        "churn",
        "1",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("is a Go program") && err.contains("pprof"),
        "{err}"
    );
    assert!(!out.exists(), "a refused run leaves no file");
}

/// The bytes of a module at a file offset.
fn code_at(path: &str, offset: u64, len: usize) -> Vec<u8> {
    let data = fs::read(path).unwrap();
    data[offset as usize..][..len].to_vec()
}

#[test]
fn free_probe_sits_on_the_emulated_jump_after_the_null_test() {
    if !bpf_ready() {
        return;
    }
    let r = record(&["-i", "1s"], &[&fixture("leaky"), "basic", "1000", "100"]);
    r.assert_clean();
    let (libc, at) = r.entry_probe("free");
    let free = symbol_offset(&libc, "free").expect("libc defines free");
    // Debian 12's glibc: `test %rdi,%rdi` (single-stepped by uprobes), then `je` (emulated).
    assert_eq!(
        code_at(&libc, free, 5),
        [0x48, 0x85, 0xff, 0x0f, 0x84],
        "this test knows Debian 12's libc free"
    );
    assert_eq!(at, free + 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("free: entry probe at free+0x3 (`je`"),
        "the move is said: {}",
        r.stderr
    );
    // glibc's malloc starts with `push %r12`, which the kernel emulates: both of its probes
    // stay at the entry, on one trap.
    let (_, malloc_at) = r.entry_probe("malloc");
    assert_eq!(Some(malloc_at), symbol_offset(&libc, "malloc"));
    let (_, ret_at) = r.probe("malloc", leak_format::ProbeSide::Return);
    assert_eq!(ret_at, malloc_at);
    // And nothing is lost: every free is still seen.
    let leak = r.by_function("leak_here");
    assert_eq!((leak.bytes, leak.count), (100_000, 1000));
    let churn = r.by_function("churn_balanced");
    assert_eq!((churn.allocs, churn.frees), (5000, 5000));
    assert_eq!(r.state.losses.unknown_free, 0, "{:?}", r.state.losses);
}

#[test]
fn jemalloc_probes_sit_on_emulated_branches_and_miss_nothing() {
    if !bpf_ready() {
        return;
    }
    let r = record(
        &["-i", "1s"],
        &[&fixture("leaky_jemalloc"), "basic", "1000", "100"],
    );
    r.assert_clean();
    // free: moved past its first instructions to a conditional jump.
    let (lib, at) = r.entry_probe("free");
    assert!(lib.contains("libjemalloc"), "{lib}");
    let free = symbol_offset(&lib, "free").expect("jemalloc defines free");
    assert!(
        at > free,
        "moved past free's first instruction: {}",
        r.stderr
    );
    let insn = code_at(&lib, at, 2);
    let jcc = matches!(insn[0], 0x70..=0x7f) || (insn[0] == 0x0f && matches!(insn[1], 0x80..=0x8f));
    assert!(jcc, "lands on a conditional jump: {insn:x?}");
    // malloc (jemalloc 5.3): `cmp $0x1000,%rdi` (single-stepped), then `ja` (emulated). The
    // return probe swaps the return address at *%rsp, which the cmp leaves alone: both probes
    // share one trap on the ja.
    let (lib, at) = r.entry_probe("malloc");
    let malloc = symbol_offset(&lib, "malloc").expect("jemalloc defines malloc");
    assert_eq!(
        code_at(&lib, malloc, 8),
        [0x48, 0x81, 0xff, 0x00, 0x10, 0x00, 0x00, 0x0f],
        "this test knows Debian 12's jemalloc malloc"
    );
    assert_eq!(at, malloc + 7, "{}", r.stderr);
    assert_eq!(r.probe("malloc", leak_format::ProbeSide::Return), (lib, at));
    // Every free seen, every call returned through the moved probes: exact sizes and counts,
    // nothing pending or unmatched.
    let leak = r.by_function("leak_here");
    assert_eq!((leak.bytes, leak.count), (100_000, 1000), "{leak:?}");
    let churn = r.by_function("churn_balanced");
    assert_eq!((churn.bytes, churn.allocs, churn.frees), (0, 5000, 5000));
    let l = &r.state.losses;
    assert_eq!((l.return_without_entry, l.abandoned_calls), (0, 0), "{l:?}");
}

#[test]
fn colliding_stack_hashes_are_counted_never_merged() {
    if !bpf_ready() {
        return;
    }
    // Every stack hashes to 0: the first stack seen (main's first allocation is churn's) keeps
    // the hash; leak_here's stack collides with it and must not be merged into it.
    let r = record_with_env(
        &[("LEAK_RECORD_TEST_STACK_HASH_MASK", "0x0")],
        &[
            "-q",
            "-i",
            "1s",
            "--",
            &fixture("leaky"),
            "basic",
            "1000",
            "100",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.tail.is_none(), "{:?}", r.tail);
    let churn = r.by_function("churn_balanced");
    assert_eq!((churn.allocs, churn.frees, churn.bytes), (2500, 2500, 0));
    assert_eq!(churn.stacks, 1);
    assert_eq!(
        r.by_function("leak_here"),
        Totals::default(),
        "never merged"
    );
    assert_eq!(
        r.state.losses.stack_table_full,
        1000 + 2500,
        "{:?}",
        r.state.losses
    );
    let on_placeholder: Vec<(u64, u64)> = r
        .state
        .totals
        .iter()
        .filter(|((id, _), _)| {
            r.state.stacks.get(id).and_then(|s| s.lost) == Some(StackLoss::TableFull)
        })
        .map(|(_, s)| (s.outstanding_bytes(), s.outstanding_count()))
        .collect();
    assert_eq!(
        on_placeholder,
        [(100_000, 1000)],
        "counted, on the placeholder"
    );
}

/// The harness itself: a wait for a line fails once its limit has passed even when the other
/// end stays silent and open (a blocking read would hang the test run until CI's own limit),
/// and still finds a last line without a newline.
#[test]
fn waiting_for_a_line_fails_on_silence_and_finds_an_unterminated_last_line() {
    let mut silent = Command::new("sleep")
        .arg("60")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(silent.stdout.take().unwrap());
    let start = Instant::now();
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for_line(&mut out, "ready", Duration::from_millis(300), "sleep")
    }));
    let took = start.elapsed();
    let _ = silent.kill();
    let _ = silent.wait();
    assert!(waited.is_err(), "a silent process gave a line");
    assert!(took < Duration::from_secs(30), "waited {took:?} for 300 ms");

    let mut talker = Command::new("printf")
        .arg("one\ntwo, no newline: ready")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(talker.stdout.take().unwrap());
    let seen = wait_for_line(&mut out, "ready", Duration::from_secs(30), "printf");
    assert_eq!(seen, "one\ntwo, no newline: ready");
    talker.wait().unwrap();
}
