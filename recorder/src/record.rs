//! The recording session: set up the target and probes, then snapshot every interval until the
//! duration ends, a signal arrives or the target exits; always a final snapshot and an end record.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use leak_format::{
    AllocKind, BundleChunk, BundleContent, End, EndReason, Frame, Header, Losses, Record,
    RecordConfig, Snapshot, SnapshotCost, Stack, StackStats, Target, TargetMode, Unseen, Writer,
    SNAPSHOTS_TO_JUDGE,
};

use crate::bpf::{self, RawStats, Tracer};
use crate::cli::Cli;
use crate::discover::{self, Overrides};
use crate::modules::{self, ModuleTable};
use crate::target::{self, HeldChild};
use crate::{output, privileges, procfs, UsageError};

/// The signal that asked us to stop, 0 if none.
pub(crate) static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// How many stop signals have come.
static STOP_COUNT: AtomicU32 = AtomicU32::new(0);
/// The first one came from a terminal (Ctrl-C, a hang-up): the kernel sent it to the whole
/// foreground process group, the started command included.
static STOP_FROM_TERMINAL: AtomicBool = AtomicBool::new(false);

type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// The signals that stop the recording: those whose default action ends a process without a
/// core dump that a user, a terminal or a supervisor sends on purpose (`kill -USR1`,
/// `timeout -s ALRM`). Each ends it as SIGTERM does, with a final snapshot and an end record
/// naming the signal, where the default action left a recording with no end. (SIGPROF,
/// SIGVTALRM, SIGIO, SIGPWR and the real-time signals keep their default action.) One that was
/// ignored when leak-record started stays ignored (`nohup`, or a supervisor that signals its
/// whole process group and ignores the signal where it must not stop): SIGINT and SIGTERM
/// excepted, the ways to stop it.
const STOP_SIGNALS: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
];

extern "C" fn on_stop_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if STOP_COUNT.fetch_add(1, Ordering::SeqCst) == 0 {
        // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t (checked for null).
        let code = unsafe { info.as_ref() }.map_or(0, |i| i.si_code);
        // Only these two come from a terminal (a timer's SIGALRM is SI_KERNEL too).
        let terminal = sig == libc::SIGINT || sig == libc::SIGHUP;
        STOP_FROM_TERMINAL.store(terminal && code == libc::SI_KERNEL, Ordering::SeqCst);
    }
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

extern "C" fn on_child_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    target::wake_on_child_signal();
}

pub(crate) fn install_signal_handlers() {
    target::child_wake();
    set_handlers(&STOP_SIGNALS.map(|sig| (sig, on_stop_signal as Handler)), 0);
    // Only to wake the polls (target::child_wake) when the started command stops or exits.
    set_handlers(&[(libc::SIGCHLD, on_child_signal)], 0);
}

/// From the moment the output file exists until recording starts: a stop signal is noted, the
/// setup goes on (its system calls restart), and the recording then stops at once with a whole
/// file. A stop signal killed leak-record there before, leaving an empty file behind.
pub(crate) fn defer_stop_signals() {
    set_handlers(
        &STOP_SIGNALS.map(|sig| (sig, on_stop_signal as Handler)),
        libc::SA_RESTART,
    );
    // Past a file size limit (`ulimit -f`) a write fails with EFBIG and the recording ends on
    // that error with what it holds, instead of SIGXFSZ killing leak-record part way through a
    // record.
    // SAFETY: sets a standard disposition; no handler runs.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// The stop signals other than SIGINT and SIGTERM that were ignored when leak-record started
/// (`nohup leak-record ... &`, or `trap '' HUP USR1`): they stay ignored, so that the recording
/// outlives the session, as `nohup` asks, or a signal meant for others.
fn ignored_at_start() -> &'static [libc::c_int] {
    static IGNORED: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();
    IGNORED.get_or_init(|| {
        STOP_SIGNALS
            .into_iter()
            .filter(|&sig| sig != libc::SIGINT && sig != libc::SIGTERM)
            .filter(|&sig| {
                // SAFETY: reads the disposition only (a null new action); `old` is zeroed and
                // written by the kernel.
                unsafe {
                    let mut old: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                        && old.sa_sigaction == libc::SIG_IGN
                }
            })
            .collect()
    })
}

