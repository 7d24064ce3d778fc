//! The detection floors of docs/detection.md ("Evaluation"), held on the corpus's `ci` seeds
//! (neither the tuning nor the reporting seeds): a change that degrades detection fails here.
//! The samples are sized for a debug build on two cores; `examples/evaluate.rs` measures the
//! same quantities on many more series, in release.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use leak_report::corpus::{self, Case, Pattern, Rule, Scored, SeedSet, Tally, Truth, PATTERNS};
use leak_report::detect::{Config, Verdict};

const SEEDS: SeedSet = SeedSet::Ci;
/// Target SNR levels 5, 15 and 50 (indices into `corpus::SNR_LEVELS`); the floors then keep
/// the series whose measured SNR is at least 3.
const STRONG: [usize; 3] = [2, 3, 4];

fn patterns(keep: impl Fn(&Pattern) -> bool) -> Vec<usize> {
    (0..PATTERNS.len())
        .filter(|&i| keep(&PATTERNS[i]))
        .collect()
}

fn scored_leaks_and_non_leaks(p: &Pattern) -> bool {
    p.truth != Truth::Separate
}

fn tally<'a>(scored: impl Iterator<Item = &'a Scored>) -> Tally {
    let mut t = Tally::default();
    for s in scored {
        t.add(s);
    }
    t
}

/// Which patterns were flagged or missed, for the failure message.
fn errors(scored: &[Scored]) -> String {
    let mut lines = Vec::new();
    for (i, p) in PATTERNS.iter().enumerate() {
        let mine: Vec<&Scored> = scored.iter().filter(|s| s.case.pattern == i).collect();
        let wrong = mine
            .iter()
            .filter(|s| match p.truth {
                Truth::Leak => !s.outcome.flagged(Rule::Robust),
                _ => s.outcome.flagged(Rule::Robust),
            })
            .count();
        if wrong > 0 {
            lines.push(format!("{}: {wrong} of {} wrong", p.name, mine.len()));
        }
    }
    lines.join("; ")
}

/// Asserts the default detector's precision and recall on `scored` (at least 400 leaks and
/// 400 non-leaks) against their floors; returns the tally.
fn assert_floors(scored: &[Scored], min_precision: f64, min_recall: f64) -> Tally {
    let t = tally(scored.iter());
    assert!(t.leaks >= 400 && t.non_leaks >= 400, "{t:?}");
    let (precision, recall) = (
        t.precision(Rule::Robust).unwrap(),
        t.recall(Rule::Robust).unwrap(),
    );
    eprintln!(
        "{} leaks, {} non-leaks: precision {precision:.3}, recall {recall:.3}",
        t.leaks, t.non_leaks
    );
    assert!(
        precision >= min_precision && recall >= min_recall,
        "precision {precision:.3} (floor {min_precision}), recall {recall:.3} (floor \
         {min_recall}): {}",
        errors(scored)
    );
    t
}

#[test]
fn from_360_snapshots_precision_and_recall_are_at_least_0_97() {
    // 31 leak and non-leak patterns x 2 lengths x 3 SNR levels x 6 = 1,116 series, in memory.
    let cases = Case::grid(
        &patterns(scored_leaks_and_non_leaks),
        &[360, 720],
        &STRONG,
        6,
    );
    let scored: Vec<Scored> = corpus::score_in_memory(&cases, SEEDS, &Config::default())
        .into_iter()
        .filter(|s| s.snr >= 3.0)
        .collect();
    let t = assert_floors(&scored, 0.97, 0.97);
    // The seed rule finds none of these noisy leaks: the reason it is not the default.
    assert!(t.recall(Rule::Strict).unwrap() < 0.05);
}

#[test]
fn at_120_snapshots_precision_is_at_least_0_95_and_recall_0_85_through_a_recording() {
    // Every pattern x 3 SNR levels x 12 replicates as the stacks of one real recording,
    // read back by `series::read` as leak-report reads it.
    let all = patterns(|_| true);
    let cases = Case::grid(&all, &[120], &STRONG, 12);
    let cfg = Config::default();
    let (recorded, bytes) = corpus::score_recorded(&cases, SEEDS, &cfg).unwrap();
    assert!(bytes.len() > 10_000);
    // Up to `series::DEFAULT_CAP` snapshots the recording changes nothing.
    let in_memory = corpus::score_in_memory(&cases, SEEDS, &cfg);
    assert_eq!(recorded, in_memory);
    let scored: Vec<Scored> = recorded
        .into_iter()
        .filter(|s| PATTERNS[s.case.pattern].truth != Truth::Separate && s.snr >= 3.0)
        .collect();
    assert_floors(&scored, 0.95, 0.85);
}

