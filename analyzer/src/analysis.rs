//! Turns a recording into findings: a verdict per stack (with the strict rule beside it), its
//! symbolized frames, and recording-wide facts (drops, truncation, time to exhaustion).
use std::collections::{BTreeMap, BTreeSet};

use leak_format::{AllocKind, StackLoss};
use serde::Serialize;

use crate::detect::{self, Detection, Verdict};
use crate::series::{Recording, Series};
use crate::suppress::Suppressions;
use crate::symbolize::{Resolver, SymFrame, UNMAPPED};

/// Which verdict decides (the other is always reported too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Mann-Kendall trend + Theil-Sen rate with gates for materiality, persistence,
    /// deceleration and consistency (docs/detection.md).
    Robust,
    /// The seed rule: outstanding bytes grew at every consecutive snapshot.
    Strict,
}

/// Analysis settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub detector: Detector,
    pub detect: detect::Config,
    /// Bytes; else the recorded host's memory.
    pub memory_limit: Option<u64>,
}

/// One stack's findings.
#[derive(Debug, Clone, Serialize)]
pub struct StackReport {
    pub id: u32,
    pub kind: AllocKind,
    /// The deciding verdict (robust, or strict with `--detector strict`).
    pub verdict: Verdict,
    pub strict_monotonic: bool,
    pub outstanding_bytes: u64,
    pub outstanding_count: u64,
    /// Outstanding bytes at the end minus at the stack's first snapshot.
    pub growth_bytes: i64,
    pub detection: Detection,
    pub frames: Vec<SymFrame>,
    pub lost: Option<StackLoss>,
    pub truncated: bool,
    /// Too few samples for a verdict (`insufficient_data`), yet it grew at least the minimum
    /// rate over its life: perhaps a leak that started late. No gate passes over one.
    pub young_growth: bool,
    /// A `--pid` kernel recording that ended with the process's exit: the bytes still
    /// outstanding after it (the other figures judge the process as it ran, up to its exit).
    pub after_exit_bytes: Option<u64>,
}

/// Everything found in one recording.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub stacks: Vec<StackReport>,
    /// Sum of the continuous leaks' rates, bytes/s.
    pub leak_rate: f64,
    /// Sum of their upper 95% bounds, bytes/s (the pessimistic rate).
    pub leak_rate_high: f64,
    /// Seconds until `memory_limit` at the pessimistic rate, from the end level.
    pub time_to_exhaustion: Option<f64>,
    pub memory_limit: Option<u64>,
    pub warnings: Vec<String>,
    /// Stacks left out by suppressions.
    pub suppressed: usize,
    /// Leaks left out because the baseline leaks there as fast.
    pub in_baseline: usize,
    /// `--min-outstanding`, and the stacks it left out (and how many of them were continuous
    /// leaks).
    pub min_outstanding: Option<u64>,
    pub below_min: usize,
    pub below_min_leaks: usize,
    /// Kernel stacks of page-cache and slab pages left out (see [`leave_out_cache_pages`]),
    /// and their outstanding bytes.
    pub cache_pages: usize,
    pub cache_pages_bytes: u64,
    /// No stack had the samples a trend verdict needs (a recording too short for its
    /// interval): a leak gate cannot judge it.
    pub unjudged: bool,
    /// The recording has too few snapshots for any verdict ([`too_short_to_judge`]).
    pub too_short: bool,
    /// `--allow-children`: the processes the target started, which are not recorded, do not
    /// keep a run without a leak from being called clean.
    pub children_ok: bool,
    /// An attached recording's rate of frees of blocks allocated before the attach, per
    /// second, over its last 40% ([`unknown_free_rate`]).
    pub unknown_free_rate: Option<f64>,
}

/// Why a leak-record recording does not cover the whole run, if it does not: it has no end
/// record (the recorder was killed, by the OOM killer say, or is still running), or the
/// recorder stopped on an error. What it holds is analyzed, but no gate passes on part of a run.
fn incomplete(rec: &Recording) -> Option<String> {
    rec.header.as_ref()?;
    match &rec.end {
        None => Some(
            "the recording has no end record (the recorder was killed, or is still running), so \
             the rest of the run was not seen; let leak-record finish (-d, SIGINT or SIGTERM stop \
             it with an end record) and analyze the whole recording"
                .into(),
        ),
        Some(leak_format::End {
            reason: leak_format::EndReason::Error(e),
            ..
        }) => Some(format!(
            "the recorder stopped on an error ({e}), so the rest of the run was not seen; record \
             again"
        )),
        Some(_) => None,
    }
}

/// Why a run in which no continuous leak was found cannot be called clean: the headline every
/// output gives instead of the all-clear, and the reason with its fix, for the leak gates
/// (which exit 2).
#[derive(Debug, Clone, PartialEq)]
pub struct Unvouched {
    pub headline: String,
    pub why: String,
}

/// [`Unvouched`], if so: no stack has the samples a verdict needs; a stack grew with too few
/// of them (a leak that started late); the recorder could not track every allocation (a full
/// table, where a leak may hide); or the target started processes that were not recorded
/// (a wrapper or script whose work runs in them), unless `children_ok`.
pub fn cannot_vouch(rec: &Recording, a: &Analysis) -> Option<Unvouched> {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if a.unjudged {
        return Some(Unvouched {
            headline: "No verdict: the recording is too short to judge any stack".into(),
            why: format!(
                "no stack has the {} samples a verdict needs; record for longer or with a \
                 shorter -i (e.g. -i 1s)",
                detect::MIN_POINTS
            ),
        });
    }
    let young: Vec<_> = a.stacks.iter().filter(|s| s.young_growth).collect();
    if let Some(first) = young.first() {
        return Some(Unvouched {
            headline: format!(
                "No continuous leak found, but {} could not be judged",
                plural(young.len() as u64, "growing stack", "growing stacks")
            ),
            why: format!(
                "{}; record for longer after the load starts",
                young_growth(first)
            ),
        });
    }
    let l = &rec.losses;
    let full = [
        (
            l.allocs_full,
            "untracked (allocation table full)",
            "--max-allocs",
        ),
        (
            l.stack_table_full,
            "on unknown stacks (stack table full)",
            "--max-stacks",
        ),
    ];
    if let Some((n, what, option)) = full.iter().find(|(n, ..)| *n > 0) {
        return Some(Unvouched {
            headline: format!(
                "No continuous leak found, but {} lost to a full table",
                plural(*n, "allocation was", "allocations were")
            ),
            why: format!(
                "{n} allocations were {what}, and a leak may be among them; record again with \
                 a larger {option}"
            ),
        });
    }
    let turnover = a
        .stacks
        .iter()
        .filter(|s| s.verdict == Verdict::AttachTurnover)
        .count() as u64;
    if turnover > 0 {
        return Some(Unvouched {
            headline: format!(
                "No continuous leak found, but {} may be turnover since the attach",
                plural(turnover, "growing stack", "growing stacks")
            ),
            why: format!(
                "{} blocks at most twice as fast as the process freed blocks allocated before \
                 the attach ({:.1}/s): new blocks replacing old ones look like a leak until the \
                 old ones are gone; record until those frees (unknown_free) stop, or start the \
                 program under leak-record",
                plural(turnover, "stack gained", "stacks gained"),
                a.unknown_free_rate.unwrap_or(0.0)
            ),
        });
    }
    let Some(children) = rec
        .children
        .as_ref()
        .filter(|c| c.started > 0 && !a.children_ok)
    else {
        return incomplete(rec).map(|why| Unvouched {
            headline: "No continuous leak found in what was recorded, but the recording is \
                       incomplete"
                .into(),
            why,
        });
    };
    let one = children.started == 1;
    Some(Unvouched {
        headline: format!(
            "No continuous leak found in the recorded process, but it started {} that {} not \
             recorded",
            plural(children.started, "process", "processes"),
            if one { "was" } else { "were" }
        ),
        why: format!(
            "the target started {} that leak-record did not record, and a leak in {} would not \
             show; record the program itself (leak-record -- PROGRAM, or -p its PID; a wrapper \
             script should exec it), or pass --allow-children if only the target's own \
             allocations are to be judged",
            started_processes(children),
            if one { "it" } else { "them" }
        ),
    })
}