fn set_handlers(handlers: &[(libc::c_int, Handler)], flags: libc::c_int) {
    let keep_ignored = ignored_at_start();
    for &(sig, handler) in handlers {
        if keep_ignored.contains(&sig) {
            continue;
        }
        // SAFETY: the handlers only use atomics and write(2) (async-signal-safe); sa is zeroed and
        // fully initialised before use. Without SA_RESTART, poll() returns early on a signal.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            sa.sa_flags = flags | libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Largest piece of an embedded file per record.
const BUNDLE_CHUNK: usize = 4 << 20;
/// How long a started command gets to exit after SIGTERM when the recording stops first.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Records according to the command line.
/// Records; Ok(the exit status): a started command's own, when it exited by itself (128 + N
/// when signal N killed it, as shells say), else 0.
pub fn run(cli: Cli) -> Result<u8> {
    // First: `leak-record --cache filp` forgot --kernel, not a target.
    if let Some(flag) = cli.kernel_option_without_kernel() {
        bail!(UsageError(format!(
            "{flag} applies to kernel recordings only; add --kernel, or drop {flag}"
        )));
    }
    if cli.pid.is_none() && cli.command.is_empty() && !cli.kernel {
        bail!(UsageError(
            "nothing to trace: give -p PID or a command after --; see --help".into()
        ));
    }
    if cli.kernel && !cli.command.is_empty() {
        bail!(UsageError(
            "--kernel records the kernel's allocations and starts no command; start it first, \
             then record it with leak-record --kernel --pid PID (or --comm NAME)"
                .into()
        ));
    }
    if let (Some(lo), Some(hi)) = (cli.min_size, cli.max_size) {
        if lo > hi {
            bail!(UsageError(format!(
                "--min-size {lo} is larger than --max-size {hi}"
            )));
        }
    }
    if cli.interval < MIN_INTERVAL {
        bail!(UsageError("--interval must be at least 100ms".into()));
    }
    // Before anything is created: tables the host cannot hold would thrash it, then fail.
    if let Some(available) = procfs::meminfo("MemAvailable") {
        let memory = if cli.kernel {
            bpf::kmem::table_memory
        } else {
            bpf::table_memory
        };
        bpf::check_table_memory(memory, cli.max_allocs, cli.max_stacks, available)
            .map_err(UsageError)?;
    }
    if cli.kernel {
        // Kernel mode: --pid is a filter, not a process to read or probe.
        privileges::check(None)?;
        return crate::kernel::run(cli).map(|()| 0);
    }
    privileges::check(cli.pid)?;
    let start_wall_ns = procfs::clock_ns(libc::CLOCK_REALTIME);
    let path = cli
        .output
        .clone()
        .unwrap_or_else(|| output::default_name(start_wall_ns / 1_000_000_000));

    // `-o -` is taken now, before a command is started: the command then prints to stderr.
    let claimed = output::is_stdout(&path)
        .then(output::claim_stdout)
        .transpose()?;
    // The target: validate before creating anything.
    let (mode, pid, mut held, exe, program, command_line) = match cli.pid {
        Some(pid) => {
            if pid == std::process::id() {
                // `exec leak-record -p $$` in a shell: its own probes would trace its own
                // allocations, and their return probes trip on the calls under way.
                bail!(UsageError(format!(
                    "PID {pid} is leak-record itself (a shell that ran `exec leak-record -p $$`?); \
                     give the PID of the process to record"
                )));
            }
            if !procfs::is_alive(pid) {
                bail!(UsageError(procfs::why_not_alive(pid)));
            }
            if let Some(why) = procfs::not_a_process(pid) {
                bail!(UsageError(why));
            }
            let (exe, program, argv) = attached_target(pid)?;
            if !cli.bundle_symbols && procfs::exe_deleted(procfs::live_thread(pid).unwrap_or(pid)) {
                say!(
                    "leak-record: warning: PID {pid} runs {exe}, which was deleted or replaced \
                     since it started: leak-report will not find it there to name the frames; \
                     add --bundle-symbols to keep a copy in the recording"
                );
            }
            (TargetMode::Attach, pid, None, exe, program, argv)
        }
        None => {
            let resolved = target::resolve_command(&cli.command[0])?;
            let (program, scripts) = target::program_of(&resolved)?;
            if !scripts.is_empty() && !cli.quiet {
                say!(
                    "leak-record: {} is a script ({}): probing the allocator of {}, the program \
                     that runs it; a program it execs with another allocator is probed at its \
                     exec",
                    resolved.display(),
                    scripts.join(", "),
                    program.display()
                );
            }
            let child = target::spawn_held(&resolved, &cli.command)?;
            let pid = child.pid;
            (
                TargetMode::Command,
                pid,
                Some(child),
                // Absolute, as /proc/PID/exe gives it for -p (a relative path means nothing
                // on the machine that reads the recording); symlinks kept, as typed.
                std::path::absolute(&resolved)
                    .unwrap_or_else(|_| resolved.clone())
                    .display()
                    .to_string(),
                program,
                cli.command.clone(),
            )
        }
    };
    let target = (exe.as_str(), program.as_path());
    // A copy of `-o -`'s descriptor, for the set-up done again below (`-p` only: it would keep
    // standard output open until leak-record exits).
    let again = match mode {
        TargetMode::Attach => claimed.as_ref().map(File::try_clone).transpose()?,
        _ => None,
    };
    let out = (path.as_path(), claimed);
    let result = setup_and_record(&cli, out, mode, pid, held.as_mut(), target, command_line);
    // `-p` exec'd another program during the set-up (a wrapper that execs the service): once
    // more, for that program; a second exec then is said as an error.
    let result = match result {
        Err(e) if e.is::<ExecdDuringSetup>() => {
            if !cli.quiet {
                say!("leak-record: {e}; attaching to that program instead");
            }
            let (exe, program, command_line) =
                attached_target(pid).map_err(|e| unless_exited(e, pid, mode))?;
            let target = (exe.as_str(), program.as_path());
            let out = (path.as_path(), again);
            setup_and_record(&cli, out, mode, pid, None, target, command_line).map_err(|e| {
                match e.downcast_ref::<ExecdDuringSetup>() {
                    Some(again) => UsageError(format!(
                        "{again}, twice; nothing was recorded: run leak-record again once it \
                         runs the program to record"
                    ))
                    .into(),
                    None => e,
                }
            })
        }
        result => result,
    };
    match (result, held.as_mut()) {
        (Err(e), Some(child)) => {
            // A command killed before it ran (Ctrl-C to the job during the set-up) fails the
            // attach or the start: said as what it is, with its status.
            if let Some(status) = child.ended_before_start() {
                return Err(ended_before_start(&cli.command[0], pid, status));
            }
            child.abandon();
            Err(e)
        }
        (result, _) => result,
    }
}

/// The program `-p PID` runs (its path as /proc gives it, and as a path) and its command line.
fn attached_target(pid: u32) -> Result<(String, PathBuf, Vec<String>)> {
    // A main thread that has ended (pthread_exit) has no memory in /proc: read it through a
    // thread that runs.
    let live = procfs::live_thread(pid).unwrap_or(pid);
    let exe = procfs::exe(live).map_err(|e| {
        let msg = format!("cannot read /proc/{live}/exe");
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            UsageError(format!("{msg}: {e}; {}", privileges::fix_for_denied())).into()
        } else {
            anyhow::Error::from(e).context(msg)
        }
    })?;
    let argv = procfs::cmdline(live).unwrap_or_default();
    let program = PathBuf::from(&exe);
    Ok((exe, program, argv))
}

/// The error for a started command that ended before it ran: its status passed on.
fn ended_before_start(name: &str, pid: u32, status: target::ExitStatus) -> anyhow::Error {
    let how = match status {
        target::ExitStatus {
            signal: Some(sig), ..
        } => format!("was killed by signal {sig}"),
        target::ExitStatus { code, .. } => format!("exited with status {}", code.unwrap_or(0)),
    };
    crate::ExitWith(
        format!("{name} (PID {pid}) {how} before it started; nothing was recorded"),
        exit_status(
            &EndReason::TargetExited {
                code: status.code,
                signal: status.signal,
            },
            TargetMode::Command,
        ),
    )
    .into()
}

#[allow(clippy::too_many_arguments)]
fn setup_and_record(
    cli: &Cli,
    (path, claimed): (&std::path::Path, Option<File>),
    mode: TargetMode,
    pid: u32,
    held: Option<&mut HeldChild>,
    (exe, program): (&str, &std::path::Path),
    command_line: Vec<String>,
) -> Result<u8> {
    defer_stop_signals();
    let chosen;
    let (path, file, created) = match claimed {
        Some(file) => (path, file, output::Created::default()),
        None => {
            let (p, file, created) = output::create_output(path, cli)?;
            chosen = p;
            (chosen.as_path(), file, created)
        }
    };

    // The thread through which the process is read in /proc, and which the kernel ties classic
    // probes to: the main one, unless it has ended while others run on (pthread_exit).
    let tid = procfs::live_thread(pid).unwrap_or(pid);
    let prefix = cli.symbol_prefix.as_deref();
    let objs = match (&cli.obj, mode) {
        (Some(obj), _) => discover::single_object(obj, Some(tid), prefix),
        (None, TargetMode::Attach) => discover::objects_of_process(tid, prefix),
        // The program the kernel runs: a script's interpreter.
        (None, _) => discover::objects_of_command(program, prefix),
    }
    .map_err(|e| unless_exited(e, pid, mode))?;
    if let Some(first) = objs.first() {
        if first.elf.is_go && cli.obj.is_none() {
            bail!(UsageError(format!(
                "{} is a Go program: return probes corrupt Go stacks (bcc #1320), so leak-record \
                 refuses to trace it; use Go's own heap profiler (pprof)",
                first.display
            )));
        }
    }
    let mut plan = discover::plan(
        &objs,
        &Overrides {
            symbol_prefix: cli.symbol_prefix.clone(),
            mmap: cli.mmap,
        },
    )
    .map_err(|e| unless_exited(e, pid, mode))?;
    discover::place_entries(&mut plan, &objs);

    // Only unsampled or size-filtered calls have nothing to record at their return.
    let skippable = cli.sample_bytes.is_some() || cli.min_size.is_some() || cli.max_size.is_some();
    let sessions = bpf::Sessions::choose(skippable, cli.mmap);
    let mut no_sessions = sessions.why_not().map(String::from);
    let mut storage = MaybeUninit::uninit();
    let mut classic_storage = MaybeUninit::uninit();
    let mut load = bpf::LoadOptions {
        tgid: pid,
        max_allocs: cli.max_allocs as u32,
        max_stacks: cli.max_stacks as u32,
        min_size: cli.min_size.unwrap_or(0),
        max_size: cli.max_size.unwrap_or(u64::MAX),
        sample_bytes: cli.sample_bytes.unwrap_or(0),
        sessions: sessions == bpf::Sessions::Used,
    };
    let denied = |e: anyhow::Error| {
        if privileges::is_permission_denied(&e) {
            UsageError(format!(
                "the kernel refused to load the BPF program or attach uprobes to PID {pid} \
                 (permission denied): {}",
                privileges::NEEDED
            ))
            .into()
        } else {
            e
        }
    };
    let mut tracer = match bpf::load(&mut storage, &load) {
        Ok(tracer) => tracer,
        // A kernel that announces sessions but refuses the program (the verifier says EACCES
        // for a kfunc it does not allow): the classic pair. If that fails too, its error.
        Err(e) if load.sessions => {
            no_sessions = Some(format!(
                "the kernel refused the session probe ({}; libbpf's log above says why)",
                e.root_cause()
            ));
            load.sessions = false;
            bpf::load(&mut classic_storage, &load).map_err(denied)?
        }
        Err(e) => return Err(denied(e)),
    };
    bpf::hold_log();
    test_exec_during_setup(pid, exe);
    let attached = tracer.attach(pid, tid, &plan);
    let execd = (mode == TargetMode::Attach)
        .then(|| execd_during_setup(&tracer, attached.is_ok(), pid, exe))
        .flatten();
    // libbpf's lines for the probes of a process that exited or exec'd meanwhile, or of a
    // denied attach, only repeat the one line unless_exited, denied or the attach again
    // gives; any other failure, or a warning of a good attach, is shown.
    bpf::release_log(match &attached {
        Ok(_) => execd.is_none(),
        Err(e) => procfs::is_alive(pid) && !privileges::is_permission_denied(e) && execd.is_none(),
    });
    if let Some(now) = execd {
        return Err(ExecdDuringSetup { pid, now }.into());
    }
    attached.map_err(|e| unless_exited(denied(e), pid, mode))?;
    if let Some(why) = tracer.session_failure() {
        no_sessions = Some(why.to_string());
    }
    let has_malloc = plan.iter().any(discover::PlannedProbe::may_skip_return);
    report_probes(
        &tracer,
        &plan,
        no_sessions.as_deref().filter(|_| has_malloc),
        cli.quiet,
    );

    let target = Target {
        mode,
        pid,
        command_line,
        exe: exe.to_string(),
    };
    let header = new_header(cli, procfs::host_info(), target, cli.mmap, tracer.probes());
    let out = RecordingFile::start(file, path, &header, cli.sample_bytes)?;
    created.keep()?;
    let pidfd = target::pidfd_open(pid).with_context(|| format!("cannot watch process {pid}"))?;
    install_signal_handlers();
    let mut exit_watch = None;
    if let Some(child) = held {
        // Hold the command at exit so its last memory map can be read (short-lived programs
        // exit before the first snapshot).
        match target::ExitWatch::seize(pid) {
            Ok(w) => exit_watch = Some(w),
            Err(e) => say!(
                "leak-record: warning: cannot hold PID {pid} at exit ({e}); frames of libraries \
                 loaded after the last snapshot may stay unresolved"
            ),
        }
        child.release(&exe_name(exe), exit_watch.as_mut(), &|| {
            stop_requested().is_some()
        })?;
    }
    let mut session = Session {
        cli,
        pid,
        mode,
        out,
        tracer,
        prev: HashMap::new(),
        latest: HashMap::new(),
        unsent: HashSet::new(),
        known_stacks: HashSet::new(),
        modules: ModuleTable::new(tid, cli.bundle_symbols),
        maps_text: String::new(),
        unsent_maps: None,
        exit_watch,
        seq: 0,
        started: Instant::now(),
        last_losses: Losses::default(),
        last_unseen: Unseen::default(),
        sessions_left: None,
        maps_execs: None,
        exec_stacks: Vec::new(),
        allocator: ExecAllocator {
            attached: plan
                .iter()
                .filter_map(|p| Some((procfs::path_id(&p.open_path)?, p.offset)))
                .collect(),
            stops_seen: 1,
            stop_due_since: None,
            // A started command's first exec runs the program its probes were chosen for.
            judged: u32::from(mode == TargetMode::Command),
            deferred: None,
            off: cli.obj.is_some(),
        },
        children: HashSet::new(),
        children_written: (0, Vec::new()),
        bundles: std::collections::VecDeque::new(),
        bundling_off: false,
        // A started command's first exec, counted by BPF, is its start.
        exec_retired_said: ((0, 0), u32::from(mode == TargetMode::Command)),
        untied_seen: bpf::Untied::default(),
        execs_named: u32::from(mode == TargetMode::Command),
    };
    if session.mode == TargetMode::Attach {
        // The process is running and probed: read its map now, so that what it allocates
        // before it exits can be resolved even if it exits before the first snapshot. (A
        // started command is still the recorder's pre-exec copy here; its map comes later.)
        session.refresh_maps();
    }
    // Said once the recording is in effect, its map read included: a target told to go on
    // by this line (a script, the tests) may exec at once, and the stacks of the program it
    // leaves are located in that map.
    if !cli.quiet {
        say!("leak-record: recording PID {pid}{}", destination(path, cli));
        if let Some(warning) = short_plan(cli) {
            say!("{warning}");
        }
    }
    session.record(pidfd)
}

/// `-p PID` exec'd another program while leak-record was attaching to it, and the probes were
/// placed for the one it left: the set-up is done again for the program it runs `now`.
#[derive(Debug)]
struct ExecdDuringSetup {
    pid: u32,
    now: String,
}

impl std::fmt::Display for ExecdDuringSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PID {} exec'd {} while leak-record was attaching to it",
            self.pid, self.now
        )
    }
}

impl std::error::Error for ExecdDuringSetup {}

/// The program `-p PID` runs now, if it exec'd since its program `planned` was read
/// in a way the recording would not follow: the attach failed (its probes' files or thread
/// went with the old program), or the exec came before the recorder watched for execs (none
/// counted, yet another program runs). An exec after that, with the probes attached, is
/// followed as any exec while recording.
fn execd_during_setup(
    tracer: &Tracer<'_>,
    attached: bool,
    pid: u32,
    planned: &str,
) -> Option<String> {
    let counted = tracer.execs().0 > 0;
    let live = procfs::live_thread(pid).unwrap_or(pid);
    let now = procfs::exe(live).ok()?;
    let other = now != planned;
    let stale = if attached {
        !counted && other
    } else {
        counted || other
    };
    stale.then_some(now)
}

