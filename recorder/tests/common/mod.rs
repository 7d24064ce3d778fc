//! The harness shared by the recorder's end-to-end tests: root/BPF detection, the fixtures
//! (built once per test binary by fixtures/build.sh), running leak-record and reading back
//! what it wrote, and naming the function at a frame.
#![allow(dead_code)] // each test binary uses its own part of the harness
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use leak_format::{AllocKind, Error, Reader, RecordingState, TargetMode};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

pub const RECORDER: &str = env!("CARGO_BIN_EXE_leak-record");

/// True under CI (CI=true or CI=1), where a BPF test may not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when BPF tests can run; false (after saying why) when they may be skipped.
pub fn bpf_ready() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let reason = if !root {
        Some("not root")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)")
    } else {
        None
    };
    match reason {
        None => true,
        Some(why) if in_ci() => {
            panic!("BPF test cannot run in CI: {why}; CI must run these tests as root")
        }
        Some(why) => {
            eprintln!("skipping BPF test: {why}");
            false
        }
    }
}

/// The fixture binaries, built once per test run.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new("bash")
            .arg(root.join("fixtures/build.sh"))
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("run fixtures/build.sh");
        assert!(status.success(), "fixtures/build.sh failed");
        out
    })
}

pub fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// A finished recording, read back.
pub struct Recorded {
    pub state: RecordingState,
    pub tail: Option<Error>,
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub bytes: u64,
    pub count: u64,
    pub allocs: u64,
    pub frees: u64,
    pub stacks: usize,
}

/// (file offset, size, name) of each function symbol of a module.
pub type SymbolTable = Vec<(u64, u64, String)>;

/// The function containing the call before a return address in a module.
pub fn function_at(path: &str, file_offset: u64) -> Option<String> {
    // Frames are return addresses: the call is at offset - 1.
    let target = file_offset.checked_sub(1)?;
    with_symbols(path, |syms| {
        syms.iter()
            .find(|(start, size, _)| target >= *start && target < start + size)
            .map(|(_, _, name)| name.clone())
    })?
}

/// The file offset of a function symbol of a module.
pub fn symbol_offset(path: &str, name: &str) -> Option<u64> {
    with_symbols(path, |syms| {
        syms.iter()
            .find(|(_, _, n)| n == name || n.split('@').next() == Some(name))
            .map(|(start, ..)| *start)
    })?
}

/// Runs `f` on the (cached) function symbols of a module.
fn with_symbols<T>(path: &str, f: impl FnOnce(&SymbolTable) -> T) -> Option<T> {
    static CACHE: OnceLock<std::sync::Mutex<HashMap<String, SymbolTable>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    if !cache.contains_key(path) {
        let data = fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let mut syms = Vec::new();
        let segs: Vec<(u64, u64, u64)> = file
            .segments()
            .map(|s| (s.file_range().0, s.file_range().1, s.address()))
            .collect();
        for s in file.symbols().chain(file.dynamic_symbols()) {
            if s.kind() == SymbolKind::Text && s.size() > 0 {
                // Store symbols by file offset: vaddr -> offset through the segment holding it.
                if let Some(&(off, _, addr)) = segs
                    .iter()
                    .find(|(_, size, addr)| s.address() >= *addr && s.address() < addr + size)
                {
                    let start = s.address() - addr + off;
                    syms.push((start, s.size(), s.name().unwrap_or("").to_string()));
                }
            }
        }
        cache.insert(path.to_string(), syms);
    }
    Some(f(&cache[path]))
}

impl Recorded {
    /// (module, file offset) of the entry probe of `function`.
    pub fn entry_probe(&self, function: &str) -> (String, u64) {
        self.probe(function, leak_format::ProbeSide::Entry)
    }

