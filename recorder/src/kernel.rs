//! Kernel mode (`--kernel`): record outstanding kernel allocations per kernel stack through the
//! kmem tracepoints, with the kallsyms entries that name those stacks offline, until the
//! duration ends, a signal arrives or the `--pid` process exits.
use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use leak_format::{
    AllocKind, EndReason, KernelSymbols, Losses, Record, Stack, Target, TargetMode, Unseen,
};

use crate::bpf::kmem::{self, Group, KmemTracer};
use crate::bpf::{self, RawStats};
use crate::cli::Cli;
use crate::kallsyms::{self, Kallsyms};
use crate::record::{
    destination, drops, estimate_mark, human_bytes, install_signal_handlers, new_header,
    new_snapshot, print_status, stop_requested, write_unseen, CostMeter, Due, RecordingFile,
    Schedule,
};
use crate::{output, procfs, target, UsageError};

/// Records kernel allocations according to the command line (checked by `record::run`).
pub fn run(cli: Cli) -> Result<()> {
    if let Some(pid) = cli.pid {
        if !procfs::is_alive(pid) {
            bail!(UsageError(procfs::why_not_alive(pid)));
        }
        if let Some((tgid, name)) = procfs::thread_of(pid) {
            bail!(UsageError(format!(
                "PID {pid} is a thread of process {tgid} ({name}); --pid takes a process, whose \
                 threads are all recorded: leak-record --kernel --pid {tgid}"
            )));
        }
    }
    if let Some(comm) = &cli.comm {
        if comm.is_empty() || comm.len() > 15 {
            bail!(UsageError(format!(
                "--comm '{comm}' must be 1 to 15 bytes (the kernel keeps 15 bytes of a task's name)"
            )));
        }
    }
    if let Some(cache) = &cli.cache {
        if cache.is_empty() || cache.len() >= 32 {
            bail!(UsageError(format!(
                "--cache '{cache}' must be 1 to 31 bytes (a name from /proc/slabinfo)"
            )));
        }
        check_cache(cache)?;
    }
    let start_wall_ns = procfs::clock_ns(libc::CLOCK_REALTIME);
    let path = cli
        .output
        .clone()
        .unwrap_or_else(|| output::default_name(start_wall_ns / 1_000_000_000));
    crate::record::defer_stop_signals();
    let (path, file, created) = output::create_output(&path, &cli)?;
    let modules_text = module_names();
    let kallsyms = Kallsyms::load()?;
    let host = procfs::host_info();

    let mut groups = vec![Group::Slab];
    if !cli.no_pages && cli.cache.is_none() {
        groups.push(Group::Page);
    }
    if cli.percpu {
        groups.push(Group::Percpu);
    }
    let mut storage = MaybeUninit::uninit();
    let opts = kmem::LoadOptions {
        tgid: cli.pid.unwrap_or(0),
        comm: cli.comm.clone(),
        cache: cli.cache.clone(),
        max_allocs: cli.max_allocs as u32,
        max_stacks: cli.max_stacks as u32,
        page_size: host.page_size.max(1),
        min_size: cli.min_size.unwrap_or(0),
        max_size: cli.max_size.unwrap_or(u64::MAX),
        sample_bytes: cli.sample_bytes.unwrap_or(0),
        groups,
    };
    let mut tracer = kmem::load(&mut storage, &opts)?;
    for line in &tracer.missing {
        say!("leak-record: {line}");
    }
    tracer.attach()?;
    if !cli.quiet {
        let names: Vec<&str> = tracer
            .probes()
            .iter()
            .map(|p| p.function.as_str())
            .collect();
        say!(
            "leak-record: attached {} kernel tracepoints: {}",
            names.len(),
            names.join(" ")
        );
    }

    let mut filters = Vec::new();
    if let Some(pid) = cli.pid {
        filters.extend(["--pid".to_string(), pid.to_string()]);
    }
    if let Some(comm) = &cli.comm {
        filters.extend(["--comm".to_string(), comm.clone()]);
    }
    if let Some(cache) = &cli.cache {
        filters.extend(["--cache".to_string(), cache.clone()]);
    }
    let release = host.kernel_release.clone();
    let target = Target {
        mode: TargetMode::Kernel,
        pid: cli.pid.unwrap_or(0),
        command_line: filters,
        exe: "[kernel]".to_string(),
    };
    let header = new_header(&cli, host, target, false, tracer.probes());
    let mut out = RecordingFile::start(file, &path, &header, cli.sample_bytes)?;
    let pidfd = match cli.pid {
        Some(pid) => {
            Some(target::pidfd_open(pid).with_context(|| format!("cannot watch process {pid}"))?)
        }
        None => None,
    };
    // Named once it is held: the process the recording ends with.
    if let Some(pid) = cli.pid {
        out.write(&Record::Process(procfs::process(pid)))?;
    }
    created.keep()?;
    install_signal_handlers();
    if let (Some(pid), Some(comm)) = (cli.pid, &cli.comm) {
        // Both filters apply: the process's threads that bear the name. None now is worth a
        // word (a thread may take the name later).
        if !procfs::thread_names(pid).iter().any(|n| n == comm) {
            say!(
                "leak-record: warning: no thread of PID {pid} is named {comm} now; only \
                 allocations by its threads of that name are recorded (--pid and --comm both \
                 apply)"
            );
        }
    }
    if !cli.quiet {
        let mut whose = match (cli.pid, &cli.comm) {
            (Some(pid), Some(comm)) => format!("made by the threads of PID {pid} named {comm}"),
            (Some(pid), None) => format!("made by PID {pid}"),
            (None, Some(comm)) => format!("made by tasks named {comm}"),
            (None, None) => "of every task".to_string(),
        };
        if let Some(cache) = &cli.cache {
            whose = format!("in slab cache {cache} (kmem_cache_alloc only) {whose}");
        }
        say!(
            "leak-record: recording kernel allocations {whose}{}",
            destination(&path, &cli)
        );
        if let Some(warning) = crate::record::short_plan(&cli) {
            say!("{warning}");
        }
    }
    let mut session = KernelSession {
        cli: &cli,
        out,
        tracer,
        kallsyms,
        modules_text,
        release,
        prev: HashMap::new(),
        alias: HashMap::new(),
        by_frames: HashMap::new(),
        cache_pages: HashSet::new(),
        seq: 0,
        started: Instant::now(),
        last_losses: Losses::default(),
        last_unseen: Unseen::default(),
    };
    let result = session.record_until_end(pidfd.as_ref());
    if let Err(e) = &result {
        session.out.end_on_error(e, session.seq);
    }
    result
}