/// Test hook (`LEAK_RECORD_TEST_EXEC_DURING_SETUP=FILE`), once: with the probes planned, creates
/// FILE and waits (up to 10 s) until `pid` runs a program other than `planned`, as a target
/// that execs at that moment would (a wrapper script that execs the service, caught by
/// `-p $(pidof ...)`).
fn test_exec_during_setup(pid: u32, planned: &str) {
    static USED: AtomicBool = AtomicBool::new(false);
    let Some(file) = std::env::var_os("LEAK_RECORD_TEST_EXEC_DURING_SETUP") else {
        return;
    };
    if USED.swap(true, Ordering::Relaxed) || File::create(&file).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while procfs::exe(pid).is_ok_and(|e| e == planned) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An error of the attach to `-p PID` whose real cause is that the process exited meanwhile
/// (a probe's perf event fails with ESRCH, or its maps list no allocator any more): said so, in
/// one line, as a usage error like "no process with PID N".
fn unless_exited(e: anyhow::Error, pid: u32, mode: TargetMode) -> anyhow::Error {
    if mode == TargetMode::Attach && !procfs::is_alive(pid) {
        UsageError(format!(
            "PID {pid} exited while leak-record was attaching to it; nothing was recorded"
        ))
        .into()
    } else {
        e
    }
}

/// leak-record's exit status after a complete recording: a started command's own when it
/// exited by itself (so `leak-record -- ./tests` fails as the tests do), 128 + N when signal
/// N killed it; 0 when the recording ended it (-d, a signal to leak-record) or for `-p`.
fn exit_status(reason: &EndReason, mode: TargetMode) -> u8 {
    match (mode, reason) {
        (TargetMode::Command, EndReason::TargetExited { code: Some(c), .. }) => *c as u8,
        (
            TargetMode::Command,
            EndReason::TargetExited {
                signal: Some(sig), ..
            },
        ) => 128u8.saturating_add(*sig as u8),
        _ => 0,
    }
}

/// The record of stack `id`, with return addresses `ips` at `frames`.
fn stack_record(id: u32, ips: &[u64], frames: Vec<Frame>) -> Stack {
    Stack {
        id,
        truncated: ips.len() >= bpf::MAX_STACK_DEPTH,
        frames,
        lost: None,
    }
}

/// Frames at `ips` in no module: where no map of their program was read.
fn unlocated(ips: &[u64]) -> Vec<Frame> {
    ips.iter().map(|&addr| modules::unlocated(addr)).collect()
}

fn exe_name(exe: &str) -> String {
    exe.rsplit('/').next().unwrap_or(exe).to_string()
}

fn report_probes(
    tracer: &Tracer<'_>,
    plan: &[discover::PlannedProbe],
    no_sessions: Option<&str>,
    quiet: bool,
) {
    if quiet {
        return;
    }
    let mut by_module: Vec<(String, Vec<String>)> = Vec::new();
    for p in tracer
        .probes()
        .iter()
        .filter(|p| p.side == leak_format::ProbeSide::Entry)
    {
        match by_module.iter_mut().find(|(m, _)| *m == p.module) {
            Some((_, f)) => f.push(p.function.clone()),
            None => by_module.push((p.module.clone(), vec![p.function.clone()])),
        }
    }
    let n = tracer.probes().len();
    say!("leak-record: attached {n} probes");
    for (module, funcs) in by_module {
        say!("leak-record:   {module}: {}", funcs.join(" "));
    }
    for p in plan {
        if let Some(line) = placement_note(p) {
            say!("leak-record:   {line}");
        }
    }
    if let Some(why) = no_sessions {
        say!(
            "leak-record:   malloc: every call traps at its return too, also when nothing is \
             recorded: {why}"
        );
    }
}

/// Where an entry probe went when that is not simply the function's emulated first instruction.
fn placement_note(p: &discover::PlannedProbe) -> Option<String> {
    let pl = p.placement.as_ref()?;
    let f = &p.function;
    if pl.offset > 0 {
        let which = if p.ret.is_some() {
            "entry and return probes"
        } else {
            "entry probe"
        };
        return Some(format!(
            "{f}: {which} at {f}+{:#x} (`{}`, emulated by the kernel), past `{}`, which \
             would be single-stepped",
            pl.offset,
            pl.at,
            pl.skipped.join("; ")
        ));
    }
    if pl.emulated {
        return None;
    }
    Some(format!(
        "{f}: entry probe at the function's start, whose `{}` the kernel single-steps (slow): {}",
        pl.at,
        pl.why_entry.as_deref().unwrap_or("no reason recorded")
    ))
}

struct Session<'a, 'obj> {
    cli: &'a Cli,
    pid: u32,
    mode: TargetMode,
    out: RecordingFile,
    tracer: Tracer<'obj>,
    /// The counters last written, by (stack, kind).
    prev: HashMap<(u32, u32), RawStats>,
    /// The counters last read, by (stack, kind): every stack's, for the status line.
    latest: HashMap<(u32, u32), RawStats>,
    /// Stacks whose changed counters wait for their trace: read again at the next snapshot.
    unsent: HashSet<u32>,
    known_stacks: HashSet<u32>,
    modules: ModuleTable,
    maps_text: String,
    unsent_maps: Option<Vec<leak_format::MapEntry>>,
    exit_watch: Option<target::ExitWatch>,
    seq: u32,
    started: Instant,
    last_losses: Losses,
    /// The events not recorded as last written.
    last_unseen: Unseen,
    /// When malloc's session probes made way, for a forked process.
    sessions_left: Option<Duration>,
    /// The target's execs when its maps were last read, so which program they are of
    /// (`locate_before_exec`); None before the first read, or when it execs during one.
    maps_execs: Option<u32>,
    /// Stacks of a program the target left, located in its maps, for the next snapshot.
    exec_stacks: Vec<Stack>,
    /// Whose malloc each program the target execs must use to be recorded.
    allocator: ExecAllocator,
    /// The target's child processes seen at snapshots (never recorded: `note_children`).
    children: HashSet<u32>,
    /// The processes the target started as last written (`Record::Children`, `write_children`).
    children_written: (u64, Vec<(u32, String)>),
    /// `--bundle-symbols`: the bundles still to write, a few MiB after each snapshot.
    bundles: std::collections::VecDeque<PendingBundle>,
    /// A bundle could not be written: the recording goes on without bundles.
    bundling_off: bool,
    /// The blocks retired at the target's execs, and its execs, as last said
    /// (`note_exec_retired`).
    exec_retired_said: ((u64, u64), u32),
    /// The ends of the probes' thread followed (`follow_untied`).
    untied_seen: bpf::Untied,
    /// The target's execs whose program the recording names (`name_exec`).
    execs_named: u32,
}

/// The child processes named one by one; any more are only counted at the end.
const CHILDREN_NAMED: usize = 3;

/// Why the allocator of a program the target exec'd is not probed.
#[derive(Debug)]
enum Unprobed {
    /// A Go program: return probes corrupt Go stacks (bcc #1320).
    Go,
    /// The kernel refused a probe.
    Attach(String),
}

impl std::fmt::Display for Unprobed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unprobed::Go => f.write_str("a Go program, whose stacks return probes corrupt"),
            Unprobed::Attach(e) => f.write_str(e),
        }
    }
}

/// After an exec, whether the new program's malloc is one of the probed files: a program
/// linked with another allocator (jemalloc, a static binary) is not recorded, and leak-record
/// says so instead of recording nothing silently.
#[derive(Debug)]
struct ExecAllocator {
    /// The probed functions, by file (device, inode: paths differ between namespaces and
    /// symlinks) and offset: never probed twice.
    attached: HashSet<((u64, u64), u64)>,
    /// Execs of a held command whose ptrace stop was seen (the command's own included), and
    /// since when the BPF count has been ahead of them (`exec_stop_due`).
    stops_seen: u32,
    stop_due_since: Option<Instant>,
    /// The exec count judged last.
    judged: u32,
    /// An exec seen once with its libraries still loading: judged at the next read, whatever
    /// is mapped then.
    deferred: Option<u32>,
    /// `--obj`: the user chose the file; nothing to judge.
    off: bool,
}

impl Session<'_, '_> {
    /// Records until the end; if that fails, still tries to end the file with the reason.
    fn record(&mut self, pidfd: std::os::fd::OwnedFd) -> Result<u8> {
        let result = self.record_until_end(&pidfd);
        let Err(e) = result else {
            return result;
        };
        self.out.end_on_error(&e, self.seq);
        if self.mode != TargetMode::Command {
            return Err(e);
        }
        // Said in the error's one line, even with -q: the command did not end by itself, and
        // leak-record's exit status (1) is not its own.
        let alive = procfs::is_alive(self.pid);
        self.stop_child(&pidfd);
        if !alive {
            return Err(e);
        }
        Err(e.context(format!(
            "recording failed, so the command it started (PID {}) was ended",
            self.pid
        )))
    }

