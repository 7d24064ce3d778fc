//! leak-report: parse the command line, analyze, write the outputs, map the findings to an
//! exit status a CI job can gate on.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use leak_report::analysis::{self, Analysis, Detector, Settings};
use leak_report::detect::{self, Verdict};
use leak_report::output::{self, FoldedWeight};
use leak_report::suppress::Suppressions;
use leak_report::symbolize::{Options, Resolver};
use leak_report::{html, input, series};

const EXAMPLES: &str = "\
EXAMPLES:
    # What is growing, and where (symbols from the recording, --sysroot or the original paths)
    leak-report run.zst

    # In CI: fail the build on any continuous leak not suppressed
    leak-report test.zst --fail-on-leak --suppressions lsan.supp --json findings.json

    # Only what got worse since the last release
    leak-report new.zst --baseline old.zst --fail-on-leak

    # A flame graph of what is outstanding at the end (or of growth: --folded-weight growth)
    leak-report run.zst --folded out.folded && inferno-flamegraph out.folded > leaks.svg

    # Logs of bcc memleak.py or libbpf-tools memleak work too
    leak-report memleak.log

EXIT STATUS:
    0 no gate failed, 1 a gate failed (--fail-on-leak, --max-rate, --max-outstanding),
    2 bad usage or unreadable input, or a leak gate that found no leak but cannot vouch for
    the recording (too short, growth too young to judge, growth that may be turnover since a
    -p attach, a full table, processes the target started that were not recorded: the outputs
    are written, stderr says why).
SIZE and RATE: a whole number of bytes, or with K, M, G, T (powers of 1024): 64M, 1M/h.";

/// Find the call stacks whose memory keeps growing, in a leak-record recording (or a bcc /
/// libbpf-tools memleak log), offline: symbols, verdicts, rates, and a CI gate.
#[derive(Debug, Parser)]
#[command(name = "leak-report", version, after_help = EXAMPLES)]
struct Cli {
    /// The recording (leak-record's .zst) or memleak text log; `-` reads it from standard input
    /// (e.g. `ssh HOST 'sudo leak-record -p PID -d 10m -o -' | leak-report -`).
    recording: PathBuf,

    /// Write a self-contained HTML report here (charts, sortable stack table, flame graphs).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Stacks detailed in the HTML report besides the continuous leaks (the rest are summed).
    #[arg(long, value_name = "N", default_value_t = 50, requires = "output")]
    report_top: usize,

    /// Print the generation time in the HTML report (it is otherwise byte-for-byte reproducible).
    #[arg(long, requires = "output")]
    timestamp: bool,

    /// Write the findings as JSON (docs/json.md); `-` for stdout.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Write collapsed stacks for flame graphs; `-` for stdout.
    #[arg(long, value_name = "FILE")]
    folded: Option<PathBuf>,

    /// Weight of the collapsed stacks.
    #[arg(long, value_enum, default_value_t = FoldedWeight::Outstanding, requires = "folded")]
    folded_weight: FoldedWeight,

    /// Stacks listed in the text summary (the others are counted below it).
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,

    /// Which rule decides the verdict (the other is reported too).
    #[arg(long, value_enum, default_value_t = Detector::Robust)]
    detector: Detector,

    /// Growth slower than this is immaterial (bytes/s; e.g. 96, 1K).
    #[arg(long, value_name = "RATE", default_value = "96", value_parser = parse_rate)]
    min_rate: f64,

    /// Share of the window ignored at the start (warm-up), 0 to 0.5.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.10)]
    warmup: f64,

    /// Significance level of the trend test per stack.
    #[arg(long, value_name = "P", default_value_t = 0.01)]
    alpha: f64,

    /// Memory available to the process, for the time to exhaustion [default: the recorded host's memory].
    #[arg(long, value_name = "SIZE", value_parser = parse_limit)]
    memory_limit: Option<u64>,

    /// Look for the recorded binaries under this directory first (and debug files under its /usr/lib/debug).
    #[arg(long, value_name = "DIR")]
    sysroot: Option<PathBuf>,