/// The names of the loaded kernel modules (`/proc/modules`, without the changing use counts).
fn module_names() -> String {
    let text = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kind a BPF-side kind number stands for.
fn alloc_kind(kind: u32) -> AllocKind {
    match kind {
        kmem::KIND_PAGE => AllocKind::KernelPage,
        kmem::KIND_PERCPU => AllocKind::KernelPercpu,
        _ => AllocKind::KernelSlab,
    }
}

struct KernelSession<'a, 'obj> {
    cli: &'a Cli,
    out: RecordingFile,
    tracer: KmemTracer<'obj>,
    kallsyms: Kallsyms,
    /// The loaded kernel modules when kallsyms was last read.
    modules_text: String,
    release: String,
    /// Latest counters sent, by (recorded stack, kind).
    prev: HashMap<(u32, u32), RawStats>,
    /// The recorded stack each BPF stack id stands for.
    alias: HashMap<u32, u32>,
    /// Recorded stacks by their frames.
    by_frames: HashMap<Vec<u64>, u32>,
    /// The (recorded stack, kind) counters of page-cache and slab pages: the status line counts
    /// them apart, as leak-report leaves them out (`leak_format::kernel::cache_pages`).
    cache_pages: HashSet<(u32, AllocKind)>,
    seq: u32,
    started: Instant,
    last_losses: Losses,
    /// The events not recorded as last written.
    last_unseen: Unseen,
}

/// How long after the `--pid` process exits the last snapshot is taken: the frees deferred
/// past its exit (RCU callbacks, delayed work) take a few milliseconds on an idle machine.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Waits until every `call_rcu` callback queued so far has run (`rcu_barrier()`, which the
/// kernel offers root as the `rcutree.do_rcu_barrier` parameter): the frees an exit queued that
/// way (socket inodes), which lazy RCU (CPUs whose callbacks are offloaded) may hold back for up
/// to 10 s, past `EXIT_GRACE`. It took 23 ms here; `kfree_rcu` batches are not covered (the
/// kernel has no barrier for them that user space can trigger). Best effort: without the
/// parameter, or the right to write it (CAP_BPF without root, a read-only /sys), the grace
/// alone. The barrier sleeps in the kernel where no signal reaches it, and a thread of ours
/// sleeping there would hold leak-record's exit (and its stderr) until it returned: a child
/// process writes the parameter, holding none of leak-record's descriptors, waited for at
/// most `BARRIER_WAIT` and otherwise left to finish on its own.
fn rcu_barrier() {
    const BARRIER_WAIT: Duration = Duration::from_secs(2);
    const PARAMETER: &str = "/sys/module/rcutree/parameters/do_rcu_barrier";
    use std::process::{Command, Stdio};
    // `-w` first: a /sys that is not sysfs (a sandbox's) gets no new file.
    let child = Command::new("/bin/sh")
        .args(["-c", "[ -w \"$1\" ] && echo 1 > \"$1\"", "sh", PARAMETER])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    let start = Instant::now();
    while matches!(child.try_wait(), Ok(None)) && start.elapsed() < BARRIER_WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl KernelSession<'_, '_> {
    fn record_until_end(&mut self, pidfd: Option<&std::os::fd::OwnedFd>) -> Result<()> {
        let mut schedule = Schedule::new(self.started, self.cli);
        let reason = loop {
            let wait = schedule.wait(Duration::from_millis(200));
            let exited = match pidfd {
                Some(fd) => target::poll_readable(fd, wait.as_millis() as i32),
                None => {
                    std::thread::sleep(wait);
                    false
                }
            };
            // The exit first: a stop signal that comes as the process exits (`./test; kill
            // -INT $recorder`) must not skip the wait for what its exit frees.
            if !exited {
                if let Some(reason) = stop_requested() {
                    break reason;
                }
            }
            if exited {
                // What the process held is freed at its exit, but partly later: sockets and
                // inodes after an RCU grace period, files by deferred work. Wait for those
                // frees before the last snapshot, or they would stay outstanding in it.
                std::thread::sleep(EXIT_GRACE);
                rcu_barrier();
                break EndReason::TargetExited {
                    code: None,
                    signal: None,
                };
            }
            match schedule.due() {
                Due::End => break EndReason::Duration,
                Due::Snapshot => self.snapshot()?,
                Due::Nothing => {}
            }
        };
        self.snapshot()?;
        // Not the unseen events: the kernel skips runs routinely here (a few a second under
        // load), counting the ones the filters would have left out too. The status line and
        // leak-report say them.
        let lost = self.last_losses.unexpected_drops(true);
        self.out.finish(&reason, self.seq, self.cli, lost)
    }

    fn snapshot(&mut self) -> Result<()> {
        let meter = CostMeter::start();
        let (losses, unseen) = self.tracer.losses()?;
        let raw = self.tracer.stats();
        // Name every stack id not seen before; the ones whose trace cannot be read yet are
        // retried next time, with their counters.
        let unknown: HashSet<u32> = raw
            .iter()
            .filter(|r| r.alloc_count != 0 || r.free_count != 0)
            .map(|r| r.stack_id)
            .filter(|id| !self.alias.contains_key(id))
            .collect();
        let mut new_stacks = Vec::new();
        let mut symbols = Vec::new();
        let placeholders = unknown.iter().filter(|&&id| id < bpf::FIRST_STACK_ID);
        for &id in placeholders {
            new_stacks.push(bpf::placeholder_stack(id));
            self.alias.insert(id, id);
        }
        let traced: HashSet<u32> = unknown
            .into_iter()
            .filter(|&id| id >= bpf::FIRST_STACK_ID)
            .collect();
        if !traced.is_empty() {
            // Frames in a kernel module loaded since kallsyms was read need its symbols.
            let modules = module_names();
            if modules != self.modules_text {
                if let Err(e) = self.kallsyms.reload() {
                    say!("leak-record: warning: {e:#}; new module frames may stay unnamed");
                }
                self.modules_text = modules;
            }
            let mut traces: Vec<(u32, Vec<u64>)> =
                self.tracer.stack_traces(&traced)?.into_iter().collect();
            traces.sort_unstable();
            for (id, all) in traces {
                let ips = self.kallsyms.strip_tracing(&all).to_vec();
                // The same allocation path with other tracing frames above it (another
                // program attached to the tracepoint since) is the same stack.
                if let Some(&same) = self.by_frames.get(&ips) {
                    self.alias.insert(id, same);
                    continue;
                }
                let lookups = ips.iter().map(|&ip| kallsyms::lookup_addr(ip));
                symbols.extend(self.kallsyms.take_covering(lookups));
                let truncated = all.len() >= bpf::MAX_STACK_DEPTH;
                new_stacks.push(Stack::kernel(id, &ips, truncated));
                let names = ips
                    .iter()
                    .filter_map(|&ip| self.kallsyms.name_at(kallsyms::lookup_addr(ip)));
                for kind in [AllocKind::KernelPage, AllocKind::KernelSlab] {
                    if leak_format::kernel::cache_pages(kind, names.clone()).is_some() {
                        self.cache_pages.insert((id, kind));
                    }
                }
                self.by_frames.insert(ips, id);
                self.alias.insert(id, id);
            }
        }
        // Counters per recorded stack: the sum over the BPF stack ids that are that stack.
        let mut totals: HashMap<(u32, u32), RawStats> = HashMap::new();
        for r in &raw {
            let Some(&id) = self.alias.get(&r.stack_id) else {
                continue;
            };
            let t = totals.entry((id, r.kind)).or_insert(RawStats {
                stack_id: id,
                kind: r.kind,
                alloc_bytes: 0,
                alloc_count: 0,
                free_bytes: 0,
                free_count: 0,
            });
            t.alloc_bytes += r.alloc_bytes;
            t.alloc_count += r.alloc_count;
            t.free_bytes += r.free_bytes;
            t.free_count += r.free_count;
        }
        // What the status line shows: kernel memory, and apart from it the page cache and
        // slab pages leak-report leaves out.
        let (cached, kernel): (Vec<&RawStats>, Vec<&RawStats>) = totals
            .values()
            .partition(|t| self.cache_pages.contains(&(t.stack_id, alloc_kind(t.kind))));
        let (kernel, cached) = (bpf::Outstanding::of(kernel), bpf::Outstanding::of(cached));
        let mut stats = Vec::new();
        for (key, t) in totals {
            let changed = match self.prev.get(&key) {
                Some(p) => *p != t,
                None => t.alloc_count != 0 || t.free_count != 0,
            };
            if changed {
                self.prev.insert(key, t);
                stats.push(t.stack_stats(alloc_kind(t.kind)));
            }
        }
        // The names come first: a crash after them loses no frame's name.
        if self.seq == 0 || !symbols.is_empty() {
            symbols.sort_by_key(|s| s.addr);
            self.out.write(&Record::Kernel(KernelSymbols {
                release: self.release.clone(),
                symbols,
            }))?;
        }
        write_unseen(&mut self.out, unseen, self.last_unseen)?;
        let mut snapshot = new_snapshot(self.seq, new_stacks, stats, losses);
        snapshot.cost = meter.cost(raw.len());
        self.out.write(&Record::Snapshot(snapshot))?;
        self.seq += 1;
        if !self.cli.quiet {
            let est = estimate_mark(self.cli);
            let mut what = format!(
                "kernel outstanding {est}{} on {} stacks",
                human_bytes(kernel.bytes),
                kernel.stacks
            );
            if cached.bytes > 0 {
                what += &format!(
                    ", {est}{} more in page cache and slab pages",
                    human_bytes(cached.bytes)
                );
            }
            let (now, last) = (
                drops(&losses, &unseen),
                drops(&self.last_losses, &self.last_unseen),
            );
            print_status(self.started, self.seq, &what, now, last);
        }
        self.last_losses = losses;
        self.last_unseen = unseen;
        Ok(())
    }
}

/// Refuses a `--cache` that names no slab cache the tracepoint can report: a typo, or a cache
/// the kernel merged into another (slab merging: the objects are allocated from, and named
/// by, the cache that absorbed it). Without /proc/slabinfo, nothing is checked.
fn check_cache(name: &str) -> Result<()> {
    let Ok(slabinfo) = std::fs::read_to_string("/proc/slabinfo") else {
        return Ok(());
    };
    let canonical = |n: &str| std::fs::canonicalize(format!("/sys/kernel/slab/{n}")).ok();
    match cache_problem(name, &slabinfo, canonical) {
        Some(problem) => bail!(UsageError(problem)),
        None => Ok(()),
    }
}

/// What is wrong with `--cache name`, given /proc/slabinfo's text and where a cache's
/// /sys/kernel/slab entry leads (merged caches lead to the same place).
fn cache_problem(
    name: &str,
    slabinfo: &str,
    canonical: impl Fn(&str) -> Option<std::path::PathBuf>,
) -> Option<String> {
    let names: Vec<&str> = slabinfo
        .lines()
        .filter(|l| !l.starts_with("slabinfo") && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if names.contains(&name) {
        return None;
    }
    let Some(target) = canonical(name) else {
        return Some(format!(
            "no slab cache named '{name}' in /proc/slabinfo; use a name from its first column \
             (e.g. filp, dentry), or load the module that creates it first"
        ));
    };
    let into = names
        .iter()
        .find(|n| canonical(n).as_ref() == Some(&target))
        .map_or("another cache".to_string(), |n| format!("'{n}'"));
    Some(format!(
        "slab cache '{name}' was merged into {into} by the kernel, whose name its objects carry; \
         use --cache with that name (it holds the other merged caches' objects too), or boot \
         with slab_nomerge"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_must_be_listed_or_its_merge_is_named() {
        let slabinfo = "slabinfo - version: 2.1\n# name <active_objs> ...\n\
                        filp 714 735 192 21 1 : tunables 0 0 0 : slabdata 35 35 0\n\
                        kmalloc-64 1 1 64 64 1 : tunables 0 0 0 : slabdata 1 1 0\n";
        let sys = |n: &str| match n {
            "filp" => Some(":A-0000192".into()),
            "kmalloc-64" | "Acpi-Parse" => Some(":0000064".into()),
            _ => None,
        };
        assert_eq!(cache_problem("filp", slabinfo, sys), None);
        let typo = cache_problem("fliip", slabinfo, sys).unwrap();
        assert!(typo.starts_with("no slab cache named 'fliip'"), "{typo}");
        let merged = cache_problem("Acpi-Parse", slabinfo, sys).unwrap();
        assert!(merged.contains("merged into 'kmalloc-64'"), "{merged}");
        assert_eq!(
            cache_problem("slabinfo", slabinfo, sys).map(|p| p.starts_with("no slab")),
            Some(true),
            "the header is not a cache"
        );
    }
}