    fn record_until_end(&mut self, pidfd: &std::os::fd::OwnedFd) -> Result<u8> {
        let mut schedule = Schedule::new(self.started, self.cli);
        // Since when a terminal's stop signal has let the command end by itself.
        let mut own_end_since: Option<Instant> = None;
        let reason = loop {
            let second = Duration::from_secs(1);
            let cap = self
                .tracer
                .fork_check_in()
                .map_or(second, |d| d.min(second));
            // Rounded up: not a spin until a child's time is up.
            let mut wait_ms = schedule.wait(cap).as_micros().div_ceil(1000) as i32;
            if let Some(since) = own_end_since {
                let left = TERM_GRACE.saturating_sub(since.elapsed());
                wait_ms = wait_ms.min(left.as_millis() as i32 + 1);
            }
            if self.exec_stop_due() {
                // It waits for us. Its SIGCHLD wakes the poll (target::child_wake); short
                // polls until then are a safety net should the pipe be missing.
                wait_ms = wait_ms.min(2);
            }
            // A forked child traps on every malloc until the session probes are gone, and a
            // program exec'd by another thread than the main one runs without probes until
            // they are attached again: both wake this poll.
            let wakes: Vec<_> = [Some(self.tracer.wake_fd()), target::child_wake()]
                .into_iter()
                .flatten()
                .collect();
            let exited = target::poll_readable_or(pidfd, &wakes, wait_ms);
            self.tracer.drain_wake();
            target::drain_child_wake();
            if let Some(reason) = stop_requested() {
                // Ctrl-C reached the command too (the same process group): it may be ending
                // in its own way (cleaning up, saving state), with a status of its own. It
                // gets the grace for that before it is ended; a second signal ends it now.
                // Ended at once before, its clean-up was cut short and its status lost.
                let own_end = self.mode == TargetMode::Command
                    && STOP_FROM_TERMINAL.load(Ordering::SeqCst)
                    && STOP_COUNT.load(Ordering::SeqCst) == 1
                    && own_end_since.is_none_or(|t| t.elapsed() < TERM_GRACE);
                if !own_end {
                    break reason;
                }
                if own_end_since.is_none() {
                    own_end_since = Some(Instant::now());
                    if !self.cli.quiet {
                        say!(
                            "leak-record: the command (PID {}) got the interrupt too; waiting up \
                             to {} s for it to end",
                            self.pid,
                            TERM_GRACE.as_secs()
                        );
                    }
                }
            }
            let mut status = None;
            let mut gone = exited && self.exit_watch.is_none();
            if let Some(watch) = self.exit_watch.as_mut() {
                match watch.pump() {
                    target::ChildEvent::Exiting => {
                        self.refresh_maps();
                        self.name_held_exec();
                        if let Some(watch) = self.exit_watch.as_mut() {
                            watch.resume();
                        }
                    }
                    target::ChildEvent::Exec => {
                        self.allocator.stops_seen += 1;
                        self.name_held_exec();
                        self.probe_held_exec();
                        if let Some(watch) = self.exit_watch.as_mut() {
                            watch.resume();
                        }
                    }
                    target::ChildEvent::Exited(s) => {
                        status = Some(s);
                        gone = true;
                    }
                    target::ChildEvent::None => {}
                }
            }
            if gone {
                if status.is_none() && self.mode == TargetMode::Command {
                    status = target::wait(self.pid, 0).ok().flatten();
                }
                break EndReason::TargetExited {
                    code: status.and_then(|s| s.code),
                    signal: status.and_then(|s| s.signal),
                };
            }
            self.follow_untied();
            if let Some(child) = self.tracer.image_child() {
                self.leave_sessions(child, pidfd);
            }
            match schedule.due() {
                Due::End => break EndReason::Duration,
                Due::Snapshot => {
                    self.snapshot(true)?;
                    // The files of the modules this snapshot declared, from now on, so that a
                    // recorder killed later keeps them (format 1.8): a chunk or so after each
                    // snapshot, so that the loop is not held up; the rest at the end.
                    if self.cli.bundle_symbols {
                        self.bundle(Some(BUNDLE_CHUNK as u64));
                    }
                }
                Due::Nothing => {}
            }
        };
        let alive = !matches!(reason, EndReason::TargetExited { .. });
        self.snapshot(alive)?;
        if alive && self.mode == TargetMode::Command {
            if matches!(reason, EndReason::Duration) {
                // Said even with -q: the command did not finish, and leak-record's exit
                // status (0) is not its own.
                say!(
                    "leak-record: warning: -d ended the recording with the command (PID {}) \
                     still running; ending it. Its exit status is not known: as expected for a \
                     service recorded for a set time, but a test did not finish; bound a test's \
                     time with timeout around leak-record (timeout 60 leak-record ... -- \
                     ./test), whose status 124 fails the step",
                    self.pid
                );
            }
            self.stop_child(pidfd);
        }
        if self.cli.bundle_symbols {
            self.bundle(None);
        }
        let skipped = self.tracer.skipped_returns().unwrap_or(0);
        if skipped > 0 && !self.cli.quiet {
            let until = self.sessions_left.map_or(String::new(), |at| {
                format!(
                    ", until {:.1} s, when a forked process kept running the target's program",
                    at.as_secs_f64()
                )
            });
            say!(
                "leak-record: {skipped} malloc calls with nothing to record skipped their \
                 return probe (session probes{until}; calls nested in another allocator call \
                 not counted)"
            );
        }
        let chunkless = self.tracer.chunkless_walks();
        if chunkless > 0 && !self.cli.quiet {
            say!(
                "leak-record: {chunkless} stack walks read their frames one at a time (slower, \
                 same stacks): a walk preempted on their CPU held its copy of the stack"
            );
        }
        // Every process it started (counted by BPF), short-lived ones included.
        let started = self.tracer.started().0.max(self.children.len() as u64);
        let named = self.children.len().min(CHILDREN_NAMED) as u64;
        if started > named {
            let s = if started == 1 { "" } else { "es" };
            let above = match named {
                0 => String::new(),
                n => format!(" ({n} named above)"),
            };
            say!(
                "leak-record: warning: PID {} started {started} process{s}{above}, none of \
                 them recorded (leak-record follows one process; a wrapper script should exec \
                 its program)",
                self.pid
            );
        }
        let lost = self.last_losses.unexpected_drops(false) + self.last_unseen.total();
        self.out.finish(&reason, self.seq, self.cli, lost)?;
        Ok(exit_status(&reason, self.mode))
    }

    /// The target forked a process of its own: malloc's session probes make way for the
    /// classic pair (`Tracer::leave_sessions`).
    fn leave_sessions(&mut self, child: u32, pidfd: &std::os::fd::OwnedFd) {
        let at = self.started.elapsed();
        let pid = self.pid;
        let who = if child == 0 {
            format!(
                "processes forked from PID {pid} run its program, more than leak-record follows"
            )
        } else {
            format!(
                "PID {child}, forked from PID {pid}, still runs its program {} ms later",
                self.tracer.fork_exec_wait().as_millis()
            )
        };
        match self.tracer.leave_sessions() {
            Ok(open) => {
                self.sessions_left = Some(at);
                if !self.cli.quiet {
                    say!(
                        "leak-record: {who}: such a process traps on every malloc under session \
                         probes, so malloc has the classic pair from now on (it leaves other \
                         processes alone)"
                    );
                }
                if let Some(n @ 1..) = open {
                    say!(
                        "leak-record: warning: {n} malloc call(s) of PID {pid} still running \
                         when the session probes went: the blocks they return may go \
                         unrecorded (each that does is counted as abandoned when its thread \
                         next allocates)"
                    );
                }
            }
            // The target exited meanwhile (no probe attaches to it then): nothing to say.
            Err(_) if target::poll_readable(pidfd, 0) => {}
            Err(e) => say!(
                "leak-record: warning: {who}: such a process traps on every malloc under \
                 session probes, and they could not make way for the classic pair: {e:#}. \
                 Record a forking process with LEAK_RECORD_NO_SESSIONS=1"
            ),
        }
    }