/// The share of its series a non-leak pattern may have flagged, from 120 snapshots on and at
/// every SNR: the evaluation issue's floor (1%, the random walk 10%), except for one pattern,
/// the event-level cache of distinct keys, held at 2.5%: 4 of these 210 series (1.9%) are
/// flagged. It is flagged only in short windows: 2%, 2% and 1% of the reporting seeds' series
/// at 120, 360 and 720 snapshots, none at 1,440 and 2,880, 0.9% of its 1,000 series from 120
/// snapshots on, within the 1% target (docs/detection.md, "Floors" and "Known limits").
fn ceiling(p: &Pattern) -> f64 {
    match p.name {
        // A single walk often rises steadily (docs/detection.md, "Known limits").
        "zero-drift random walk" => 0.10,
        "cache of distinct keys" => 0.025,
        _ => 0.01,
    }
}

/// Flag rates of the non-leak patterns above their ceiling.
fn non_leaks_over() -> Vec<String> {
    // 16 non-leak patterns x 3 lengths x 5 SNR levels x 14 = 210 series each.
    let cases = Case::grid(
        &patterns(|p| p.truth == Truth::NotLeak),
        &[120, 360, 720],
        &[0, 1, 2, 3, 4],
        14,
    );
    let scored = corpus::score_in_memory(&cases, SEEDS, &Config::default());
    let mut over = Vec::new();
    for (i, p) in PATTERNS.iter().enumerate() {
        if p.truth != Truth::NotLeak {
            continue;
        }
        let t = tally(scored.iter().filter(|s| s.case.pattern == i));
        let rate = t.flag_rate(Rule::Robust).unwrap();
        let limit = ceiling(p);
        eprintln!("{}: {:.1}% flagged", p.name, 100.0 * rate);
        if rate > limit {
            over.push(format!(
                "{}: {:.1}% > {:.0}%",
                p.name,
                100.0 * rate,
                100.0 * limit
            ));
        }
    }
    over
}

#[test]
fn non_leak_patterns_are_rarely_flagged() {
    let over = non_leaks_over();
    assert!(over.is_empty(), "flagged too often: {}", over.join("; "));
}

#[test]
fn sixty_four_bytes_per_interval_is_always_immaterial() {
    // Both versions, at every length, through real recordings: never a leak, always
    // immaterial once there are enough points for a verdict; the seed rule always flags it.
    let cfg = Config::default();
    let versions = [
        corpus::pattern_index("64 B per interval").unwrap(),
        corpus::pattern_index("64 B malloc per interval").unwrap(),
    ];
    for n in [13, 20, 30, 60, 120, 360, 720, 1440, 2880] {
        let cases = Case::grid(&versions, &[n], &[0, 4], 2);
        let (scored, _) = corpus::score_recorded(&cases, SEEDS, &cfg).unwrap();
        for s in &scored {
            assert_eq!(s.outcome.verdict, Verdict::ImmaterialGrowth, "{n}: {s:?}");
            assert!(s.outcome.strict, "{n}: {s:?}");
            assert!((s.outcome.rate - 12.8).abs() < 0.01, "{n}: {s:?}");
        }
    }
}

/// False stacks per clean run, over `runs` runs of `stacks` x `snapshots`, each written as a
/// recording and read back.
fn false_stacks_per_clean_run(runs: u64, stacks: usize, snapshots: usize) -> f64 {
    let cfg = Config::default();
    let mut false_stacks = 0;
    for run in 0..runs {
        let seed = SEEDS.seed(&[0x70726f63, snapshots as u64, run]);
        let process = corpus::process_run(snapshots, stacks, 0, seed);
        false_stacks += corpus::score_process(&process, &cfg).unwrap().false_stacks[0];
    }
    let per_run = false_stacks as f64 / runs as f64;
    eprintln!("{false_stacks} false stacks in {runs} clean runs of {stacks} x {snapshots}");
    per_run
}

#[test]
fn clean_process_runs_have_at_most_0_1_false_stacks() {
    // 20 clean runs of 2,000 stacks x 720 snapshots, each written as a recording and read back.
    let per_run = false_stacks_per_clean_run(20, 2_000, 720);
    assert!(per_run <= 0.1, "{per_run:.2} false stacks per clean run");
}

#[test]
fn leaks_in_process_runs_are_found_without_false_stacks() {
    let cfg = Config::default();
    let mut found = 0;
    for run in 0..2 {
        let seed = SEEDS.seed(&[0x6c65616b, run]);
        let score = corpus::score_process(&corpus::process_run(360, 1_000, 3, seed), &cfg).unwrap();
        assert!(score.false_stacks[0] <= 1, "{score:?}");
        found += score.found[0];
    }
    assert!(found >= 4, "{found} of 6 leaks found");
}