    /// Look for debug files here (`.build-id/xx/yyyy.debug`, or by .gnu_debuglink name under the recorded directory); repeatable.
    #[arg(long, value_name = "DIR")]
    debug_dir: Vec<PathBuf>,

    /// LeakSanitizer-style suppressions (`leak:PATTERN` lines).
    #[arg(long, value_name = "FILE")]
    suppressions: Option<PathBuf>,

    /// An earlier recording: report only stacks not leaking there, or leaking faster now.
    #[arg(long, value_name = "OLD_RECORDING")]
    baseline: Option<PathBuf>,

    /// Leave out stacks with fewer outstanding bytes at the end than this.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    min_outstanding: Option<u64>,

    /// Keep kernel stacks of page-cache pages (reclaimable) and of slab pages (their objects are
    /// counted on their own stacks), which are left out by default.
    #[arg(long)]
    keep_cache_pages: bool,

    /// Exit 1 if any continuous leak remains after suppressions, baseline and --min-outstanding.
    #[arg(long)]
    fail_on_leak: bool,

    /// Let the leak gates pass a run whose target started processes that were not recorded
    /// (by default they cannot vouch for it, and exit 2): only the target's own allocations
    /// are judged.
    #[arg(long)]
    allow_children: bool,

    /// Exit 1 if the continuous leaks grow faster than this in total (bytes per second, or with a
    /// unit: 1M/h, 10K/min, 8M/day).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    max_rate: Option<f64>,

    /// Exit 1 if more than this is outstanding at the end over all stacks, whatever
    /// --suppressions, --baseline and --min-outstanding leave out of the findings (page-cache
    /// and slab pages count with --keep-cache-pages only). A --kernel --pid recording that
    /// ended with the process's exit ends before the exit.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_outstanding: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    leak_format::units::parse_size(s)
}

/// A memory limit: a size above 0 (0 put every process "already above" it).
fn parse_limit(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("a memory limit must be above 0 (e.g. 512M, 4G)".into()),
        n => Ok(n),
    }
}

/// Bytes per second: `96`, `1K` (= 1024 B/s), `8M/day`, `1M/h`, `10K/min`.
fn parse_rate(s: &str) -> Result<f64, String> {
    parse_rate_of(s).map_err(|e| format!("{e} (a rate: e.g. 96, 1K, 10K/min, 1M/h, 8M/day)"))
}

fn parse_rate_of(s: &str) -> Result<f64, String> {
    let (size, per) = match s.split_once('/') {
        Some((a, b)) => (a, b.trim()),
        None => (s, "s"),
    };
    let secs = match per {
        "s" | "sec" => 1.0,
        "min" | "m" => 60.0,
        "h" | "hour" => 3600.0,
        "d" | "day" => 86400.0,
        u => {
            return Err(format!(
                "unknown rate unit '/{u}' in '{s}'; use /s, /min, /h or /day"
            ))
        }
    };
    Ok(parse_size(size)? as f64 / secs)
}

/// Why leak-report exits 2.
#[derive(Debug)]
struct UsageError(String);
impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(gate_failed) => ExitCode::from(u8::from(gate_failed)),
        Err(e) => {
            say(&format!("leak-report: {e:#}"));
            ExitCode::from(2)
        }
    }
}

fn load(path: &Path, cli: &Cli) -> Result<(series::Recording, Analysis)> {
    let rec = input::read(path, series::DEFAULT_CAP).map_err(UsageError)?;
    let resolver = Resolver::new(
        &rec.modules,
        &rec.bundles,
        &rec.maps,
        &Options {
            sysroot: cli.sysroot.clone(),
            debug_dirs: cli.debug_dir.clone(),
        },
    )
    .with_kernel_symbols(&rec.kernel_symbols);
    let settings = Settings {
        detector: cli.detector,
        detect: detect::Config {
            min_rate: cli.min_rate,
            warmup: cli.warmup,
            alpha: cli.alpha,
            ..detect::Config::default()
        },
        memory_limit: cli.memory_limit,
    };
    let analysis = analysis::analyze(&rec, &resolver, &settings);
    Ok((rec, analysis))
}