    /// The recording stopped before the command it started: ask it to end, then insist.
    fn stop_child(&mut self, pidfd: &std::os::fd::OwnedFd) {
        if let Some(watch) = self.exit_watch.as_mut() {
            watch.detach();
        }
        // The processes it started (a shell's commands): a shell does not pass SIGTERM on, and
        // they would run on, orphaned, after it (a CI runner's stray processes).
        let started = procfs::descendants(self.pid);
        if !target::kill(self.pid, libc::SIGTERM) {
            return;
        }
        for &pid in &started {
            target::kill(pid, libc::SIGTERM);
        }
        let asked = Instant::now();
        if !target::poll_readable(pidfd, TERM_GRACE.as_millis() as i32) {
            // The wait ends early when another stop signal interrupts it (a second Ctrl-C).
            let waited = asked.elapsed();
            let why = if waited + Duration::from_millis(100) < TERM_GRACE {
                " and another stop signal came"
            } else {
                ""
            };
            say!(
                "leak-record: warning: PID {} was still running {:.1} s after SIGTERM{why}; \
                 killing it",
                self.pid,
                waited.as_secs_f64()
            );
            target::kill(self.pid, libc::SIGKILL);
        }
        let _ = target::wait(self.pid, 0);
        // The rest of the grace for the processes it started; then they are killed too.
        while started.iter().any(|&p| procfs::is_alive(p)) && asked.elapsed() < TERM_GRACE {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<u32> = started
            .into_iter()
            .filter(|&p| procfs::is_alive(p))
            .collect();
        if !left.is_empty() {
            say!(
                "leak-record: {} process(es) started by PID {} still running {:.1} s after \
                 SIGTERM ({}); killing them",
                left.len(),
                self.pid,
                asked.elapsed().as_secs_f64(),
                left.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for pid in left {
                target::kill(pid, libc::SIGKILL);
            }
        }
    }

    fn snapshot(&mut self, alive: bool) -> Result<()> {
        let meter = CostMeter::start();
        let (losses, unseen) = self.tracer.losses()?;
        let raw = self.tracer.changed_stats(&self.unsent);
        if alive {
            self.refresh_maps();
        } else {
            self.locate_before_exec();
        }
        // Maps of another program than the one the target runs now (it exec'd and exited
        // before they could be read again) locate none of its stacks.
        let current_maps = self.maps_execs == Some(self.tracer.execs().0);
        let maps = self.unsent_maps.take();
        let mut stats = Vec::new();
        let mut unknown = HashSet::new();
        for r in &raw {
            let key = (r.stack_id, r.kind);
            let unchanged = match self.prev.get(&key) {
                Some(p) => p == r,
                // A counter entry created but never used (placeholders, dropped blocks).
                None => r.alloc_count == 0 && r.free_count == 0,
            };
            if !unchanged {
                if !self.known_stacks.contains(&r.stack_id) {
                    unknown.insert(r.stack_id);
                }
                let kind = if r.kind == 1 {
                    AllocKind::Mmap
                } else {
                    AllocKind::Heap
                };
                stats.push(r.stack_stats(kind));
            }
        }
        let mut new_stacks = std::mem::take(&mut self.exec_stacks);
        let placeholders: Vec<u32> = unknown
            .iter()
            .copied()
            .filter(|&id| id < bpf::FIRST_STACK_ID)
            .collect();
        for id in placeholders {
            unknown.remove(&id);
            new_stacks.push(bpf::placeholder_stack(id));
            self.known_stacks.insert(id);
        }
        if !unknown.is_empty() {
            let traces = self.tracer.stack_traces(&unknown)?;
            if !current_maps && !traces.is_empty() && !self.cli.quiet {
                say!(
                    "leak-record: the target exec'd and ended before the new program's memory \
                     map could be read: {} of its stacks are recorded without their modules",
                    traces.len()
                );
            }
            for (id, ips) in traces {
                let frames = if current_maps {
                    self.modules.normalize(&ips)
                } else {
                    unlocated(&ips)
                };
                new_stacks.push(stack_record(id, &ips, frames));
                self.known_stacks.insert(id);
            }
        }
        // A stack whose trace could not be read yet is retried next time: its counters stay
        // unsent so that they are sent together with the stack.
        self.unsent.clear();
        stats.retain(|s| {
            let known = self.known_stacks.contains(&s.stack);
            if !known {
                self.unsent.insert(s.stack);
            }
            known
        });
        for r in &raw {
            self.latest.insert((r.stack_id, r.kind), *r);
            if self.known_stacks.contains(&r.stack_id) {
                self.prev.insert((r.stack_id, r.kind), *r);
            }
        }
        let mut snapshot = new_snapshot(self.seq, new_stacks, stats, losses);
        snapshot.new_modules = self.modules.take_new();
        snapshot.maps = maps;
        if alive {
            snapshot.memory = procfs::memory(self.tracer.probes_tid());
            self.note_children();
        }
        self.name_exec(alive)?;
        self.note_exec_retired();
        self.write_children()?;
        write_unseen(&mut self.out, unseen, self.last_unseen)?;
        snapshot.cost = meter.cost(raw.len());
        self.out.write(&Record::Snapshot(snapshot))?;
        self.seq += 1;
        if !self.cli.quiet {
            self.status_line(drops(&losses, &unseen));
        }
        self.last_losses = losses;
        self.last_unseen = unseen;
        Ok(())
    }

    /// Reads the target's memory map; when it changed, updates the module table and keeps it
    /// for the next snapshot record.
    fn refresh_maps(&mut self) {
        self.locate_before_exec();
        let before = self.tracer.execs().0;
        let tid = self.tracer.probes_tid();
        let Some(text) = procfs::maps_text(tid).ok().filter(|t| !t.is_empty()) else {
            return;
        };
        if text != self.maps_text {
            let parsed = procfs::parse_maps(&text);
            self.modules.set_maps(parsed.clone());
            self.unsent_maps = Some(parsed);
            self.maps_text = text;
        }
        let after = self.tracer.execs().0;
        self.maps_execs = (before == after).then_some(after);
        if let Some(execs) = self.maps_execs {
            self.judge_allocator(execs);
        }
    }

    /// Names the processes the target starts, as the snapshots see them (the first few):
    /// leak-record records one process, and a wrapper script that runs its program without
    /// `exec` would otherwise leave an empty recording without a word.
    fn note_children(&mut self) {
        let pid = self.pid;
        for child in procfs::children(pid) {
            if !self.children.insert(child) || self.children.len() > CHILDREN_NAMED {
                continue;
            }
            let exe = procfs::exe(child).unwrap_or_else(|_| "?".into());
            say!(
                "leak-record: warning: PID {pid} started PID {child} ({exe}), which is not \
                 recorded (leak-record follows one process); to record it: leak-record -p \
                 {child}"
            );
        }
    }

    /// Records the processes the target started (`Record::Children`) when they changed since
    /// the last snapshot: BPF counts them at their fork, so that leak-report can say why a
    /// wrapper's recording lacks its program, even when the program lived less than one
    /// interval and no snapshot saw it.
    fn write_children(&mut self) -> Result<()> {
        let now = self.tracer.started();
        if now.0 == 0 || now == self.children_written {
            return Ok(());
        }
        let children = leak_format::Children {
            started: now.0,
            examples: now
                .1
                .iter()
                .map(|(pid, name)| leak_format::StartedProcess {
                    pid: *pid,
                    name: name.clone(),
                })
                .collect(),
        };
        self.out.write(&Record::Children(children))?;
        self.children_written = now;
        Ok(())
    }

    /// Names the program the target runs after an exec (`Record::Process`, format 1.7), once
    /// for each count of execs seen: read while a started command is held at its exec stop or
    /// at its exit stop, else before the next snapshot of a live target (a process that exec'd
    /// several times in between is named after the last). Not after the target ended: its
    /// PID may have been reaped, even reused. The header's command line stays the one that
    /// was started or attached to. A failed write is tried again at the next occasion.
    fn name_exec(&mut self, alive: bool) -> Result<()> {
        let execs = self.tracer.execs().0;
        if execs <= self.execs_named || !alive {
            return Ok(());
        }
        self.out
            .write(&Record::Process(procfs::process(self.pid)))?;
        self.execs_named = execs;
        Ok(())
    }

    /// [`Self::name_exec`] while the target is held at a stop: a failure is said, and the
    /// snapshot that follows meets it again.
    fn name_held_exec(&mut self) {
        if let Err(e) = self.name_exec(true) {
            say!("leak-record: warning: {e:#}");
        }
    }

    /// Says what the target's execs since the last snapshot took with the programs they left:
    /// their outstanding blocks, freed on their stacks by BPF at each exec.
    fn note_exec_retired(&mut self) {
        let now = self.tracer.exec_retired();
        let execs = self.tracer.execs().0;
        let (said, said_execs) = std::mem::replace(&mut self.exec_retired_said, (now, execs));
        let (blocks, bytes) = (now.0.saturating_sub(said.0), now.1.saturating_sub(said.1));
        if (blocks, bytes) == (0, 0) || self.cli.quiet {
            return;
        }
        let blocks = if self.cli.sample_bytes.is_some() {
            format!("an estimated {blocks} blocks")
        } else {
            format!("the {blocks} blocks")
        };
        let (what, they) = match execs.saturating_sub(said_execs) {
            0 | 1 => (
                "exec'd".to_string(),
                "the program it left had outstanding went with its",
            ),
            n => (
                format!("exec'd {n} times"),
                "the programs it left had outstanding went with their",
            ),
        };
        say!(
            "leak-record: PID {} {what}: {blocks} ({}) {they} memory, and are freed on their \
             stacks",
            self.pid,
            human_bytes(bytes)
        );
    }

    /// Whether an exec of the held command is under way: counted by BPF at
    /// `sched_process_exec`, its ptrace stop not seen yet. The stop follows within
    /// microseconds, and the command waits in it until handled. An exec by another thread
    /// than the main one has no stop (only the main thread is traced): `follow_untied`
    /// counts it as seen, and the 100 ms limit stays as a safety net; its allocator is left
    /// to `judge_allocator`.
    fn exec_stop_due(&mut self) -> bool {
        let a = &mut self.allocator;
        if self.exit_watch.is_none() || a.off {
            return false;
        }
        let execs = self.tracer.execs().0;
        if execs <= a.stops_seen {
            a.stop_due_since = None;
            return false;
        }
        let since = *a.stop_due_since.get_or_insert_with(Instant::now);
        if since.elapsed() > Duration::from_millis(100) {
            a.stops_seen = execs;
            a.stop_due_since = None;
            return false;
        }
        true
    }

    /// The held command stopped at an exec, before the new program's first instruction:
    /// probes its allocator if it is not probed yet, from the libraries its dynamic linker
    /// lists for it with its environment, as for the command itself. (If that misses it,
    /// `judge_allocator` still looks once its libraries are mapped.)
    fn probe_held_exec(&mut self) {
        if self.allocator.off {
            return;
        }
        // Its dynamic linker, with its environment, runs as leak-record: only for a program
        // with our privileges and files (a wrapper that drops them, chroots or unshares is
        // left to judge_allocator, which reads the maps once the libraries are in).
        let tid = self.tracer.probes_tid();
        if !procfs::runs_as_we_do(tid) {
            return;
        }
        let Ok(exe) = procfs::exe(tid) else {
            return;
        };
        let env = procfs::environ(tid);
        let prefix = self.cli.symbol_prefix.as_deref();
        let Ok(objs) = discover::objects_of_program(Path::new(&exe), prefix, Some(&env)) else {
            return;
        };
        // No allocator found, or a Go program, is not said here: judge_allocator says it once
        // the program's libraries are mapped, if its malloc is still not probed then.
        let Some(plan) = self.plan_program(&objs) else {
            return;
        };
        if let Err(Unprobed::Attach(e)) = self.attach_new(plan, &objs, &exe, true) {
            say!("leak-record: warning: PID {} now runs {exe}: {e}", self.pid);
        }
    }

    /// The probes the allocator of a program with these objects (in its lookup order) takes,
    /// as the command's were chosen; None if it has none.
    fn plan_program(&self, objs: &[discover::Obj]) -> Option<Vec<discover::PlannedProbe>> {
        let overrides = Overrides {
            symbol_prefix: self.cli.symbol_prefix.clone(),
            mmap: self.cli.mmap,
        };
        discover::plan(objs, &overrides).ok()
    }

    /// Whether a file (device, inode) has probes.
    fn is_probed(&self, file: Option<(u64, u64)>) -> bool {
        file.is_some_and(|id| self.allocator.attached.iter().any(|(f, _)| *f == id))
    }

    /// Attaches those of `plan` (for the program the target now runs, whose objects are `objs`)
    /// that are not attached yet, writes them to the recording (`Record::Probes`) and says so.
    /// `held`: the target waits at its exec, so nothing it allocates is missed.
    fn attach_new(
        &mut self,
        plan: Vec<discover::PlannedProbe>,
        objs: &[discover::Obj],
        exe: &str,
        held: bool,
    ) -> std::result::Result<(), Unprobed> {
        let a = &self.allocator;
        let new: Vec<(discover::PlannedProbe, (u64, u64))> = plan
            .into_iter()
            .filter_map(|p| {
                let id = procfs::path_id(&p.open_path)?;
                (!a.attached.contains(&(id, p.offset))).then_some((p, id))
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        if objs.first().is_some_and(|o| o.elf.is_go) {
            return Err(Unprobed::Go);
        }
        let mut planned: Vec<discover::PlannedProbe> = new.iter().map(|(p, _)| p.clone()).collect();
        discover::place_entries(&mut planned, objs);
        let (probes, failed) = self.tracer.attach_late(self.pid, &planned);
        // Only what was attached counts as probed (what failed may be tried at the next exec).
        let a = &mut self.allocator;
        for (p, id) in &new {
            if probes
                .iter()
                .any(|r| r.function == p.function && r.module == p.module)
            {
                a.attached.insert((*id, p.offset));
            }
        }
        self.write_late_probes(exe, &probes, held);
        if let Some(e) = failed {
            return Err(Unprobed::Attach(format!(
                "attaching its probes failed ({} of {} attached): {e:#}",
                probes.len(),
                new.len()
            )));
        }
        if !self.cli.quiet {
            let modules: std::collections::BTreeSet<&str> =
                probes.iter().map(|p| p.module.as_str()).collect();
            let modules: Vec<&str> = modules.into_iter().collect();
            let when = if held {
                "before it ran: nothing it allocates is missed"
            } else {
                "while it ran: what it allocated before is not recorded"
            };
            say!(
                "leak-record: PID {} now runs {exe}: attached {} more probes in {}, {when}",
                self.pid,
                probes.len(),
                modules.join(", ")
            );
        }
        Ok(())
    }

    /// Records probes attached while recording (`Record::Probes`), if any.
    fn write_late_probes(&mut self, exe: &str, probes: &[leak_format::Probe], held: bool) {
        if probes.is_empty() {
            return;
        }
        let late = leak_format::LateProbes {
            mono_ns: procfs::clock_ns(libc::CLOCK_MONOTONIC),
            exe: exe.to_string(),
            probes: probes.to_vec(),
            held,
        };
        if let Err(e) = self.out.write(&Record::Probes(late)) {
            say!("leak-record: warning: {e:#}");
        }
    }

    /// The thread the probes are tied to ended while the process lives on (`Tracer::untied`):
    /// another thread exec'd (which ends the main thread) or it exited (a main thread that
    /// calls pthread_exit). No probe tied to it fires again: they are attached again at once,
    /// for a thread that runs, and a started command that exec'd is held again (its traced
    /// main thread was the one that ended). What the program allocated in between is not
    /// recorded: said, and recorded as probes attached while it ran.
    fn follow_untied(&mut self) {
        let now = self.tracer.untied();
        if now.total() <= self.untied_seen.total() {
            return;
        }
        let execs = now.execs - self.untied_seen.execs;
        self.untied_seen = now;
        let pid = self.pid;
        if execs > 0 {
            // Their exec stops will not come (`exec_stop_due`).
            self.allocator.stops_seen += u32::try_from(execs).unwrap_or(u32::MAX);
            if let Some(watch) = self.exit_watch.as_mut() {
                match watch.seize_again() {
                    Ok(()) => {}
                    // It has ended meanwhile: its exit is reported all the same.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        say!(
                            "leak-record: warning: cannot hold PID {pid} at exit again ({e}); \
                             frames of libraries loaded after the last snapshot may stay \
                             unresolved"
                        );
                        self.exit_watch = None;
                    }
                }
            }
        }
        let ended = self.tracer.probes_tid();
        // After an exec the main thread's ID is the exec'ing thread's. A thread that is
        // ending (the one that ended, or the new main thread already on its way out) is not
        // one to attach to.
        let mut tries = 0;
        let (tid, probes, failed) = loop {
            let Some(tid) = procfs::running_thread(pid) else {
                return; // the process has ended
            };
            if let Err(e) = self.tracer.set_probes_tid(tid) {
                say!("leak-record: warning: cannot attach the probes again: {e:#}");
                return;
            }
            self.modules.set_pid(tid);
            let (probes, failed) = self.tracer.reattach(pid);
            // The thread picked may have started its exit right after (a main thread that
            // ends just after an exec): the kernel then refuses it, and its end may never
            // be counted (the probes were not tied to it yet). Pick again while the pick
            // changes, unless something exec'd meanwhile (the next call sees to that); an
            // end counted meanwhile is part of this hand-over.
            tries += 1;
            let later = self.tracer.untied();
            let again = failed.is_some()
                && tries < 3
                && later.execs == self.untied_seen.execs
                && procfs::running_thread(pid) != Some(tid);
            if !again {
                break (tid, probes, failed);
            }
            self.untied_seen = later;
        };
        let after = procfs::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(now.at_ns);
        // (The main thread's /proc entry has no exe once it has ended.)
        let exe = procfs::exe(tid).unwrap_or_else(|_| "?".into());
        self.write_late_probes(&exe, &probes, false);
        let what = if execs > 0 {
            format!("now runs {exe}, exec'd by another thread than its main one")
        } else {
            format!("lives on without thread {ended} (e.g. a main thread that called pthread_exit)")
        };
        if let Some(e) = failed {
            say!(
                "leak-record: warning: PID {pid} {what}: attaching its probes again failed ({} \
                 attached): {e:#}",
                probes.len()
            );
        } else if !self.cli.quiet {
            say!(
                "leak-record: PID {pid} {what}, to which the kernel tied the probes: attached \
                 {} probes again, to thread {tid}, {:.1} ms later; what it allocated in \
                 between is not recorded",
                probes.len(),
                after as f64 / 1e6
            );
        }
    }

    /// Once per exec, when the new program's libraries are mapped (or at the second read after
    /// it): probes its malloc if it is not in a probed file, or warns that it cannot.
    fn judge_allocator(&mut self, execs: u32) {
        let a = &mut self.allocator;
        if a.off || execs <= a.judged {
            return;
        }
        let prefix = self.cli.symbol_prefix.as_deref();
        let tid = self.tracer.probes_tid();
        let Ok(objs) = discover::objects_of_process(tid, prefix) else {
            return;
        };
        if !discover::libraries_mapped(&objs) && a.deferred != Some(execs) {
            a.deferred = Some(execs);
            return;
        }
        a.judged = execs;
        let exe = procfs::exe(tid).unwrap_or_else(|_| "?".into());
        let pid = self.pid;
        let plan = self.plan_program(&objs);
        let malloc = plan.as_ref().and_then(|plan| {
            plan.iter()
                .find(|p| p.entry == discover::Entry::Malloc)
                .cloned()
        });
        let why = match (plan, malloc) {
            (Some(plan), Some(m)) => {
                if self.is_probed(procfs::path_id(&m.open_path)) {
                    return;
                }
                // Probed now, while it runs.
                let result = self.attach_new(plan, &objs, &exe, false);
                if self.is_probed(procfs::path_id(&m.open_path)) {
                    return;
                }
                let why = result
                    .err()
                    .map_or("its probes were refused".into(), |e| e.to_string());
                format!(
                    "whose {} is in {}, which is not probed: {why}",
                    m.function, m.module
                )
            }
            _ => "in which no allocator was found".to_string(),
        };
        say!(
            "leak-record: warning: PID {pid} now runs {exe}, {why}: its allocations are not \
             recorded; record it on its own (leak-record -- {exe} ..., or leak-record -p {pid})"
        );
    }

    /// When the target exec'd since its maps were last read, locates the stacks walked in the
    /// programs it left, before the maps are read again or its last stacks are written: in the
    /// maps held, when they are of the program it left; else (it ran a program between two
    /// reads, or exec'd and exited) they are kept without a module, not located in the wrong
    /// one, and that is said. They go out with the next snapshot.
    fn locate_before_exec(&mut self) {
        let (execs, first_new) = self.tracer.execs();
        if self.maps_execs == Some(execs) {
            return;
        }
        let located = self.maps_execs.is_some_and(|m| execs == m + 1);
        let ids: HashSet<u32> = (bpf::FIRST_STACK_ID..first_new)
            .filter(|id| !self.known_stacks.contains(id))
            .collect();
        if ids.is_empty() {
            return;
        }
        // A trace not readable yet is left to the snapshot.
        let Ok(traces) = self.tracer.stack_traces(&ids) else {
            return;
        };
        let count = traces.len();
        for (id, ips) in traces {
            let frames = if located {
                self.modules.normalize(&ips)
            } else {
                unlocated(&ips)
            };
            self.exec_stacks.push(stack_record(id, &ips, frames));
            self.known_stacks.insert(id);
        }
        if !located && count > 0 && !self.cli.quiet {
            say!(
                "leak-record: the target exec'd before its memory map could be read again: \
                 {count} stacks of the program it left are recorded without their modules \
                 (a shorter -i reads the map more often; a program that execs at once, such as \
                 env, is left before any read)"
            );
        }
    }

    fn status_line(&self, drops_now: u64) {
        let o = bpf::Outstanding::of(self.latest.values());
        let est = estimate_mark(self.cli);
        let what = format!(
            "outstanding {est}{} in {est}{} block{} on {} stack{}",
            human_bytes(o.bytes),
            o.blocks,
            if o.blocks == 1 { "" } else { "s" },
            o.stacks,
            if o.stacks == 1 { "" } else { "s" },
        );
        let last = drops(&self.last_losses, &self.last_unseen);
        print_status(self.started, self.seq, &what, drops_now, last);
    }

    /// Embeds the module files referenced so far, each once: a file up to --bundle-max as it
    /// is, a larger one as its symbol table (read through the handle opened while the target
    /// was alive, so a binary replaced on disk since is still the one that ran). Writes chunks
    /// until `budget` bytes are written (None: all). A bundle that cannot be written is no
    /// reason to stop recording: the file is cut back to its last whole record (as after any
    /// failed write), leak-record says so, and it records on without bundles.
    fn bundle(&mut self, budget: Option<u64>) {
        for (module, file) in self.modules.files() {
            if !self.bundling_off {
                self.bundles
                    .push_back(PendingBundle::new(module, file, self.cli));
            }
        }
        let mut written = 0;
        while budget.is_none_or(|b| written < b) {
            let Some(p) = self.bundles.front_mut() else {
                break;
            };
            let chunk = match p.next_chunk(self.cli) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    self.bundles.pop_front();
                    continue;
                }
                Err(e) => {
                    say!("leak-record: not bundling {}: {e:#}", p.module.path);
                    self.bundles.pop_front();
                    continue;
                }
            };
            written += chunk.data.len() as u64;
            // Flushed to disk with the next snapshot.
            if let Err(e) = self.out.write_whole(&Record::Bundle(chunk)) {
                say!(
                    "leak-record: warning: cannot write the symbol bundles to {}: {e}; recording \
                     goes on without them (leak-report will need the binaries, or --sysroot: \
                     make room, or record with a smaller --bundle-max)",
                    output::name(&self.out.path)
                );
                self.bundles.clear();
                self.bundling_off = true;
                return;
            }
        }
    }
}

