//! Writes a large, synthetic, deterministic recording for benchmarking `leak-report`
//! (benches/analyzer.sh). The recording is streamed to disk record by record, so memory stays
//! small whatever its size.
//!
//! ```text
//! cargo run --release -p leak-report --example gen_recording -- \
//!     [--stacks N] [--snapshots M] [--changed F] [--seed S] -o PATH
//! ```
//!
//! * `--stacks N` (default 10000): real stacks, ids 16.., 8 to 20 frames each, all in one module;
//!   they are declared (with their first counters) over the first minute of snapshots.
//! * `--snapshots M` (default 17280 = 24 h at one snapshot per 5 s).
//! * `--changed F` (default 0.1): the share of stacks listed per snapshot (their counters changed).
//!   Leaking stacks and caches that are still filling change at every snapshot; the rest of the
//!   budget is drawn at random among the other stacks.
//! * `--seed S` (default 1): everything follows from it (splitmix64).
//!
//! Content: about 1% continuous leaks (linear growth of 128 B/s to 4 KiB/s, plus noise), about 5%
//! caches that fill over 5-30% of the recording then stay flat, and the rest churn around a
//! level (mean-reverting noise). Each stack allocates one size; frees balance allocations towards
//! the stack's target level. Losses are zero, `memory` rises with the outstanding bytes, and the
//! recording ends with an `End` record.
use std::fs::File;
use std::io::BufWriter;
use std::process::ExitCode;
use std::time::Instant;

use leak_format::{
    AllocKind, End, EndReason, Frame, Header, HostInfo, Losses, MapEntry, Module, Probe, ProbeSide,
    ProcMemory, Record, RecordConfig, Snapshot, SnapshotCost, Stack, StackStats, Target,
    TargetMode, Writer,
};

const INTERVAL_NS: u64 = 5_000_000_000;
const START_WALL_NS: u64 = 1_700_000_000_000_000_000;
const START_MONO_NS: u64 = 1_000_000_000;
const MODULE_PATH: &str = "/opt/synthetic/bin/svc";
const MODULE_BASE: u64 = 0x5555_5555_0000;
const TEXT_SIZE: u64 = 8 << 20;
const FIRST_STACK_ID: u32 = 16;
/// Stacks are declared over this many snapshots (one minute at 5 s).
const APPEAR_OVER: u32 = 12;

#[derive(Debug)]
struct Args {
    stacks: u32,
    snapshots: u32,
    changed: f64,
    seed: u64,
    out: String,
}

fn usage() -> &'static str {
    "usage: gen_recording [--stacks N] [--snapshots M] [--changed F] [--seed S] -o PATH"
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        stacks: 10_000,
        snapshots: 17_280,
        changed: 0.1,
        seed: 1,
        out: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage().into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let bad = || format!("bad value '{value}' for {flag}\n{}", usage());
        match flag.as_str() {
            "--stacks" => a.stacks = value.parse().map_err(|_| bad())?,
            "--snapshots" => a.snapshots = value.parse().map_err(|_| bad())?,
            "--changed" => a.changed = value.parse().map_err(|_| bad())?,
            "--seed" => a.seed = value.parse().map_err(|_| bad())?,
            "-o" | "--output" => a.out = value,
            _ => return Err(format!("unknown argument '{flag}'\n{}", usage())),
        }
    }
    if a.out.is_empty() {
        return Err(format!("-o PATH is required\n{}", usage()));
    }
    if a.stacks == 0 || a.snapshots == 0 || !(0.0..=1.0).contains(&a.changed) {
        return Err("--stacks and --snapshots must be > 0, --changed within 0..=1".into());
    }
    Ok(a)
}

/// splitmix64: small, fast, good enough for synthetic data.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// Log-uniform in [lo, hi).
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.uniform() * (hi.ln() - lo.ln())).exp()
    }
    /// Symmetric noise in [-a, a].
    fn noise(&mut self, a: f64) -> f64 {
        (self.uniform() * 2.0 - 1.0) * a
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// Target level grows by `per_snap` allocations per snapshot.
    Leak { per_snap: f64 },
    /// Target level rises linearly to `cap` allocations by snapshot `fill_until`, then stays.
    Cache { cap: f64, fill_until: u32 },
    /// Target level wanders around `level` allocations (mean-reverting).
    Churn { level: f64 },
}

#[derive(Debug)]
struct StackState {
    appear: u32,
    size: u64,
    behaviour: Behaviour,
    /// Allocations/frees per change that cancel out.
    churn: u64,
    /// Current mean-reverting deviation (allocations).
    wander: f64,
    stats: StackStats,
}

impl StackState {
    fn outstanding_count(&self) -> u64 {
        self.stats.outstanding_count()
    }

