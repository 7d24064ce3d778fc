//! The traced process: a running one (`-p`), or a command started here and held before exec
//! until every probe is attached, so its first allocation is recorded and nothing of the
//! recorder's own forked image is.
use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::UsageError;

/// Finds a command like execvp would: a name with a slash is a path, else search PATH.
pub fn resolve_command(name: &str) -> Result<PathBuf> {
    let is_exec = |p: &Path| {
        let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: c is a valid NUL-terminated string.
        p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        if is_exec(&p) {
            return Ok(p);
        }
        bail!(UsageError(not_executable(name, &p)));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if is_exec(&candidate) {
            return Ok(candidate);
        }
    }
    bail!(UsageError(format!(
        "command not found: {name} (searched PATH); give its path or fix PATH"
    )))
}

/// Why the path `name` cannot be executed, and what to do.
fn not_executable(name: &str, p: &Path) -> String {
    match std::fs::metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            format!("cannot execute {name}: no such file; check the path")
        }
        Err(e) => format!("cannot execute {name}: {e}"),
        Ok(m) if m.is_dir() => format!("cannot execute {name}: it is a directory; name a program"),
        Ok(m) if !m.is_file() => {
            format!("cannot execute {name}: not a regular file; name a program")
        }
        Ok(_) => format!(
            "cannot execute {name}: permission denied (not executable, or on a noexec mount); \
             chmod +x it, or run it through its interpreter"
        ),
    }
}

/// Most `#!` scripts run through one another before a program (the kernel allows a few).
const MAX_SCRIPT_DEPTH: usize = 4;

/// The bytes of a `#!` line the kernel reads (`BINPRM_BUF_SIZE`).
const SCRIPT_LINE_MAX: usize = 256;

/// What the kernel runs when it execs `path`: the program itself, or for a `#!` script its
/// interpreter, followed through interpreters that are scripts too, as the kernel does. The
/// program (an ELF file) and, for each script on the way, `script` -> `its #! line`.
pub fn program_of(path: &Path) -> Result<(PathBuf, Vec<String>)> {
    let mut current = path.to_path_buf();
    let mut chain = Vec::new();
    loop {
        let mut head = Vec::with_capacity(SCRIPT_LINE_MAX);
        std::fs::File::open(&current)
            .and_then(|f| f.take(SCRIPT_LINE_MAX as u64).read_to_end(&mut head))
            .with_context(|| format!("cannot read {}", current.display()))?;
        if head.starts_with(b"\x7fELF") {
            return Ok((current, chain));
        }
        // The kernel's buffer holds zeros past a shorter file: its end ends the line too.
        if head.len() < SCRIPT_LINE_MAX {
            head.push(0);
        }
        let shown = current.display();
        let Some(line) = head.strip_prefix(b"#!") else {
            bail!(UsageError(format!(
                "{shown} is neither a program (ELF) nor a script (#!), so it cannot be executed; \
                 give the program that runs it (e.g. -- sh {shown})"
            )));
        };
        let (interpreter, argument) = parse_script_line(line).ok_or_else(|| {
            UsageError(format!(
                "{shown} starts with #! but names no interpreter within its first {} bytes; \
                 fix its first line",
                SCRIPT_LINE_MAX
            ))
        })?;
        if chain.len() == MAX_SCRIPT_DEPTH {
            bail!(UsageError(format!(
                "{} runs through more than {MAX_SCRIPT_DEPTH} #! scripts; give the program at \
                 the end of the chain",
                path.display()
            )));
        }
        let next = PathBuf::from(&interpreter);
        if !next.is_file() {
            if let Some(unix) = interpreter.strip_suffix('\r') {
                bail!(UsageError(format!(
                    "{shown} has DOS line endings: its #! line names \"{unix}\\r\", which does \
                     not exist; convert the file (e.g. dos2unix {shown})"
                )));
            }
            bail!(UsageError(format!(
                "{shown} is a script for {interpreter}, which does not exist; fix its #! line \
                 or install the interpreter"
            )));
        }
        chain.push(format!(
            "{shown} -> #!{interpreter}{}",
            argument.map(|a| format!(" {a}")).unwrap_or_default()
        ));
        current = next;
    }
}