/// A module's bundle being written a chunk at a time ([`Session::bundle`]).
struct PendingBundle {
    module: leak_format::Module,
    source: BundleSource,
    total_len: u64,
    offset: u64,
}

/// What a [`PendingBundle`] embeds.
enum BundleSource {
    /// The file itself (up to --bundle-max), read a chunk at a time.
    File(File),
    /// A larger file, whose symbol table is made when its bundle comes to be written.
    Symbols(File),
    /// That symbol table, encoded.
    Table(Vec<u8>),
}

impl PendingBundle {
    fn new(module: leak_format::Module, file: File, cli: &Cli) -> Self {
        let len = file.metadata().map_or(0, |m| m.len());
        let (source, total_len) = if len > cli.bundle_max {
            (BundleSource::Symbols(file), 0)
        } else {
            (BundleSource::File(file), len)
        };
        PendingBundle {
            module,
            source,
            total_len,
            offset: 0,
        }
    }

    /// The next chunk to write, None once all are written.
    fn next_chunk(&mut self, cli: &Cli) -> Result<Option<BundleChunk>> {
        if let BundleSource::Symbols(file) = &self.source {
            let symbols = discover::symbol_table(file.try_clone()?)?;
            if !cli.quiet {
                say!(
                    "leak-record: {} is {} (above --bundle-max {}): bundling its {} function \
                     symbols instead",
                    self.module.path,
                    human_bytes(file.metadata().map_or(0, |m| m.len())),
                    human_bytes(cli.bundle_max),
                    symbols.len()
                );
            }
            let table = leak_format::encode_symbol_table(&symbols);
            self.total_len = table.len() as u64;
            self.source = BundleSource::Table(table);
        }
        if self.offset >= self.total_len {
            return Ok(None);
        }
        let n = (self.total_len - self.offset).min(BUNDLE_CHUNK as u64) as usize;
        let (content, data) = match &self.source {
            BundleSource::Table(table) => (
                BundleContent::SymbolTable,
                table[self.offset as usize..][..n].to_vec(),
            ),
            BundleSource::File(file) => {
                let mut data = vec![0; n];
                std::os::unix::fs::FileExt::read_exact_at(file, &mut data, self.offset)?;
                (BundleContent::ElfFile, data)
            }
            // Made into a table above.
            BundleSource::Symbols(_) => return Ok(None),
        };
        let chunk = BundleChunk {
            module: self.module.id,
            content,
            total_len: self.total_len,
            offset: self.offset,
            data,
        };
        self.offset += n as u64;
        Ok(Some(chunk))
    }
}

/// The header of a recording of `target` starting now, with the limits of `cli`; `mmap` says
/// whether mmap/munmap are traced.
pub(crate) fn new_header(
    cli: &Cli,
    host: leak_format::HostInfo,
    target: Target,
    mmap: bool,
    probes: &[leak_format::Probe],
) -> Header {
    Header {
        tool: format!("leak-record {}", env!("CARGO_PKG_VERSION")),
        host,
        target,
        start_wall_ns: procfs::clock_ns(libc::CLOCK_REALTIME),
        start_mono_ns: procfs::clock_ns(libc::CLOCK_MONOTONIC),
        interval_ns: cli.interval.as_nanos() as u64,
        config: RecordConfig {
            max_allocs: cli.max_allocs,
            max_stacks: cli.max_stacks,
            max_stack_depth: bpf::MAX_STACK_DEPTH as u32,
            min_size: cli.min_size,
            max_size: cli.max_size,
            mmap,
        },
        probes: probes.to_vec(),
    }
}