/// Analyses every stack of a recording.
pub fn analyze(rec: &Recording, resolver: &Resolver, s: &Settings) -> Analysis {
    let keys: Vec<(u32, AllocKind)> = rec.series.keys().copied().collect();
    let frames_of = |id: &u32| {
        rec.stacks
            .get(id)
            .map_or(&[][..], |st| st.frames.as_slice())
    };
    // Kernel stacks are named from the recording's kernel symbols, user stacks from modules.
    let frames: Vec<&[leak_format::Frame]> = keys
        .iter()
        .map(|(id, kind)| {
            if kind.is_kernel() {
                &[][..]
            } else {
                frames_of(id)
            }
        })
        .collect();
    let mut symbolized = resolver.symbolize(&frames);
    for (i, (id, kind)) in keys.iter().enumerate() {
        if kind.is_kernel() {
            symbolized[i] = resolver.symbolize_kernel(frames_of(id));
        }
        if let Some(pre) = rec.presymbolized.get(id) {
            symbolized[i] = pre.clone();
        }
    }
    let series: Vec<&Series> = rec.series.values().collect();
    let mut detections = detect_all(&series, &s.detect).into_iter();
    let interval = rec.duration / f64::from(rec.snapshots.saturating_sub(1).max(1));
    let mut stacks: Vec<StackReport> = keys
        .iter()
        .zip(symbolized)
        .zip(series)
        .filter_map(|((&(id, kind), frames), series)| {
            let mut detection = detections.next().flatten()?;
            // The strict rule over every raw snapshot (the series may be compacted).
            detection.strict_monotonic = series.strictly_increasing && series.strict_points >= 2;
            let verdict = match s.detector {
                Detector::Robust => detection.verdict,
                Detector::Strict if detection.strict_monotonic => Verdict::ContinuousLeak,
                // Growth that did not happen at every snapshot is not a leak by the seed rule.
                Detector::Strict if detection.verdict == Verdict::ContinuousLeak => {
                    Verdict::InconsistentGrowth
                }
                Detector::Strict => detection.verdict,
            };
            let stack = rec.stacks.get(&id);
            let growth_bytes = series.last.outstanding_bytes() as i64 - series.first_bytes as i64;
            // Its life: from its first snapshot to the last.
            let age = series.seen.saturating_sub(1).max(1) as f64 * interval;
            let young_growth = detection.verdict == Verdict::InsufficientData
                && growth_bytes > 0
                && growth_bytes as f64 >= s.detect.min_rate * age;
            Some(StackReport {
                id,
                kind,
                verdict,
                strict_monotonic: detection.strict_monotonic,
                outstanding_bytes: series.last.outstanding_bytes(),
                outstanding_count: series.last.outstanding_count(),
                growth_bytes,
                detection,
                frames,
                lost: stack.and_then(|st| st.lost),
                truncated: stack.is_some_and(|st| st.truncated),
                young_growth,
                after_exit_bytes: rec.after_exit.as_ref().map(|after| {
                    after
                        .stats
                        .get(&(id, kind))
                        .map_or(series.last.outstanding_bytes(), |st| st.outstanding_bytes())
                }),
            })
        })
        .collect();
    let turnover = unknown_free_rate(rec);
    if let Some(rate) = turnover {
        mark_turnover(&mut stacks, rate);
    }
    // Leaks first, fastest first, then the growth that may be turnover since the attach (which
    // the headline names); then the others by outstanding bytes (what the outputs say); ids
    // break ties (deterministic).
    stacks.sort_by(|a, b| {
        let leak = |r: &StackReport| match r.verdict {
            Verdict::ContinuousLeak => 2,
            Verdict::AttachTurnover => 1,
            _ => 0,
        };
        let by_rate = |x: &StackReport, y: &StackReport| {
            if leak(x) > 0 {
                y.detection.rate.total_cmp(&x.detection.rate)
            } else {
                std::cmp::Ordering::Equal
            }
        };
        leak(b)
            .cmp(&leak(a))
            .then(by_rate(a, b))
            .then(b.outstanding_bytes.cmp(&a.outstanding_bytes))
            .then(a.id.cmp(&b.id))
            .then(a.kind.cmp(&b.kind))
    });
    let (leak_rate, leak_rate_high) = leak_rates(&stacks);
    let memory_limit = s.memory_limit.or_else(|| {
        rec.header
            .as_ref()
            .map(|h| h.host.mem_total_bytes)
            .filter(|&m| m > 0)
    });
    let level = rec
        .timeline
        .iter()
        .rev()
        .find_map(|p| p.memory.map(|m| m.rss))
        .or_else(|| rec.timeline.last().map(|p| p.outstanding));
    let time_to_exhaustion = match (memory_limit, level) {
        (Some(limit), Some(level)) if leak_rate_high > 0.0 => {
            Some((limit.saturating_sub(level)) as f64 / leak_rate_high)
        }
        _ => None,
    };
    let mut warnings = resolver.warnings.clone();
    let (missing, unnamed) = if rec.presymbolized.is_empty() {
        let missing: Vec<String> = resolver
            .missing_modules()
            .into_iter()
            .map(str::to_string)
            .collect();
        // A bundled symbol table is all there is of its module: nothing to point the user to.
        let files: Vec<&str> = resolver.modules_from_files();
        let unnamed = unnamed_warning(&stacks, &files)
            .into_iter()
            .chain(unmapped_warning(rec, &stacks));
        (missing, unnamed.collect())
    } else {
        (Vec::new(), Vec::new())
    };
    warnings.extend(quality_warnings(rec, &stacks, missing));
    warnings.extend(untraced_growth(rec, &stacks));
    warnings.extend(exit_warning(rec, resolver, &stacks));
    warnings.extend(unnamed);
    // Stacks that hold nothing at the end need no verdict (a churn loop that appeared late).
    // A `--pid` kernel target that exited before any snapshot of its life: everything it
    // allocated is in the snapshot after its exit, which no verdict judges.
    let exited_unseen = rec.snapshots == 0
        && rec
            .after_exit
            .as_ref()
            .is_some_and(|a| a.stats.values().any(|st| st.alloc_count > 0));
    let too_short = too_short_to_judge(rec, &s.detect);
    let unjudged = exited_unseen
        || too_short
        || (stacks.iter().any(|s| s.outstanding_bytes > 0)
            && stacks.iter().all(|s| !s.detection.rate_known()));
    if unjudged {
        warnings.push(format!(
            "no stack has the {} usable samples a verdict needs (the recording has {} \
             snapshot{}, the first tenth of each stack's a warm-up): growing stacks are \
             insufficient_data, and no leak can be found; record for longer or with a shorter \
             -i (e.g. -i 1s for at least {} s after the load starts)",
            detect::MIN_POINTS,
            rec.snapshots,
            if rec.snapshots == 1 { "" } else { "s" },
            // The warm-up, and a margin for stacks that appear after the first snapshot.
            detect::MIN_POINTS * 5 / 3
        ));
    }
    Analysis {
        stacks,
        leak_rate,
        leak_rate_high,
        time_to_exhaustion,
        memory_limit,
        warnings,
        suppressed: 0,
        in_baseline: 0,
        cache_pages: 0,
        cache_pages_bytes: 0,
        unjudged,
        too_short,
        children_ok: false,
        unknown_free_rate: turnover,
        min_outstanding: None,
        below_min: 0,
        below_min_leaks: 0,
    }
}