/// Ok(true) when a gate failed.
fn run(cli: &Cli) -> Result<bool> {
    if !(0.0..=0.5).contains(&cli.warmup) {
        bail!(UsageError(format!(
            "--warmup {} is outside 0 to 0.5 (the share of the window skipped at the start, \
             e.g. 0.1)",
            cli.warmup
        )));
    }
    if !(cli.alpha > 0.0 && cli.alpha < 0.5) {
        bail!(UsageError(format!(
            "--alpha {} is outside 0 to 0.5, both excluded (the significance level of the trend \
             test, e.g. 0.01)",
            cli.alpha
        )));
    }
    check_outputs(cli)?;
    for (flag, dir) in cli
        .sysroot
        .iter()
        .map(|d| ("--sysroot", d))
        .chain(cli.debug_dir.iter().map(|d| ("--debug-dir", d)))
    {
        if !dir.is_dir() {
            bail!(UsageError(format!(
                "{flag} {}: no such directory; give the directory that holds the binaries \
                 (--sysroot) or their debug files (--debug-dir)",
                dir.display()
            )));
        }
    }
    let suppressions = match &cli.suppressions {
        Some(p) => Suppressions::load(p).map_err(UsageError)?,
        None => Suppressions::default(),
    };
    let (rec, mut analysis) = load(&cli.recording, cli)?;
    if !cli.keep_cache_pages {
        analysis::leave_out_cache_pages(&mut analysis);
    }
    // What --max-outstanding judges: every stack, whatever the filters below leave out of the
    // findings (a budget of memory, which no suppression frees).
    let outstanding = analysis
        .stacks
        .iter()
        .fold(0u64, |sum, s| sum.saturating_add(s.outstanding_bytes));
    if let Some(old) = &cli.baseline {
        let (_, mut base) = load(old, cli).context("--baseline")?;
        if !cli.keep_cache_pages {
            analysis::leave_out_cache_pages(&mut base);
        }
        analysis::apply_baseline(&mut analysis, &base);
        // What makes the baseline less trustworthy makes the comparison so too.
        let shown = old.display();
        analysis.warnings.extend(
            base.warnings
                .iter()
                .map(|w| format!("baseline {shown}: {w}")),
        );
    }
    analysis::filter(&mut analysis, &suppressions, cli.min_outstanding);
    analysis::warn_young_growth(&mut analysis);
    analysis::warn_turnover(&rec, &mut analysis);
    analysis.children_ok = cli.allow_children;

    let mut out = Stdout::default();
    if let Some(p) = &cli.json {
        write_to(p, &output::json(&rec, &analysis), &mut out)?;
    }
    if let Some(p) = &cli.folded {
        write_to(p, &output::folded(&analysis, cli.folded_weight), &mut out)?;
    }
    if let Some(p) = &cli.output {
        let opts = html::HtmlOptions {
            top: cli.report_top,
            timestamp: cli.timestamp.then(now_utc),
        };
        let page = html::render(&rec, &analysis, &opts).map_err(|e| anyhow::anyhow!(e))?;
        write_to(p, &page, &mut out)?;
    }
    if !out.wrote {
        out.write(&output::text(&rec, &analysis, cli.top))?;
    }
    out.flush()?;

    let leaks: Vec<_> = analysis
        .stacks
        .iter()
        .filter(|s| s.verdict == Verdict::ContinuousLeak)
        .collect();
    let mut failed = Vec::new();
    if cli.fail_on_leak && !leaks.is_empty() {
        failed.push(format!("{} continuous leak(s)", leaks.len()));
    }
    if let Some(max) = cli.max_rate {
        if analysis.leak_rate > max {
            failed.push(format!(
                "leak rate {} above --max-rate {}",
                output::human_rate(analysis.leak_rate),
                output::human_rate(max)
            ));
        }
    }
    if let Some(max) = cli.max_outstanding {
        if outstanding > max {
            failed.push(format!(
                "{outstanding} bytes outstanding, above --max-outstanding {max}"
            ));
        }
    }
    if !failed.is_empty() {
        say(&format!("leak-report: gate failed: {}", failed.join("; ")));
    } else if cli.fail_on_leak || cli.max_rate.is_some() {
        // A leak gate passes only on what it could judge (the outputs are written all the same).
        if let Some(why) = analysis::cannot_vouch(&rec, &analysis).map(|u| u.why) {
            bail!(UsageError(format!(
                "{} cannot judge this recording: {why}",
                if cli.fail_on_leak {
                    "--fail-on-leak"
                } else {
                    "--max-rate"
                },
            )));
        }
    }
    Ok(!failed.is_empty())
}