/// Snapshot `seq`, taken now, of `new_stacks` and `stats` (put in id order); the user-mode
/// parts (new modules, maps, memory) and the cost are left for the caller to fill in.
pub(crate) fn new_snapshot(
    seq: u32,
    mut new_stacks: Vec<Stack>,
    mut stats: Vec<StackStats>,
    losses: Losses,
) -> Snapshot {
    new_stacks.sort_by_key(|s| s.id);
    stats.sort_by_key(|s| (s.stack, s.kind));
    Snapshot {
        seq,
        wall_ns: procfs::clock_ns(libc::CLOCK_REALTIME),
        mono_ns: procfs::clock_ns(libc::CLOCK_MONOTONIC),
        new_modules: Vec::new(),
        new_stacks,
        stats,
        maps: None,
        memory: None,
        losses,
        cost: SnapshotCost::default(),
    }
}

/// The recording file being written: each record is appended whole or not at all, and made
/// durable as soon as it is written.
pub(crate) struct RecordingFile {
    writer: Writer<File>,
    path: PathBuf,
    /// Snapshots written whole: what a failed write leaves to report.
    snapshots: u32,
    /// When recording began, for the run's length (`short_run`).
    started: Instant,
}

impl RecordingFile {
    /// Starts the recording in `file`, created at `path`, with its header, and right after it
    /// the `Sampling` record of a sampled recording (`--sample-bytes`, docs/format.md §5.8).
    pub(crate) fn start(
        file: File,
        path: &Path,
        header: &Header,
        sample_bytes: Option<u64>,
    ) -> Result<Self> {
        let writer = Writer::new(file, header).map_err(|e| {
            anyhow::anyhow!(
                "cannot write {}: {e}; free space there or choose another -o",
                output::name(path)
            )
        })?;
        let mut out = RecordingFile {
            writer,
            path: path.to_path_buf(),
            snapshots: 0,
            started: Instant::now(),
        };
        if let Some(bytes) = sample_bytes {
            out.write(&Record::Sampling(leak_format::Sampling { bytes }))?;
        }
        Ok(out)
    }

    /// Appends one record; on failure cuts the file back to its last complete record.
    pub(crate) fn write(&mut self, record: &Record) -> Result<()> {
        if let Err(e) = self.write_whole(record) {
            if output::is_stdout(&self.path) {
                // Not ours to cut (a pipe, or a file it may have been appended to): what was
                // written before this record is whole, each record in frames of its own.
                bail!(
                    "cannot write to standard output: {e}; the records written before are \
                     complete"
                );
            }
            let limit = matches!(&e, leak_format::Error::Io(io)
                if io.raw_os_error() == Some(libc::EFBIG));
            let room = if limit {
                "raise the file size limit, ulimit -f"
            } else {
                "free space there, or choose another -o"
            };
            let kept = if self.snapshots == 0 {
                format!(
                    "no snapshot had been written yet, so the file holds nothing to report; \
                     record again once there is room ({room})"
                )
            } else if limit {
                "the recording up to the previous snapshot is kept; the file size limit \
                 (ulimit -f) stopped it: raise it to record more"
                    .to_string()
            } else {
                "the recording up to the previous snapshot is kept".to_string()
            };
            bail!("cannot write to {}: {e}; {kept}", self.path.display());
        }
        // Durable at every record: a crash or power loss keeps everything written so far. A
        // failed flush (EIO, ENOSPC on a delayed allocation, EDQUOT) is a lost write and stops
        // the recording; a file that cannot be flushed at all (EINVAL: a pipe or a character
        // device given with --force) never promised durability.
        if let Err(e) = self.writer.get_ref().sync_data() {
            if e.raw_os_error() != Some(libc::EINVAL) {
                bail!(
                    "cannot flush {} to disk: {e}; the snapshots flushed before this one are kept",
                    output::name(&self.path)
                );
            }
        }
        if matches!(record, Record::Snapshot(_)) {
            self.snapshots += 1;
        }
        Ok(())
    }

    /// Appends `record` without flushing it to disk (the next [`Self::write`] does), or leaves
    /// the file as it was: a record whose write fails part way is cut off, and the next one
    /// starts at the cut, not after a hole of zeros that a reader would take for a damaged tail
    /// (standard output, not ours to cut, is left as it is).
    pub(crate) fn write_whole(&mut self, record: &Record) -> Result<(), leak_format::Error> {
        let good = self.writer.bytes_written();
        let result = self.writer.write(record).map(|_| ());
        if result.is_err() && !output::is_stdout(&self.path) {
            let mut file = self.writer.get_ref();
            let _ = file.set_len(good);
            let _ = file.seek(SeekFrom::Start(good));
        }
        result
    }

    /// Ends the recording with the error that stopped it, as well as it can: the whole message,
    /// else (a file size limit or a full disk leaves little room) its first part, which still
    /// tells an end from a killed recorder.
    /// (Not on standard output, where a failed record stays as written.)
    pub(crate) fn end_on_error(&mut self, e: &anyhow::Error, snapshots: u32) {
        if self
            .end(EndReason::Error(format!("{e:#}")), snapshots)
            .is_ok()
            || output::is_stdout(&self.path)
        {
            return;
        }
        // The cause (`File too large (os error 27)`), not a long path before it.
        let short: String = e.root_cause().to_string().chars().take(80).collect();
        let _ = self.end(EndReason::Error(short), snapshots);
    }

    /// Appends the end record: the recording stopped for `reason` after `snapshots` snapshots.
    pub(crate) fn end(&mut self, reason: EndReason, snapshots: u32) -> Result<()> {
        self.write(&Record::End(End {
            wall_ns: procfs::clock_ns(libc::CLOCK_REALTIME),
            mono_ns: procfs::clock_ns(libc::CLOCK_MONOTONIC),
            reason,
            snapshots,
        }))
    }

    /// Ends the recording normally and, unless `cli.quiet`, says what was written and why it
    /// stopped, and whether it is too short to judge; `lost` events
    /// (`Losses::unexpected_drops`) are said even when quiet.
    pub(crate) fn finish(
        &mut self,
        reason: &EndReason,
        snapshots: u32,
        cli: &Cli,
        lost: u64,
    ) -> Result<()> {
        self.end(reason.clone(), snapshots)?;
        if lost > 0 {
            say!(
                "leak-record: warning: {lost} allocator events (allocations or frees) were lost or \
                 misattributed (a full table, a failed stack walk, a busy table...); leak-report \
                 {} says which and what to raise",
                output::name(&self.path)
            );
        }
        if !cli.quiet {
            say!(
                "leak-record: {} snapshot{} written to {} ({}); stopped: {}",
                snapshots,
                if snapshots == 1 { "" } else { "s" },
                output::name(&self.path),
                human_bytes(self.writer.bytes_written()),
                describe(reason)
            );
            // A `--kernel --pid` process's exit snapshot is judged apart from its life, which
            // lasted about as many intervals as the snapshots before it (the run also holds
            // the wait for its last frees).
            let exit_apart =
                cli.kernel && cli.pid.is_some() && matches!(reason, EndReason::TargetExited { .. });
            let judged = snapshots.saturating_sub(u32::from(exit_apart));
            let run = if exit_apart {
                cli.interval * judged
            } else {
                self.started.elapsed()
            };
            if exit_apart && judged == 0 {
                say!(
                    "leak-record: note: the process exited before the first snapshot of its \
                     life: leak-report has nothing to judge (the snapshot at its exit is judged \
                     apart); use a shorter -i"
                );
            } else if let Some(note) = short_run(judged, run, cli) {
                if exit_apart {
                    say!("{note} (the snapshot at the process's exit is judged apart)");
                } else {
                    say!("{note}");
                }
            }
        }
        Ok(())
    }
}

/// The shortest `-i`.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The snapshots `-d` at `-i` gives: one at the end of each interval begun, the last at the end.
fn planned_snapshots(cli: &Cli) -> Option<u128> {
    let d = cli.duration?;
    Some(d.as_nanos().div_ceil(cli.interval.as_nanos().max(1)))
}

/// Said as recording begins when `-d` at `-i` gives fewer snapshots than leak-report judges
/// growth from (`leak_format::SNAPSHOTS_TO_JUDGE`): a CI gate on it would exit 2.
pub(crate) fn short_plan(cli: &Cli) -> Option<String> {
    let (d, n) = (cli.duration?, planned_snapshots(cli)?);
    (n < u128::from(SNAPSHOTS_TO_JUDGE)).then(|| {
        format!(
            "leak-record: warning: -d {d:?} at -i {:?} gives {n} snapshot{}, fewer than the \
             {SNAPSHOTS_TO_JUDGE} leak-report needs to judge growth (its leak gates exit 2 on \
             such a recording): {}",
            cli.interval,
            if n == 1 { "" } else { "s" },
            enough(d, cli.interval, "-d ")
        )
    })
}

/// Said at the end of a recording with fewer snapshots than leak-report judges growth from,
/// unless [`short_plan`] said it would be (the target ended the run, or a signal).
pub(crate) fn short_run(snapshots: u32, run: Duration, cli: &Cli) -> Option<String> {
    if snapshots == 0 || snapshots >= SNAPSHOTS_TO_JUDGE || short_plan(cli).is_some() {
        return None;
    }
    if run >= cli.interval * SNAPSHOTS_TO_JUDGE {
        // Long enough, yet the snapshots came late: leak-record was stopped or starved.
        return Some(format!(
            "leak-record: note: {snapshots} snapshot{} in {:.1} s at -i {:?}: snapshots were \
             late (leak-record was stopped, or starved of CPU), and fewer than the \
             {SNAPSHOTS_TO_JUDGE} leak-report needs to judge growth (its leak gates exit 2 on \
             this recording)",
            if snapshots == 1 { "" } else { "s" },
            run.as_secs_f64(),
            cli.interval
        ));
    }
    Some(format!(
        "leak-record: note: {snapshots} snapshot{} in {:.*} s, fewer than the \
         {SNAPSHOTS_TO_JUDGE} leak-report needs to judge growth (its leak gates exit 2 on this \
         recording): {}",
        if snapshots == 1 { "" } else { "s" },
        if run < Duration::from_secs(1) { 2 } else { 1 },
        run.as_secs_f64(),
        enough(run, cli.interval, "a run of ")
    ))
}

/// How a run of `run` gets `SNAPSHOTS_TO_JUDGE` snapshots: a shorter interval (in whole ms, at
/// least [`MIN_INTERVAL`]), or a longer run (`longer` names what to lengthen) at `interval` or,
/// when the run is too short for any, at the shortest.
fn enough(run: Duration, interval: Duration, longer: &str) -> String {
    let at = |i: Duration| format!("{longer}{:?} or more", i * SNAPSHOTS_TO_JUDGE);
    // Whole milliseconds, rounded down: the run then holds at least 13 whole intervals.
    let shorter = Duration::from_millis((run / SNAPSHOTS_TO_JUDGE).as_millis() as u64);
    if shorter >= MIN_INTERVAL {
        format!("use -i {shorter:?} or less, or {}", at(interval))
    } else if interval > MIN_INTERVAL {
        format!(
            "{} at -i {MIN_INTERVAL:?} (the shortest), or {} at -i {interval:?}",
            at(MIN_INTERVAL),
            at(interval)
        )
    } else {
        format!("{} (-i {MIN_INTERVAL:?} is the shortest)", at(interval))
    }
}