/// How fast stacks may gain blocks, together, for frees of blocks allocated before the attach
/// at this share of that rate to make their growth [`Verdict::AttachTurnover`]: a cache
/// renewing its entries frees one old block for each new one (a share of 1); half leaves room
/// for renewals that slow as the old blocks run out (the frees are counted over the last 40%,
/// the growth over the whole window).
const TURNOVER_SHARE: f64 = 0.5;

/// Why an attached recording cannot tell turnover from a leak, if it cannot: frees of blocks
/// it never saw allocated are not counted (sampling), or are counted for every block outside
/// `--min-size`/`--max-size`. (The frees of allocations it lost are taken out of the count:
/// [`crate::series::TimelinePoint::unknown_free`].)
fn turnover_blind(rec: &Recording) -> Option<&'static str> {
    let h = rec.header.as_ref()?;
    if rec.sample_bytes.is_some() {
        Some("sampled recording, which does not count frees of blocks allocated before the attach")
    } else if h.config.min_size.is_some_and(|m| m > 0) || h.config.max_size.is_some() {
        Some(
            "recording filtered by size, which counts the frees of blocks outside \
             --min-size/--max-size with those of blocks allocated before the attach",
        )
    } else {
        None
    }
}

/// For a recording attached to a running process (`-p`): the rate, per second, at which it
/// freed blocks allocated before the attach (the `unknown_free` counter, less lost
/// allocations) over the last 40% of the recording, where the persistence gate looks: the
/// median of its rates between consecutive snapshots, which a burst (a purge, the teardown at
/// an exit) does not move as it moves an average (a cache renewing entries frees them as it
/// adds others, at each interval). None for a started command (whose blocks are all seen from
/// its exec), kernel mode, and recordings where that counter holds other frees or none
/// ([`turnover_blind`]).
fn unknown_free_rate(rec: &Recording) -> Option<f64> {
    if !rec.is_attached() || turnover_blind(rec).is_some() {
        return None;
    }
    let end = rec.timeline.last()?.t;
    let from = end - detect::END_SHARE * end;
    let tail: Vec<&crate::series::TimelinePoint> =
        rec.timeline.iter().filter(|p| p.t >= from).collect();
    let rates: Vec<f64> = tail
        .windows(2)
        .filter(|w| w[1].t > w[0].t)
        .map(|w| w[1].unknown_free.saturating_sub(w[0].unknown_free) as f64 / (w[1].t - w[0].t))
        .collect();
    (!rates.is_empty()).then(|| detect::median(&rates))
}

/// Continuous leaks of heap stacks whose new blocks the frees of blocks allocated before the
/// attach (`unknown_frees` per second) can account for become [`Verdict::AttachTurnover`], with
/// the reason as a failed gate. The frees are one budget: the slowest stacks first, as long as
/// their rates together stay within `unknown_frees / TURNOVER_SHARE`, so one stream of frees
/// does not excuse every stack (and a leak beside a smaller turnover keeps its verdict).
/// (`munmap` never counts as such a free: mmap stacks are left alone.)
fn mark_turnover(stacks: &mut [StackReport], unknown_frees: f64) {
    let budget = unknown_frees / TURNOVER_SHARE;
    let mut candidates: Vec<(f64, usize)> = stacks
        .iter()
        .enumerate()
        .filter(|(_, s)| s.verdict == Verdict::ContinuousLeak && s.kind == AllocKind::Heap)
        .filter_map(|(i, s)| Some((s.detection.count_rate.filter(|&c| c > 0.0)?, i)))
        .collect();
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut used = 0.0;
    for (blocks, i) in candidates {
        used += blocks;
        if used > budget {
            break;
        }
        let s = &mut stacks[i];
        s.verdict = Verdict::AttachTurnover;
        s.detection.gates.push(detect::Gate {
            name: "attach_turnover",
            passed: false,
            detail: format!(
                "{unknown_frees:.1} frees/s of blocks allocated before the attach in the last \
                 40% >= {TURNOVER_SHARE} x {used:.1} new blocks/s (this stack's {blocks:.1}, \
                 with any slower one so marked): its growth may be blocks replacing those"
            ),
        });
    }
}

/// Warns of the stacks [`mark_turnover`] marked among those left after [`filter`] (the
/// fastest named, with the rates), or, when leaks remain in an attached recording that cannot
/// tell ([`turnover_blind`]), that they may be turnover too.
pub fn warn_turnover(rec: &Recording, a: &mut Analysis) {
    let marked: Vec<&StackReport> = a
        .stacks
        .iter()
        .filter(|s| s.verdict == Verdict::AttachTurnover)
        .collect();
    if let (Some(first), Some(frees)) = (
        marked
            .iter()
            .max_by(|x, y| x.detection.rate.total_cmp(&y.detection.rate)),
        a.unknown_free_rate,
    ) {
        let blocks = first.detection.count_rate.unwrap_or(0.0);
        let n = marked.len();
        let line = format!(
            "{n} stack{} gained blocks at most twice as fast as the process freed blocks \
             allocated before the attach (stack {}: {} and {blocks:.1} blocks/s; those frees: \
             {frees:.1}/s in the last 40%): the growth may be new blocks replacing old ones (a \
             cache renewing its entries), which looks like a leak until the old blocks are all \
             gone, so {} called turnover since the attach, not a leak; record until those frees \
             (unknown_free) stop, or start the program under leak-record",
            if n == 1 { "" } else { "s" },
            first.id,
            crate::output::human_rate(first.detection.rate),
            if n == 1 { "it is" } else { "they are" },
        );
        a.warnings.push(line);
    }
    let leaks = a
        .stacks
        .iter()
        .filter(|s| s.verdict == Verdict::ContinuousLeak && s.kind == AllocKind::Heap)
        .count();
    if let Some(why) = turnover_blind(rec).filter(|_| rec.is_attached() && leaks > 0) {
        a.warnings.push(format!(
            "in this {why}, {} cannot be told from a cache renewing entries from before the \
             attach (each new entry stays, the old one it replaces was never seen); record \
             without that to tell, or start the program under leak-record",
            if leaks == 1 {
                "a continuous leak"
            } else {
                "the continuous leaks"
            }
        ));
    }
}