    /// Moves the counters one change forward at snapshot `seq`.
    fn step(&mut self, seq: u32, rng: &mut Rng) {
        let since = f64::from(seq - self.appear);
        let target = match self.behaviour {
            Behaviour::Leak { per_snap } => {
                8.0 + per_snap * since + rng.noise((per_snap * 10.0).max(2.0))
            }
            Behaviour::Cache { cap, fill_until } => {
                let fill = f64::from(fill_until.saturating_sub(self.appear)).max(1.0);
                cap * (since / fill).min(1.0) + rng.noise((cap * 0.002).max(1.0))
            }
            Behaviour::Churn { level } => {
                self.wander = 0.9 * self.wander + rng.noise((level * 0.05).max(1.0));
                level + self.wander
            }
        };
        let target = target.max(0.0).round() as u64;
        let out = self.outstanding_count();
        let churn = if self.churn == 0 {
            0
        } else {
            rng.range(self.churn / 2, self.churn + self.churn / 2)
        };
        let (mut allocs, mut frees) = (churn, churn);
        if target > out {
            allocs += target - out;
        } else {
            frees += out - target;
        }
        frees = frees.min(out + allocs);
        if allocs == 0 && frees == 0 {
            // A listed stack changed: at least one allocation and its free.
            allocs = 1;
            frees = 1;
        }
        let s = &mut self.stats;
        s.alloc_count += allocs;
        s.alloc_bytes += allocs * self.size;
        s.free_count += frees;
        s.free_bytes += frees * self.size;
    }

    /// Whether the stack must change at `seq` (leaks always; caches while filling).
    fn always_changes(&self, seq: u32) -> bool {
        match self.behaviour {
            Behaviour::Leak { .. } => true,
            Behaviour::Cache { fill_until, .. } => seq <= fill_until,
            Behaviour::Churn { .. } => false,
        }
    }
}

fn header() -> Header {
    Header {
        tool: "gen_recording (leak-report example, synthetic)".into(),
        host: HostInfo {
            hostname: "synthetic".into(),
            kernel_release: "6.1.0".into(),
            kernel_version: "#1 SMP".into(),
            arch: "x86_64".into(),
            page_size: 4096,
            mem_total_bytes: 64 << 30,
        },
        target: Target {
            mode: TargetMode::Attach,
            pid: 4242,
            command_line: vec![MODULE_PATH.into(), "--serve".into()],
            exe: MODULE_PATH.into(),
        },
        start_wall_ns: START_WALL_NS,
        start_mono_ns: START_MONO_NS,
        interval_ns: INTERVAL_NS,
        config: RecordConfig {
            max_allocs: 1 << 22,
            max_stacks: 1 << 16,
            max_stack_depth: 64,
            min_size: None,
            max_size: None,
            mmap: false,
        },
        probes: ["malloc", "free", "calloc", "realloc"]
            .iter()
            .enumerate()
            .map(|(i, f)| Probe {
                function: (*f).into(),
                module: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                offset: 0x9_8000 + 0x400 * i as u64,
                side: ProbeSide::Entry,
            })
            .collect(),
    }
}

fn maps() -> Vec<MapEntry> {
    let entry = |start: u64, end: u64, perms: &str, offset: u64, inode: u64, path: &str| MapEntry {
        start,
        end,
        perms: perms.into(),
        offset,
        dev: if inode == 0 { "00:00" } else { "fe:01" }.into(),
        inode,
        path: path.into(),
    };
    vec![
        entry(
            MODULE_BASE,
            MODULE_BASE + 0x1000,
            "r--p",
            0,
            1234,
            MODULE_PATH,
        ),
        entry(
            MODULE_BASE + 0x1000,
            MODULE_BASE + 0x1000 + TEXT_SIZE,
            "r-xp",
            0x1000,
            1234,
            MODULE_PATH,
        ),
        entry(0x5555_6000_0000, 0x5555_7000_0000, "rw-p", 0, 0, "[heap]"),
    ]
}

