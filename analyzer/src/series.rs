//! Reads a recording as a stream into one time series per (stack, kind), with bounded memory:
//! each series keeps at most `cap` samples, halving its resolution (pairwise means) when full,
//! while exact end values, the strict-rule flag and known/unknown counts are kept on the side.
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::mpsc;
use std::thread;

use leak_format::{
    AllocKind, BundleChunk, End, Error, Header, Losses, Module, ProcMemory, Reader, Record, Stack,
    StackStats,
};

use crate::detect::Point;

/// Default number of samples kept per series (the detector uses at most a few hundred).
pub const DEFAULT_CAP: usize = 512;

/// One sample: the sums over the raw snapshots it stands for.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    t_sum: f64,
    bytes_sum: f64,
    count_sum: f64,
    /// Raw snapshots in the sample.
    n: u32,
    /// Of those, the ones with a known value.
    known: u32,
}

impl Acc {
    fn merge(&mut self, o: &Acc) {
        self.t_sum += o.t_sum;
        self.bytes_sum += o.bytes_sum;
        self.count_sum += o.count_sum;
        self.n += o.n;
        self.known += o.known;
    }
}

/// A compacted series of one stack: at most `cap` samples, each the mean of a run of raw
/// snapshots; when full, neighbouring samples merge and each then stands for twice as many.
/// A stretch of snapshots with the same value is added in one step per sample it spans.
///
/// Folding an entry reads and writes the fields of the first two cache lines (the last sample
/// is kept inline, in `open`); the buffer of closed samples is touched once per sample, and the
/// exact counters (the third line) only at the end.
#[derive(Debug, Clone, Default)]
#[repr(C, align(64))]
pub struct Series {
    /// The last sample (`n == 0`: none yet).
    open: Acc,
    /// Outstanding bytes and blocks at the last snapshot that knew them.
    level: Level,
    /// Raw snapshots since the stack first appeared, and how many of them knew its value.
    /// (Not side by side: the compiler then added 1 to both with one 16-byte load and store
    /// right after `fill` had stored them one by one, and that load waited for those stores:
    /// 44-59% of the shards' profile samples.)
    pub seen: u64,
    /// Outstanding bytes at the first known snapshot.
    pub first_bytes: u64,
    pub known: u64,
    /// Known snapshots since the first appearance (the seed rule needs two).
    pub strict_points: u64,
    /// Raw snapshots added so far (native recordings: the index of the next snapshot).
    filled_to: usize,
    /// Raw snapshots each sample stands for (the last one may hold fewer).
    per_sample: u32,
    /// The seed rule so far: bytes grew at every consecutive known snapshot.
    pub strictly_increasing: bool,
    /// The seed rule has started (a value above zero was seen); `level` holds the previous one.
    strict_started: bool,
    /// Every sample but the last.
    samples: Vec<Acc>,
    /// Exact counters at the last snapshot that knew them (not touched by the fold: the
    /// reading thread keeps them, and puts the last ones here).
    pub last: StackStats,
}

impl Series {
    /// An empty series.
    pub fn new() -> Self {
        Series {
            per_sample: 1,
            strictly_increasing: true,
            ..Series::default()
        }
    }

    /// Adds the value at one snapshot at time `t` (None = unknown at that time), keeping at
    /// most `cap` samples.
    pub fn push(&mut self, t: f64, stats: Option<&StackStats>, cap: usize) {
        if let Some(s) = stats {
            self.last = *s;
        }
        self.add_run(1, |_, _| t, stats.map(Level::from), cap);
    }

    /// Adds `n` consecutive snapshots with the same value; `t_sum(i, k)` is the sum of the
    /// times of the `k` snapshots starting `i` snapshots into the run.
    #[inline(always)]
    fn add_run(
        &mut self,
        n: usize,
        t_sum: impl Fn(usize, usize) -> f64,
        level: Option<Level>,
        cap: usize,
    ) {
        if n == 0 {
            return;
        }
        self.seen += n as u64;
        let value = level.map(|l| (l.bytes as f64, l.count as f64));
        if let (Some(l), Some((b, _))) = (level, value) {
            self.known += n as u64;
            if self.known == n as u64 {
                self.first_bytes = l.bytes;
            }
            // The seed rule counts from the first appearance, the first value above zero (as
            // `detect::strict_monotonic` does); a repeated value is not growth.
            let repeats = n as u64 - 1;
            if self.strict_started {
                let prev = self.level.bytes as f64;
                if b <= prev || repeats > 0 {
                    self.strictly_increasing = false;
                }
                self.strict_points += n as u64;
            } else if b > 0.0 {
                if repeats > 0 {
                    self.strictly_increasing = false;
                }
                self.strict_points = n as u64;
                self.strict_started = true;
            }
            self.level = l;
        }
        let mut done = 0;
        while done < n {
            let per_sample = self.per_sample;
            let last = &mut self.open;
            if last.n == 0 || last.n >= per_sample {
                if last.n > 0 {
                    self.samples.push(*last);
                }
                *last = Acc::default();
            }
            let k = ((per_sample - last.n) as usize).min(n - done);
            last.t_sum += t_sum(done, k);
            last.n += k as u32;
            if let Some((b, c)) = value {
                last.bytes_sum += b * k as f64;
                last.count_sum += c * k as f64;
                last.known += k as u32;
            }
            done += k;
            // More than `cap` samples, counting the open one.
            if self.samples.len() >= cap {
                self.halve();
            }
        }
    }