/// The interpreter and its optional argument on a `#!` line (after the `#!`), read as the
/// kernel reads them: the line ends at a newline or a zero byte; blanks around the
/// interpreter, which ends at a blank; the rest of the line, trimmed, is one argument. None if
/// there is no interpreter, or the line does not end within the bytes the kernel reads and the
/// interpreter's name reaches their end.
fn parse_script_line(line: &[u8]) -> Option<(String, Option<String>)> {
    let end = line.iter().position(|&b| b == b'\n' || b == 0);
    let text = &line[..end.unwrap_or(line.len())];
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = text.iter().position(|b| !blank(b))?;
    let text = &text[start..];
    let name_end = text.iter().position(blank);
    if end.is_none() && name_end.is_none() {
        return None;
    }
    let name_end = name_end.unwrap_or(text.len());
    let interpreter = String::from_utf8_lossy(&text[..name_end]).into_owned();
    let rest = String::from_utf8_lossy(&text[name_end..]);
    let rest = rest.trim_matches([' ', '\t']);
    Some((interpreter, (!rest.is_empty()).then(|| rest.to_string())))
}

/// A forked child blocked before exec until [`HeldChild::release`].
#[derive(Debug)]
pub struct HeldChild {
    pub pid: u32,
    go: Option<OwnedFd>,
    exec_error: OwnedFd,
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| UsageError("arguments must not contain NUL bytes".into()).into())
}

/// Forks a child that waits for the go signal, then execs `path` with `args` (argv[0] first)
/// and the recorder's environment; it is killed if the recorder dies. Everything the child
/// needs is prepared before the fork: it only calls prctl, getppid, signal, sigprocmask, read,
/// execve, write and _exit, none of which allocate.
pub fn spawn_held(path: &Path, args: &[String]) -> Result<HeldChild> {
    let path_c = cstring(path.as_os_str())?;
    let argv_c: Vec<CString> = args
        .iter()
        .map(|a| cstring(OsStr::new(a)))
        .collect::<Result<_>>()?;
    let env_c: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .filter_map(Result::ok)
        .collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (go_read, go_write) = pipe_cloexec().context("cannot create a pipe")?;
    let (err_read, err_write) = pipe_cloexec().context("cannot create a pipe")?;

    // SAFETY: getpid has no preconditions.
    let recorder = unsafe { libc::getpid() };
    // SAFETY: the recorder is single-threaded here (nothing has spawned threads yet), and the
    // child below only calls async-signal-safe functions on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).context("cannot fork");
    }
    if pid == 0 {
        // SAFETY: child side of fork: raw syscalls on descriptors and buffers that are valid in
        // the child's copy of the address space; never returns.
        unsafe {
            libc::close(go_write.as_raw_fd());
            // The command dies with the recorder (SIGKILL'd, e.g. by `timeout -s KILL`): an
            // orphan would run on untraced and unrecorded, holding a CI job's pipes open. The
            // setting survives exec (not a set-user-ID one). The thread that forked is the
            // recorder's main thread, which lives as long as the process.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != recorder {
                libc::_exit(127); // the recorder died before the line above
            }
            // The command starts with the signal state a shell would give it: the Rust
            // runtime ignores SIGPIPE, and an ignored signal stays ignored across exec
            // (`yes | head -1` would then end `yes` with EPIPE, status 1, instead of SIGPIPE,
            // 141). std's Command resets it the same way; this fork does not use Command.
            // The recorder also ignores SIGXFSZ (record::defer_stop_signals).
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            let mut byte = 0u8;
            let n = libc::read(go_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                libc::execve(path_c.as_ptr(), argv.as_ptr(), envp.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(err_write.as_raw_fd(), (&errno as *const i32).cast(), 4);
            }
            libc::_exit(127);
        }
    }
    drop(go_read);
    drop(err_write);
    Ok(HeldChild {
        pid: pid as u32,
        go: Some(go_write),
        exec_error: err_read,
    })
}