    /// Module and file offset of `function`'s probe on `side`, from the header.
    pub fn probe(&self, function: &str, side: leak_format::ProbeSide) -> (String, u64) {
        let h = self.state.header.as_ref().expect("header");
        let p = h
            .probes
            .iter()
            .find(|p| p.function == function && p.side == side)
            .unwrap_or_else(|| panic!("no {side:?} probe on {function}: {:?}", h.probes));
        (p.module.clone(), p.offset)
    }

    /// Name of the innermost frame's function of each stack.
    pub fn innermost(&self, stack: u32) -> Option<String> {
        let (path, offset) = self.innermost_frame(stack)?;
        function_at(path, offset)
    }

    /// Module path and file offset of a stack's innermost frame.
    pub fn innermost_frame(&self, stack: u32) -> Option<(&str, u64)> {
        let f = self.state.stacks.get(&stack)?.frames.first()?;
        let m = self.state.modules.get(&f.module?)?;
        Some((m.path.as_str(), f.offset))
    }

    /// The one stack with outstanding bytes whose innermost function is `name` (panics, with
    /// the recorder's stderr, unless there is exactly one).
    pub fn stack_of(&self, name: &str) -> &leak_format::Stack {
        self.one_stack_of(name, |t| t.outstanding_bytes() > 0)
    }

    /// The one stack whose innermost function is `name`, whatever its counters (panics unless
    /// there is exactly one).
    pub fn any_stack_of(&self, name: &str) -> &leak_format::Stack {
        self.one_stack_of(name, |_| true)
    }

    fn one_stack_of(
        &self,
        name: &str,
        keep: impl Fn(&leak_format::StackTotals) -> bool,
    ) -> &leak_format::Stack {
        let ids: Vec<u32> = self
            .state
            .totals
            .iter()
            .filter(|((id, _), t)| keep(t) && self.innermost(*id).as_deref() == Some(name))
            .map(|((id, _), _)| *id)
            .collect();
        assert_eq!(ids.len(), 1, "{name}: {ids:?}\n{}", self.stderr);
        &self.state.stacks[&ids[0]]
    }

    /// Sums the heap counters of every stack whose innermost function matches `name`.
    pub fn by_function(&self, name: &str) -> Totals {
        self.by_function_of(AllocKind::Heap, name)
    }

    /// Sums the `kind` counters of every stack whose innermost function matches `name`.
    pub fn by_function_of(&self, of: AllocKind, name: &str) -> Totals {
        let mut t = Totals::default();
        for ((stack, kind), s) in &self.state.totals {
            if *kind != of {
                continue;
            }
            let Some(f) = self.innermost(*stack) else {
                continue;
            };
            if f == name || (name.contains("::") && f.contains(name.rsplit("::").next().unwrap())) {
                t.bytes += s.outstanding_bytes();
                t.count += s.outstanding_count();
                t.allocs += s.alloc_count;
                t.frees += s.free_count;
                t.stacks += 1;
            }
        }
        t
    }

    /// Outstanding (bytes, blocks) over every stack of the recording.
    pub fn outstanding(&self) -> (u64, u64) {
        let all = self.state.totals.values();
        let bytes = all.clone().map(|s| s.outstanding_bytes()).sum();
        (bytes, all.map(|s| s.outstanding_count()).sum())
    }

    pub fn modules_of_probe(&self, function: &str) -> Vec<String> {
        let h = self.state.header.as_ref().expect("header");
        h.probes
            .iter()
            .filter(|p| p.function == function && p.side == leak_format::ProbeSide::Entry)
            .map(|p| p.module.clone())
            .collect()
    }

    pub fn assert_clean(&self) {
        assert_eq!(self.code, Some(0), "leak-record failed:\n{}", self.stderr);
        assert!(self.tail.is_none(), "recording tail: {:?}", self.tail);
        assert!(self.state.end.is_some(), "no end record");
        assert!(self.state.snapshots >= 1);
        // Uprobes are never skipped, and nothing else holds a user-mode table: every event
        // was seen (kernel mode is another matter).
        if !self
            .state
            .header
            .as_ref()
            .is_some_and(|h| h.target.mode == TargetMode::Kernel)
        {
            assert_eq!(self.state.unseen, leak_format::Unseen::default());
        }
    }