/// " to PATH every INTERVAL[ for DURATION]", for the line that says recording has begun.
pub(crate) fn destination(path: &Path, cli: &Cli) -> String {
    format!(
        " to {} every {:?}{}",
        output::name(path),
        cli.interval,
        cli.duration
            .map(|d| format!(" for {d:?}"))
            .unwrap_or_default()
    )
}

/// The end reason when a stop signal has arrived.
pub(crate) fn stop_requested() -> Option<EndReason> {
    let sig = STOP_SIGNAL.load(Ordering::SeqCst);
    (sig != 0).then_some(EndReason::Signal(sig))
}

/// When the next snapshot is due, every interval from the start, and when the duration ends.
pub(crate) struct Schedule {
    interval: Duration,
    deadline: Option<Instant>,
    next: Instant,
}

/// What `Schedule::due` found due.
pub(crate) enum Due {
    Nothing,
    Snapshot,
    End,
}

impl Schedule {
    pub(crate) fn new(started: Instant, cli: &Cli) -> Self {
        Schedule {
            interval: cli.interval,
            deadline: cli.duration.map(|d| started + d),
            next: started + cli.interval,
        }
    }

    /// How long to wait until the next snapshot or the end, at most `cap`.
    pub(crate) fn wait(&self, cap: Duration) -> Duration {
        let until = self.deadline.map_or(self.next, |d| d.min(self.next));
        until.saturating_duration_since(Instant::now()).min(cap)
    }

    /// What is due now: the end of the duration, else a snapshot (the next one is then
    /// scheduled, skipping any the caller was too late for), else nothing.
    pub(crate) fn due(&mut self) -> Due {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Due::End;
        }
        if now < self.next {
            return Due::Nothing;
        }
        while self.next <= now {
            self.next += self.interval;
        }
        Due::Snapshot
    }
}

/// Measures the cost of taking one snapshot, from `start` to `cost`.
pub(crate) struct CostMeter {
    t0: Instant,
    cpu0: u64,
}

impl CostMeter {
    pub(crate) fn start() -> Self {
        CostMeter {
            t0: Instant::now(),
            cpu0: procfs::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID),
        }
    }

    pub(crate) fn cost(&self, stacks_read: usize) -> SnapshotCost {
        SnapshotCost {
            wall_ns: self.t0.elapsed().as_nanos() as u64,
            cpu_ns: procfs::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(self.cpu0),
            stacks_read: stacks_read as u32,
        }
    }
}

/// The events lost so far, as the status line counts them: every loss counter that means lost
/// or misattributed data, and every event not recorded.
pub(crate) fn drops(losses: &Losses, unseen: &Unseen) -> u64 {
    losses.total_drops() + unseen.total()
}

/// Writes the allocator events not recorded so far (`Record::Unseen`) when they changed since
/// `last`, before the snapshot that counts them.
pub(crate) fn write_unseen(out: &mut RecordingFile, unseen: Unseen, last: Unseen) -> Result<()> {
    if unseen != last {
        out.write(&Record::Unseen(unseen))?;
    }
    Ok(())
}

/// Prints the status line of snapshot `seq`: elapsed time, `what` is outstanding, the drops.
/// What the status line puts before a figure: "~" when sampled (an estimate), else nothing.
pub(crate) fn estimate_mark(cli: &Cli) -> &'static str {
    if cli.sample_bytes.is_some() {
        "~"
    } else {
        ""
    }
}

pub(crate) fn print_status(started: Instant, seq: u32, what: &str, drops: u64, last_drops: u64) {
    let e = started.elapsed().as_secs();
    let new_drops = drops.saturating_sub(last_drops);
    let note = if new_drops > 0 {
        format!(" (+{new_drops}: see leak-report)")
    } else {
        String::new()
    };
    say!(
        "leak-record: {:02}:{:02}:{:02} snapshot {seq} | {what} | drops {drops}{note}",
        e / 3600,
        e / 60 % 60,
        e % 60,
    );
}

pub(crate) fn describe(reason: &EndReason) -> String {
    match reason {
        EndReason::Duration => "duration elapsed".into(),
        EndReason::Signal(s) => format!("signal {s}"),
        EndReason::TargetExited { code: Some(c), .. } => format!("target exited with status {c}"),
        EndReason::TargetExited {
            signal: Some(s), ..
        } => match leak_format::units::signal_name(*s) {
            Some(name) => format!("target killed by signal {s} ({name})"),
            None => format!("target killed by signal {s}"),
        },
        EndReason::TargetExited { .. } => "target exited".into(),
        EndReason::Error(e) => format!("error: {e}"),
    }
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    leak_format::units::human_bytes(n as f64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
    use super::*;
    use leak_format::{Reader, RecordingBuilder, RecordingState};

    fn cli(args: &[&str]) -> Cli {
        use clap::Parser;
        Cli::try_parse_from([&["leak-record"], args, &["--", "prog"]].concat()).unwrap()
    }

    /// -d at -i is said when it gives fewer than the 13 snapshots leak-report judges from, with
    /// an -i and a -d that give enough; a run that ended early is said at the end instead.
    #[test]
    fn a_recording_too_short_to_judge_is_said_with_what_gives_enough() {
        assert_eq!(
            short_plan(&cli(&["-d", "30s", "-i", "10s"])).as_deref(),
            Some(
                "leak-record: warning: -d 30s at -i 10s gives 3 snapshots, fewer than the 13 \
                 leak-report needs to judge growth (its leak gates exit 2 on such a recording): \
                 use -i 2.307s or less, or -d 130s or more"
            )
        );
        // Each suggestion gives at least 13 whole intervals: 30 s / 2.307 s and 130 s / 10 s
        // (13 snapshots from 2.308 s on, the last of them a partial interval).
        assert_eq!(
            planned_snapshots(&cli(&["-d", "30s", "-i", "2.307s"])),
            Some(14)
        );
        assert_eq!(
            planned_snapshots(&cli(&["-d", "130s", "-i", "10s"])),
            Some(13)
        );
        // One interval short of enough, and enough: a partial interval ends with a snapshot.
        assert!(short_plan(&cli(&["-d", "1.2s", "-i", "100ms"])).is_some());
        assert_eq!(short_plan(&cli(&["-d", "1.201s", "-i", "100ms"])), None);
        assert_eq!(
            short_plan(&cli(&["-i", "1s"])),
            None,
            "no -d: nothing planned"
        );
        // Too short for the shortest -i: only a longer run helps.
        assert_eq!(
            short_plan(&cli(&["-d", "1s", "-i", "100ms"])).as_deref(),
            Some(
                "leak-record: warning: -d 1s at -i 100ms gives 10 snapshots, fewer than the 13 \
                 leak-report needs to judge growth (its leak gates exit 2 on such a recording): \
                 -d 1.3s or more (-i 100ms is the shortest)"
            )
        );
        // The command ended the run after 3 snapshots of the default 5 s.
        let run = Duration::from_millis(14_200);
        assert_eq!(
            short_run(3, run, &cli(&[])).as_deref(),
            Some(
                "leak-record: note: 3 snapshots in 14.2 s, fewer than the 13 leak-report needs \
                 to judge growth (its leak gates exit 2 on this recording): use -i 1.092s or \
                 less, or a run of 65s or more"
            )
        );
        assert_eq!(short_run(13, run, &cli(&[])), None);
        assert_eq!(
            short_run(0, run, &cli(&[])),
            None,
            "said as an error instead"
        );
        // Said once: at the start when -d was too short.
        assert_eq!(short_run(3, run, &cli(&["-d", "15s"])), None);
        assert!(short_run(3, run, &cli(&["-d", "1h"])).is_some());
        // A run long enough whose snapshots came late.
        assert_eq!(
            short_run(10, Duration::from_secs(20), &cli(&["-i", "1s"])).as_deref(),
            Some(
                "leak-record: note: 10 snapshots in 20.0 s at -i 1s: snapshots were late \
                 (leak-record was stopped, or starved of CPU), and fewer than the 13 leak-report \
                 needs to judge growth (its leak gates exit 2 on this recording)"
            )
        );
        // A command that ended at once: the shortest -i needs a run of 1.3 s.
        assert_eq!(
            short_run(1, Duration::from_millis(40), &cli(&["-i", "1s"])).as_deref(),
            Some(
                "leak-record: note: 1 snapshot in 0.04 s, fewer than the 13 leak-report needs \
                 to judge growth (its leak gates exit 2 on this recording): a run of 1.3s or \
                 more at -i 100ms (the shortest), or a run of 13s or more at -i 1s"
            )
        );
    }

    /// A tmpfs mounted on a fresh directory, unmounted however the test ends.
    struct Tmpfs(tempfile::TempDir);

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    /// Both sessions write through RecordingFile: a record whose write fails part way is cut
    /// off, and the next one (the end record) starts at the cut, not after a hole of zeros
    /// that a reader would take for a damaged tail.
    #[test]
    fn a_failed_write_is_cut_off_and_the_next_record_starts_at_the_cut() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "this test mounts a tmpfs: CI must run it as root"
            );
            say!("skipping: not root (the test mounts a tmpfs)");
            return;
        }
        let fs = Tmpfs(tempfile::tempdir().unwrap());
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "leak-test-cut"])
            .arg(fs.0.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs");
        let path = fs.0.path().join("run.zst");
        let header = RecordingBuilder::new().header_mut().clone();
        let mut out =
            RecordingFile::start(File::create(&path).unwrap(), &path, &header, None).unwrap();
        // Something else takes every free page; the recording's page has room left.
        let filler = fs.0.path().join("filler");
        let mut f = File::create(&filler).unwrap();
        while std::io::Write::write(&mut f, &[0u8; 4096]).is_ok_and(|n| n > 0) {}
        drop(f);
        // Incompressible data (splitmix64), larger than what is left: written in part.
        let mut x = 0u64;
        let data: Vec<u8> = (0..64 * 1024 / 8)
            .flat_map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)).to_ne_bytes()
            })
            .collect();
        let good = std::fs::metadata(&path).unwrap().len();
        let chunk = BundleChunk {
            module: 0,
            content: BundleContent::ElfFile,
            total_len: data.len() as u64,
            offset: 0,
            data,
        };
        let err = out.write(&Record::Bundle(chunk)).unwrap_err();
        assert!(format!("{err:#}").contains("No space left"), "{err:#}");
        // Before the first snapshot there is no previous one to keep.
        assert!(
            format!("{err:#}").contains("no snapshot had been written yet"),
            "{err:#}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good, "cut back");
        // Space comes back: the end record goes where the failed record began.
        std::fs::remove_file(&filler).unwrap();
        out.end(EndReason::Duration, 0).unwrap();
        let (state, tail) = RecordingState::read(Reader::open(&path).unwrap()).unwrap();
        assert!(tail.is_none(), "{tail:?}");
        assert_eq!(state.end.map(|e| e.reason), Some(EndReason::Duration));
        drop(out);
    }
}
