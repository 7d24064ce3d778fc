//! Reads what the recording needs from /proc and uname: maps, memory, command lines, host facts.
use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use leak_format::{HostInfo, MapEntry, ProcMemory};

/// `/proc/PID/root` joined with a path as the target sees it: works for containerized targets.
pub fn in_root(pid: u32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// A mapping's path as the target sees it (without the ` (deleted)` the kernel appends to a
/// file deleted or replaced since it was mapped).
pub fn mapped_path(m: &MapEntry) -> &str {
    m.path.strip_suffix(DELETED).unwrap_or(&m.path)
}

const DELETED: &str = " (deleted)";

/// Opens the file behind a mapping of process `pid`, and returns the path that opened it
/// (which also names it to the kernel later, e.g. to attach a uprobe).
///
/// The mapping itself, `/proc/PID/map_files/START-END`, is the file the process runs, even
/// deleted or replaced on disk since (a library upgraded under a running service), whatever
/// the target's root (it needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, and ptrace access).
/// Its path lasts only as long as the mapping, so a path to the same file (same device and
/// inode) is returned instead when there is one: `/proc/PID/root` + the path (a container,
/// whose maps show paths inside its mount namespace), or the path itself (a chrooted target,
/// whose maps show paths from our root).
///
/// Without the mapping (no such access, or the process is gone): `/proc/PID/root` + the path,
/// else the path itself if it is the mapped file by its inode. A deleted file then has none:
/// anything at its path now is another file.
pub fn open_mapped(pid: u32, m: &MapEntry) -> Option<(PathBuf, fs::File)> {
    let own = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
    open_first(own, in_root(pid, &m.path), m)
}

/// [`open_mapped`] with the first two paths given.
fn open_first(own: PathBuf, in_ns: PathBuf, m: &MapEntry) -> Option<(PathBuf, fs::File)> {
    let deleted = m.path.ends_with(DELETED);
    let plain = PathBuf::from(&m.path);
    if let Ok(f) = fs::File::open(&own) {
        let id = file_id(&f);
        if !deleted {
            for path in [in_ns, plain] {
                if let Ok(other) = fs::File::open(&path) {
                    if id.is_some() && file_id(&other) == id {
                        return Some((path, other));
                    }
                }
            }
        }
        return Some((own, f));
    }
    if deleted {
        return None;
    }
    if let Ok(f) = fs::File::open(&in_ns) {
        return Some((in_ns, f));
    }
    let f = fs::File::open(&plain).ok()?;
    let md = f.metadata().ok()?;
    (md.ino() == m.inode && same_device(&m.dev, md.dev())).then_some((plain, f))
}

/// An open file's (device, inode).
fn file_id(f: &fs::File) -> Option<(u64, u64)> {
    f.metadata().ok().map(|md| (md.dev(), md.ino()))
}

/// The (device, inode) of the file at `path` (symbolic and /proc links followed).
pub fn path_id(path: impl AsRef<std::path::Path>) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|md| (md.dev(), md.ino()))
}

/// The value of field `key` in the text of /proc/PID/status (`Uid:\t0\t0\t0\t0` gives
/// `0\t0\t0\t0`).
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// Whether a device as /proc/PID/maps writes it (`fe:01`: major and minor, in hex) is `dev`
/// (a `st_dev`). An anonymous device (major 0: btrfs, overlayfs, NFS) matches any: btrfs maps
/// show the file system's device and `stat` the subvolume's, so only the inode can tell.
fn same_device(maps_dev: &str, dev: u64) -> bool {
    let Some((major, minor)) = maps_dev.split_once(':') else {
        return false;
    };
    let (Ok(major), Ok(minor)) = (
        u32::from_str_radix(major, 16),
        u32::from_str_radix(minor, 16),
    ) else {
        return false;
    };
    major == 0 || libc::major(dev) == 0 || (libc::major(dev) == major && libc::minor(dev) == minor)
}

/// Raw text of /proc/PID/maps.
pub fn maps_text(pid: u32) -> io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
}

/// Parses /proc/PID/maps text; lines that do not parse are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms: perms.to_string(),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: dev.to_string(),
        inode: inode.parse().ok()?,
        path: path.to_string(),
    })
}