    /// The truths of `leaky basic K S` recorded exactly: leak_here holds K blocks of S bytes,
    /// and churn_balanced's 5000 pairs were all seen and all freed.
    pub fn assert_leaky_basic(&self, k: u64, s: u64) {
        let leak = self.by_function("leak_here");
        assert_eq!((leak.bytes, leak.count), (k * s, k), "{}", self.stderr);
        let churn = self.by_function("churn_balanced");
        let seen = (churn.bytes, churn.count, churn.allocs, churn.frees);
        assert_eq!(seen, (0, 0, 5000, 5000), "{}", self.stderr);
    }

    /// The truths of `leaky paths 10` recorded exactly (`who` names the run in messages):
    /// each allocation function's ten blocks on its own stack with their exact sizes; the
    /// blocks realloc moved freed on their seed's stack; a failed posix_memalign recording
    /// nothing; a failed realloc keeping its block, whose later free is seen; realloc(p, 0)
    /// as `realloc_zero` (allocs, frees) on its stack; and no drops.
    pub fn assert_leaky_paths(&self, who: &str, realloc_zero: (u64, u64)) {
        self.assert_clean();
        for (function, size) in [
            ("leak_calloc", 300),
            ("leak_realloc", 5000),
            ("leak_reallocarray", 700),
            ("leak_posix_memalign", 1000),
            ("leak_aligned_alloc", 2048),
            ("leak_memalign", 3000),
            ("leak_valloc", 4000),
        ] {
            let t = self.by_function(function);
            assert_eq!(
                (t.bytes, t.count),
                (10 * size, 10),
                "{who} {function}: {t:?}"
            );
        }
        let seed = self.by_function("seed_for_realloc");
        let seed_seen = (seed.bytes, seed.allocs, seed.frees);
        assert_eq!(seed_seen, (0, 10, 10), "{who}: {seed:?}");
        let failed_memalign = self.by_function("failed_posix_memalign");
        assert_eq!(failed_memalign, Totals::default(), "{who}");
        let failed = self.by_function("failed_realloc");
        let failed_seen = (failed.bytes, failed.allocs, failed.frees);
        assert_eq!(failed_seen, (0, 1, 1), "{who}: {failed:?}");
        let zero = self.by_function("realloc_to_zero");
        let (allocs, frees) = realloc_zero;
        let zero_seen = (zero.bytes, zero.allocs, zero.frees);
        assert_eq!(zero_seen, (0, allocs, frees), "{who}: {zero:?}");
        let l = self.state.losses;
        assert_eq!(l.total_drops(), 0, "{who}: {l:?}");
    }
}

pub fn read_recording(path: &Path) -> (RecordingState, Option<Error>) {
    let reader = Reader::open(path).expect("recording has a valid preamble");
    RecordingState::read(reader).expect("recording reads")
}

/// True when leak-record says the kernel has uprobe sessions (Linux >= 6.13); false (after
/// saying so) where it has not, outside CI. CI runs on a kernel that has them.
pub fn sessions_in_kernel(stderr: &str) -> bool {
    if !stderr.contains("this kernel has no uprobe sessions") {
        return true;
    }
    assert!(
        !in_ci(),
        "CI runs on a kernel with uprobe sessions:\n{stderr}"
    );
    eprintln!("skipping: this kernel has no uprobe sessions");
    false
}

/// Runs leak-record with `args`, then `-- cmd`, and reads the recording back.
pub fn record(args: &[&str], cmd: &[&str]) -> Recorded {
    record_with_env(&[], &[args, &["--"], cmd].concat())
}

