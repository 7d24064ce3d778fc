//! The traced process: a running one (`-p`), or a command started here and held before exec
//! until every probe is attached, so its first allocation is recorded and nothing of the
//! recorder's own forked image is.
use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
    /// Lets the child exec; fails if exec failed.
    pub fn release(&mut self, name: &str) -> Result<()> {
        let Some(go) = self.go.take() else {
            return Ok(());
        };
        let byte = 1u8;
        // SAFETY: go is an open pipe write end; byte is a valid 1-byte buffer.
        let n = unsafe { libc::write(go.as_raw_fd(), (&byte as *const u8).cast(), 1) };
        drop(go);
        if n != 1 {
            bail!("cannot start {name}: {}", io::Error::last_os_error());
        }
        let mut errno = 0i32;
        // SAFETY: exec_error is an open pipe read end; errno is a valid 4-byte buffer. The
        // write end closes on a successful exec (CLOEXEC), so read returns 0 then.
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
    poll_readable_or(fd, None, timeout_ms)
}

/// [`poll_readable`], also woken when `also` is readable; true only if `fd` is.
pub fn poll_readable_or(fd: &OwnedFd, also: Option<BorrowedFd<'_>>, timeout_ms: i32) -> bool {
    let polled = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // A negative fd is ignored by poll().
    let mut p = [
        polled(fd.as_raw_fd()),
        polled(also.map_or(-1, |f| f.as_raw_fd())),
    ];
    // SAFETY: p is a valid pollfd array of length 2.
    let r = unsafe { libc::poll(p.as_mut_ptr(), 2, timeout_ms) };
    r > 0 && p[0].revents != 0
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
}

impl ExitWatch {
    /// Seizes the held (not yet released) child.
    pub fn seize(pid: u32) -> io::Result<Self> {
        seize(pid)?;
        Ok(ExitWatch {
            pid,
            attached: true,
            pending: None,
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
        self.next_event(libc::WNOHANG)
    }

    /// Lets the released child run its command: waits for the exec that starts it and resumes
    /// it at once (its program was probed before). An exit before it is kept for `pump`.
    pub fn run_first_exec(&mut self) {
        loop {
            match self.next_event(0) {
                ChildEvent::Exec => return self.resume(),
                ChildEvent::Exiting => self.resume(),
                ChildEvent::None => return,
                gone @ ChildEvent::Exited(_) => {
                    self.pending = Some(gone);
                    return;
                }
            }
        }
    }

    /// The next exit or exec stop, or exit, handling the stops in between (`flags`: WNOHANG or
    /// 0 to wait).
    fn next_event(&mut self, flags: i32) -> ChildEvent {
        loop {
            let mut status = 0;
            // SAFETY: status is a valid int for waitpid to fill.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, flags | libc::__WALL) };
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue; // SIGCHLD's handler ran
            }
            if r <= 0 {
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