/// VmRSS, RssAnon, RssFile and VmSwap of a process, or None if it is gone.
pub fn memory(pid: u32) -> Option<ProcMemory> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

fn parse_status(text: &str) -> Option<ProcMemory> {
    let mut m = ProcMemory::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let field = match key {
            "VmRSS" => &mut m.rss,
            "RssAnon" => &mut m.rss_anon,
            "RssFile" => &mut m.rss_file,
            "VmSwap" => &mut m.swap,
            _ => continue,
        };
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        *field = kb * 1024;
        seen = true;
    }
    // Zombies and kernel threads have no Vm* lines.
    seen.then_some(m)
}

/// Whether process `pid` has exactly this process's privileges and view of the files: the same
/// user and group ids, groups, capability sets, no-new-privileges bit, seccomp mode and filters,
/// security label, root directory and mount namespace. Then running a program it names, with
/// its environment, gives it nothing it does not have already.
pub fn runs_as_we_do(pid: u32) -> bool {
    const FIELDS: [&str; 11] = [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
    ];
    let status = |who: &str| fs::read_to_string(format!("/proc/{who}/status")).ok();
    let (Some(theirs), Some(ours)) = (status(&pid.to_string()), status("self")) else {
        return false;
    };
    // A field this kernel lacks (Seccomp_filters before 5.9) is missing from both.
    let fields = |text: &str| FIELDS.map(|key| status_field(text, key).map(str::to_string));
    let same = |what: &str| {
        let theirs = path_id(format!("/proc/{pid}/{what}"));
        theirs.is_some() && theirs == path_id(format!("/proc/self/{what}"))
    };
    let label = |who: String| fs::read(format!("/proc/{who}/attr/current")).ok();
    status_field(&ours, "Uid").is_some()
        && fields(&theirs) == fields(&ours)
        && same("root")
        && same("ns/mnt")
        && label(pid.to_string()) == label("self".into())
}

/// The environment of a process (as its program started; empty if unreadable).
pub fn environ(pid: u32) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    use std::os::unix::ffi::OsStrExt;
    let raw = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|&b| b == b'=')?;
            let os = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_os_string();
            Some((os(&kv[..eq]), os(&kv[eq + 1..])))
        })
        .collect()
}

/// argv of a process.
pub fn cmdline(pid: u32) -> io::Result<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// Who a process is (a `--kernel --pid` recording's `Process` record, or the program a target
/// exec'd): what cannot be read (a kernel thread's command line and executable, a process
/// gone) is left empty. The command line and executable are read through a thread that runs:
/// a main thread that has ended (pthread_exit) has neither any more, while its process runs on.
pub fn process(pid: u32) -> leak_format::Process {
    let tid = running_thread(pid)
        .or_else(|| live_thread(pid))
        .unwrap_or(pid);
    leak_format::Process {
        pid,
        name: comm(&format!("/proc/{pid}/comm")).unwrap_or_default(),
        command_line: cmdline(tid).unwrap_or_default(),
        exe: exe(tid).unwrap_or_default(),
    }
}

/// The executable of a process, as the process sees it.
pub fn exe(pid: u32) -> io::Result<String> {
    let link = fs::read_link(format!("/proc/{pid}/exe"))?;
    let s = link.to_string_lossy();
    Ok(s.strip_suffix(DELETED).unwrap_or(&s).to_string())
}

/// Whether the program `pid` runs was deleted (or replaced) since it started.
pub fn exe_deleted(pid: u32) -> bool {
    fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|link| link.to_string_lossy().ends_with(DELETED))
}

/// Every process below `pid` ([`children`], their children, ...), parents first.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut all = children(pid);
    let mut i = 0;
    while i < all.len() {
        let more = children(all[i]);
        all.extend(more.into_iter().filter(|p| *p != pid));
        i += 1;
        // A cycle cannot happen in a process tree; bound it anyway (PIDs reused mid-walk).
        if all.len() > 1 << 16 {
            break;
        }
    }
    all
}