    /// Merges neighbouring samples. Into a new buffer: that allocation reuses the blocks the
    /// buffers of other series left when they grew (merging in place left them unused, and
    /// peak RSS 35% higher).
    fn halve(&mut self) {
        if self.open.n > 0 {
            self.samples.push(self.open);
        }
        let mut merged: Vec<Acc> = self
            .samples
            .chunks(2)
            .map(|c| {
                let mut a = c[0];
                if let Some(b) = c.get(1) {
                    a.merge(b);
                }
                a
            })
            .collect();
        self.open = merged.pop().unwrap_or_default();
        self.samples = merged;
        self.per_sample *= 2;
    }

    /// The samples for the detector: the mean time and value of each run.
    pub fn points(&self) -> Vec<Point> {
        self.samples
            .iter()
            .chain(std::iter::once(&self.open))
            .filter(|a| a.n > 0)
            .map(|a| Point {
                t: a.t_sum / f64::from(a.n),
                bytes: (a.known > 0).then(|| a.bytes_sum / f64::from(a.known)),
                count: (a.known > 0).then(|| a.count_sum / f64::from(a.known)),
            })
            .collect()
    }

    /// Adds a native series' changes (in snapshot order), and the unchanged snapshots before
    /// each.
    fn add_changes(&mut self, changes: &[ShardEntry], times: &[f64], prefix: &[f64], cap: usize) {
        for &(_, k, level) in changes {
            let k = k as usize;
            // Only what changed costs anything; unchanged snapshots are filled in here.
            self.fill(prefix, k, cap);
            let t = times[k];
            self.add_run(1, |_, _| t, Some(level), cap);
            self.filled_to = k + 1;
        }
    }

    /// Brings a native series up to snapshot `upto` (exclusive): the snapshots since its last
    /// change all had its last value.
    #[inline(always)]
    fn fill(&mut self, prefix: &[f64], upto: usize, cap: usize) {
        let from = self.filled_to;
        if upto > from {
            let level = self.level;
            self.add_run(
                upto - from,
                |i, k| prefix[from + i + k] - prefix[from + i],
                Some(level),
                cap,
            );
            self.filled_to = upto;
        }
    }
}

/// A series' value at one snapshot: what the fold adds up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Level {
    bytes: u64,
    count: u64,
}

impl From<&StackStats> for Level {
    fn from(s: &StackStats) -> Self {
        Level {
            bytes: s.outstanding_bytes(),
            count: s.outstanding_count(),
        }
    }
}

/// One point of the process-wide timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelinePoint {
    /// Seconds since the start.
    pub t: f64,
    /// Outstanding heap bytes over all stacks.
    pub outstanding: u64,
    /// The target's memory, when known.
    pub memory: Option<ProcMemory>,
    /// Frees of blocks the recorder never saw allocated, so far (the loss counter), less the
    /// allocations it lost or could not see by then, whose frees count there too: at least
    /// this many were of blocks from before the start (an attach).
    pub unknown_free: u64,
}

/// Everything the analysis needs from one recording.
#[derive(Debug, Default)]
pub struct Recording {
    pub header: Option<Header>,
    pub stacks: BTreeMap<u32, Stack>,
    pub modules: BTreeMap<u32, Module>,
    pub series: BTreeMap<(u32, AllocKind), Series>,
    /// Bundled content per module: (kind, bytes), complete bundles only.
    pub bundles: BTreeMap<u32, (leak_format::BundleContent, Vec<u8>)>,
    pub losses: Losses,
    pub end: Option<End>,
    pub snapshots: u32,
    /// Seconds from the start to the last snapshot.
    pub duration: f64,
    /// The problem with the file's tail, if any (everything before it was read).
    pub tail: Option<Error>,
    /// The snapshots the file says it holds (its End record, read from the end), when known:
    /// more than were read when a damaged record in the middle hid the rest.
    pub expected_snapshots: Option<u32>,
    /// The process-wide timeline (compacted like the series).
    pub timeline: Vec<TimelinePoint>,
    /// Unknown (newer) record kinds skipped.
    pub skipped_records: u64,
    /// Every memory mapping the recording saw (for debug-only files, whose file offsets are
    /// not usable).
    pub maps: Vec<leak_format::MapEntry>,
    /// Kernel symbols saved by a kernel-mode recording, by address.
    pub kernel_symbols: BTreeMap<u64, leak_format::KernelSymbol>,
    /// The kernel release they belong to.
    pub kernel_release: Option<String>,
    /// Mean bytes between sampled allocations (`--sample-bytes`): every figure is an estimate.
    pub sample_bytes: Option<u64>,
    /// Frames that come symbolized with the input (memleak text logs), by stack id.
    pub presymbolized: BTreeMap<u32, Vec<crate::symbolize::SymFrame>>,
    /// Probes attached after the start (the target exec'd a program with another allocator).
    pub late_probes: Vec<leak_format::LateProbes>,
    /// Processes the target started, not recorded (the last `Children` record).
    pub children: Option<leak_format::Children>,
    /// Allocator events not recorded (the last `Unseen` record); zero if none.
    pub unseen: leak_format::Unseen,
    /// The process a `--kernel --pid` recording follows, or the program a user-mode target
    /// runs after its last exec seen (the last `Process` record), if written.
    pub process: Option<leak_format::Process>,
    /// A recording of one process that ended with its exit: the snapshots at and after the
    /// exit, which are not in the series ([`exit_apart`]; the verdicts judge the process as it
    /// ran, where its exit frees what it held).
    pub after_exit: Option<AfterExit>,
    /// Violations of the record order (docs/format.md, 1.3), for the warnings.
    pub order: OrderProblems,
    /// Read from a bcc or libbpf-tools memleak text log (which names no target), not from a
    /// leak-record recording.
    pub memleak_log: bool,
    /// The longest time between two analyzed snapshots: (seconds since the start at the one
    /// before it, its length in seconds).
    pub longest_gap: Option<(f64, f64)>,
}