/// Runs the detector on every series that ever allocated (None for the others), on as many
/// threads as there are cores: series are independent, and each thread takes a contiguous
/// share, so the results come back in order, the same as on one thread.
fn detect_all(series: &[&Series], cfg: &detect::Config) -> Vec<Option<Detection>> {
    let one = |s: &&Series| (s.last.alloc_count > 0).then(|| detect::detect(&s.points(), cfg));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || series.len() < 64 {
        return series.iter().map(one).collect();
    }
    let share = series.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = series
            .chunks(share)
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// A stack's identity across recordings and builds: its symbolized frames (function and
/// module file name), falling back to module+offset where no symbol is known.
fn signature(frames: &[SymFrame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match &f.function {
            Some(name) if !f.is_not_code() => name.clone(),
            _ => format!(
                "{}+{:#x}",
                f.module.rsplit('/').next().unwrap_or(&f.module),
                f.offset
            ),
        })
        .collect()
}

/// Keeps only continuous leaks (and growth that may be turnover since an attach) that are not
/// leaking in `base`, or leak faster now (the lower end of the rate's CI above the upper end of
/// the baseline's).
pub fn apply_baseline(a: &mut Analysis, base: &Analysis) {
    // Growth that may be turnover since a -p attach counts as the leak it may be, on both
    // sides: one stack's verdict may flip between two recordings of the same service.
    let growing =
        |s: &StackReport| matches!(s.verdict, Verdict::ContinuousLeak | Verdict::AttachTurnover);
    let old: std::collections::HashMap<Vec<String>, &StackReport> = base
        .stacks
        .iter()
        .filter(|s| growing(s))
        .map(|s| (signature(&s.frames), s))
        .collect();
    let before = a.stacks.len();
    a.stacks.retain(|s| {
        if !growing(s) {
            return true;
        }
        match old.get(&signature(&s.frames)) {
            Some(b) => s.detection.rate_ci.0 > b.detection.rate_ci.1,
            None => true,
        }
    });
    a.in_baseline += before - a.stacks.len();
    recompute_totals(a);
}

/// Drops suppressed stacks and those below `min_outstanding` bytes at the end.
pub fn filter(a: &mut Analysis, suppressions: &Suppressions, min_outstanding: Option<u64>) {
    let before = a.stacks.len();
    a.stacks
        .retain(|s| suppressions.matching(&s.frames).is_none());
    a.suppressed += before - a.stacks.len();
    if let Some(min) = min_outstanding {
        let (kept, below): (Vec<_>, Vec<_>) = std::mem::take(&mut a.stacks)
            .into_iter()
            .partition(|s| s.outstanding_bytes >= min);
        a.stacks = kept;
        a.min_outstanding = Some(min);
        a.below_min += below.len();
        a.below_min_leaks += below
            .iter()
            .filter(|s| s.verdict == Verdict::ContinuousLeak)
            .count();
    }
    recompute_totals(a);
}

/// Fewer snapshots than a verdict needs once the warm-up is dropped: the recording judges
/// nothing, even when no stack holds anything yet (a recording of a moment passes no gate).
fn too_short_to_judge(rec: &Recording, cfg: &detect::Config) -> bool {
    detect::usable_points(rec.snapshots as usize, cfg) < detect::MIN_POINTS
}

/// Warns about the stacks that grew with too few samples to judge ([`StackReport::young_growth`])
/// among those left after [`filter`]: no output says "no growth" over them, and no leak gate
/// passes (the caller exits 2).
pub fn warn_young_growth(a: &mut Analysis) {
    let young: Vec<&StackReport> = a.stacks.iter().filter(|s| s.young_growth).collect();
    let Some(first) = young.first() else {
        return;
    };
    let more = match young.len() {
        1 => String::new(),
        2 => " (and 1 more stack like it)".to_string(),
        n => format!(" (and {} more stacks like it)", n - 1),
    };
    // In a recording too short to judge any stack, the stack need not have started late.
    let why = if a.too_short {
        "the recording is too short to judge it; record for longer"
    } else {
        "a leak that started late looks like this; record for longer after the load starts"
    };
    a.warnings
        .push(format!("{}{more}: {why}", young_growth(first)));
}

/// What a stack with [`StackReport::young_growth`] did, for the warning and the gates' error:
/// `stack 17 (leak_slowly) grew 43.9 KiB with 10 usable samples, and a verdict needs 12` (with
/// 12 to 29 samples: `..., and a verdict on growth this weak needs 30`).
pub fn young_growth(s: &StackReport) -> String {
    let name = match s.site_function() {
        Some(function) => format!("{} ({function})", s.id),
        None => s.id.to_string(),
    };
    // From MIN_POINTS on, growth that is significant only at the plain alpha needs
    // FULL_POINTS (detect::classify); below, any verdict needs MIN_POINTS.
    let needs = if s.detection.points_used >= detect::MIN_POINTS {
        format!(
            "a verdict on growth this weak needs {}",
            detect::FULL_POINTS
        )
    } else {
        format!("a verdict needs {}", detect::MIN_POINTS)
    };
    format!(
        "stack {name} grew {} with {} usable samples, and {needs}",
        crate::output::human_bytes(s.growth_bytes as f64),
        s.detection.points_used,
    )
}

impl StackReport {
    /// The function of the stack's site (its first frame past the allocator, [`site`]), if
    /// named.
    pub fn site_function(&self) -> Option<&str> {
        self.frames
            .get(site(self.kind, &self.frames))
            .and_then(|f| f.function.as_deref())
    }
}

/// What a kernel stack holds when it is not the kernel's to leak: `page cache` or `slab
/// pages` ([`leak_format::kernel::cache_pages`], the rule leak-record's status line follows
/// too). None for anything else.
pub fn cache_pages(kind: AllocKind, frames: &[SymFrame]) -> Option<&'static str> {
    leak_format::kernel::cache_pages(kind, frames.iter().filter_map(|f| f.function.as_deref()))
}

/// The index of a stack's first frame that is not the allocator: in a kernel stack, the
/// allocation functions (`kmem_cache_alloc`, `__kmalloc`, `alloc_pages`, ... and their
/// `_noprof`/`_node` forms) are the first frames, and the caller is what tells stacks apart. A
/// user stack starts at the allocator's caller already: 0.
pub fn site(kind: AllocKind, frames: &[SymFrame]) -> usize {
    const ALLOCATOR: [&str; 27] = [
        "kmem_cache_alloc",
        "__kmem_cache_alloc",
        "kmalloc",
        "__kmalloc",
        "kvmalloc",
        "__kvmalloc",
        "kvzalloc",
        "kzalloc",
        "krealloc",
        "__krealloc",
        "kmemdup",
        "kstrdup",
        "kstrndup",
        "__alloc_pages",
        "__alloc_frozen_pages",
        "alloc_pages",
        "alloc_frozen_pages",
        "__folio_alloc",
        "folio_alloc",
        "vma_alloc_folio",
        "alloc_slab_page",
        "___slab_alloc",
        "__slab_alloc",
        "__get_free_pages",
        "get_zeroed_page",
        "pcpu_alloc",
        "__alloc_percpu",
    ];
    if !kind.is_kernel() {
        return 0;
    }
    frames
        .iter()
        .position(|f| {
            f.function
                .as_deref()
                .is_none_or(|n| !ALLOCATOR.iter().any(|p| n.starts_with(p)))
        })
        .unwrap_or(0)
}

/// Leaves out the kernel stacks of page-cache and slab pages ([`cache_pages`]), counted: a
/// log file that grows is not a kernel leak, nor are the pages of a leaking object's cache a
/// second leak.
pub fn leave_out_cache_pages(a: &mut Analysis) {
    let (out, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut a.stacks)
        .into_iter()
        .partition(|s| cache_pages(s.kind, &s.frames).is_some());
    a.stacks = kept;
    a.cache_pages += out.len();
    a.cache_pages_bytes += out.iter().map(|s| s.outstanding_bytes).sum::<u64>();
    recompute_totals(a);
}

/// The continuous leaks' total rate, and the sum of their upper bounds (bytes/s).
fn leak_rates(stacks: &[StackReport]) -> (f64, f64) {
    let leaks = stacks
        .iter()
        .filter(|r| r.verdict == Verdict::ContinuousLeak);
    // `+ 0.0`: an empty sum is -0.0, which would print as such.
    let rate = leaks.clone().map(|r| r.detection.rate).sum::<f64>() + 0.0;
    let high = leaks
        .map(|r| r.detection.rate_ci.1.max(r.detection.rate))
        .sum::<f64>()
        + 0.0;
    (rate, high)
}

fn recompute_totals(a: &mut Analysis) {
    let old_high = a.leak_rate_high;
    (a.leak_rate, a.leak_rate_high) = leak_rates(&a.stacks);
    // The time to exhaustion scales with the rate (same limit and level).
    a.time_to_exhaustion = match a.time_to_exhaustion {
        Some(t) if a.leak_rate_high > 0.0 => Some(t * old_high / a.leak_rate_high),
        _ => None,
    };
}

