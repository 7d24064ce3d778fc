//! Measures the detector on the synthetic corpus (`leak_report::corpus`) and prints the markdown
//! tables of docs/detection.md ("Evaluation"): per length, per signal-to-noise bin and per
//! pattern, the flag rate, precision, recall, multi-class accuracy, slope error and 95% CI
//! coverage of the default detector beside the strict seed rule, and false stacks per synthetic
//! process run. Every series goes through a real recording (format writer, `series::read`).
//!
//! ```text
//! cargo run --release -p leak-report --example evaluate -- [--seeds report|tune|ci] [--quick]
//!     [--reps N] [--runs N] [--stacks N] [--run-snapshots M] [--threads N] [--in-memory]
//!     [--save DIR] [--explain]
//! cargo run --release -p leak-report --example evaluate -- --cost [--stacks N] [--snapshots M]
//! ```
//!
//! * `--seeds` (default `report`): `tune` for tuning thresholds, `report` for the published
//!   tables, `ci` (the floors' seeds).
//! * `--quick`: 8 replicates per cell and 12 process runs instead of 40 and 100.
//! * `--reps N`: replicates per (pattern, length, SNR level).
//! * `--runs N`, `--stacks N`: process runs, and stacks per run (default 2,000, 720 snapshots).
//! * `--threads N` (default 2): worker threads.
//! * `--in-memory`: skip the recordings (faster; identical up to `series::DEFAULT_CAP`
//!   snapshots).
//! * `--save DIR`: also write every recording to DIR (`leak-report DIR/<file>` reads them).
//! * `--run-snapshots M` (default 720): snapshots of a process run.
//! * `--explain`: for tuning, print the gates of the non-leaks flagged (120 to 2,880 snapshots,
//!   SNR >= 3) and of the false stacks of the process runs, and count the leaks missed by the
//!   gate that stopped them.
//! * `--cost`: time the detector alone on N stacks (default 10,000) of M snapshots (default
//!   2,880), single-threaded, on the raw series and on the series as `series::read` keeps them.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use leak_report::corpus::{
    self, Case, Level, Rule, Scored, SeedSet, Tally, Truth, LENGTHS, PATTERNS, SNR_LABELS,
    SNR_LEVELS,
};
use leak_report::detect::{self, Config, Verdict};

/// `println!` that ends the program quietly when stdout is closed (`evaluate | head`).
macro_rules! out {
    () => {
        out!("")
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            stdout_failed(&e);
        }
    }};
}

/// `print!` that ends the program quietly when stdout is closed.
macro_rules! out_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            stdout_failed(&e);
        }
    }};
}

/// A closed pipe is success (the reader had enough); any other error is a failure.
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("evaluate: cannot write to stdout: {e}");
    std::process::exit(1);
}

#[derive(Debug)]
struct Args {
    seeds: SeedSet,
    reps: u64,
    runs: u64,
    stacks: usize,
    snapshots: usize,
    run_snapshots: usize,
    threads: usize,
    in_memory: bool,
    save: Option<String>,
    cost: bool,
    explain: bool,
}

const USAGE: &str = "usage: evaluate [--seeds report|tune|ci] [--quick] [--reps N] [--runs N] \
                     [--stacks N] [--run-snapshots M] [--threads N] [--in-memory] [--save DIR] \
                     [--explain]\n       evaluate --cost [--stacks N] [--snapshots M]";