impl HeldChild {
    /// Lets the child exec; fails if exec failed. With `watch` (the child is traced), its stops
    /// until the exec are handled meanwhile, and it is resumed from the exec stop: a child
    /// stopped (SIGSTOP, Ctrl-Z) or signalled before its exec waits for its tracer, which
    /// waited for the exec before (a hang for good). `give_up` ends the wait for a child
    /// that stays stopped, when a stop signal came for the recorder.
    pub fn release(
        &mut self,
        name: &str,
        watch: Option<&mut ExitWatch>,
        give_up: &dyn Fn() -> bool,
    ) -> Result<()> {
        let Some(go) = self.go.take() else {
            return Ok(());
        };
        let byte = 1u8;
        // SAFETY: go is an open pipe write end; byte is a valid 1-byte buffer.
        let n = unsafe { libc::write(go.as_raw_fd(), (&byte as *const u8).cast(), 1) };
        drop(go);
        if n != 1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPIPE) {
                // It was killed while held: the session finds it ended, and ends the recording
                // with its status.
                return Ok(());
            }
            bail!("cannot start {name}: {e}");
        }
        // The exec's outcome is known once the child passed its exec (the write end closes
        // at a successful one, CLOEXEC) or exited (after writing errno). Waited for only then.
        let passed = watch.is_none_or(|w| w.run_first_exec(give_up));
        if !passed && !poll_readable(&self.exec_error, 0) {
            return Ok(());
        }
        let mut errno = 0i32;
        // SAFETY: exec_error is an open pipe read end; errno is a valid 4-byte buffer.
        let n = unsafe {
            libc::read(
                self.exec_error.as_raw_fd(),
                (&mut errno as *mut i32).cast(),
                4,
            )
        };
        if n == 4 {
            let _ = wait(self.pid, 0);
            bail!(UsageError(format!(
                "cannot execute {name}: {}",
                io::Error::from_raw_os_error(errno)
            )));
        }
        Ok(())
    }

    /// How the child ended, if it ended while it was held (killed: Ctrl-C to the job during
    /// the set-up). Reaps it.
    pub fn ended_before_start(&mut self) -> Option<ExitStatus> {
        self.go.as_ref()?;
        let status = wait(self.pid, libc::WNOHANG).ok().flatten()?;
        self.go = None;
        Some(status)
    }

    /// Ends a child that was never released (setup failed).
    pub fn abandon(&mut self) {
        if self.go.take().is_some() {
            let _ = wait(self.pid, 0); // it reads EOF and exits 127
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// waitpid; `Ok(None)` if `WNOHANG` was given and the child is still running.
pub fn wait(pid: u32, flags: i32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid int for waitpid to fill.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, flags) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        let exit = if libc::WIFEXITED(status) {
            ExitStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else {
            ExitStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        };
        return Ok(Some(exit));
    }
}

/// A pidfd: becomes readable when the process exits (works for non-children too).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until `fd` is readable or `timeout_ms` passes (or a signal arrives). True if readable.
pub fn poll_readable(fd: &OwnedFd, timeout_ms: i32) -> bool {
    poll_readable_or(fd, &[], timeout_ms)
}

/// [`poll_readable`], also woken when one of `also` is readable; true only if `fd` is.
pub fn poll_readable_or(fd: &OwnedFd, also: &[BorrowedFd<'_>], timeout_ms: i32) -> bool {
    let polled = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut p: Vec<libc::pollfd> = std::iter::once(fd.as_raw_fd())
        .chain(also.iter().map(|f| f.as_raw_fd()))
        .map(polled)
        .collect();
    // SAFETY: p is a valid pollfd array of its length.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    r > 0 && p[0].revents != 0
}

/// The write end of [`child_wake`]'s pipe, -1 until it exists.
static CHILD_WAKE: AtomicI32 = AtomicI32::new(-1);

/// For the SIGCHLD handler: makes [`child_wake`] readable. Async-signal-safe.
pub fn wake_on_child_signal() {
    let fd = CHILD_WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) and errno are async-signal-safe; the byte is a valid 1-byte buffer;
        // errno is restored so that the interrupted code's check of it is unchanged. A full
        // pipe (non-blocking) already wakes the poll: the lost byte does not matter.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, [1u8].as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// A descriptor that becomes readable at every SIGCHLD (once the handler calls
/// [`wake_on_child_signal`]), whichever thread the signal is delivered to. A signal
/// interrupting poll() was not enough: one that came between the handling of the child's
/// stops and the poll left the poll to sleep its whole timeout, and a command resumed by
/// SIGCONT waited for it. Created at the first call; None if the pipe cannot be made (the
/// callers' timeouts still bound the delay).
pub fn child_wake() -> Option<BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    static PIPE: OnceLock<Option<(OwnedFd, OwnedFd)>> = OnceLock::new();
    let pipe = PIPE.get_or_init(|| {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return None;
        }
        // SAFETY: pipe2 returned two new descriptors that nothing else owns.
        let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        CHILD_WAKE.store(fds[1], Ordering::SeqCst);
        Some(ends)
    });
    pipe.as_ref().map(|(read, _)| read.as_fd())
}