/// The processes the target started, which leak-record does not record: a wrapper that runs
/// its program without exec leaves only its own allocations.
fn children_warning(rec: &Recording) -> Option<String> {
    let c = rec.children.as_ref().filter(|c| c.started > 0)?;
    Some(format!(
        "the target started {}, which leak-record did not record (it follows one process): \
         what they allocated is not in this recording; record the program itself: leak-record \
         -- PROGRAM, or -p its PID; a wrapper script should exec it",
        started_processes(c)
    ))
}

/// A `--pid` kernel recording that ended with the process's exit: what the exit freed, what
/// stayed, and that the verdicts judge the process as it ran (its exit frees its descriptors,
/// sockets and pipes: an fd leak would otherwise end at 0 and pass every gate).
fn exit_warning(rec: &Recording, resolver: &Resolver, stacks: &[StackReport]) -> Option<String> {
    let after = rec.after_exit.as_ref()?;
    let pid = rec.header.as_ref().map_or(0, |h| h.target.pid);
    // As the outputs count: without the page cache and slab pages (leave_out_cache_pages).
    let counted = |kind: AllocKind, frames: &[SymFrame]| cache_pages(kind, frames).is_none();
    let judged: Vec<&StackReport> = stacks
        .iter()
        .filter(|s| counted(s.kind, &s.frames))
        .collect();
    let before: u64 = judged.iter().map(|s| s.outstanding_bytes).sum();
    let freed: u64 = judged
        .iter()
        .map(|s| {
            let after = s.after_exit_bytes.unwrap_or(s.outstanding_bytes);
            s.outstanding_bytes.saturating_sub(after)
        })
        .sum();
    let mut left: Vec<u64> = judged.iter().filter_map(|s| s.after_exit_bytes).collect();
    // Stacks that first held something after the exit (allocated by the exit itself, or
    // since the last snapshot before it): in no series, so named here.
    let mut late = Vec::new();
    for (&(id, kind), st) in &after.stats {
        let frames = rec.stacks.get(&id).map_or(&[][..], |s| s.frames.as_slice());
        let frames = if rec.is_kernel() {
            resolver.symbolize_kernel(frames)
        } else {
            resolver.symbolize(&[frames]).pop().unwrap_or_default()
        };
        let bytes = st.outstanding_bytes();
        let judged = stacks.iter().any(|s| (s.id, s.kind) == (id, kind));
        if !judged && bytes > 0 && counted(kind, &frames) {
            left.push(bytes);
            let name = frames
                .get(site(kind, &frames))
                .and_then(|f| f.function.clone());
            late.push(match name {
                Some(function) => format!("stack {id} ({function})"),
                None => format!("stack {id}"),
            });
        }
    }
    left.retain(|&b| b > 0);
    let left_bytes: u64 = left.iter().sum();
    let late = match late.len() {
        0 => String::new(),
        n => format!(
            ", {n} of them first seen {}: {}",
            rec.exit_phrase(),
            late.into_iter().take(3).collect::<Vec<_>>().join(", ")
        ),
    };
    let (freed, before, left_bytes) = (
        crate::output::human_bytes(freed as f64),
        crate::output::human_bytes(before as f64),
        crate::output::human_bytes(left_bytes as f64),
    );
    let stacks = if left.len() == 1 { "stack" } else { "stacks" };
    Some(if rec.is_kernel() {
        format!(
            "PID {pid} exited, and the snapshot {:.1} s into the recording, after its exit, is \
             left out of the verdicts and figures, which judge the process as it ran: its exit \
             freed {freed} of the {before} outstanding before it, and {left_bytes} on {} {stacks} \
             stayed allocated after it (page cache and slab pages apart; JSON: \
             after_exit_bytes){late}",
            after.t,
            left.len(),
        )
    } else {
        format!(
            "PID {pid} exited, and the snapshot {:.1} s into the recording, at its exit, is left \
             out of the verdicts and figures, which judge the program as it ran: its teardown \
             (atexit handlers, destructors, an interpreter's finalization) freed {freed} of the \
             {before} outstanding before it, and {left_bytes} on {} {stacks} was still allocated \
             at the exit (JSON: after_exit_bytes){late}",
            after.t,
            left.len(),
        )
    })
}

/// What the allocator events the recorder could not see (`Record::Unseen`) do to the figures.
fn unseen_warning(rec: &Recording) -> Option<String> {
    let u = &rec.unseen;
    if u.total() == 0 {
        return None;
    }
    let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut effects = Vec::new();
    if u.frees > 0 {
        let until = if rec.is_kernel() {
            " (each until its address is allocated again, if ever)"
        } else {
            ""
        };
        effects.push(format!(
            "up to {} counted as outstanding {} in fact freed{until}",
            plural(u.frees, "block"),
            if u.frees == 1 { "was" } else { "were" },
        ));
    }
    if u.allocs > 0 {
        effects.push(format!(
            "up to {} {} counted on no stack",
            plural(u.allocs, "allocation"),
            if u.allocs == 1 { "is" } else { "are" }
        ));
    }
    let events: Vec<String> = [(u.allocs, "allocation"), (u.frees, "free")]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, what)| plural(n, what))
        .collect();
    Some(format!(
        "up to {} {} not recorded (the kernel skips a tracing program that would run inside \
         itself on one CPU, as for an interrupt that allocates or frees while it runs, and \
         counts such runs whether or not the recording's filters would have kept them; or a \
         table's lock was busy): {}",
        events.join(" and "),
        if u.total() == 1 { "was" } else { "were" },
        effects.join(", and ")
    ))
}

/// "1 process (PID 4242, leaky)", "3 processes (the first: PID 4242, leaky)".
fn started_processes(c: &leak_format::Children) -> String {
    let (n, s) = (c.started, if c.started == 1 { "" } else { "es" });
    let example = match c.examples.first() {
        Some(e) if c.started == 1 => format!(" (PID {}, {})", e.pid, e.name),
        Some(e) => format!(" (the first: PID {}, {})", e.pid, e.name),
        None => String::new(),
    };
    format!("{n} process{s}{example}")
}

/// What makes the data less trustworthy, one line each.
/// The target's anonymous memory (RssAnon and swap) grew much more than the traced allocations
/// ([`UNTRACED_GROWTH`], and four times as much): memory the probes do not see is growing, and no
/// verdict covers it. In a user's trial, a Python script leaked through its allocator's own
/// mmap'd arenas (without --mmap) and RSS grew 31 MiB in 60 s, while the report gave a leak of
/// 16 KiB/s, and 17 days to exhaustion.
fn untraced_growth(rec: &Recording, stacks: &[StackReport]) -> Option<String> {
    // Allocations a full table left untracked are warned of as such.
    if rec.is_kernel() || rec.memleak_log || rec.losses.allocs_full > 0 {
        return None;
    }
    let mut anon = rec
        .timeline
        .iter()
        .filter_map(|p| p.memory.map(|m| (p.t, m.rss_anon.saturating_add(m.swap))))
        .filter(|&(_, bytes)| bytes > 0);
    let (t0, first) = anon.next()?;
    let (t1, last) = anon.next_back()?;
    let grew = last.saturating_sub(first);
    let traced = stacks
        .iter()
        .fold(0i64, |sum, s| sum.saturating_add(s.growth_bytes))
        .max(0) as u64;
    if grew < UNTRACED_GROWTH || grew / 4 < traced {
        return None;
    }
    let mmap = rec.header.as_ref().is_some_and(|h| h.config.mmap);
    let causes = if mmap {
        "memory from no probed allocator (a custom allocator on mmap, a JIT), or fragmentation"
    } else {
        "an allocator's own mmap'd arenas, as Python's (record with --mmap), memory from no \
         probed allocator, or fragmentation"
    };
    let human = |b: u64| crate::output::human_bytes(b as f64);
    Some(format!(
        "the target's anonymous memory (RssAnon and swap) grew {} in {:.0} s, while the traced \
         allocations grew {}: memory the probes do not see is growing ({causes}), and no verdict \
         covers it",
        human(grew),
        t1 - t0,
        human(traced)
    ))
}