/// Whether the snapshot taken at the target's exit, numbered `at` (as many were taken before
/// it), is kept apart from the series (`Recording::after_exit`): in a `--kernel --pid`
/// recording, always (the exit frees what the process held in the kernel); in a user-mode one,
/// when the program's own teardown (atexit handlers, destructors, an interpreter's
/// finalization) freed memory (`fell`: outstanding bytes fell at that snapshot), which would
/// turn a leak's end into a fall, and the snapshots before it can be judged on their own
/// (`leak_format::SNAPSHOTS_TO_JUDGE`). Otherwise it is the last point of the run, and a
/// recording of a few intervals (a test) its state at the exit.
fn exit_apart(h: &leak_format::Header, at: u32, fell: impl FnOnce() -> bool) -> bool {
    match h.target.mode {
        leak_format::TargetMode::Kernel => h.target.pid != 0,
        _ => at >= leak_format::SNAPSHOTS_TO_JUDGE && fell(),
    }
}

/// What a recording of one process saw at and after its exit (`Recording::after_exit`).
#[derive(Debug, Default)]
pub struct AfterExit {
    /// Seconds since the start of the first snapshot after the exit.
    pub t: f64,
    /// How many (the recorder takes one); not counted in `Recording::snapshots`.
    pub snapshots: u32,
    /// The counters that changed in the snapshots after the exit, last values.
    pub stats: BTreeMap<(u32, AllocKind), StackStats>,
}

impl Recording {
    /// Where the state in [`Recording::after_exit`] stands: a kernel target's exit frees what
    /// it held there, so that snapshot comes after the exit; a user-mode one is the program's
    /// state at its exit, after its own teardown.
    pub fn exit_phrase(&self) -> &'static str {
        if self.is_kernel() {
            "after the exit"
        } else {
            "at the exit"
        }
    }

    /// A kernel-mode recording (`leak-record --kernel`).
    pub fn is_kernel(&self) -> bool {
        self.header
            .as_ref()
            .is_some_and(|h| h.target.mode == leak_format::TargetMode::Kernel)
    }

    /// A recording of a process leak-record attached to (`-p`), not one it started.
    pub fn is_attached(&self) -> bool {
        self.header
            .as_ref()
            .is_some_and(|h| h.target.mode == leak_format::TargetMode::Attach)
    }

    /// The program a user-mode target runs after its last exec seen (format 1.7), when the
    /// recording names it (any of its fields read): not what the header says was started.
    pub fn exec_process(&self) -> Option<&leak_format::Process> {
        let p = self.process.as_ref()?;
        let named = !(p.name.is_empty() && p.command_line.is_empty() && p.exe.is_empty());
        (self.header.is_some() && !self.is_kernel() && named).then_some(p)
    }
}

/// What a recording holds out of the order writers must follow (docs/format.md, 1.3): records
/// missing, repeated or appended. Each is counted, and the reader warns about it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OrderProblems {
    /// Snapshots missing from 0, 1, 2, ... up to the highest `seq` read (never read, whatever
    /// else was repeated).
    pub missing_snapshots: u64,
    /// Snapshots whose `seq` is not above the highest before them (swapped or repeated).
    pub out_of_order: u64,
    /// Where reading stopped early and why: the snapshots read before, and the records left.
    pub stopped: Option<Stopped>,
    /// Stack ids with counters that no snapshot declared (ids 16 and up).
    pub undeclared_stacks: usize,
}

/// Why the fold stopped before the file's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// `true`: a second Header; `false`: records after the End record.
    pub second_header: bool,
    /// Snapshots read before it.
    pub after_snapshots: u32,
    /// Records not read from there on.
    pub records_left: u64,
}

/// Ids below this are placeholders (docs/format.md, 5.3), not declared stacks.
const FIRST_STACK_ID: u32 = 16;

/// Stack ids below this are looked up in a table indexed by id (the kernel assigns ids from 16
/// up, in order); larger ones in a hash map. Bounds the table (4 bytes per id and kind, grown
/// by powers of two) at 32 MiB, whatever ids a file holds.
const DENSE_IDS: usize = 1 << 20;
/// Kinds with a column in the dense table (every kind this reader knows).
const DENSE_KINDS: usize = AllocKind::KernelPercpu as usize + 1;
/// Most threads folding series (one per core up to this).
const MAX_SHARDS: usize = 8;