/// Empties [`child_wake`]: a SIGCHLD after this wakes the next poll; the stops of one before
/// it are handled after this.
pub fn drain_child_wake() {
    if let Some(fd) = child_wake() {
        let mut buf = [0u8; 64];
        // SAFETY: reading into a valid buffer of its length from a non-blocking pipe we own.
        while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

/// Sends a signal; false if the process is gone.
pub fn kill(pid: u32, sig: i32) -> bool {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// What [`ExitWatch::pump`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEvent {
    /// Nothing to report.
    None,
    /// The main thread is about to exit; its memory map is still readable until `resume`.
    Exiting,
    /// The child has exec'd a program and waits, before its first instruction, until
    /// `resume`: its executable and dynamic loader are mapped, nothing else yet.
    Exec,
    /// The child is gone.
    Exited(ExitStatus),
}

/// PTRACE_SEIZE with the exit and exec stops ([`ExitWatch`]).
fn seize(pid: u32) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE on our own child; the data argument is the option mask.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid as libc::pid_t,
            0,
            (libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACEEXEC) as libc::c_long,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Holds a started command at exit (ptrace PTRACE_O_TRACEEXIT on its main thread) so its
/// memory map can be read one last time, and at each exec (PTRACE_O_TRACEEXEC) so the new
/// program's allocator can be probed before it runs; no other stops. Signals sent to the child
/// are passed on unchanged. If the recorder dies, the kernel detaches the child and kills it
/// ([`spawn_held`] set its parent-death signal).
#[derive(Debug)]
pub struct ExitWatch {
    pid: u32,
    attached: bool,
    /// An exit seen while waiting for the first exec, for `pump` to report.
    pending: Option<ChildEvent>,
    /// waitpid failed for a reason other than a signal: nothing more will come from it.
    lost: bool,
}

impl ExitWatch {
    /// Seizes the held (not yet released) child.
    pub fn seize(pid: u32) -> io::Result<Self> {
        seize(pid)?;
        Ok(ExitWatch {
            pid,
            attached: true,
            pending: None,
            lost: false,
        })
    }

    /// Holds the process again after another thread than its main one exec'd: that exec
    /// ended the traced main thread (its exit stop looked like the process's), and the thread
    /// that took over its PID is not traced. From now on it is held at its exit and execs.
    pub fn seize_again(&mut self) -> io::Result<()> {
        seize(self.pid)
    }

    fn ptrace(&self, req: libc::c_uint, data: libc::c_long) -> bool {
        // SAFETY: requests on our own tracee that take no address argument.
        unsafe { libc::ptrace(req, self.pid as libc::pid_t, 0, data) == 0 }
    }

    /// Handles pending stops without blocking; reports exit, and execs.
    pub fn pump(&mut self) -> ChildEvent {
        if let Some(event) = self.pending.take() {
            return event;
        }
        self.next_event()
    }

    /// Lets the released child run its command: waits for the exec that starts it and resumes
    /// it at once (its program was probed before). An exit before it is kept for `pump`.
    /// False if the child has not passed its exec: `give_up` said so (the child stays
    /// stopped, and the recorder was asked to stop), or it cannot be waited for.
    fn run_first_exec(&mut self, give_up: &dyn Fn() -> bool) -> bool {
        loop {
            match self.next_event() {
                ChildEvent::Exec => {
                    self.resume();
                    return true;
                }
                ChildEvent::Exiting => self.resume(),
                gone @ ChildEvent::Exited(_) => {
                    self.pending = Some(gone);
                    return true;
                }
                ChildEvent::None if self.lost || give_up() => return false,
                ChildEvent::None => {
                    // Until the next SIGCHLD; the timeout bounds a wait without the pipe.
                    if let Some(wake) = child_wake() {
                        let polled = libc::pollfd {
                            fd: wake.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        let mut p = [polled];
                        // SAFETY: p is a valid pollfd array of length 1.
                        unsafe { libc::poll(p.as_mut_ptr(), 1, 100) };
                        drain_child_wake();
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            }
        }
    }

    /// The next exit or exec stop, or exit, handling the stops in between, without waiting.
    fn next_event(&mut self) -> ChildEvent {
        loop {
            let mut status = 0;
            // SAFETY: status is a valid int for waitpid to fill.
            let r = unsafe {
                libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG | libc::__WALL)
            };
            if r < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue; // SIGCHLD's handler ran
                }
                self.lost = true;
                return ChildEvent::None;
            }
            if r == 0 {
                return ChildEvent::None;
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.attached = false;
                let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
                let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
                return ChildEvent::Exited(ExitStatus { code, signal });
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            if event == libc::PTRACE_EVENT_EXIT {
                return ChildEvent::Exiting;
            } else if event == libc::PTRACE_EVENT_EXEC {
                return ChildEvent::Exec;
            } else if event == libc::PTRACE_EVENT_STOP {
                if matches!(
                    sig,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    // Group stop (SIGSTOP, Ctrl-Z): stay stopped until SIGCONT.
                    self.ptrace(libc::PTRACE_LISTEN, 0);
                } else {
                    // SIGCONT ended the group stop (the listening tracee reports that as
                    // another PTRACE_EVENT_STOP, with SIGTRAP): run on. Listening again here
                    // kept the child stopped for good.
                    self.ptrace(libc::PTRACE_CONT, 0);
                }
            } else {
                // A signal for the child: deliver it unchanged.
                self.ptrace(libc::PTRACE_CONT, libc::c_long::from(sig));
            }
        }
    }

    /// Lets the child continue from its exit or exec stop.
    pub fn resume(&mut self) {
        self.ptrace(libc::PTRACE_CONT, 0);
    }

    /// Stops tracing (before signalling the child ourselves, so its stops need no handling).
    pub fn detach(&mut self) {
        if !self.attached {
            return;
        }
        self.attached = false;
        if !self.ptrace(libc::PTRACE_INTERRUPT, 0) {
            return;
        }
        loop {
            let mut status = 0;
            // SAFETY: status is a valid int for waitpid to fill.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::__WALL) };
            if r <= 0 || libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                return;
            }
            if libc::WIFSTOPPED(status) {
                let event = status >> 16;
                let pass = if event == 0 {
                    libc::WSTOPSIG(status)
                } else {
                    0
                };
                // SAFETY: detaching our own stopped tracee, passing on a pending signal.
                unsafe {
                    libc::ptrace(
                        libc::PTRACE_DETACH,
                        self.pid as libc::pid_t,
                        0,
                        pass as libc::c_long,
                    )
                };
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_lines_are_read_as_the_kernel_reads_them() {
        let parse = |line: &str| parse_script_line(line.as_bytes());
        let some = |i: &str, a: Option<&str>| Some((i.to_string(), a.map(str::to_string)));
        assert_eq!(parse("/bin/sh\necho"), some("/bin/sh", None));
        assert_eq!(
            parse(" \t/usr/bin/env  bash \t\n"),
            some("/usr/bin/env", Some("bash"))
        );
        // One argument: the rest of the line, blanks inside kept.
        assert_eq!(
            parse("/usr/bin/env -S python3 -u\n"),
            some("/usr/bin/env", Some("-S python3 -u"))
        );
        assert_eq!(
            parse("/bin/sh"),
            None,
            "no end of line, name reaches the end"
        );
        assert_eq!(parse("/bin/sh -e"), some("/bin/sh", Some("-e")));
        assert_eq!(parse("   \n/bin/sh"), None, "no interpreter");
        assert_eq!(parse("\n"), None);
    }

    #[test]
    fn scripts_are_followed_to_the_program_that_runs_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        // No newline at all: the end of the file ends the line, as in the kernel.
        let inner = write("inner", &format!("#!{}", sh.display()));
        let outer = write("outer", &format!("#! {} -x\n", inner.display()));
        let (program, chain) = program_of(&outer).unwrap();
        assert_eq!(program, sh);
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert!(
            chain[0].ends_with(&format!("-> #!{} -x", inner.display())),
            "{chain:?}"
        );
        assert_eq!(program_of(&sh).unwrap(), (sh.clone(), vec![]));
        // Errors name the problem and the fix.
        let err = |p: &Path| format!("{:#}", program_of(p).unwrap_err());
        let e = err(&write("text", "hello\n"));
        assert!(e.contains("neither a program (ELF) nor a script"), "{e}");
        let e = err(&write("missing", "#!/no/such/interpreter\n"));
        assert!(
            e.contains("/no/such/interpreter, which does not exist"),
            "{e}"
        );
        let e = err(&write("dos", "#!/bin/sh\r\nexit 0\r\n"));
        assert!(
            e.contains("DOS line endings") && e.contains("dos2unix"),
            "{e}"
        );
        let e = err(&write("empty", "#!\n"));
        assert!(e.contains("names no interpreter"), "{e}");
        let lp = dir.path().join("loop");
        std::fs::write(&lp, format!("#!{}\n", lp.display())).unwrap();
        let e = err(&lp);
        assert!(e.contains("more than 4 #! scripts"), "{e}");
    }
}