/// The live children of a process, whichever of its threads forked them (each thread's
/// `/proc/PID/task/TID/children` lists its own), in order. Empty when unreadable.
pub fn children(pid: u32) -> Vec<u32> {
    let mut all: Vec<u32> = threads(pid)
        .into_iter()
        .filter_map(|tid| fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).ok())
        .flat_map(|t| {
            t.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Entries of LD_PRELOAD in a process's initial environment.
pub fn ld_preload(pid: u32) -> Vec<String> {
    let Ok(raw) = fs::read(format!("/proc/{pid}/environ")) else {
        return Vec::new();
    };
    raw.split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"LD_PRELOAD="))
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split([' ', ':'])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A figure of /proc/meminfo in bytes (`MemTotal`, `MemAvailable`), None if it has none.
pub fn meminfo(key: &str) -> Option<u64> {
    meminfo_in(&fs::read_to_string("/proc/meminfo").ok()?, key)
}

/// [`meminfo`] from the text of /proc/meminfo (`MemAvailable:   24175364 kB`).
fn meminfo_in(text: &str, key: &str) -> Option<u64> {
    let kb = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?
    })?;
    kb.checked_mul(1024)
}

/// Host facts for the header.
pub fn host_info() -> HostInfo {
    // SAFETY: utsname is plain data; uname fills it and we read NUL-terminated fields only
    // after it returned 0.
    let uts = unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        (libc::uname(&mut uts) == 0).then_some(uts)
    };
    let field = |f: &[libc::c_char]| -> String {
        // SAFETY: uname NUL-terminates every field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    let (hostname, kernel_release, kernel_version, arch) = match &uts {
        Some(u) => (
            field(&u.nodename),
            field(&u.release),
            field(&u.version),
            field(&u.machine),
        ),
        None => Default::default(),
    };
    // SAFETY: sysconf has no memory-safety preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    let mem_total_bytes = meminfo("MemTotal").unwrap_or(0);
    HostInfo {
        hostname,
        kernel_release,
        kernel_version,
        arch,
        page_size,
        mem_total_bytes,
    }
}

/// Nanoseconds of the given clock.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Why a live `pid` is no process whose allocator leak-record can probe, if it is not: a
/// thread of another process (a TID from `top -H` or `ps -L`), or a kernel thread. None when
/// it is one, or when /proc says nothing.
pub fn not_a_process(pid: u32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    why_not_a_process(pid, &status)
}

/// For a live `pid` that is a thread of another process (a TID from `top -H` or `ps -L`):
/// that process's PID, and its name.
pub fn thread_of(pid: u32) -> Option<(u32, String)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    thread_in(pid, &status)
}

fn thread_in(pid: u32, status: &str) -> Option<(u32, String)> {
    let tgid = status_field(status, "Tgid").and_then(|t| t.parse::<u32>().ok())?;
    let name = status_field(status, "Name").unwrap_or("?");
    (tgid != pid).then(|| (tgid, name.to_string()))
}

/// [`not_a_process`] from the text of /proc/PID/status.
fn why_not_a_process(pid: u32, status: &str) -> Option<String> {
    let field = |key: &str| status_field(status, key);
    let name = field("Name").unwrap_or("?");
    if let Some((tgid, name)) = thread_in(pid, status) {
        return Some(format!(
            "PID {pid} is a thread of process {tgid} ({name}), not a process; record the \
             process: leak-record -p {tgid}"
        ));
    }
    // `Kthread` since Linux 6.9; before, a kernel thread is the only live task without memory.
    let kthread = match field("Kthread") {
        Some(k) => k == "1",
        None => field("VmSize").is_none(),
    };
    kthread.then(|| {
        format!(
            "PID {pid} ({name}) is a kernel thread, which has no allocator to probe; to record \
             the kernel's own allocations: leak-record --kernel"
        )
    })
}

/// The state letter of a task from the text of its `stat` (`R`, `S`, `Z`...), after the name
/// in parentheses (which may hold any character).
fn stat_state(stat: &str) -> Option<&str> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()
}

/// Whether a task in `state` has ended: a zombie (`Z`) or dead (`X`).
fn ended(state: &str) -> bool {
    state == "Z" || state == "X"
}

/// Why `pid` cannot be recorded when it is not [`is_alive`], in one line: it has exited and
/// waits to be reaped (a zombie), or there is no such process.
pub fn why_not_alive(pid: u32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    why_not_alive_in(pid, stat.as_deref())
}