/// Writes a line to stderr; a closed stderr is ignored (the exit status still tells).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Standard output, which may be a pipe closed early (`leak-report x --fail-on-leak | head`):
/// the rest of the output is then dropped, and the gates still decide the exit status.
#[derive(Default)]
struct Stdout {
    /// Something was written to it (or would have been, had it not been closed).
    wrote: bool,
    closed: bool,
}

impl Stdout {
    fn write(&mut self, text: &str) -> Result<()> {
        self.wrote = true;
        if self.closed {
            return Ok(());
        }
        let result = std::io::stdout().lock().write_all(text.as_bytes());
        self.check(result)
    }

    fn flush(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = std::io::stdout().lock().flush();
        self.check(result)
    }

    fn check(&mut self, result: std::io::Result<()>) -> Result<()> {
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other.context("cannot write standard output"),
        }
    }
}

/// Refuses outputs that would mix or overwrite each other, or overwrite an input: at most one
/// `-`, no two outputs to the same file, none onto the recording or the baseline.
fn check_outputs(cli: &Cli) -> Result<()> {
    let outputs: Vec<(&str, &PathBuf)> = [
        ("-o", &cli.output),
        ("--json", &cli.json),
        ("--folded", &cli.folded),
    ]
    .into_iter()
    .filter_map(|(flag, p)| Some((flag, p.as_ref()?)))
    .collect();
    let inputs: Vec<(&str, &PathBuf)> = [("the recording", Some(&cli.recording))]
        .into_iter()
        .chain([("--baseline", cli.baseline.as_ref())])
        .chain([("--suppressions", cli.suppressions.as_ref())])
        .filter_map(|(what, p)| Some((what, p?)))
        .collect();
    if cli.recording.as_os_str() == "-" && cli.baseline.as_ref().is_some_and(|b| b == "-") {
        bail!(UsageError(
            "the recording and --baseline cannot both be standard input (-); name a file for one"
                .into()
        ));
    }
    for (i, (flag, path)) in outputs.iter().enumerate() {
        for (other, path2) in &outputs[..i] {
            if same_file(path, path2) {
                let what = if path.as_os_str() == "-" {
                    "standard output".to_string()
                } else {
                    path.display().to_string()
                };
                bail!(UsageError(format!(
                    "{other} and {flag} both write {what}, where one would overwrite or run \
                     into the other; give each its own file"
                )));
            }
        }
        for (what, input) in &inputs {
            if path.as_os_str() != "-" && same_file(path, input) {
                bail!(UsageError(format!(
                    "{flag} {} would overwrite {what}; write the output elsewhere",
                    path.display()
                )));
            }
        }
        // A recording named by mistake (`-o old.zst`): a report is cheap to make again, a
        // recording is not.
        if path.as_os_str() != "-" && is_a_recording(path) {
            bail!(UsageError(format!(
                "{flag} {} is a leak-record recording, which the output would overwrite; write \
                 the output elsewhere (or delete the recording first)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Whether `path` is a regular file that begins as a recording does.
fn is_a_recording(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    // Checked before the open: opening a named pipe to read waits for a writer.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    std::fs::File::open(path).ok().is_some_and(|mut f| {
        f.read_exact(&mut head).is_ok() && leak_format::starts_a_recording(&head)
    })
}

/// Whether two command-line paths name the same file: both `-`, the same path once resolved
/// (`./x`, symbolic links, a file not yet created), or the same existing file (hard links).
fn same_file(a: &Path, b: &Path) -> bool {
    // A character device (/dev/null) takes any number of writers harmlessly.
    #[cfg(unix)]
    let device = |p: &Path| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
    };
    #[cfg(not(unix))]
    let device = |_: &Path| false;
    if device(a) || device(b) {
        return false;
    }
    if a == b {
        return true;
    }
    // `-` is standard output, which another path may name too (/dev/stdout, /proc/self/fd/1,
    // or the file it was redirected to).
    let stdout = |p: &Path| {
        if p.as_os_str() == "-" {
            Path::new("/dev/stdout").to_path_buf()
        } else {
            p.to_path_buf()
        }
    };
    let (a, b) = (&stdout(a), &stdout(b));
    if device(a) || device(b) {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    resolved(a) == resolved(b)
}

/// `path` with its directory resolved (the file itself may not exist yet).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// The current time, for `--timestamp`.
fn now_utc() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    html::utc(ns)
}

/// Writes an output: `-` to standard output; a regular file (or a new one) whole or not at all,
/// through a file beside it renamed over it, so that a failed write (a full disk) leaves the
/// previous report as it was and no cut one; anything else (a symbolic link, /dev/null, a pipe)
/// as it is.
fn write_to(path: &Path, text: &str, stdout: &mut Stdout) -> Result<()> {
    if path.as_os_str() == "-" {
        return stdout.write(text);
    }
    let failed = |e: std::io::Error| {
        use std::io::ErrorKind as K;
        let fix = match e.kind() {
            K::StorageFull | K::QuotaExceeded => "free space there or give another path",
            K::NotFound => "its directory does not exist: create it or give another path",
            K::IsADirectory => "it is a directory: give a file name",
            _ => "give another path",
        };
        anyhow::anyhow!("cannot write {}: {e}; {fix}", path.display())
    };
    let plain = path
        .symlink_metadata()
        .map_or(true, |m| m.file_type().is_file());
    let (Some(dir), Some(name), true) = (path.parent(), path.file_name(), plain) else {
        return std::fs::write(path, text).map_err(failed);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let beside = dir.join(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::write(&beside, text).and_then(|()| std::fs::rename(&beside, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&beside);
        return Err(failed(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["leak-report", "run.zst"]).unwrap();
        assert_eq!((cli.top, cli.report_top), (10, 50));
        assert_eq!((cli.min_rate, cli.warmup, cli.alpha), (96.0, 0.1, 0.01));
        assert!(matches!(cli.detector, Detector::Robust));
        assert!(matches!(cli.folded_weight, FoldedWeight::Outstanding));
        assert_eq!((cli.memory_limit, cli.min_outstanding), (None, None));
        assert_eq!((cli.max_rate, cli.max_outstanding), (None, None));
        assert!(!cli.fail_on_leak && !cli.timestamp);
        assert!(cli.output.is_none() && cli.json.is_none() && cli.folded.is_none());
        assert!(cli.sysroot.is_none() && cli.debug_dir.is_empty());
        assert!(cli.suppressions.is_none() && cli.baseline.is_none());
    }

    #[test]
    fn rates_and_sizes() {
        assert_eq!(parse_rate("96"), Ok(96.0));
        assert_eq!(parse_rate("1K"), Ok(1024.0));
        assert_eq!(parse_rate("8M/day"), Ok(8.0 * 1048576.0 / 86400.0));
        assert_eq!(parse_rate("60/min"), Ok(1.0));
        assert!(parse_rate("1/fortnight").is_err());
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("x").is_err());
        // The unit as typed, and what a rate looks like.
        let e = parse_rate("1x").unwrap_err();
        assert!(e.starts_with("unknown size unit 'x' in '1x'"), "{e}");
        assert!(
            e.ends_with("(a rate: e.g. 96, 1K, 10K/min, 1M/h, 8M/day)"),
            "{e}"
        );
        assert_eq!(output::human_rate(0.0), "0 B/s");
        assert_eq!(output::human_rate(10137.6), "9.9 KiB/s");
        assert_eq!(output::human_rate(1024.0 / 86400.0), "43 B/h");
        assert_eq!(output::human_rate(10.0 / 86400.0), "10 B/day");
    }
}
