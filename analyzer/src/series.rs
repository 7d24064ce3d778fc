//! Reads a recording as a stream into one time series per (stack, kind), with bounded memory:
//! each series keeps at most `cap` samples, halving its resolution (pairwise means) when full,
//! while exact end values, the strict-rule flag and known/unknown counts are kept on the side.
use std::collections::BTreeMap;
use std::io::Read;

use leak_format::{
    AllocKind, BundleChunk, End, Error, Header, Losses, Module, ProcMemory, Reader, Record, Stack,
    StackStats,
};

use crate::detect::Point;

/// Default number of samples kept per series (the detector uses at most a few hundred).
pub const DEFAULT_CAP: usize = 1024;

/// A compacted series of one stack.
#[derive(Debug, Clone, Default)]
pub struct Series {
    samples: Vec<Point>,
    /// How many raw snapshots each sample currently stands for.
    per_sample: usize,
    /// Raw snapshots folded into the last, partial sample.
    pending: usize,
    /// Raw snapshots since the stack first appeared, and how many of them knew its value.
    pub seen: u64,
    pub known: u64,
    /// The seed rule so far: bytes grew at every consecutive known snapshot.
    pub strictly_increasing: bool,
    /// Known snapshots since the first appearance (the seed rule needs two).
    pub strict_points: u64,
    last_bytes: Option<f64>,
    /// Exact counters at the last snapshot that knew them.
    pub last: StackStats,
    /// Outstanding bytes at the first known snapshot.
    pub first_bytes: u64,
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

    /// Adds the value at one snapshot (None = unknown at that time), keeping at most `cap`
    /// samples.
    pub fn push(&mut self, t: f64, stats: Option<&StackStats>, cap: usize) {
        self.seen += 1;
        let (bytes, count) = match stats {
            Some(s) => {
                self.known += 1;
                let b = s.outstanding_bytes() as f64;
                if self.known == 1 {
                    self.first_bytes = s.outstanding_bytes();
                }
                // The seed rule counts from the first appearance: the first value above zero
                // (as `detect::strict_monotonic` does).
                if let Some(prev) = self.last_bytes {
                    if b <= prev {
                        self.strictly_increasing = false;
                    }
                    self.strict_points += 1;
                    self.last_bytes = Some(b);
                } else if b > 0.0 {
                    self.strict_points = 1;
                    self.last_bytes = Some(b);
                }
                self.last = *s;
                (Some(b), Some(s.outstanding_count() as f64))
            }
            None => (None, None),
        };
        let p = Point { t, bytes, count };
        if self.pending > 0 && self.pending < self.per_sample {
            if let Some(last) = self.samples.last_mut() {
                *last = merge(last, &p, self.pending as f64, 1.0);
            }
            self.pending += 1;
        } else {
            self.samples.push(p);
            self.pending = 1;
        }
        if self.samples.len() > cap {
            self.halve();
        }
    }

    fn halve(&mut self) {
        let merged: Vec<Point> = self
            .samples
            .chunks(2)
            .map(|c| match c {
                [a, b] => merge(a, b, 1.0, 1.0),
                [a] => *a,
                _ => unreachable_point(),
            })
            .collect();
        // The last sample may have been partial; it now stands for a share of a double sample.
        self.pending = if self.samples.len() % 2 == 1 {
            self.pending
        } else {
            self.per_sample + self.pending
        };
        self.samples = merged;
        self.per_sample *= 2;
    }

    /// The samples for the detector.
    pub fn points(&self) -> &[Point] {
        &self.samples
    }
}

fn unreachable_point() -> Point {
    Point {
        t: 0.0,
        bytes: None,
        count: None,
    }
}

/// Weighted mean of two samples; an unknown value does not count.
fn merge(a: &Point, b: &Point, wa: f64, wb: f64) -> Point {
    let mix = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some((x * wa + y * wb) / (wa + wb)),
        (x, None) => x,
        (None, y) => y,
    };
    Point {
        t: (a.t * wa + b.t * wb) / (wa + wb),
        bytes: mix(a.bytes, b.bytes),
        count: mix(a.count, b.count),
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
    /// The process-wide timeline (compacted like the series).
    pub timeline: Vec<TimelinePoint>,
    /// Unknown (newer) record kinds skipped.
    pub skipped_records: u64,
    /// Every memory mapping the recording saw (for debug-only files, whose file offsets are
    /// not usable).
    pub maps: Vec<leak_format::MapEntry>,
    /// Frames that come symbolized with the input (memleak text logs), by stack id.
    pub presymbolized: BTreeMap<u32, Vec<crate::symbolize::SymFrame>>,
}

/// Reads a whole recording, keeping at most `cap` samples per series.
pub fn read<R: Read>(mut reader: Reader<R>, cap: usize) -> Result<Recording, Error> {
    let mut rec = Recording::default();
    let mut current: BTreeMap<(u32, AllocKind), StackStats> = BTreeMap::new();
    let mut partial: BTreeMap<u32, (leak_format::BundleContent, u64, Vec<u8>)> = BTreeMap::new();
    let mut start_mono = None;
    loop {
        let record = match reader.next_record() {
            None => break,
            Some(Ok(r)) => r,
            Some(Err(e @ Error::Tail { .. })) => {
                rec.tail = Some(e);
                break;
            }
            Some(Err(e)) => return Err(e),
        };
        match record {
            Record::Header(h) => {
                start_mono = Some(h.start_mono_ns);
                rec.header = Some(h);
            }
            Record::Snapshot(s) => {
                let origin = *start_mono.get_or_insert(s.mono_ns);
                let t = s.mono_ns.saturating_sub(origin) as f64 / 1e9;
                for m in s.new_modules {
                    rec.modules.insert(m.id, m);
                }
                for st in s.new_stacks {
                    rec.stacks.insert(st.id, st);
                }
                for st in s.stats {
                    current.insert((st.stack, st.kind), st);
                }
                for m in s.maps.into_iter().flatten() {
                    if m.perms.contains('x') && !rec.maps.contains(&m) {
                        rec.maps.push(m);
                    }
                }
                // Every stack seen so far has a known value at this snapshot (absent = unchanged).
                for (key, st) in &current {
                    rec.series
                        .entry(*key)
                        .or_insert_with(Series::new)
                        .push(t, Some(st), cap);
                }
                let outstanding = current
                    .values()
                    .filter(|s| s.kind == AllocKind::Heap)
                    .map(StackStats::outstanding_bytes)
                    .sum();
                push_timeline(
                    &mut rec.timeline,
                    TimelinePoint {
                        t,
                        outstanding,
                        memory: s.memory,
                    },
                    cap,
                );
                rec.losses = s.losses;
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
                let entry = partial
                    .entry(module)
                    .or_insert_with(|| (content, total_len, Vec::new()));
                // Chunks arrive in order; anything else makes the bundle unusable.
                if entry.2.len() as u64 == offset && entry.0 == content && entry.1 == total_len {
                    entry.2.extend_from_slice(&data);
                }
            }
            Record::End(e) => rec.end = Some(e),
        }
    }
    rec.skipped_records = reader.skipped_unknown();
    for (module, (content, total, bytes)) in partial {
        if bytes.len() as u64 == total {
            rec.bundles.insert(module, (content, bytes));
        }
    }
    Ok(rec)
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