/// Runs leak-record with the variables `env` set and `args` (any command after `--` in them),
/// and reads the recording back.
pub fn record_with_env(env: &[(&str, &str)], args: &[&str]) -> Recorded {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.zst");
    let output = Command::new(RECORDER)
        .envs(env.iter().copied())
        .args(["-o", out.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run leak-record");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(out.exists(), "no recording written:\n{stderr}");
    let (state, tail) = read_recording(&out);
    Recorded {
        state,
        tail,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
        code: output.status.code(),
    }
}

/// A recorder started in the background, its stderr readable line by line.
pub struct Running {
    pub child: std::process::Child,
    pub stderr: BufReader<std::process::ChildStderr>,
    pub out: PathBuf,
    pub _dir: tempfile::TempDir,
}

/// Starts leak-record writing to a fresh file, with `args` (including any `-- CMD`).
pub fn start_recorder(args: &[&str]) -> Running {
    start_recorder_with_env(&[], args)
}

/// `start_recorder` with the variables `env` set.
pub fn start_recorder_with_env(env: &[(&str, &str)], args: &[&str]) -> Running {
    spawn_recorder(env, args, false)
}

/// `start_recorder_with_env` with stdin and stdout piped too (`child.stdin`, `child.stdout`):
/// those of a command it starts.
pub fn start_recorder_piped(env: &[(&str, &str)], args: &[&str]) -> Running {
    spawn_recorder(env, args, true)
}

fn spawn_recorder(env: &[(&str, &str)], args: &[&str], piped: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.zst");
    let stdio = || {
        if piped {
            Stdio::piped()
        } else {
            Stdio::inherit()
        }
    };
    // Its own process group in the test's session, as a shell runs a job: never orphaned
    // (its parent, the test, is in another group of the same session), so the kernel delivers
    // job-control stops (SIGTSTP) to a command it starts instead of discarding them.
    let mut child = Command::new(RECORDER)
        .envs(env.iter().copied())
        .args(["-o", out.to_str().unwrap()])
        .args(args)
        .stdin(stdio())
        .stdout(stdio())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    Running {
        child,
        stderr,
        out,
        _dir: dir,
    }
}

impl Running {
    /// Waits for the recorder to end (its target gone), then reads the rest of its stderr and
    /// the recording.
    pub fn finish(mut self) -> Recorded {
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stderr, &mut stderr);
        let (state, tail) = read_recording(&self.out);
        Recorded {
            state,
            tail,
            stdout: String::new(),
            stderr,
            code: status.code(),
        }
    }
}

/// Reads lines from `r` until one contains `needle`; panics at end of file, or once `limit`
/// has passed, also while the other end is silent (a wait in `poll`, not a blocking read: a
/// process that hangs fails the test instead of hanging it).
pub fn wait_for_line<R: Read + AsRawFd>(
    r: &mut BufReader<R>,
    needle: &str,
    limit: Duration,
    what: &str,
) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = String::new();
    let mut line = Vec::new();
    loop {
        if r.buffer().is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fd = libc::pollfd {
                fd: r.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: fd points to one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut fd, 1, ms) };
            if ready < 0 {
                continue; // EINTR: wait again for what is left
            }
            if ready == 0 {
                seen.push_str(&String::from_utf8_lossy(&line));
                panic!("{what}: no line containing {needle:?} within {limit:?}; got:\n{seen}");
            }
        }
        let buf = r.fill_buf().unwrap_or(&[]);
        // The end of file ends the last line, with or without its newline.
        let eof = buf.is_empty();
        let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), eof),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if complete {
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            seen.push_str(&text);
            if text.contains(needle) {
                return seen;
            }
        }
        if eof {
            panic!("{what}: no line containing {needle:?} before end of file; got:\n{seen}");
        }
    }
}

/// Starts a fixture (`args[0]`, with --wait-start) that prints "ready" and then waits for a
/// line on stdin; returns it with its stdout once it is ready.
pub fn spawn_waiting(args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    spawn_until(args, "ready")
}