/// Growth of the target's anonymous memory that [`untraced_growth`] may warn of.
const UNTRACED_GROWTH: u64 = 16 << 20;

fn quality_warnings(
    rec: &Recording,
    stacks: &[StackReport],
    resolver_missing: Vec<String>,
) -> Vec<String> {
    let mut w = Vec::new();
    let snapshots = |n: u32| format!("{n} snapshot{}", if n == 1 { "" } else { "s" });
    if let (Some(leak_format::Error::Tail { offset, .. }), true) = (&rec.tail, rec.memleak_log) {
        let n = rec.snapshots;
        w.push(format!(
            "{}; analyzed the {n} complete interval{} before it",
            crate::memleak::cut_at(*offset),
            if n == 1 { "" } else { "s" }
        ));
    } else if let Some(t) = &rec.tail {
        let read = rec.snapshots + rec.after_exit.as_ref().map_or(0, |a| a.snapshots);
        let lost = match rec.expected_snapshots {
            Some(all) if all > read => format!(
                ", of the {} the file holds (its end record says so): the rest lies past the \
                 damage and is not read",
                snapshots(all)
            ),
            _ => String::new(),
        };
        let n = rec.snapshots;
        w.push(format!(
            "{t}; analyzed the {n} complete snapshot{} before it{lost}",
            if n == 1 { "" } else { "s" }
        ));
    } else if rec.header.is_some() && rec.end.is_none() {
        w.push(
            "the recording has no end record: the recorder was killed, stopped on an error it \
             printed (a full disk), or is still running"
                .into(),
        );
    }
    if let Some(leak_format::End {
        reason: leak_format::EndReason::TargetExited {
            signal: Some(sig), ..
        },
        ..
    }) = &rec.end
    {
        let pid = rec.header.as_ref().map_or(0, |h| h.target.pid);
        let name = leak_format::units::signal_name(*sig)
            .map_or(String::new(), |name| format!(" ({name})"));
        w.push(format!(
            "PID {pid} was killed by signal {sig}{name} {:.1} s into the recording (a crash, or a \
             kill): the recording ends there",
            rec.duration
        ));
    }
    if let Some(leak_format::End {
        reason: leak_format::EndReason::Error(e),
        ..
    }) = &rec.end
    {
        w.push(format!(
            "the recorder stopped on an error: {e}; analyzed the {} before it",
            snapshots(rec.snapshots)
        ));
    }
    w.extend(order_warnings(rec));
    w.extend(gap_warning(rec));
    let start = rec.header.as_ref().map_or(0, |h| h.start_mono_ns);
    let attached = rec.is_attached();
    let mut placed: Vec<&leak_format::Probe> = rec
        .header
        .as_ref()
        .map(|h| h.probes.iter().collect())
        .unwrap_or_default();
    for late in &rec.late_probes {
        // Places probed before: attached again after the thread the kernel tied them to ended
        // while the target ran on.
        let again = late.probes.iter().all(|p| placed.contains(&p));
        placed.extend(late.probes.iter());
        if late.held {
            continue;
        }
        let modules: BTreeSet<&str> = late.probes.iter().map(|p| p.module.as_str()).collect();
        let modules = modules.into_iter().collect::<Vec<_>>().join(", ");
        let at = late.mono_ns.saturating_sub(start) as f64 / 1e9;
        if again {
            w.push(format!(
                "the target's probes in {modules} were attached again {at:.1} s into the \
                 recording, while it ran {}: the thread the kernel ties probes to had ended \
                 (an exec by another thread than the main one, or a main thread that called \
                 pthread_exit), and what it allocated in between is not counted (leak-record \
                 said how long that was)",
                late.exe
            ));
            continue;
        }
        let why = if attached {
            "record a started command, which is held at its execs, to see everything"
        } else {
            "it was not held at that exec: its privileges, root or mount namespace differed \
             from leak-record's, or a thread other than its main one exec'd"
        };
        w.push(format!(
            "the target exec'd {}, whose allocator ({modules}) was probed only {at:.1} s into \
             the recording, while it ran: what it allocated before that is not counted ({why})",
            late.exe,
        ));
    }
    w.extend(children_warning(rec));
    let cut_short = rec
        .header
        .as_ref()
        .is_some_and(|h| h.target.mode == leak_format::TargetMode::Command)
        && rec
            .end
            .as_ref()
            .is_some_and(|e| matches!(e.reason, leak_format::EndReason::Duration));
    if cut_short {
        w.push(
            "leak-record's -d ended the recording with the command still running (it ended the \
             command, whose exit status is not known): as expected for a service recorded for a \
             set time, but a test did not finish; bound a test's time with timeout around \
             leak-record (timeout 60 leak-record ... -- ./test), whose status 124 fails the step"
                .to_string(),
        );
    }
    let l = &rec.losses;
    if l.unexpected_drops(rec.is_kernel()) > 0 {
        // Untracked allocations are in no stack's figures, and may be leaks: their bytes give
        // the scale next to the leaks found (a rate 80 times the one reported, in a trial).
        let untracked = match (l.allocs_full, l.allocs_full_bytes) {
            (0, _) => "(table full)".to_string(),
            (_, 0) => "(table full: in no stack's figures, leaks included)".to_string(),
            (_, bytes) => format!(
                "({}; table full: in no stack's figures, leaks included)",
                crate::output::human_bytes(bytes as f64)
            ),
        };
        w.push(format!(
            "the recorder lost data: {} allocations untracked {untracked}, {} on unknown stacks \
             (stack table full {}, walk failed {}, counters full {}), {} pending-call overflows, \
             {} returns without entry, {} missed frees",
            l.allocs_full,
            l.stack_table_full + l.stack_walk_failed + l.counters_full,
            l.stack_table_full,
            l.stack_walk_failed,
            l.counters_full,
            l.pending_full,
            l.return_without_entry,
            l.missed_free
        ));
        // What the recorder's closing line promises: which tables to raise.
        let config = rec.header.as_ref().map(|h| &h.config);
        let raise: Vec<String> = [
            (l.allocs_full, "--max-allocs", config.map(|c| c.max_allocs)),
            (
                l.stack_table_full,
                "--max-stacks",
                config.map(|c| c.max_stacks),
            ),
        ]
        .into_iter()
        .filter(|&(n, ..)| n > 0)
        .map(|(_, option, was)| match was {
            Some(was) => format!("{option} (it was {was})"),
            None => option.to_string(),
        })
        .collect();
        if let Some(last) = w.last_mut().filter(|_| !raise.is_empty()) {
            last.push_str(&format!(
                "; record again with a larger {}",
                raise.join(" and a larger ")
            ));
        }
    }
    if rec.is_kernel() && l.missed_free > 0 {
        // Expected in kernel mode, so not among the losses above; but it inflates the stacks
        // whose objects are freed that way, and nothing else would say so.
        w.push(format!(
            "{} kernel object{} freed without a free event (in bulk: kfree_rcu batches, \
             kfree_bulk, slab sheaves) stayed counted as outstanding until {} address was \
             allocated again, and more may still be: a stack whose objects are freed that way \
             (maple tree nodes, for one) can show growth that is not there; compare it with \
             its cache in /proc/slabinfo",
            l.missed_free,
            if l.missed_free == 1 { "" } else { "s" },
            if l.missed_free == 1 { "its" } else { "their" },
        ));
    }
    w.extend(unseen_warning(rec));
    // Undeclared stacks (no frames known) have their own warning.
    // Those of a program exec'd away are not the program's: a wrapper such as env may well
    // lack frame pointers.
    let real: Vec<&StackReport> = stacks
        .iter()
        .filter(|s| s.lost.is_none() && !s.frames.is_empty() && !left_by_exec(rec, s))
        .collect();
    let deep = real.iter().filter(|s| s.truncated).count();
    if deep > 0 {
        let limit = rec.header.as_ref().map_or(String::new(), |h| {
            format!(" ({} frames)", h.config.max_stack_depth)
        });
        w.push(format!(
            "{deep} stack{} reached the deepest walk leak-record takes{limit}: {} outer callers \
             are not recorded, and allocations that differ only there are counted on one stack \
             (deep recursion, say); the outputs mark them as cut, and the folded stacks and \
             flame graphs root them at {TRUNCATED_ROOT}",
            if deep == 1 { "" } else { "s" },
            if deep == 1 { "its" } else { "their" },
        ));
    }
    let shallow = real.iter().filter(|s| walk_cut_short(&s.frames)).count();
    if !real.is_empty() && shallow * 2 > real.len() {
        w.push(format!(
            "{shallow} of {} stacks are at most 2 frames deep: the program probably lacks frame \
             pointers; rebuild with -fno-omit-frame-pointer (Rust: -C force-frame-pointers=yes)",
            real.len()
        ));
    }
    let astray = |s: &&&StackReport| s.frames.iter().any(SymFrame::is_not_code);
    let count = real.iter().filter(astray).count();
    if let Some(first) = real.iter().find(astray) {
        let frame = first
            .frames
            .iter()
            .find(|f| f.is_not_code())
            .map_or_else(String::new, SymFrame::display);
        w.push(format!(
            "{count} stack{} hold{} an address outside its module's code (stack {}: {frame}): \
             not a return address, so the stack walk went astray there (code without frame \
             pointers), and the frames after it are not callers; rebuild with \
             -fno-omit-frame-pointer (Rust: -C force-frame-pointers=yes)",
            if count == 1 { "" } else { "s" },
            if count == 1 { "s" } else { "" },
            first.id,
        ));
    }
    let missing = resolver_missing;
    if !missing.is_empty() {
        // Bundles come after the snapshot declaring their module (format 1.8; before, after
        // the last snapshot): a file cut short may have lost them.
        let cut = if rec.tail.is_some() || rec.end.is_none() {
            " (if it was, the file was cut before their bundles)"
        } else {
            ""
        };
        w.push(format!(
            "no usable file for {} module(s), their frames stay module+offset: {}; give --sysroot \
             or --debug-dir, or record with --bundle-symbols{cut}",
            missing.len(),
            missing.join(", ")
        ));
    }
    if rec.skipped_records > 0 {
        w.push(format!(
            "{} records of a newer format version were skipped; use a newer leak-report",
            rec.skipped_records
        ));
    }
    w
}