/// Snapshots of a process run by default (one hour at 5 s).
const PROCESS_SNAPSHOTS: usize = 720;
/// Replicates per recording: a recording holds every pattern times this many.
const GROUP: u64 = 10;

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seeds: SeedSet::Report,
        reps: 40,
        runs: 100,
        stacks: 0,
        snapshots: 2880,
        run_snapshots: PROCESS_SNAPSHOTS,
        threads: 2,
        in_memory: false,
        save: None,
        cost: false,
        explain: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let number = |v: String| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("bad number '{v}' for {flag}\n{USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(USAGE.into()),
            "--quick" => {
                a.reps = 8;
                a.runs = 12;
            }
            "--in-memory" => a.in_memory = true,
            "--cost" => a.cost = true,
            "--explain" => a.explain = true,
            "--seeds" => {
                let v = value()?;
                a.seeds = SeedSet::parse(&v).ok_or_else(|| format!("unknown seed set '{v}'"))?;
            }
            "--reps" => a.reps = number(value()?)?,
            "--runs" => a.runs = number(value()?)?,
            "--stacks" => a.stacks = number(value()?)? as usize,
            "--snapshots" => a.snapshots = number(value()?)? as usize,
            "--run-snapshots" => a.run_snapshots = number(value()?)? as usize,
            "--threads" => a.threads = (number(value()?)? as usize).max(1),
            "--save" => a.save = Some(value()?),
            _ => return Err(format!("unknown argument '{flag}'\n{USAGE}")),
        }
    }
    if a.stacks == 0 {
        a.stacks = if a.cost { 10_000 } else { 2_000 };
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = if args.cost {
        cost(&args)
    } else if args.explain {
        explain(&args)
    } else {
        run(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evaluate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work(i)` for i in 0..n on `threads` threads; results in order of i.
fn parallel<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(usize) -> Result<T, String> + Sync,
) -> Result<Vec<T>, String> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Result<T, String>>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = work(i);
                if let Ok(mut out) = out.lock() {
                    out[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .map_err(|_| "a worker panicked".to_string())?
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("a work item did not run".into())))
        .collect()
}

fn run(a: &Args) -> Result<(), String> {
    let cfg = Config::default();
    let started = Instant::now();
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
    }
    // One work item: every pattern x up to GROUP replicates, at one length and SNR level.
    let all: Vec<usize> = (0..PATTERNS.len()).collect();
    let mut items = Vec::new();
    for &n in LENGTHS.iter().rev() {
        for level in 0..SNR_LEVELS.len() {
            let mut from = 0;
            while from < a.reps {
                let to = (from + GROUP).min(a.reps);
                items.push((n, level, from, to));
                from = to;
            }
        }
    }
    let scored: Vec<Vec<Scored>> = parallel(items.len(), a.threads, |i| {
        let (n, level, from, to) = items[i];
        let mut cases = Case::grid(&all, &[n], &[level], to);
        cases.retain(|c| c.replicate >= from);
        if a.in_memory {
            return Ok(corpus::score_in_memory(&cases, a.seeds, &cfg));
        }
        let (scored, bytes) =
            corpus::score_recorded(&cases, a.seeds, &cfg).map_err(|e| e.to_string())?;
        if let Some(dir) = &a.save {
            let path = format!(
                "{dir}/corpus-{}-n{n}-snr{}-r{from}-{to}.zst",
                a.seeds.name(),
                SNR_LEVELS[level]
            );
            std::fs::write(&path, &bytes).map_err(|e| format!("cannot write {path}: {e}"))?;
        }
        Ok(scored)
    })?;
    let scored: Vec<Scored> = scored.into_iter().flatten().collect();
    let series_time = started.elapsed().as_secs_f64();

    let runs_started = Instant::now();
    let runs = parallel(a.runs as usize, a.threads, |i| {
        let leaks = i % 4;
        let seed = a.seeds.seed(&[0x70726f63, i as u64]);
        let run = corpus::process_run(a.run_snapshots, a.stacks, leaks, seed);
        corpus::score_process(&run, &cfg).map_err(|e| e.to_string())
    })?;
    let runs_time = runs_started.elapsed().as_secs_f64();

    out!(
        "Seeds: `{}`; {} series ({} patterns x {} lengths x {} SNR levels x {} replicates) \
         through {}; {} process runs of {} stacks x {} snapshots. \
         {series_time:.0} s + {runs_time:.0} s on {} threads.",
        a.seeds.name(),
        scored.len(),
        PATTERNS.len(),
        LENGTHS.len(),
        SNR_LEVELS.len(),
        a.reps,
        if a.in_memory {
            "in-memory series"
        } else {
            "real recordings"
        },
        a.runs,
        a.stacks,
        a.run_snapshots,
        a.threads
    );
    out!();
    print_lengths(&scored);
    print_bins(&scored);
    print_patterns(&scored);
    print_pattern_bins(&scored);
    print_pattern_lengths(&scored);
    print_runs(&runs, a.stacks, a.run_snapshots);
    print_floors(&scored, &runs);
    Ok(())
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}", 100.0 * v))
}

fn frac(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

fn tally<'a>(scored: impl Iterator<Item = &'a Scored>) -> Tally {
    let mut t = Tally::default();
    for s in scored {
        t.add(s);
    }
    t
}

fn pair(
    t: &Tally,
    f: impl Fn(&Tally, Rule) -> Option<f64>,
    fmt: fn(Option<f64>) -> String,
) -> String {
    format!(
        "{} \\| {}",
        fmt(f(t, Rule::Robust)),
        fmt(f(t, Rule::Strict))
    )
}

fn print_lengths(scored: &[Scored]) {
    out!("### By length, growth >= 3x the noise (default \\| strict rule)");
    out!();
    out!(
        "| snapshots | leaks | non-leaks | precision | recall | accuracy | slope error % | CI \
         coverage % |"
    );
    out!("| ---: | ---: | ---: | --- | --- | --- | ---: | ---: |");
    for n in LENGTHS {
        let t = tally(
            scored
                .iter()
                .filter(|s| s.case.snapshots == n && s.snr >= 3.0),
        );
        out!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            t.leaks,
            t.non_leaks,
            pair(&t, Tally::precision, frac),
            pair(&t, Tally::recall, frac),
            pair(&t, Tally::accuracy, frac),
            pct(t.slope_error()),
            pct(t.coverage()),
        );
    }
    out!();
}

fn print_bins(scored: &[Scored]) {
    out!("### By signal-to-noise bin (default \\| strict rule)");
    out!();
    out!(
        "| snapshots | SNR | leaks | non-leaks | precision | recall | accuracy | slope error % \
         | CI coverage % |"
    );
    out!("| ---: | --- | ---: | ---: | --- | --- | --- | ---: | ---: |");
    let groups: [(&str, &[usize]); 4] = [
        ("12-30", &[12, 20, 30]),
        ("60-120", &[60, 120]),
        ("360-720", &[360, 720]),
        ("1440-2880", &[1440, 2880]),
    ];
    for (label, lengths) in groups {
        for (bin, bin_label) in SNR_LABELS.iter().enumerate() {
            let t =
                tally(scored.iter().filter(|s| {
                    lengths.contains(&s.case.snapshots) && corpus::snr_bin(s.snr) == bin
                }));
            if t.series == 0 {
                continue;
            }
            out!(
                "| {label} | {bin_label} | {} | {} | {} | {} | {} | {} | {} |",
                t.leaks,
                t.non_leaks,
                pair(&t, Tally::precision, frac),
                pair(&t, Tally::recall, frac),
                pair(&t, Tally::accuracy, frac),
                pct(t.slope_error()),
                pct(t.coverage()),
            );
        }
    }
    out!();
}

fn level_name(p: &corpus::Pattern) -> &'static str {
    match p.level {
        Level::Parametric => "param",
        Level::Event => "event",
    }
}

fn truth_name(p: &corpus::Pattern) -> &'static str {
    match p.truth {
        Truth::Leak => "leak",
        Truth::NotLeak => "no",
        Truth::Separate => "separate",
    }
}

fn verdict_name(v: Verdict) -> String {
    serde_json::to_string(&v)
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

fn print_patterns(scored: &[Scored]) {
    out!(
        "### By pattern, 120 snapshots and more, every SNR (flag rate and accuracy: default \\| \
         strict rule)"
    );
    out!();
    out!(
        "| pattern | level | leak? | series | flagged % | accuracy % | slope error % | CI \
         coverage % | most frequent verdicts (default) |"
    );
    out!("| --- | --- | --- | ---: | --- | --- | ---: | ---: | --- |");
    for (i, p) in PATTERNS.iter().enumerate() {
        let mine: Vec<&Scored> = scored
            .iter()
            .filter(|s| s.case.pattern == i && s.case.snapshots >= 120)
            .collect();
        let t = tally(mine.iter().copied());
        let mut verdicts: BTreeMap<Verdict, usize> = BTreeMap::new();
        for s in &mine {
            *verdicts.entry(s.outcome.verdict).or_default() += 1;
        }
        let mut top: Vec<(Verdict, usize)> = verdicts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<String> = top
            .iter()
            .take(3)
            .map(|(v, c)| {
                format!(
                    "{} {:.0}%",
                    verdict_name(*v),
                    100.0 * *c as f64 / mine.len().max(1) as f64
                )
            })
            .collect();
        out!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            level_name(p),
            truth_name(p),
            t.series,
            pair(&t, Tally::flag_rate, pct),
            pair(&t, Tally::accuracy, pct),
            pct(t.slope_error()),
            pct(t.coverage()),
            top.join(", ")
        );
    }
    out!();
}

fn print_pattern_bins(scored: &[Scored]) {
    out!(
        "### Flagged % by pattern and signal-to-noise bin, 120 snapshots and more (default \\| \
         strict rule)"
    );
    out!();
    out_part!("| pattern | leak? |");
    for label in SNR_LABELS {
        out_part!(" SNR {label} |");
    }
    out!();
    out!("| --- | --- |{}", " --- |".repeat(SNR_LABELS.len()));
    for (i, p) in PATTERNS.iter().enumerate() {
        out_part!("| {} | {} |", p.name, truth_name(p));
        for bin in 0..SNR_LABELS.len() {
            let t = tally(scored.iter().filter(|s| {
                s.case.pattern == i && s.case.snapshots >= 120 && corpus::snr_bin(s.snr) == bin
            }));
            if t.series == 0 {
                out_part!(" |");
            } else {
                out_part!(
                    " {} ({}) |",
                    pair(&t, Tally::flag_rate, |x| x
                        .map_or("-".into(), |v| format!("{:.0}", 100.0 * v))),
                    t.series
                );
            }
        }
        out!();
    }
    out!();
}

fn print_pattern_lengths(scored: &[Scored]) {
    out!("### Flagged % by pattern and length, every SNR (default detector)");
    out!();
    out_part!("| pattern | leak? |");
    for n in LENGTHS {
        out_part!(" {n} |");
    }
    out!();
    out!("| --- | --- |{}", " ---: |".repeat(LENGTHS.len()));
    for (i, p) in PATTERNS.iter().enumerate() {
        out_part!("| {} | {} |", p.name, truth_name(p));
        for n in LENGTHS {
            let t = tally(
                scored
                    .iter()
                    .filter(|s| s.case.pattern == i && s.case.snapshots == n),
            );
            out_part!(
                " {} |",
                t.flag_rate(Rule::Robust)
                    .map_or("-".into(), |v| format!("{:.0}", 100.0 * v))
            );
        }
        out!();
    }
    out!();
}

fn print_runs(runs: &[corpus::RunScore], stacks: usize, snapshots: usize) {
    out!(
        "### Process runs: {stacks} stacks x {snapshots} snapshots, 0 to 3 leaks \
         (default \\| strict rule)"
    );
    out!();
    out!("| leaks per run | runs | false stacks per run | max | leaks found |");
    out!("| ---: | ---: | --- | --- | --- |");
    for leaks in 0..=3 {
        let mine: Vec<&corpus::RunScore> = runs.iter().filter(|r| r.leaks == leaks).collect();
        if mine.is_empty() {
            continue;
        }
        let per = |i: usize| {
            mine.iter().map(|r| r.false_stacks[i]).sum::<usize>() as f64 / mine.len() as f64
        };
        let max = |i: usize| mine.iter().map(|r| r.false_stacks[i]).max().unwrap_or(0);
        let found = |i: usize| mine.iter().map(|r| r.found[i]).sum::<usize>();
        let injected: usize = mine.iter().map(|r| r.leaks).sum();
        out!(
            "| {leaks} | {} | {:.2} \\| {:.2} | {} \\| {} | {} \\| {} of {injected} |",
            mine.len(),
            per(0),
            per(1),
            max(0),
            max(1),
            found(0),
            found(1)
        );
    }
    out!();
}

fn print_floors(scored: &[Scored], runs: &[corpus::RunScore]) {
    out!(
        "### The issue's floors on these seeds (tests/detection_floors.rs holds them on the `ci` \
         seeds; docs/detection.md says which are targets not met)"
    );
    out!();
    let long = tally(
        scored
            .iter()
            .filter(|s| s.case.snapshots >= 360 && s.snr >= 3.0),
    );
    let short = tally(
        scored
            .iter()
            .filter(|s| s.case.snapshots == 120 && s.snr >= 3.0),
    );
    let line = |what: &str, value: Option<f64>, floor: f64, at_least: bool| {
        let ok = value.is_some_and(|v| if at_least { v >= floor } else { v <= floor });
        out!(
            "- {what}: {} ({} {floor}) {}",
            frac(value),
            if at_least { ">=" } else { "<=" },
            if ok { "ok" } else { "FAILS" }
        );
    };
    line(
        ">= 360 snapshots, SNR >= 3: precision",
        long.precision(Rule::Robust),
        0.97,
        true,
    );
    line(
        ">= 360 snapshots, SNR >= 3: recall",
        long.recall(Rule::Robust),
        0.97,
        true,
    );
    line(
        "120 snapshots, SNR >= 3: precision",
        short.precision(Rule::Robust),
        0.95,
        true,
    );
    line(
        "120 snapshots, SNR >= 3: recall",
        short.recall(Rule::Robust),
        0.85,
        true,
    );
    for (i, p) in PATTERNS.iter().enumerate() {
        if p.truth != Truth::NotLeak {
            continue;
        }
        let t = tally(
            scored
                .iter()
                .filter(|s| s.case.pattern == i && s.case.snapshots >= 120),
        );
        let floor = if p.name == "zero-drift random walk" {
            0.10
        } else {
            0.01
        };
        line(
            &format!("{} flagged, >= 120 snapshots", p.name),
            t.flag_rate(Rule::Robust),
            floor,
            false,
        );
    }
    for name in ["64 B per interval", "64 B malloc per interval"] {
        let i = corpus::pattern_index(name).unwrap_or(0);
        let mine: Vec<&Scored> = scored
            .iter()
            .filter(|s| s.case.pattern == i && s.case.snapshots > detect::MIN_POINTS)
            .collect();
        let immaterial = mine
            .iter()
            .filter(|s| s.outcome.verdict == Verdict::ImmaterialGrowth)
            .count();
        let share = (!mine.is_empty()).then(|| immaterial as f64 / mine.len() as f64);
        line(&format!("{name}: immaterial"), share, 1.0, true);
    }
    let clean: Vec<&corpus::RunScore> = runs.iter().filter(|r| r.leaks == 0).collect();
    let per = (!clean.is_empty()).then(|| {
        clean.iter().map(|r| r.false_stacks[0]).sum::<usize>() as f64 / clean.len() as f64
    });
    line("false stacks per clean process run", per, 0.1, false);
}

/// Times the detector alone on `stacks` x `snapshots`, single-threaded, in batches of process
/// stacks (generated outside the timing).
fn cost(a: &Args) -> Result<(), String> {
    let cfg = Config::default();
    let batch = 250;
    let (mut raw_s, mut read_s, mut done) = (0.0, 0.0, 0usize);
    let mut verdicts: BTreeMap<Verdict, usize> = BTreeMap::new();
    let started = Instant::now();
    let mut b = 0u64;
    while done < a.stacks {
        let k = batch.min(a.stacks - done);
        let run = corpus::process_run(a.snapshots, k, k / 100, a.seeds.seed(&[0x636f7374, b]));
        let points: Vec<Vec<detect::Point>> = run.traces.iter().map(|t| t.points()).collect();
        let t0 = Instant::now();
        for p in &points {
            let d = detect::detect(p, &cfg);
            *verdicts.entry(d.verdict).or_default() += 1;
        }
        raw_s += t0.elapsed().as_secs_f64();
        drop(points);
        // The same stacks as leak-report holds them: read from a recording, compacted.
        let bytes = corpus::write_recording(Vec::new(), &run.traces).map_err(|e| e.to_string())?;
        let rec = leak_report::series::read(
            leak_format::Reader::new(&bytes[..]).map_err(|e| e.to_string())?,
            leak_report::series::DEFAULT_CAP,
        )
        .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        for s in rec.series.values() {
            std::hint::black_box(detect::detect(&s.points(), &cfg));
        }
        read_s += t0.elapsed().as_secs_f64();
        done += k;
        b += 1;
    }
    let per = |s: f64| 1e3 * s / a.stacks as f64;
    out!(
        "detector cost: {} stacks x {} snapshots, one thread ({:.0} s in all, generation \
         included)",
        a.stacks,
        a.snapshots,
        started.elapsed().as_secs_f64()
    );
    out!(
        "- raw series ({} points each): {raw_s:.2} s, {:.3} ms per stack",
        a.snapshots,
        per(raw_s)
    );
    out!(
        "- as series::read keeps them (at most {} samples): {read_s:.2} s, {:.3} ms per stack",
        leak_report::series::DEFAULT_CAP,
        per(read_s)
    );
    let summary: Vec<String> = verdicts
        .iter()
        .map(|(v, c)| format!("{} {c}", verdict_name(*v)))
        .collect();
    out!("- verdicts (raw): {}", summary.join(", "));
    Ok(())
}

/// Prints per-pattern flag rates, the gates of every non-leak flagged at 120 to 2,880
/// snapshots with target SNR 5 to 50 and of every false stack of the process runs, and the
/// leaks missed (SNR >= 3) by pattern and failing gate (for tuning, on `--seeds tune`).
fn explain(a: &Args) -> Result<(), String> {
    let cfg = Config::default();
    let all: Vec<usize> = (0..PATTERNS.len()).collect();
    for n in [120, 360, 720, 2880] {
        let cases = Case::grid(&all, &[n], &[2, 3, 4], a.reps);
        let scored = corpus::score_in_memory(&cases, a.seeds, &cfg);
        out!("{n} snapshots, SNR >= 3: flagged % (series)");
        for (i, p) in PATTERNS.iter().enumerate() {
            let t = tally(
                scored
                    .iter()
                    .filter(|s| s.case.pattern == i && s.snr >= 3.0),
            );
            out!(
                "  {:40} {:8} {} ({})",
                p.name,
                truth_name(p),
                pct(t.flag_rate(Rule::Robust)),
                t.series
            );
        }
        // Leaks missed (SNR >= 3), by pattern and by the gate that stopped them.
        let mut missed: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
        for c in &cases {
            let p = &PATTERNS[c.pattern];
            let tr = c.trace(a.seeds);
            let d = detect::detect(&tr.points(), &cfg);
            if p.truth == Truth::Leak {
                if d.verdict != Verdict::ContinuousLeak && tr.snr() >= 3.0 {
                    let gate = d.gates.iter().find(|g| !g.passed).map_or("-", |g| g.name);
                    *missed.entry((p.name, gate)).or_default() += 1;
                }
                continue;
            }
            if p.truth != Truth::NotLeak {
                continue;
            }
            if d.verdict == Verdict::ContinuousLeak {
                out!("FP {} n {n} snr {:.2}", p.name, tr.snr());
                for g in &d.gates {
                    out!("    {}: {}", g.name, g.detail);
                }
            }
        }
        out!("{n} snapshots, SNR >= 3: leaks missed, by pattern and the gate that stopped them");
        for ((pattern, gate), k) in &missed {
            out!("  {pattern:40} {gate:14} {k}");
        }
    }
    for i in 0..a.runs as usize {
        let seed = a.seeds.seed(&[0x70726f63, i as u64]);
        let run = corpus::process_run(a.run_snapshots, a.stacks, i % 4, seed);
        for (k, tr) in run.traces.iter().enumerate() {
            if run.leaks[k] {
                continue;
            }
            let d = detect::detect(&tr.points(), &cfg);
            if d.verdict == Verdict::ContinuousLeak {
                out!(
                    "run {i} stack {k}: {} snr {:.2} growth {:.0} noise {:.0}",
                    PATTERNS[run.patterns[k]].name,
                    tr.snr(),
                    tr.growth,
                    tr.noise
                );
                for g in &d.gates {
                    out!("    {}: {}", g.name, g.detail);
                }
            }
        }
    }
    Ok(())
}