/// [`why_not_alive`] from the text of /proc/PID/stat, if there is one.
fn why_not_alive_in(pid: u32, stat: Option<&str>) -> String {
    let zombie = stat.filter(|s| stat_state(s).is_some_and(ended));
    match zombie {
        Some(stat) => {
            let name = stat
                .split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .map_or("?", |(name, _)| name);
            format!(
                "PID {pid} ({name}) has exited and its parent has not reaped it yet (a \
                 zombie): it has no memory left, nothing to record; check the PID"
            )
        }
        None => format!("no process with PID {pid}; check the PID (e.g. with pidof or ps)"),
    }
}

/// Does this process exist, with a thread that has not ended? (Its main thread may have: a
/// program whose main thread calls pthread_exit runs on in its other threads.)
pub fn is_alive(pid: u32) -> bool {
    live_thread(pid).is_some()
}

/// A thread of process `pid` that has not ended: `pid` itself, the main thread, unless it
/// ended while others run on; then the first of the others. None if there is none.
pub fn live_thread(pid: u32) -> Option<u32> {
    first_thread(pid, stat_live)
}

/// A thread of process `pid` that runs on: [`live_thread`] without the threads that are
/// ending (the kernel's PF_EXITING flag: between the start of their exit and the zombie
/// state, their /proc entry has lost the process's files, root and memory already, and the
/// kernel refuses to tie a new probe to them).
pub fn running_thread(pid: u32) -> Option<u32> {
    first_thread(pid, |stat| stat_live(stat) && !stat_exiting(stat))
}

/// Whether the text of a task's `stat` shows a task that has not ended.
fn stat_live(stat: &str) -> bool {
    stat_state(stat).is_some_and(|state| !ended(state))
}

/// The main thread of `pid` if `keep(its stat)`, else the first other thread kept.
fn first_thread(pid: u32, keep: impl Fn(&str) -> bool) -> Option<u32> {
    let kept = |tid: u32| {
        fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
            .ok()
            .is_some_and(|stat| keep(&stat))
    };
    if kept(pid) {
        return Some(pid);
    }
    threads(pid)
        .into_iter()
        .find(|&tid| tid != pid && kept(tid))
}

/// Whether the text of a task's `stat` has PF_EXITING (0x4) in its flags (the 9th field).
fn stat_exiting(stat: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0)
}

/// `path` (a file of process `pid` as this process opens it) through the /proc entry of its
/// thread `tid` when it goes through another task's (`/proc/N/root/...`,
/// `/proc/N/map_files/...`): those work only while task N lives, the others for any thread
/// of the process (they share its root and memory). Other paths are returned as they are.
pub fn through_thread(path: &std::path::Path, tid: u32) -> PathBuf {
    let text = path.to_string_lossy();
    let moved = text.strip_prefix("/proc/").and_then(|rest| {
        let (task, tail) = rest.split_once('/')?;
        let ours = task.parse::<u32>().is_ok()
            && (tail.starts_with("root/") || tail.starts_with("map_files/"));
        ours.then(|| PathBuf::from(format!("/proc/{tid}/{tail}")))
    });
    moved.unwrap_or_else(|| path.to_path_buf())
}

/// The names (`comm`) of a process's threads, in thread order (empty when it is gone).
pub fn thread_names(pid: u32) -> Vec<String> {
    threads(pid)
        .into_iter()
        .filter_map(|tid| comm(&format!("/proc/{pid}/task/{tid}/comm")))
        .collect()
}

/// A `comm` file's name. Any bytes (prctl(PR_SET_NAME) takes any): what is not UTF-8 is
/// replaced, where reading it as a string would lose the name.
fn comm(path: &str) -> Option<String> {
    let raw = fs::read(path).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .trim_end_matches('\n')
            .to_string(),
    )
}