/// Modules symbolized from a file (`files`) that names none of some of their frames (a
/// stripped file whose debug file was not found): the frames stay module+offset, and a debug
/// file would name them.
fn unnamed_warning(stacks: &[StackReport], files: &[&str]) -> Option<String> {
    let mut unnamed: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for f in stacks.iter().flat_map(|s| &s.frames) {
        if f.function.is_none() && files.contains(&f.module.as_str()) {
            unnamed.entry(&f.module).or_default().insert(f.offset);
        }
    }
    if unnamed.is_empty() {
        return None;
    }
    let list: Vec<String> = unnamed
        .iter()
        .map(|(m, offsets)| format!("{m} ({} frames)", offsets.len()))
        .collect();
    Some(format!(
        "{} module(s) have no symbol for some of their frames, which stay module+offset: {}; \
         the files are probably stripped: give their debug files with --debug-dir (the \
         .build-id layout; Debian's -dbg/-dbgsym packages install them in /usr/lib/debug)",
        unnamed.len(),
        list.join(", ")
    ))
}

/// The root frame of a stack cut at the deepest walk, in folded stacks and flame graphs.
pub const TRUNCATED_ROOT: &str = "[truncated]";

/// The line that ends a stack cut at the deepest walk, in the text and the report.
pub const TRUNCATED_LINE: &str = "... (cut at the deepest walk: outer callers not recorded)";

/// Functions a complete user stack ends in: a program's or a thread's start.
const STACK_ROOTS: &[&str] = &[
    "main",
    "__libc_start_call_main",
    "__libc_start_main",
    "__libc_start_main_impl",
    "_start",
    "start_thread",
    "thread_start",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "_dl_start_user",
    "_dl_init",
    "call_init",
];

/// Whether a stack looks cut short by a walk without frame pointers: at most 2 frames (not
/// counting inlined calls), the outermost of which is not where a program or thread starts
/// (malloc called from `main` is a complete stack of two frames).
fn walk_cut_short(frames: &[SymFrame]) -> bool {
    let real = frames.iter().filter(|f| !f.inlined);
    let outermost = real.clone().next_back();
    real.count() <= 2
        && !outermost
            .and_then(|f| f.function.as_deref())
            .is_some_and(|name| STACK_ROOTS.contains(&name))
}

/// Whether a stack is of a program the target left by an exec before leak-record could read
/// its memory map (a wrapper such as `env` that execs at once): no frame located, and nothing
/// outstanding at the end (the exec freed it all). Only in recordings that name the program
/// exec'd (format 1.7).
fn left_by_exec(rec: &Recording, s: &StackReport) -> bool {
    rec.exec_process().is_some()
        && s.lost.is_none()
        && s.outstanding_bytes == 0
        && !s.frames.is_empty()
        && s.frames.iter().all(|f| f.module == UNMAPPED)
}

/// Frames in no mapping the recording holds (`[unknown]+address`): said, with the likely
/// causes, as a module without symbols is; those of a program exec'd away apart, with theirs.
fn unmapped_warning(rec: &Recording, stacks: &[StackReport]) -> Option<String> {
    let (left, rest): (Vec<&StackReport>, Vec<&StackReport>) =
        stacks.iter().partition(|s| left_by_exec(rec, s));
    let besides = unmapped_warning_of(&rest);
    if left.is_empty() {
        return besides;
    }
    let n = left.len();
    Some(format!(
        "{n} stack{} of the program the target ran before its exec (a wrapper such as env, or a \
         script, that exec'd before leak-record could read its memory map) {} no located \
         frame, shown as {UNMAPPED}+address; {} nothing since the exec{}",
        if n == 1 { "" } else { "s" },
        if n == 1 { "has" } else { "have" },
        if n == 1 { "it holds" } else { "they hold" },
        besides.map_or(String::new(), |w| format!("; besides, {w}")),
    ))
}

/// [`unmapped_warning`] for `stacks`.
fn unmapped_warning_of(stacks: &[&StackReport]) -> Option<String> {
    let on: Vec<&StackReport> = stacks
        .iter()
        .copied()
        .filter(|s| s.frames.iter().any(|f| f.module == UNMAPPED))
        .collect();
    let frames: BTreeSet<u64> = on
        .iter()
        .flat_map(|s| &s.frames)
        .filter(|f| f.module == UNMAPPED)
        .map(|f| f.offset)
        .collect();
    let (n, stacks) = (frames.len(), on.len());
    (n > 0).then(|| {
        format!(
            "{n} frame address{} on {stacks} stack{} {} in no memory mapping the recording \
             holds, shown as {UNMAPPED}+address: code loaded and unloaded between two snapshots \
             (a library dlopen'ed and dlclose'd, a JIT), which a shorter -i may catch, or a \
             bogus frame of a stack walked without frame pointers",
            if n == 1 { "" } else { "es" },
            if stacks == 1 { "" } else { "s" },
            if n == 1 { "lies" } else { "lie" },
        )
    })
}

