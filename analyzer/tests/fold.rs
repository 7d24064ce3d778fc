//! `series::read` (decoding, sharded, folding only what changed) against a straightforward
//! reference fold: every series' value at every snapshot since it appeared, binned by hand.
//! The recording has gaps, stacks appearing mid-way, stacks freed to zero and never listed
//! again, ids beyond the dense table, three kinds, and is also read cut short.
//!
//! Times are whole multiples of 5 s and values whole numbers, so every sum is exact and the
//! two folds must agree bit for bit, however the fold splits runs and samples.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::{BTreeMap, BTreeSet};

use leak_format::{AllocKind, Losses, Reader, Record, RecordingBuilder, StackStats};
use leak_report::corpus::Rng;
use leak_report::detect::Point;
use leak_report::series::{self, Recording, Series};

const SNAPSHOTS: u32 = 2000;
const STACKS: u32 = 700;

/// One stack's script: when it appears, how often it changes, when it is freed and dropped.
struct Script {
    key: (u32, AllocKind),
    appear: u32,
    /// Chance it is listed at a snapshot while alive.
    listed: f64,
    /// From here on it is freed to zero once and never listed again (None: listed to the end).
    freed: Option<u32>,
    /// A stretch of snapshots in which it is never listed (a long gap).
    gap: (u32, u32),
    /// Grows at every listing (a leak, also for the seed rule) or wanders.
    leak: bool,
    stats: StackStats,
}

fn scripts(rng: &mut Rng) -> Vec<Script> {
    let kinds = [AllocKind::Heap, AllocKind::Mmap, AllocKind::KernelSlab];
    (0..STACKS)
        .map(|i| {
            // Most ids dense from 16 (as the kernel assigns them); some far beyond the dense
            // table; some ids carry two kinds.
            let id = match i % 10 {
                9 => 3_000_000_000 + i,
                8 => 16 + i - 1,
                _ => 16 + i,
            };
            let kind = match i % 10 {
                7 => AllocKind::Heap,
                8 => AllocKind::Mmap,
                _ => kinds[rng.int(0, 2) as usize],
            };
            let appear = match i % 4 {
                0 => 0,
                _ => rng.int(0, u64::from(SNAPSHOTS) - 2) as u32,
            };
            let gap_start = rng.int(0, u64::from(SNAPSHOTS)) as u32;
            Script {
                key: (id, kind),
                appear,
                listed: [0.02, 0.1, 0.5, 1.0][rng.int(0, 3) as usize],
                freed: (i % 7 == 3)
                    .then(|| rng.int(u64::from(appear), u64::from(SNAPSHOTS)) as u32),
                gap: (gap_start, gap_start + rng.int(0, 600) as u32),
                leak: i % 5 == 0,
                stats: StackStats {
                    stack: id,
                    kind,
                    ..StackStats::default()
                },
            }
        })
        .collect()
}

/// Changes the counters of a stack listed at snapshot `k`.
fn step(s: &mut Script, k: u32, rng: &mut Rng) {
    let size = 16 + u64::from(s.key.0 % 64) * 8;
    if s.freed == Some(k) {
        s.stats.free_bytes = s.stats.alloc_bytes;
        s.stats.free_count = s.stats.alloc_count;
        return;
    }
    let allocs = rng.int(if s.leak { 1 } else { 0 }, 20);
    let outstanding = s.stats.outstanding_count();
    let frees = if s.leak {
        0
    } else {
        rng.int(0, outstanding.min(20))
    };
    s.stats.alloc_count += allocs;
    s.stats.alloc_bytes += allocs * size;
    s.stats.free_count += frees;
    s.stats.free_bytes += frees * size;
}

fn recording(seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut scripts = scripts(&mut rng);
    let mut b = RecordingBuilder::new();
    let mut declared = BTreeSet::new();
    b.module(1, "/bin/x", None);
    for k in 0..SNAPSHOTS {
        let mut stats = Vec::new();
        for s in &mut scripts {
            let (id, _) = s.key;
            if k < s.appear || s.freed.is_some_and(|f| k > f) {
                continue;
            }
            let in_gap = (s.gap.0..s.gap.1).contains(&k);
            let listed =
                k == s.appear || s.freed == Some(k) || (!in_gap && rng.uniform() < s.listed);
            if !listed {
                continue;
            }
            if declared.insert(id) {
                b.stack(id, &[(1, 0x100 + u64::from(id % 4096))]);
            }
            step(s, k, &mut rng);
            stats.push(s.stats);
        }
        b.snapshot_with(stats, Losses::default());
    }
    b.to_bytes()
}

/// What the reference fold finds for one series.
#[derive(Debug)]
struct Expected {
    points: Vec<Point>,
    seen: u64,
    strictly_increasing: bool,
    strict_points: u64,
    last: StackStats,
    first_bytes: u64,
}

/// What the reference finds: each series, and (time, outstanding heap) at every snapshot.
type Reference = (BTreeMap<(u32, AllocKind), Expected>, Vec<(f64, u64)>);

