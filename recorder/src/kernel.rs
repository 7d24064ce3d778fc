//! Kernel mode (`--kernel`): record outstanding kernel allocations per kernel stack through the
//! kmem tracepoints, with the kallsyms entries that name those stacks offline, until the
//! duration ends, a signal arrives or the `--pid` process exits.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use leak_format::{
    AllocKind, End, EndReason, Header, KernelSymbols, Losses, Record, RecordConfig, Snapshot,
    SnapshotCost, Stack, StackStats, Target, TargetMode, Writer,
};

use crate::bpf::kmem::{self, Group, KmemTracer};
use crate::bpf::{self, RawStats};
use crate::cli::Cli;
use crate::kallsyms::{self, Kallsyms};
use crate::record::{describe, human_bytes, install_signal_handlers, scopeguard, STOP_SIGNAL};
use crate::{output, procfs, target, UsageError};

/// Records kernel allocations according to the command line (checked by `record::run`).
pub fn run(cli: Cli) -> Result<()> {
    if let Some(pid) = cli.pid {
        if !procfs::is_alive(pid) {
            bail!(UsageError(format!(
                "no process with PID {pid}; check the PID (e.g. with pidof or ps)"
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
    }
    let start_wall_ns = procfs::clock_ns(libc::CLOCK_REALTIME);
    let path = cli
        .output
        .clone()
        .unwrap_or_else(|| output::default_name(start_wall_ns / 1_000_000_000));
    let file = output::create(&path, cli.force)?;
    let created = scopeguard(path.clone());
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
        groups,
    };
    let mut tracer = kmem::load(&mut storage, &opts)?;
    for line in &tracer.missing {
        eprintln!("leak-record: {line}");
    }
    tracer.attach()?;
    if !cli.quiet {
        let names: Vec<&str> = tracer
            .probes()
            .iter()
            .map(|p| p.function.as_str())
            .collect();
        eprintln!(
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
    let header = Header {
        tool: format!("leak-record {}", env!("CARGO_PKG_VERSION")),
        host,
        target: Target {
            mode: TargetMode::Kernel,
            pid: cli.pid.unwrap_or(0),
            command_line: filters,
            exe: "[kernel]".to_string(),
        },
        start_wall_ns: procfs::clock_ns(libc::CLOCK_REALTIME),
        start_mono_ns: procfs::clock_ns(libc::CLOCK_MONOTONIC),
        interval_ns: cli.interval.as_nanos() as u64,
        config: RecordConfig {
            max_allocs: cli.max_allocs,
            max_stacks: cli.max_stacks,
            max_stack_depth: bpf::MAX_STACK_DEPTH as u32,
            min_size: cli.min_size,
            max_size: cli.max_size,
            mmap: false,
        },
        probes: tracer.probes().to_vec(),
    };
    let writer =
        Writer::new(file, &header).with_context(|| format!("cannot write {}", path.display()))?;
    created.defuse();
    let pidfd = match cli.pid {
        Some(pid) => {
            Some(target::pidfd_open(pid).with_context(|| format!("cannot watch process {pid}"))?)
        }
        None => None,
    };
    install_signal_handlers();
    if !cli.quiet {
        let whose = match (cli.pid, &cli.comm) {
            (Some(pid), _) => format!("made by PID {pid}"),
            (None, Some(comm)) => format!("made by tasks named {comm}"),
            (None, None) => "of every task".to_string(),
        };
        eprintln!(
            "leak-record: recording kernel allocations {whose} to {} every {:?}{}",
            path.display(),
            cli.interval,
            cli.duration
                .map(|d| format!(" for {d:?}"))
                .unwrap_or_default()
        );
    }
    let mut session = KernelSession {
        cli: &cli,
        writer,
        path,
        tracer,
        kallsyms,
        modules_text,
        release,
        prev: HashMap::new(),
        alias: HashMap::new(),
        by_frames: HashMap::new(),
        seq: 0,
        started: Instant::now(),
        last_losses: Losses::default(),
    };
    let result = session.record_until_end(pidfd.as_ref());
    if let Err(e) = &result {
        let end = End {
            wall_ns: procfs::clock_ns(libc::CLOCK_REALTIME),
            mono_ns: procfs::clock_ns(libc::CLOCK_MONOTONIC),
            reason: EndReason::Error(format!("{e:#}")),
            snapshots: session.seq,
        };
        let _ = session.write(&Record::End(end));
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
    writer: Writer<File>,
    path: PathBuf,
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
    seq: u32,
    started: Instant,
    last_losses: Losses,
}

impl KernelSession<'_, '_> {
    fn record_until_end(&mut self, pidfd: Option<&std::os::fd::OwnedFd>) -> Result<()> {
        let interval = self.cli.interval;
        let deadline = self.cli.duration.map(|d| self.started + d);
        let mut next = self.started + interval;
        let reason = loop {
            let until = deadline.map_or(next, |d| d.min(next));
            let wait = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            let exited = match pidfd {
                Some(fd) => target::poll_readable(fd, wait.as_millis() as i32),
                None => {
                    std::thread::sleep(wait);
                    false
                }
            };
            let sig = STOP_SIGNAL.load(Ordering::SeqCst);
            if sig != 0 {
                break EndReason::Signal(sig);
            }
            if exited {
                break EndReason::TargetExited {
                    code: None,
                    signal: None,
                };
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break EndReason::Duration;
            }
            if now >= next {
                self.snapshot()?;
                while next <= now {
                    next += interval;
                }
            }
        };
        self.snapshot()?;
        let end = End {
            wall_ns: procfs::clock_ns(libc::CLOCK_REALTIME),
            mono_ns: procfs::clock_ns(libc::CLOCK_MONOTONIC),
            reason: reason.clone(),
            snapshots: self.seq,
        };
        self.write(&Record::End(end))?;
        if !self.cli.quiet {
            eprintln!(
                "leak-record: {} snapshots written to {} ({}); stopped: {}",
                self.seq,
                self.path.display(),
                human_bytes(self.writer.bytes_written()),
                describe(&reason)
            );
        }
        Ok(())
    }

    /// Appends one record; on failure cuts the file back to its last complete record.
    fn write(&mut self, record: &Record) -> Result<()> {
        let good = self.writer.bytes_written();
        if let Err(e) = self.writer.write(record) {
            let _ = self.writer.get_ref().set_len(good);
            bail!(
                "cannot write to {}: {e}; the recording up to the previous snapshot is kept",
                self.path.display()
            );
        }
        let _ = self.writer.get_ref().sync_data();
        Ok(())
    }

    fn snapshot(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let cpu0 = procfs::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        let losses = self.tracer.losses()?;
        let raw = self.tracer.stats()?;
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
            new_stacks.push(Stack {
                id,
                frames: Vec::new(),
                truncated: false,
                lost: bpf::lost_reason(id),
            });
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
                    eprintln!("leak-record: warning: {e:#}; new module frames may stay unnamed");
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
        let mut stats = Vec::new();
        for (key, t) in totals {
            let changed = match self.prev.get(&key) {
                Some(p) => *p != t,
                None => t.alloc_count != 0 || t.free_count != 0,
            };
            if changed {
                self.prev.insert(key, t);
                stats.push(StackStats {
                    stack: t.stack_id,
                    kind: alloc_kind(t.kind),
                    alloc_bytes: t.alloc_bytes,
                    alloc_count: t.alloc_count,
                    free_bytes: t.free_bytes,
                    free_count: t.free_count,
                });
            }
        }
        // The names come first: a crash after them loses no frame's name.
        if self.seq == 0 || !symbols.is_empty() {
            symbols.sort_by_key(|s| s.addr);
            self.write(&Record::Kernel(KernelSymbols {
                release: self.release.clone(),
                symbols,
            }))?;
        }
        new_stacks.sort_by_key(|s| s.id);
        stats.sort_by_key(|s| (s.stack, s.kind));
        let snapshot = Snapshot {
            seq: self.seq,
            wall_ns: procfs::clock_ns(libc::CLOCK_REALTIME),
            mono_ns: procfs::clock_ns(libc::CLOCK_MONOTONIC),
            new_modules: Vec::new(),
            new_stacks,
            stats,
            maps: None,
            memory: None,
            losses,
            cost: SnapshotCost {
                wall_ns: t0.elapsed().as_nanos() as u64,
                cpu_ns: procfs::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(cpu0),
                stacks_read: raw.len() as u32,
            },
        };
        self.write(&Record::Snapshot(snapshot))?;
        self.seq += 1;
        if !self.cli.quiet {
            let bytes: u64 = raw
                .iter()
                .map(|r| r.alloc_bytes.saturating_sub(r.free_bytes))
                .sum();
            let live = raw.iter().filter(|r| r.alloc_count > r.free_count).count();
            let drops = losses.total_drops();
            let new_drops = drops - self.last_losses.total_drops().min(drops);
            let e = self.started.elapsed().as_secs();
            eprintln!(
                "leak-record: {:02}:{:02}:{:02} snapshot {} | kernel outstanding {} on {} stacks | drops {}{}",
                e / 3600,
                e / 60 % 60,
                e % 60,
                self.seq,
                human_bytes(bytes),
                live,
                drops,
                if new_drops > 0 { format!(" (+{new_drops}: see leak-report)") } else { String::new() }
            );
        }
        self.last_losses = losses;
        Ok(())
    }
}