/// A stretch without snapshots far longer than the interval: the recorder was stopped (Ctrl-Z,
/// SIGSTOP, a frozen cgroup), starved, or slow to take one. The BPF counters kept counting, but
/// what happened meanwhile shows as one step, and a leak's rate there is not seen.
fn gap_warning(rec: &Recording) -> Option<String> {
    let interval = rec.header.as_ref()?.interval_ns as f64 / 1e9;
    let (at, gap) = rec.longest_gap?;
    if interval <= 0.0 || gap < 5.0 * interval || gap < interval + 5.0 {
        return None;
    }
    let h = crate::output::human_duration;
    Some(format!(
        "no snapshot for {} from {} into the recording (one every {} otherwise): leak-record \
         was stopped (Ctrl-Z, SIGSTOP), starved of CPU or slow to take a snapshot; its counters \
         went on counting, but what happened in that time shows as one step at its end",
        h(gap),
        h(at),
        h(interval)
    ))
}

/// The record order's violations (docs/format.md, 1.3), one line each.
fn order_warnings(rec: &Recording) -> Vec<String> {
    let mut w = Vec::new();
    if rec.header.is_none() && !rec.memleak_log {
        w.push(
            "the recording has no Header record (its first frame is missing): the target, the \
             probes and the start time are unknown, and times count from the first snapshot"
                .into(),
        );
    }
    let o = &rec.order;
    if o.missing_snapshots > 0 {
        w.push(format!(
            "{} snapshot(s) are missing from the recording (gaps in their sequence numbers): \
             the file was cut or spliced; the series pass over the gaps",
            o.missing_snapshots
        ));
    }
    if o.out_of_order > 0 && rec.memleak_log {
        w.push(format!(
            "{} interval(s) of the memleak log have a clock behind the one before them (by \
             less than 12 h: not midnight): the log was edited or spliced, or the clock set \
             back; each was placed one interval after the one before",
            o.out_of_order
        ));
    } else if o.out_of_order > 0 {
        w.push(format!(
            "{} snapshot(s) come out of sequence (a sequence number not above the highest \
             before it, repeated or swapped): the file was spliced; they were read in file order",
            o.out_of_order
        ));
    }
    if let Some(stop) = &o.stopped {
        let what = if stop.second_header {
            "a second Header record (two recordings joined, or a damaged frame)"
        } else {
            "the End record"
        };
        w.push(format!(
            "{} record(s) follow {what}, after snapshot {}: they were not read; split the file \
             or record again",
            stop.records_left, stop.after_snapshots
        ));
    }
    if o.undeclared_stacks > 0 {
        w.push(format!(
            "{} stack(s) have counters but no snapshot declared their frames (a snapshot is \
             missing from the file): they are shown without frames",
            o.undeclared_stacks
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_frames(names: &[&str]) -> Vec<SymFrame> {
        names
            .iter()
            .map(|n| SymFrame {
                function: Some((*n).to_string()),
                file: None,
                line: None,
                module: "[kernel]".into(),
                offset: 0x10,
                inlined: false,
            })
            .collect()
    }

    #[test]
    fn a_short_stack_that_ends_where_a_program_or_thread_starts_is_complete() {
        // (kernel_frames' module is irrelevant here: only names and depth count.)
        assert!(!walk_cut_short(&kernel_frames(&[
            "main",
            "__libc_start_call_main"
        ])));
        assert!(!walk_cut_short(&kernel_frames(&["worker", "start_thread"])));
        assert!(!walk_cut_short(&kernel_frames(&["main"])));
        assert!(walk_cut_short(&kernel_frames(&["leak_here", "handle"])));
        assert!(walk_cut_short(&kernel_frames(&["leak_here"])));
        assert!(!walk_cut_short(&kernel_frames(&["a", "b", "c"])));
        // An inlined frame does not count as depth, nor as the outermost frame.
        let mut inlined = kernel_frames(&["leak_here", "handle", "main"]);
        inlined[2].inlined = true;
        assert!(walk_cut_short(&inlined));
    }

    #[test]
    fn page_cache_and_slab_pages_are_told_from_kernel_leaks() {
        use AllocKind::{Heap, KernelPage, KernelSlab};
        // From a recording of a process appending to a log file (ext4), and of fileleak.
        let write = ["__filemap_get_folio", "ext4_da_write_begin", "vfs_write"];
        let page = [
            &["__alloc_frozen_pages_noprof", "folio_alloc_noprof"][..],
            &write,
        ]
        .concat();
        assert_eq!(
            cache_pages(KernelPage, &kernel_frames(&page)),
            Some("page cache")
        );
        let buffers = [
            "kmem_cache_alloc_noprof",
            "alloc_buffer_head",
            "folio_alloc_buffers",
            "create_empty_buffers",
            "ext4_block_write_begin",
        ];
        assert_eq!(
            cache_pages(KernelSlab, &kernel_frames(&buffers)),
            Some("page cache")
        );
        let slab = [
            "__alloc_frozen_pages_noprof",
            "allocate_slab",
            "___slab_alloc",
            "kmem_cache_alloc_lru_noprof",
            "alloc_inode",
        ];
        assert_eq!(
            cache_pages(KernelPage, &kernel_frames(&slab)),
            Some("slab pages")
        );
        // The page cache's index: xarray nodes added with a page (a 200 MiB write, ext4).
        let index = [
            "kmem_cache_alloc_lru_noprof",
            "xas_alloc",
            "xas_create",
            "xas_store",
            "__filemap_add_folio",
            "filemap_add_folio",
            "__filemap_get_folio",
            "ext4_da_write_begin",
        ];
        assert_eq!(
            cache_pages(KernelSlab, &kernel_frames(&index)),
            Some("page cache")
        );
        let exts = ["__kmalloc_noprof", "alloc_slab_obj_exts", "allocate_slab"];
        assert_eq!(
            cache_pages(KernelSlab, &kernel_frames(&exts)),
            Some("slab pages")
        );
        // Pipe pages and file objects are the kernel's to free: kept.
        let pipe = [
            "__alloc_frozen_pages_noprof",
            "alloc_pages_noprof",
            "anon_pipe_write",
        ];
        assert_eq!(cache_pages(KernelPage, &kernel_frames(&pipe)), None);
        let filp = ["kmem_cache_alloc_noprof", "alloc_empty_file", "path_openat"];
        assert_eq!(cache_pages(KernelSlab, &kernel_frames(&filp)), None);
        // The same names in a user stack are the program's own.
        assert_eq!(cache_pages(Heap, &kernel_frames(&page)), None);
    }

    #[test]
    fn a_kernel_stack_is_named_by_the_allocators_caller() {
        let frames = kernel_frames(&[
            "__alloc_frozen_pages_noprof",
            "alloc_pages_mpol",
            "alloc_pages_noprof",
            "anon_pipe_write",
            "vfs_write",
        ]);
        assert_eq!(site(AllocKind::KernelPage, &frames), 3);
        let frames = kernel_frames(&["kmem_cache_alloc_noprof", "alloc_empty_file"]);
        assert_eq!(site(AllocKind::KernelSlab, &frames), 1);
        // Only allocator frames: the first. A user stack: the first (the caller already).
        let frames = kernel_frames(&["__kmalloc_noprof", "kmalloc_trace"]);
        assert_eq!(site(AllocKind::KernelSlab, &frames), 0);
        let frames = kernel_frames(&["kmalloc_wrapper", "main"]);
        assert_eq!(site(AllocKind::Heap, &frames), 0);
    }
}