/// The reference: every complete snapshot, every series' value at each since it appeared.
fn reference(bytes: &[u8], cap: usize) -> Reference {
    let mut start = None;
    let mut last: BTreeMap<(u32, AllocKind), StackStats> = BTreeMap::new();
    let mut values: BTreeMap<(u32, AllocKind), Vec<(f64, StackStats)>> = BTreeMap::new();
    let mut heap = Vec::new();
    for record in Reader::new(bytes).unwrap() {
        let Ok(record) = record else { break };
        match record {
            Record::Header(h) => start = Some(h.start_mono_ns),
            Record::Snapshot(s) => {
                let t = (s.mono_ns - *start.get_or_insert(s.mono_ns)) as f64 / 1e9;
                for st in s.stats {
                    last.insert((st.stack, st.kind), st);
                }
                for (key, st) in &last {
                    values.entry(*key).or_default().push((t, *st));
                }
                let total = last
                    .iter()
                    .filter(|(key, _)| key.1 != AllocKind::Mmap)
                    .map(|(_, st)| st.outstanding_bytes())
                    .sum();
                heap.push((t, total));
            }
            _ => {}
        }
    }
    let series = values
        .into_iter()
        .map(|(key, v)| {
            let n = v.len();
            // Samples stand for the smallest power of two of snapshots that fits `cap`.
            let mut per = 1;
            while n.div_ceil(per) > cap {
                per *= 2;
            }
            let points = v
                .chunks(per)
                .map(|c| {
                    let m = c.len() as f64;
                    let sum = |f: &dyn Fn(&StackStats) -> u64| {
                        c.iter().map(|(_, st)| f(st)).sum::<u64>() as f64 / m
                    };
                    Point {
                        t: c.iter().map(|(t, _)| t).sum::<f64>() / m,
                        bytes: Some(sum(&StackStats::outstanding_bytes)),
                        count: Some(sum(&StackStats::outstanding_count)),
                    }
                })
                .collect();
            let bytes: Vec<u64> = v.iter().map(|(_, st)| st.outstanding_bytes()).collect();
            let first = bytes.iter().position(|&b| b > 0);
            let expected = Expected {
                points,
                seen: n as u64,
                strictly_increasing: first
                    .is_none_or(|f| bytes[f..].windows(2).all(|w| w[1] > w[0])),
                strict_points: first.map_or(0, |f| (n - f) as u64),
                last: v[n - 1].1,
                first_bytes: bytes[0],
            };
            (key, expected)
        })
        .collect();
    (series, heap)
}

/// Folds `bytes` with `series::read_sized` (told `snapshots`, None: `series::read`'s way) and
/// checks every series against the reference.
fn check(bytes: &[u8], cap: usize, snapshots: Option<u32>, what: &str) -> Recording {
    let rec = series::read_sized(Reader::new(bytes).unwrap(), cap, snapshots).unwrap();
    let (expected, heap) = reference(bytes, cap);
    assert_eq!(rec.snapshots as usize, heap.len(), "{what}: snapshots");
    assert_eq!(
        rec.series.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: the same series"
    );
    for (key, e) in &expected {
        let s: &Series = &rec.series[key];
        let points = s.points();
        let n = points.len().max(e.points.len());
        if let Some(i) = (0..n).find(|&i| points.get(i) != e.points.get(i)) {
            panic!(
                "{what}: {key:?} differs at sample {i} of {} (reference {}): {:?} != {:?}",
                points.len(),
                e.points.len(),
                points.get(i),
                e.points.get(i)
            );
        }
        assert_eq!(
            (s.seen, s.known, s.strictly_increasing, s.strict_points),
            (e.seen, e.seen, e.strictly_increasing, e.strict_points),
            "{what}: counts and seed rule of {key:?}"
        );
        assert_eq!(
            (s.last, s.first_bytes),
            (e.last, e.first_bytes),
            "{what}: {key:?}"
        );
    }
    // The timeline is thinned for drawing (every other point); every point kept is exact.
    assert!(
        rec.timeline.len() >= heap.len().min(cap / 2),
        "{what}: timeline"
    );
    for p in &rec.timeline {
        assert!(
            heap.contains(&(p.t, p.outstanding)),
            "{what}: timeline {p:?}"
        );
    }
    rec
}

#[test]
fn the_fold_equals_a_reference_fold_of_every_snapshot() {
    for seed in [1, 2] {
        let bytes = recording(seed);
        // Large enough for the threaded pipeline (batches of 1 MiB decompressed).
        let mut reader = Reader::new(&bytes[..]).unwrap();
        let mut raw = 0;
        while let Some(Ok(_)) = reader.next_record() {
            raw += reader.last_record_len();
        }
        assert!(raw > 2 << 20, "{raw} bytes decompressed");
        // Told the length, each series starts at the resolution it ends with; told too few,
        // it halves from there as it grows; either way the samples are the reference's.
        let hints = [None, Some(SNAPSHOTS), Some(SNAPSHOTS / 3), Some(1)];
        for (cap, hint) in [7, 64, series::DEFAULT_CAP]
            .into_iter()
            .flat_map(|cap| hints.map(|hint| (cap, hint)))
        {
            let rec = check(
                &bytes,
                cap,
                hint,
                &format!("seed {seed}, cap {cap}, {hint:?}"),
            );
            assert!(rec.tail.is_none());
            assert_eq!(rec.snapshots, SNAPSHOTS);
            assert!(rec.series.len() > 600, "{}", rec.series.len());
            // Stacks appeared mid-way and some were freed to zero for good.
            assert!(rec
                .series
                .values()
                .any(|s| s.seen < u64::from(SNAPSHOTS) / 2));
            assert!(rec
                .series
                .values()
                .any(|s| s.last.outstanding_bytes() == 0 && s.last.alloc_count > 0));
            assert!(rec.series.keys().any(|k| k.0 >= 3_000_000_000));
        }
    }
}

#[test]
fn a_truncated_recording_folds_what_is_complete() {
    let bytes = recording(3);
    for cut in [bytes.len() / 3, bytes.len() * 2 / 3, bytes.len() - 7] {
        let rec = check(
            &bytes[..cut],
            series::DEFAULT_CAP,
            None,
            &format!("cut at {cut}"),
        );
        assert!(
            rec.tail.is_some(),
            "cut at {cut}: the damaged tail is reported"
        );
        assert!(rec.snapshots > 0 && rec.snapshots < SNAPSHOTS);
    }
}