/// Where each (stack, kind) series lives in the fold: its slot, numbered in order of first
/// appearance.
#[derive(Debug, Default)]
struct Slots {
    /// Slot + 1 by `id * DENSE_KINDS + kind` (0: no series yet); grown on demand.
    dense: Vec<u32>,
    sparse: HashMap<(u32, AllocKind), u32>,
}

impl Slots {
    /// The slot of `key`, if it has one.
    fn get(&self, key: (u32, AllocKind)) -> Option<u32> {
        let (id, kind) = (key.0 as usize, key.1 as usize);
        if id < DENSE_IDS && kind < DENSE_KINDS {
            let slot = *self.dense.get(id * DENSE_KINDS + kind)?;
            slot.checked_sub(1)
        } else {
            self.sparse.get(&key).copied()
        }
    }

    /// The slot of `key`, or `next` (recorded as its slot) with `true` if the key is new.
    fn get_or_insert(&mut self, key: (u32, AllocKind), next: u32) -> (u32, bool) {
        let (id, kind) = (key.0 as usize, key.1 as usize);
        if id < DENSE_IDS && kind < DENSE_KINDS {
            let i = id * DENSE_KINDS + kind;
            if i >= self.dense.len() {
                self.dense.resize((i + 1).next_power_of_two(), 0);
            }
            match self.dense[i] {
                0 => {
                    self.dense[i] = next + 1;
                    (next, true)
                }
                slot => (slot - 1, false),
            }
        } else {
            match self.sparse.entry(key) {
                Entry::Occupied(e) => (*e.get(), false),
                Entry::Vacant(e) => (*e.insert(next), true),
            }
        }
    }
}

/// One stat entry for a shard: the series' index in the shard, the snapshot, its value. (The
/// exact counters stay with the reading thread, which puts the last ones in each series.)
type ShardEntry = (u32, u32, Level);

/// What the reading thread hands a shard: the times of the snapshots read since the last
/// hand-over (every shard gets them all), and the entries of its series.
#[derive(Debug, Default)]
struct ShardBatch {
    times: Vec<f64>,
    entries: Vec<ShardEntry>,
}

impl ShardBatch {
    /// Takes the batch, leaving an empty one with room for as many (batches are alike).
    fn take(&mut self) -> ShardBatch {
        let empty = ShardBatch {
            times: Vec::with_capacity(self.times.len()),
            entries: Vec::with_capacity(self.entries.len()),
        };
        std::mem::replace(self, empty)
    }
}

/// A share of the series (slot % shards), folded on a thread of its own. Each series gets
/// its entries in file order, so the same floating-point operations in the same order
/// whatever the number of shards.
#[derive(Debug)]
struct Shard {
    cap: usize,
    /// The number of snapshots the recording says it holds (its End record), if known.
    expected: Option<usize>,
    series: Vec<Series>,
    /// Every snapshot's time, and their running sums (for the mean time of any run):
    /// `prefix[k]` is the sum over the first k snapshots.
    times: Vec<f64>,
    prefix: Vec<f64>,
    /// Scratch for `by_series` (kept to save the allocations).
    starts: Vec<u32>,
    grouped: Vec<ShardEntry>,
}

impl Shard {
    fn new(cap: usize, expected: Option<usize>) -> Self {
        Shard {
            cap,
            expected,
            series: Vec::new(),
            times: Vec::new(),
            prefix: vec![0.0],
            starts: Vec::new(),
            grouped: Vec::new(),
        }
    }

    fn add(&mut self, mut batch: ShardBatch) {
        for t in batch.times {
            let k = self.times.len();
            self.times.push(t);
            self.prefix.push(self.prefix[k] + t);
        }
        self.by_series(&mut batch.entries);
        for entries in batch.entries.chunk_by(|a, b| a.0 == b.0) {
            let (index, first) = (entries[0].0 as usize, entries[0].1 as usize);
            // Slots are numbered in order of first appearance, so a new series comes next.
            if index == self.series.len() {
                let per_sample = final_per_sample(self.expected, first, self.cap);
                // Room for the closed samples it ends with, when the length is known: growing
                // by doubling copied each buffer up to nine times and left half of it unused.
                let closed = self
                    .expected
                    .map_or(0, |n| n.saturating_sub(first).div_ceil(per_sample as usize))
                    .saturating_sub(1);
                self.series.push(Series {
                    filled_to: first,
                    per_sample,
                    samples: Vec::with_capacity(closed.min(self.cap)),
                    ..Series::new()
                });
            }
            self.series[index].add_changes(entries, &self.times, &self.prefix, self.cap);
        }
    }