fn make_stacks(n: u32, snapshots: u32, rng: &mut Rng) -> (Vec<StackState>, Vec<Stack>) {
    // A pool of functions; each stack shares the outer frames (main, runtime) and picks the rest.
    let functions: Vec<u64> = (0..4096)
        .map(|_| 0x1000 + rng.range(0, TEXT_SIZE - 16))
        .collect();
    let outer: Vec<u64> = functions[..4].to_vec();
    let appear_over = APPEAR_OVER.min(snapshots);
    let mut states = Vec::with_capacity(n as usize);
    let mut declared = Vec::with_capacity(n as usize);
    for i in 0..n {
        let id = FIRST_STACK_ID + i;
        let depth = rng.range(8, 20) as usize;
        let mut offsets: Vec<u64> = (0..depth - outer.len())
            .map(|_| {
                functions[rng.range(4, functions.len() as u64 - 1) as usize] + rng.range(5, 400)
            })
            .collect();
        offsets.extend(outer.iter().rev().map(|o| o + 0x20));
        let frames = offsets
            .iter()
            .map(|&offset| Frame {
                addr: MODULE_BASE + offset,
                module: Some(1),
                offset,
            })
            .collect();
        declared.push(Stack {
            id,
            frames,
            truncated: false,
            lost: None,
        });
        let size = rng.log_uniform(16.0, 8192.0).round() as u64;
        let kind = rng.uniform();
        let behaviour = if kind < 0.01 {
            // 128 B/s to 4 KiB/s.
            let bytes_per_s = rng.log_uniform(128.0, 4096.0);
            Behaviour::Leak {
                per_snap: bytes_per_s * (INTERVAL_NS as f64 / 1e9) / size as f64,
            }
        } else if kind < 0.06 {
            let fill = (f64::from(snapshots) * (0.05 + 0.25 * rng.uniform())).round() as u32;
            Behaviour::Cache {
                cap: rng.log_uniform(100.0, 20_000.0),
                fill_until: fill.max(appear_over + 1),
            }
        } else {
            Behaviour::Churn {
                level: rng.log_uniform(1.0, 2_000.0),
            }
        };
        states.push(StackState {
            appear: i * appear_over / n,
            size,
            behaviour,
            churn: rng.range(0, 50),
            wander: 0.0,
            stats: StackStats {
                stack: id,
                kind: AllocKind::Heap,
                ..StackStats::default()
            },
        });
    }
    (states, declared)
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut rng = Rng(a.seed);
    let (mut states, declared) = make_stacks(a.stacks, a.snapshots, &mut rng);
    let mut declared = declared.into_iter();
    let file = File::create(&a.out).map_err(|e| format!("cannot create {}: {e}", a.out))?;
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, file), &header())?;
    let budget = a.changed * f64::from(a.stacks);
    let mut entries: u64 = 0;
    let mut outstanding_bytes: u64 = 0;
    for seq in 0..a.snapshots {
        let mut new_stacks = Vec::new();
        let mut forced = 0usize;
        let mut optional = 0usize;
        for s in &states {
            if s.appear == seq {
                new_stacks.push(declared.next().ok_or("stack declared twice")?);
                forced += 1;
            } else if s.appear < seq {
                if s.always_changes(seq) {
                    forced += 1;
                } else {
                    optional += 1;
                }
            }
        }
        let p = if optional == 0 {
            0.0
        } else {
            ((budget - forced as f64) / optional as f64).clamp(0.0, 1.0)
        };
        let mut stats = Vec::with_capacity(budget as usize + forced);
        for s in states.iter_mut() {
            if s.appear > seq {
                continue;
            }
            let change = s.appear == seq || s.always_changes(seq) || rng.uniform() < p;
            if change {
                let before = s.stats.outstanding_bytes();
                s.step(seq, &mut rng);
                outstanding_bytes = outstanding_bytes - before + s.stats.outstanding_bytes();
                stats.push(s.stats);
            }
        }
        entries += stats.len() as u64;
        let live = states.iter().filter(|s| s.appear <= seq).count() as u32;
        let rss = (300 << 20) + outstanding_bytes + (u64::from(seq) << 8);
        let snapshot = Snapshot {
            seq,
            wall_ns: START_WALL_NS + u64::from(seq + 1) * INTERVAL_NS,
            mono_ns: START_MONO_NS + u64::from(seq + 1) * INTERVAL_NS,
            new_modules: if seq == 0 {
                vec![Module {
                    id: 1,
                    path: MODULE_PATH.into(),
                    build_id: Some((0..20u8).map(|b| b.wrapping_mul(37) ^ 0x5a).collect()),
                    file_size: TEXT_SIZE + 0x2000,
                }]
            } else {
                Vec::new()
            },
            new_stacks,
            stats,
            maps: (seq == 0).then(maps),
            memory: Some(ProcMemory {
                rss,
                rss_anon: rss - (24 << 20),
                rss_file: 24 << 20,
                swap: 0,
            }),
            losses: Losses::default(),
            cost: SnapshotCost {
                wall_ns: 600 * u64::from(live) + rng.range(0, 200_000),
                cpu_ns: 500 * u64::from(live),
                stacks_read: live,
            },
        };
        w.write(&Record::Snapshot(snapshot))?;
    }
    let end_ns = u64::from(a.snapshots) * INTERVAL_NS;
    w.write(&Record::End(End {
        wall_ns: START_WALL_NS + end_ns,
        mono_ns: START_MONO_NS + end_ns,
        reason: EndReason::Duration,
        snapshots: a.snapshots,
    }))?;
    w.flush()?;
    let size = w.bytes_written();
    drop(w);
    let counts = |f: fn(&Behaviour) -> bool| states.iter().filter(|s| f(&s.behaviour)).count();
    println!(
        "stacks: {} leaks, {} caches, {} churn",
        counts(|b| matches!(b, Behaviour::Leak { .. })),
        counts(|b| matches!(b, Behaviour::Cache { .. })),
        counts(|b| matches!(b, Behaviour::Churn { .. })),
    );
    println!(
        "size: {size} bytes ({:.1} MiB)",
        size as f64 / f64::from(1 << 20)
    );
    println!(
        "wrote {} stacks x {} snapshots ({entries} stat entries) to {} in {:.1} s",
        a.stacks,
        a.snapshots,
        a.out,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_recording: {e}");
            ExitCode::FAILURE
        }
    }
}