/// The thread IDs of a process, in order (empty when it is gone).
fn threads(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_said_to_be_one_and_a_missing_pid_to_be_missing() {
        let zombie = "4242 (my (prog)) Z 1 4242 4242 0 -1 4227084 0 0";
        let e = why_not_alive_in(4242, Some(zombie));
        assert!(e.starts_with("PID 4242 (my (prog)) has exited"), "{e}");
        assert!(e.contains("zombie") && !e.contains("no process"), "{e}");
        assert!(why_not_alive_in(4242, Some("4242 (x) X 1")).contains("zombie"));
        let gone = why_not_alive_in(4242, None);
        assert!(gone.starts_with("no process with PID 4242"), "{gone}");
        // A live main thread is not a zombie (the process is not alive for another reason).
        assert!(why_not_alive_in(4242, Some("4242 (x) S 1")).starts_with("no process"));
    }

    #[test]
    fn meminfo_figures_are_bytes() {
        let text = "MemTotal:       32768000 kB\nMemFree:  100 kB\nMemAvailable:   24175364 kB\n";
        assert_eq!(meminfo_in(text, "MemAvailable"), Some(24_175_364 * 1024));
        assert_eq!(meminfo_in(text, "MemTotal"), Some(32_768_000 * 1024));
        assert_eq!(meminfo_in(text, "Mem"), None);
        assert_eq!(meminfo_in(text, "SwapTotal"), None);
        assert!(meminfo("MemTotal").is_some_and(|b| b > 0));
    }
    use std::path::Path;

    #[test]
    fn privileges_compare_with_our_own() {
        assert!(runs_as_we_do(std::process::id()));
        // A process of another user (or none at all) does not.
        let other = (1..100_000).find(|&p| {
            fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && !l.contains("\t0\t"))
            })
        });
        if let Some(p) = other {
            assert!(!runs_as_we_do(p), "PID {p}");
        }
        assert!(!runs_as_we_do(u32::MAX));
    }

    #[test]
    fn threads_and_kernel_threads_are_not_processes() {
        let user = "Name:\tsvc\nState:\tS (sleeping)\nTgid:\t100\nPid:\t100\nVmSize:\t  1000 kB\n";
        assert_eq!(why_not_a_process(100, user), None);
        let with_flag = format!("{user}Kthread:\t0\n");
        assert_eq!(why_not_a_process(100, &with_flag), None);
        let thread = user.replace("Pid:\t100", "Pid:\t101");
        let why = why_not_a_process(101, &thread).unwrap();
        assert!(why.contains("thread of process 100 (svc)"), "{why}");
        assert!(why.contains("leak-record -p 100"), "{why}");
        let kthread = "Name:\tkthreadd\nState:\tS (sleeping)\nTgid:\t2\nPid:\t2\n";
        let why = why_not_a_process(2, kthread).unwrap();
        assert!(why.contains("(kthreadd) is a kernel thread") && why.contains("--kernel"));
        let flagged = format!("{kthread}Kthread:\t1\n");
        assert!(why_not_a_process(2, &flagged).is_some());
        // This process is one.
        assert_eq!(not_a_process(std::process::id()), None);
    }

    #[test]
    fn a_mapped_file_is_opened_as_mapped_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lib.so");
        fs::write(&file, b"x").unwrap();
        let link = dir.path().join("same.so");
        fs::hard_link(&file, &link).unwrap();
        let copy = dir.path().join("copy.so");
        fs::write(&copy, b"x").unwrap();
        let md = fs::metadata(&file).unwrap();
        let dev = format!(
            "{:02x}:{:02x}",
            libc::major(md.dev()),
            libc::minor(md.dev())
        );
        let m = |path: &Path, inode: u64| MapEntry {
            start: 0x1000,
            end: 0x2000,
            perms: "r-xp".into(),
            offset: 0,
            dev: dev.clone(),
            inode,
            path: path.display().to_string(),
        };
        let none = || dir.path().join("none");
        let opened = |own, in_ns, m: &MapEntry| open_first(own, in_ns, m).map(|(p, _)| p);
        let mapped = m(&file, md.ino());
        // The mapping (here `file`) is the file; a lasting path to the same file is preferred:
        // in the target's root, then in ours; another file at those paths is not.
        assert_eq!(
            opened(file.clone(), link.clone(), &mapped),
            Some(link.clone())
        );
        assert_eq!(opened(file.clone(), none(), &mapped), Some(file.clone()));
        assert_eq!(
            opened(file.clone(), copy.clone(), &m(&copy, md.ino())),
            Some(file.clone())
        );
        // A deleted file: only the mapping, even where its path names a file.
        let deleted = m(
            &PathBuf::from(format!("{} (deleted)", file.display())),
            md.ino(),
        );
        assert_eq!(
            opened(file.clone(), link.clone(), &deleted),
            Some(file.clone())
        );
        assert_eq!(opened(none(), file.clone(), &deleted), None);
        assert_eq!(mapped_path(&deleted), file.to_str().unwrap());
        // Without the mapping: the path in the target's root as it is; then the path in ours,
        // only if it is the mapped file.
        assert_eq!(opened(none(), copy.clone(), &mapped), Some(copy.clone()));
        assert_eq!(opened(none(), none(), &mapped), Some(file.clone()));
        assert_eq!(opened(none(), none(), &m(&file, md.ino() + 1)), None);
        let mut bad_dev = m(&file, md.ino());
        bad_dev.dev = "x".into();
        assert_eq!(opened(none(), none(), &bad_dev), None);
    }

    #[test]
    fn devices_compare_as_maps_writes_them_anonymous_ones_by_inode_alone() {
        let dev = |major, minor| libc::makedev(major, minor);
        assert!(same_device("fe:01", dev(0xfe, 1)));
        assert!(same_device("103:02", dev(0x103, 2)));
        assert!(!same_device("fe:01", dev(0xfe, 2)));
        assert!(!same_device("fe:01", dev(8, 1)));
        // btrfs: maps show the file system's anonymous device, stat the subvolume's.
        assert!(same_device("00:2a", dev(0, 0x2b)));
        assert!(same_device("fe:01", dev(0, 0x2b)));
        assert!(!same_device("fe", dev(0xfe, 0)) && !same_device("zz:01", dev(0, 1)));
    }

    #[test]
    fn maps_lines_parse() {
        let text = "55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234 /usr/bin/x y\n\
                    7f00-7f10 rw-p 00000000 00:00 0 \n\
                    7ffd1000-7ffd2000 rw-p 00000000 00:00 0    [stack]\n\
                    garbage\n";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].start, 0x55d0c0a00000);
        assert_eq!(maps[0].path, "/usr/bin/x y");
        assert_eq!(maps[0].inode, 1234);
        assert_eq!(maps[1].path, "");
        assert_eq!(maps[2].path, "[stack]");
    }

    #[test]
    fn status_memory_parses() {
        let text = "Name:\tx\nVmRSS:\t    1000 kB\nRssAnon:\t     600 kB\nRssFile:\t 400 kB\nVmSwap:\t 0 kB\n";
        let m = parse_status(text).unwrap();
        assert_eq!(
            (m.rss, m.rss_anon, m.rss_file, m.swap),
            (1024000, 614400, 409600, 0)
        );
        assert!(parse_status("Name:\tkthread\n").is_none());
    }

    #[test]
    fn an_exiting_task_is_told_by_its_flags() {
        // Fields after the name: state ppid pgrp session tty_nr tpgid flags ...
        let stat = |flags: u64| format!("42 (a) b) c) R 1 42 42 0 -1 {flags} 0 0");
        assert!(!stat_exiting(&stat(0x40_0000)));
        assert!(stat_exiting(&stat(0x40_0004)));
        assert!(!stat_exiting("42 (x"));
    }

    #[test]
    fn paths_through_another_task_move_to_the_thread() {
        let moved = |p: &str| {
            through_thread(std::path::Path::new(p), 7)
                .display()
                .to_string()
        };
        assert_eq!(
            moved("/proc/42/root/usr/lib/libc.so.6"),
            "/proc/7/root/usr/lib/libc.so.6"
        );
        assert_eq!(
            moved("/proc/42/map_files/1000-2000"),
            "/proc/7/map_files/1000-2000"
        );
        assert_eq!(moved("/usr/lib/libc.so.6"), "/usr/lib/libc.so.6");
        assert_eq!(moved("/proc/self/root/x"), "/proc/self/root/x");
        assert_eq!(moved("/proc/42/exe"), "/proc/42/exe");
    }

    #[test]
    fn this_process_is_visible() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert_eq!(live_thread(me), Some(me));
        assert_eq!(running_thread(me), Some(me));
        assert!(memory(me).unwrap().rss > 0);
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(host_info().page_size >= 4096);
    }
}