    /// Orders `entries` by series, each series' entries staying in file order (a counting
    /// sort). Folded in snapshot order, every entry of a batch touched another series, mostly
    /// out of cache (a shard's thousands of series outgrow it); grouped, each series is fetched
    /// once per batch. Each series sees the same additions in the same order either way.
    fn by_series(&mut self, entries: &mut Vec<ShardEntry>) {
        let series = entries
            .iter()
            .map(|e| e.0)
            .max()
            .map_or(0, |m| m as usize + 1);
        let starts = &mut self.starts;
        starts.clear();
        starts.resize(series + 1, 0);
        for e in entries.iter() {
            starts[e.0 as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let grouped = &mut self.grouped;
        grouped.clear();
        grouped.resize(entries.len(), (0, 0, Level::default()));
        for &e in entries.iter() {
            let at = &mut starts[e.0 as usize];
            grouped[*at as usize] = e;
            *at += 1;
        }
        std::mem::swap(entries, grouped);
    }

    /// Brings every series up to the last snapshot.
    fn finish(mut self) -> Vec<Series> {
        let snapshots = self.times.len();
        for series in &mut self.series {
            series.fill(&self.prefix, snapshots, self.cap);
        }
        self.series
    }
}

/// The resolution a series that starts at snapshot `start` ends with, when the recording's
/// length is known: the fewest raw snapshots per sample (a power of two) that keep it within
/// `cap` samples. Halving as the series grows reaches the same samples (their bounds are
/// multiples of the resolution from the series' start), so starting there only saves the
/// samples and the halvings on the way. 1 when the length is unknown (or wrong: the series
/// then halves as it grows).
fn final_per_sample(expected: Option<usize>, start: usize, cap: usize) -> u32 {
    let len = expected.map_or(0, |n| n.saturating_sub(start));
    let mut per_sample = 1u32;
    while len.div_ceil(per_sample as usize) > cap.max(1) && per_sample < 1 << 30 {
        per_sample *= 2;
    }
    per_sample
}

/// Which snapshot `seq` numbers a file holds: 0, 1, 2, ... in order in a sound one.
#[derive(Debug, Default)]
struct SeqTracker {
    /// The highest so far.
    max: Option<u32>,
    /// The numbers below it not seen yet, as half-open ranges (none in a sound file).
    gaps: Vec<(u32, u32)>,
    /// Numbers at or below the highest before them (swapped or repeated snapshots).
    out_of_order: u64,
}

impl SeqTracker {
    /// A jump past the next number opens a gap; a number at or below the highest is out of
    /// order, and fills a gap unless it repeats one seen.
    fn note(&mut self, seq: u32) {
        let next = self.max.map_or(0, |max| max.saturating_add(1));
        if seq >= next {
            if seq > next {
                self.gaps.push((next, seq));
            }
            self.max = Some(seq);
            return;
        }
        self.out_of_order += 1;
        if let Some(i) = self.gaps.iter().position(|&(a, b)| a <= seq && seq < b) {
            let (a, b) = self.gaps.swap_remove(i);
            self.gaps
                .extend([(a, seq), (seq + 1, b)].into_iter().filter(|(x, y)| x < y));
        }
    }

    /// Numbers from 0 to the highest never seen: missing snapshots (a repeated snapshot does
    /// not make up for one).
    fn missing(&self) -> u64 {
        self.gaps.iter().map(|&(a, b)| u64::from(b - a)).sum()
    }
}

/// The reading thread's state: everything but the series (which the shards fold), and the
/// shards' next batches.
#[derive(Debug)]
struct Fold {
    rec: Recording,
    slots: Slots,
    keys: Vec<(u32, AllocKind)>,
    /// The counters of each series (by slot) at its last entry (zero before the first).
    last: Vec<StackStats>,
    batches: Vec<ShardBatch>,
    snapshots: u32,
    heap_outstanding: i128,
    partial: BTreeMap<u32, (leak_format::BundleContent, u64, Vec<u8>)>,
    start_mono: Option<u64>,
    /// The snapshots' `seq` numbers so far.
    seqs: SeqTracker,
    cap: usize,
    /// The `seq` of the snapshot taken after a `--pid` kernel target's exit, if the recording
    /// ended with it (the End record's count less one: the recorder numbers snapshots from 0):
    /// that one and any later go to `Recording::after_exit`, not to the series. By `seq`, not
    /// by count, so that a missing or repeated snapshot does not move it.
    exit_at: Option<u32>,
}

impl Fold {
    /// Whether the outstanding bytes of the stacks in `stats` fall in all, against their last
    /// values (`last`, by `slots`).
    fn fell(slots: &Slots, last: &[StackStats], stats: &[StackStats]) -> bool {
        let change: i128 = stats
            .iter()
            .map(|st| {
                let before = slots
                    .get((st.stack, st.kind))
                    .and_then(|slot| last.get(slot as usize))
                    .map_or(0, StackStats::outstanding_bytes);
                i128::from(st.outstanding_bytes()) - i128::from(before)
            })
            .sum();
        change < 0
    }

    fn new(cap: usize, shards: usize) -> Self {
        Fold {
            rec: Recording::default(),
            slots: Slots::default(),
            keys: Vec::new(),
            last: Vec::new(),
            batches: (0..shards).map(|_| ShardBatch::default()).collect(),
            snapshots: 0,
            heap_outstanding: 0,
            partial: BTreeMap::new(),
            start_mono: None,
            seqs: SeqTracker::default(),
            cap,
            exit_at: None,
        }
    }

    fn add(&mut self, record: Record) {
        let rec = &mut self.rec;
        // A second Header (two recordings joined, or a damaged frame that decodes as one) or
        // anything after End: not this recording's; counted, not read.
        let second_header = matches!(record, Record::Header(_)) && rec.header.is_some();
        if let Some(stopped) = &mut rec.order.stopped {
            stopped.records_left += 1;
            return;
        }
        if second_header || rec.end.is_some() {
            rec.order.stopped = Some(Stopped {
                second_header: second_header && rec.end.is_none(),
                after_snapshots: rec.snapshots,
                records_left: 1,
            });
            return;
        }
        match record {
            Record::Header(h) => {
                self.start_mono = Some(h.start_mono_ns);
                rec.header = Some(h);
            }
            Record::Snapshot(s) => {
                self.seqs.note(s.seq);
                let origin = *self.start_mono.get_or_insert(s.mono_ns);
                let t = s.mono_ns.saturating_sub(origin) as f64 / 1e9;
                let exited = self.exit_at.is_some_and(|at| {
                    s.seq >= at
                        && rec.header.as_ref().is_some_and(|h| {
                            exit_apart(h, at, || Self::fell(&self.slots, &self.last, &s.stats))
                        })
                });
                if exited {
                    // A user-mode exit snapshot may name modules and maps of its own, for the
                    // stacks first seen in it.
                    declare(rec, s.new_modules, s.new_stacks, s.maps);
                    let after = rec.after_exit.get_or_insert_with(|| AfterExit {
                        t,
                        ..AfterExit::default()
                    });
                    after.snapshots += 1;
                    after
                        .stats
                        .extend(s.stats.into_iter().map(|st| ((st.stack, st.kind), st)));
                    // Not counted in `rec.snapshots`: the snapshots analyzed.
                    rec.losses = s.losses;
                    return;
                }
                let k = self.snapshots;
                self.snapshots += 1;
                for batch in &mut self.batches {
                    batch.times.push(t);
                }
                declare(rec, s.new_modules, s.new_stacks, s.maps);
                let shards = self.batches.len() as u32;
                for st in s.stats {
                    let key = (st.stack, st.kind);
                    let (slot, new) = self.slots.get_or_insert(key, self.keys.len() as u32);
                    if new {
                        self.keys.push(key);
                        self.last.push(StackStats::default());
                    }
                    let last = &mut self.last[slot as usize];
                    let level = Level::from(&st);
                    // Kernel mode records no heap: its outstanding kernel memory is the level.
                    if st.kind != AllocKind::Mmap {
                        self.heap_outstanding +=
                            i128::from(level.bytes) - i128::from(last.outstanding_bytes());
                    }
                    *last = st;
                    self.batches[(slot % shards) as usize]
                        .entries
                        .push((slot / shards, k, level));
                }
                push_timeline(
                    &mut rec.timeline,
                    TimelinePoint {
                        t,
                        outstanding: self.heap_outstanding.max(0) as u64,
                        memory: s.memory,
                        unknown_free: s.losses.unknown_free.saturating_sub(
                            s.losses.allocs_full
                                + s.losses.pending_full
                                + s.losses.return_without_entry
                                + s.losses.abandoned_calls
                                + rec.unseen.allocs,
                        ),
                    },
                    self.cap,
                );
                rec.losses = s.losses;
                if rec.snapshots > 0 && t - rec.duration > rec.longest_gap.map_or(0.0, |g| g.1) {
                    rec.longest_gap = Some((rec.duration, t - rec.duration));
                }
                rec.snapshots += 1;
                rec.duration = t;
            }
            Record::Bundle(BundleChunk {
                module,
                content,
                total_len,
                offset,
                data,
            }) => {
                let entry = self
                    .partial
                    .entry(module)
                    .or_insert_with(|| (content, total_len, Vec::new()));
                // Chunks arrive in order; anything else makes the bundle unusable.
                if entry.2.len() as u64 == offset && entry.0 == content && entry.1 == total_len {
                    entry.2.extend_from_slice(&data);
                }
            }
            Record::End(e) => rec.end = Some(e),
            Record::Kernel(k) => {
                rec.kernel_release = Some(k.release);
                for sym in k.symbols {
                    rec.kernel_symbols.insert(sym.addr, sym);
                }
            }
            Record::Sampling(sampling) => rec.sample_bytes = Some(sampling.bytes),
            Record::Probes(late) => rec.late_probes.push(late),
            Record::Children(children) => rec.children = Some(children),
            Record::Unseen(unseen) => rec.unseen = unseen,
            Record::Process(process) => rec.process = Some(process),
        }
    }

    /// Adds a batch of records in order, up to the first error: Ok(false) after a damaged
    /// tail (noted in the recording), Err for any other error.
    fn add_batch(&mut self, batch: Batch) -> Result<bool, Error> {
        for item in batch {
            match item {
                Ok(record) => self.add(record),
                Err(e @ Error::Tail { .. }) => {
                    self.rec.tail = Some(e);
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The recording, with the shards' series (shard `i % n`, index `i / n` for slot `i`).
    fn finish(mut self, shards: Vec<Vec<Series>>) -> Recording {
        let mut shards: Vec<_> = shards.into_iter().map(Vec::into_iter).collect();
        let n = shards.len();
        let declared = &self.rec.stacks;
        let undeclared: BTreeSet<u32> = self
            .keys
            .iter()
            .map(|&(id, _)| id)
            .filter(|&id| id >= FIRST_STACK_ID && !declared.contains_key(&id))
            .collect();
        self.rec.order.undeclared_stacks = undeclared.len();
        self.rec.order.out_of_order = self.seqs.out_of_order;
        self.rec.order.missing_snapshots = self.seqs.missing();
        for ((slot, key), last) in self.keys.into_iter().enumerate().zip(self.last) {
            if let Some(mut series) = shards[slot % n].next() {
                series.last = last;
                self.rec.series.insert(key, series);
            }
        }
        for (module, (content, total, bytes)) in self.partial {
            if bytes.len() as u64 == total {
                self.rec.bundles.insert(module, (content, bytes));
            }
        }
        self.rec
    }
}

/// Decoded records are handed from the decoding thread to the reading one in batches of about
/// this many bytes (decompressed): a few hundred hand-overs a second instead of one per record.
const BATCH_BYTES: usize = 1 << 20;

/// What the decoding thread hands over: records in file order, the last one perhaps an error.
type Batch = Vec<Result<Record, Error>>;

/// Joins a scoped thread, passing on its panic.
fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The next batch of records from `reader`, and whether the reader may have more.
fn next_batch<R: Read>(reader: &mut Reader<R>) -> (Batch, bool) {
    let mut batch = Batch::new();
    let mut bytes = 0;
    while let Some(item) = reader.next_record() {
        bytes += reader.last_record_len();
        batch.push(item);
        if bytes >= BATCH_BYTES {
            return (batch, true);
        }
    }
    (batch, false)
}

/// Reads a whole recording, keeping at most `cap` samples per series.
///
/// A recording larger than one batch is read by a pipeline of threads: one decompresses and
/// decodes the records; this one reads them in order (stacks, modules, the timeline, which
/// series each entry belongs to); one shard per core folds its share of the series. The
/// channels between them hold one batch each, so at most three batches per channel are in
/// memory (being made, queued, being used). A smaller one is read on this thread alone.
pub fn read<R: Read + Send>(reader: Reader<R>, cap: usize) -> Result<Recording, Error> {
    read_sized(reader, cap, None)
}

/// [`read_sized`], told by the recording's End record (`leak_format::find_end`): the number of
/// snapshots, and whether its target exited (then a `--pid` kernel recording's last snapshot,
/// taken after the exit, is kept apart in `Recording::after_exit`). What leak-report reads
/// with (`input::read`); [`read`] and [`read_sized`] fold every snapshot.
pub fn read_ended<R: Read + Send>(
    reader: Reader<R>,
    cap: usize,
    end: Option<&leak_format::End>,
) -> Result<Recording, Error> {
    let exit_at = end.and_then(|e| {
        let exited = matches!(e.reason, leak_format::EndReason::TargetExited { .. });
        e.snapshots.checked_sub(1).filter(|_| exited)
    });
    read_folded(reader, cap, end.map(|e| e.snapshots), exit_at)
}

/// [`read`], told how many snapshots the recording holds (`leak_format::find_end`): each series
/// then starts at the resolution it would end with, which saves the work of the finer samples
/// (the samples are the same, up to the order of floating-point additions).
pub fn read_sized<R: Read + Send>(
    reader: Reader<R>,
    cap: usize,
    snapshots: Option<u32>,
) -> Result<Recording, Error> {
    read_folded(reader, cap, snapshots, None)
}

fn read_folded<R: Read + Send>(
    mut reader: Reader<R>,
    cap: usize,
    snapshots: Option<u32>,
    exit_at: Option<u32>,
) -> Result<Recording, Error> {
    let expected = snapshots.map(|n| n as usize);
    let with_expected = |mut rec: Recording| {
        rec.expected_snapshots = snapshots;
        rec
    };
    let (first, more) = next_batch(&mut reader);
    if !more {
        let mut fold = Fold::new(cap, 1);
        fold.exit_at = exit_at;
        let mut shard = Shard::new(cap, expected);
        let result = fold.add_batch(first);
        shard.add(std::mem::take(&mut fold.batches[0]));
        fold.rec.skipped_records = reader.skipped_unknown();
        result?;
        return Ok(with_expected(fold.finish(vec![shard.finish()])));
    }
    let shards = thread::available_parallelism().map_or(1, |n| n.get().min(MAX_SHARDS));
    let mut fold = Fold::new(cap, shards);
    fold.exit_at = exit_at;
    let (tx, rx) = mpsc::sync_channel::<Batch>(1);
    let (result, series) = thread::scope(|scope| {
        let decoder = scope.spawn(move || {
            loop {
                let (batch, more) = next_batch(&mut reader);
                // An error only means the reading side stopped first.
                if (!batch.is_empty() && tx.send(batch).is_err()) || !more {
                    break;
                }
            }
            reader.skipped_unknown()
        });
        let (to_shards, workers): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| {
                let (tx, rx) = mpsc::sync_channel::<ShardBatch>(1);
                let worker = scope.spawn(move || {
                    let mut shard = Shard::new(cap, expected);
                    for batch in rx {
                        shard.add(batch);
                    }
                    shard.finish()
                });
                (tx, worker)
            })
            .unzip();
        let mut result = Ok(true);
        for batch in std::iter::once(first).chain(&rx) {
            result = fold.add_batch(batch);
            for (to, batch) in to_shards.iter().zip(&mut fold.batches) {
                // A shard only stops early by panicking, which `join` passes on.
                let _ = to.send(batch.take());
            }
            if !matches!(result, Ok(true)) {
                break;
            }
        }
        drop(to_shards);
        // The reader stops after an error item anyway; dropping the receiver also ends it.
        drop(rx);
        let skipped = join(decoder);
        let series: Vec<Vec<Series>> = workers.into_iter().map(join).collect();
        (result.map(|_| skipped), series)
    });
    fold.rec.skipped_records = result?;
    Ok(with_expected(fold.finish(series)))
}

/// Takes in what a snapshot declares: its new modules and stacks, and its executable
/// mappings not seen before (kept for debug-only files).
fn declare(
    rec: &mut Recording,
    modules: Vec<Module>,
    stacks: Vec<Stack>,
    maps: Option<Vec<leak_format::MapEntry>>,
) {
    for m in modules {
        rec.modules.insert(m.id, m);
    }
    for st in stacks {
        rec.stacks.insert(st.id, st);
    }
    for m in maps.into_iter().flatten() {
        if m.perms.contains('x') && !rec.maps.contains(&m) {
            rec.maps.push(m);
        }
    }
}

fn push_timeline(timeline: &mut Vec<TimelinePoint>, p: TimelinePoint, cap: usize) {
    timeline.push(p);
    if timeline.len() > cap {
        // Keep every other point: the timeline is for drawing, not for statistics.
        let kept: Vec<TimelinePoint> = timeline.iter().step_by(2).copied().collect();
        *timeline = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leak_format::RecordingBuilder;

    #[test]
    fn snapshot_numbers_count_gaps_that_repeats_do_not_fill() {
        let count = |seqs: &[u32]| {
            let mut t = SeqTracker::default();
            seqs.iter().for_each(|&s| t.note(s));
            (t.missing(), t.out_of_order)
        };
        assert_eq!(count(&[0, 1, 2, 3]), (0, 0));
        assert_eq!(count(&[0, 1, 3]), (1, 0));
        assert_eq!(count(&[0, 1, 1, 3]), (1, 1), "a repeat hides no gap");
        assert_eq!(count(&[0, 2, 1, 3]), (0, 1), "a swap fills its gap");
        assert_eq!(count(&[1, 2]), (1, 0), "snapshot 0 missing");
        assert_eq!(count(&[0, 5, 3, 3, 1]), (2, 3));
    }

    #[test]
    fn series_follow_snapshots_and_keep_unchanged_values() {
        let mut b = RecordingBuilder::new();
        b.module(1, "/bin/x", None)
            .stack(16, &[(1, 0x10)])
            .stack(17, &[(1, 0x20)])
            .snapshot(&[(16, 100, 1)])
            .snapshot(&[(16, 200, 2), (17, 50, 1)])
            .snapshot(&[(16, 300, 3)]);
        let bytes = b.to_bytes();
        let rec = read(Reader::new(&bytes[..]).unwrap(), 8).unwrap();
        assert_eq!(rec.snapshots, 3);
        let s16 = &rec.series[&(16, AllocKind::Heap)];
        let vals: Vec<f64> = s16.points().iter().filter_map(|p| p.bytes).collect();
        assert_eq!(vals, [100.0, 200.0, 300.0]);
        assert!(s16.strictly_increasing);
        let s17 = &rec.series[&(17, AllocKind::Heap)];
        // Stack 17 appeared at the second snapshot and kept 50 at the third.
        let vals: Vec<f64> = s17.points().iter().filter_map(|p| p.bytes).collect();
        assert_eq!(vals, [50.0, 50.0]);
        assert!(!s17.strictly_increasing);
        assert_eq!(rec.timeline.last().unwrap().outstanding, 350);
        // The builder's snapshots fall one interval (5 s) apart, the first one interval after the start.
        assert!((rec.duration - 15.0).abs() < 1e-9, "{}", rec.duration);
    }

    #[test]
    fn compaction_bounds_memory_and_keeps_the_trend() {
        let mut s = Series::new();
        for i in 0..10_000u64 {
            let st = StackStats {
                alloc_bytes: 64 * i,
                alloc_count: i,
                ..StackStats::default()
            };
            s.push(i as f64 * 5.0, Some(&st), 256);
        }
        assert!(
            s.points().len() <= 256 && s.points().len() >= 128,
            "{}",
            s.points().len()
        );
        assert_eq!(s.seen, 10_000);
        assert_eq!(s.last.outstanding_bytes(), 64 * 9_999);
        // A line stays a line: slope 64 bytes per 5 s everywhere.
        for w in s.points().windows(2) {
            let slope = (w[1].bytes.unwrap() - w[0].bytes.unwrap()) / (w[1].t - w[0].t);
            assert!((slope - 12.8).abs() < 1e-6, "{slope}");
        }
        assert!(s.strictly_increasing);
    }
}