/// Waits (at most 10 s) until a child's memory map holds libc, or it has exited: a process
/// just started may not have mapped it yet, and `-p` then finds no allocator.
pub fn wait_for_libc(child: &mut Child) {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("libc.so"))
        && child.try_wait().unwrap().is_none()
    {
        assert!(Instant::now() < deadline, "PID {pid} never mapped libc");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts a fixture with stdin and stdout piped and waits until it prints a line containing
/// `line`.
pub fn spawn_until(args: &[&str], line: &str) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, line, Duration::from_secs(10), args[0]);
    (child, out)
}

/// Copies the program `src` to `dst` with `cp`, in a child process, so that this process never
/// holds a descriptor open for writing on a file it will run. The test harness forks from
/// several threads at once: a fork from another thread while `fs::copy` had `dst` open would
/// carry the writable descriptor into that child until its own exec, and an exec of `dst`
/// in that window fails with ETXTBSY ("Text file busy"). O_CLOEXEC does not close that window.
pub fn copy_program(src: &Path, dst: &Path) {
    let status = Command::new("cp")
        .arg("--")
        .arg(src)
        .arg(dst)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp {} {}: {status}",
        src.display(),
        dst.display()
    );
}

/// A tmpfs mounted for the test, unmounted however the test ends.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("leak-test-full")
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    /// Something else fills the disk: every free page goes to a filler file.
    pub fn fill(&self) {
        let mut filler = fs::File::create(self.0.join("filler")).unwrap();
        let page = [0u8; 4096];
        while filler.write(&page).is_ok_and(|n| n > 0) {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A recording stopped by a full disk, on its still-mounted tmpfs.
pub struct FullDisk {
    pub state: RecordingState,
    pub out: PathBuf,
    /// The one line that says what happened.
    pub error: String,
    pub tmpfs: Tmpfs,
    pub _dir: tempfile::TempDir,
}

/// Runs leak-record with `args` (`-o` is added) writing to a tmpfs of `size`, which something
/// else fills once 2 snapshots are written, and checks that the recorder stops as it must:
/// exit status 1 and one line (besides those containing one of `status_lines`) saying what
/// happened and that the file is kept; the file holds every snapshot that fitted, reads to its
/// end, and an end record, if it has one, names the error.
pub fn record_onto_full_disk(args: &[&str], size: &str, status_lines: &[&str]) -> FullDisk {
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(dir.path(), size);
    let out = tmpfs.0.join("run.zst");
    let mut rec = Command::new(RECORDER)
        .arg("-o")
        .arg(&out)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(rec.stderr.take().unwrap());
    let mut seen = wait_for_line(&mut err, "snapshot 2 ", Duration::from_secs(60), "recorder");
    // The recording's last page has room for a few more snapshots.
    tmpfs.fill();
    let status = wait_exit(
        &mut rec,
        Duration::from_secs(60),
        "the recorder did not stop on a full disk",
    );
    std::io::Read::read_to_string(&mut err, &mut seen).unwrap();
    // Runtime failure: status 1, one line saying what happened and that the file is kept.
    assert_eq!(status.code(), Some(1), "{seen}");
    let errors: Vec<&str> = seen
        .lines()
        .filter(|l| !status_lines.iter().any(|s| l.contains(s)))
        .collect();
    assert_eq!(errors.len(), 1, "{seen}");
    assert!(
        errors[0].contains("No space left on device")
            && errors[0].contains("the recording up to the previous snapshot is kept"),
        "{seen}"
    );
    let (state, tail) = read_recording(&out);
    assert!(tail.is_none(), "{tail:?}");
    assert!(state.snapshots >= 2, "{}", state.snapshots);
    if let Some(e) = &state.end {
        assert!(
            matches!(&e.reason, leak_format::EndReason::Error(m) if m.contains("No space left")),
            "{e:?}"
        );
    }
    FullDisk {
        state,
        out,
        error: errors[0].to_string(),
        tmpfs,
        _dir: dir,
    }
}

/// Waits for `child` to exit; panics with `what` after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run_recorder(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(RECORDER)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
