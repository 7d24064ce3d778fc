//! The text summary (stdout) and the JSON document (docs/json.md).
use std::fmt::Write as _;

use serde::Serialize;

use crate::analysis::{Analysis, StackReport};
use crate::detect::Verdict;
use crate::series::Recording;

/// Version of the JSON document; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

pub use leak_format::units::human_bytes;

/// `1 snapshot`, `2 snapshots`.
fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// The headline when no stack is a continuous leak, and whether it is the all-clear: not when
/// the run cannot be vouched for ([`crate::analysis::cannot_vouch`]), nor while a stack still
/// grows, more slowly (`decelerating_growth`: a cache still filling, or a leak that slows; the
/// gates pass it, but "no growth" would read as an all-clear over hundreds of KiB/s).
pub fn no_leak_headline(rec: &Recording, a: &Analysis) -> (bool, String) {
    if let Some(u) = crate::analysis::cannot_vouch(rec, a) {
        return (false, u.headline);
    }
    let slowing: Vec<&StackReport> = a
        .stacks
        .iter()
        .filter(|s| s.verdict == Verdict::DeceleratingGrowth)
        .collect();
    let Some(fastest) = slowing
        .iter()
        .max_by(|x, y| x.detection.rate.total_cmp(&y.detection.rate))
    else {
        return (true, "No continuous growth found".to_string());
    };
    let name = match fastest.site_function() {
        Some(function) => format!("stack {} ({function})", fastest.id),
        None => format!("stack {}", fastest.id),
    };
    let which = match slowing.len() {
        1 => format!(
            "1 stack is still growing, more slowly ({name}, {}",
            human_rate(fastest.detection.rate)
        ),
        n => format!(
            "{n} stacks are still growing, more slowly (the fastest, {name}, {}",
            human_rate(fastest.detection.rate)
        ),
    };
    (
        false,
        format!("No continuous leak found, but {which}: decelerating growth)"),
    )
}

/// A rate in the largest time unit that keeps it at least one byte: `9.9 KiB/s`, `3.4 KiB/h`,
/// `1.0 KiB/day` (a rate below a byte per second would show as `0 B/s`).
pub fn human_rate(bytes_per_sec: f64) -> String {
    let r = bytes_per_sec.abs();
    if r >= 1.0 || r == 0.0 {
        format!("{}/s", human_bytes(bytes_per_sec))
    } else if r * 3600.0 >= 1.0 {
        format!("{}/h", human_bytes(bytes_per_sec * 3600.0))
    } else {
        format!("{}/day", human_bytes(bytes_per_sec * 86400.0))
    }
}

/// A rate of bytes per second as bytes per day, in the largest unit: `837.9 MiB/day`.
pub fn per_day(bytes_per_sec: f64) -> String {
    format!("{}/day", human_bytes(bytes_per_sec * 86400.0))
}

/// What a sampled recording's figures are, for every output to say (None when exact).
pub fn sampling_note(rec: &Recording) -> Option<String> {
    rec.sample_bytes.map(|n| {
        format!(
            "Sampled at 1 per {}: every figure is an estimate",
            human_bytes(n as f64)
        )
    })
}

/// `90` → `90 s`, `7200` → `2.0 h`.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "never".into();
    }
    let s = secs.max(0.0);
    if s < 1.0 && (s * 100.0).round() % 100.0 != 0.0 {
        // Sub-second intervals (-i 500ms, -i 250ms): "0.5 s", "0.25 s", not "0 s" or "0.2 s".
        let two = format!("{s:.2}");
        format!("{} s", two.trim_end_matches('0').trim_end_matches('.'))
    } else if s < 10.0 && (s * 10.0).round() % 10.0 != 0.0 {
        // Short runs: "2.3 s".
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        // "2.5 min" for 150 s (not "2 min"), "10 min" for 600 s.
        let m = s / 60.0;
        if (m * 10.0).round() % 10.0 == 0.0 {
            format!("{m:.0} min")
        } else {
            format!("{m:.1} min")
        }
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

/// The verdict in words.
pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::ContinuousLeak => "continuous leak",
        Verdict::AttachTurnover => "turnover since the attach",
        Verdict::BoundedGrowth => "bounded growth",
        Verdict::DeceleratingGrowth => "decelerating growth",
        Verdict::InconsistentGrowth => "inconsistent growth",
        Verdict::ImmaterialGrowth => "immaterial growth",
        Verdict::Stable => "stable",
        Verdict::Shrinking => "shrinking",
        Verdict::Freed => "freed",
        Verdict::InsufficientData => "insufficient data",
    }
}

/// The verdict's stable identifier (as in the JSON document).
pub fn verdict_id(v: Verdict) -> &'static str {
    match v {
        Verdict::ContinuousLeak => "continuous_leak",
        Verdict::AttachTurnover => "attach_turnover",
        Verdict::BoundedGrowth => "bounded_growth",
        Verdict::DeceleratingGrowth => "decelerating_growth",
        Verdict::InconsistentGrowth => "inconsistent_growth",
        Verdict::ImmaterialGrowth => "immaterial_growth",
        Verdict::Stable => "stable",
        Verdict::Shrinking => "shrinking",
        Verdict::Freed => "freed",
        Verdict::InsufficientData => "insufficient_data",
    }
}

/// How a `--kernel --pid` recording's process, or the program a user-mode target exec'd, is
/// named: its command line; `[name]` when neither it nor the executable could be read (a kernel
/// thread, or a process that had exited: as ps shows both); else what could be read of it.
pub fn process_label(p: &leak_format::Process) -> String {
    match (&p.command_line[..], p.exe.as_str(), p.name.as_str()) {
        ([], "", "") => "name unknown".to_string(),
        ([], "", name) => format!("[{name}]"),
        ([], exe, _) => exe.to_string(),
        (argv, ..) => shell_line(argv),
    }
}

/// A command line as a shell would take it back: each argument that needs it quoted (`''` for
/// an empty one, `'a b'`, `$'x\ny'` for one with control characters), so that
/// `redis-server --save ""` does not read as `--save --appendonly`, and a `python3 -c` script
/// keeps to one line.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| shell_word(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        return arg.to_string();
    }
    if !arg.chars().any(char::is_control) {
        return format!("'{}'", arg.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for c in arg.chars() {
        match c {
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The memleak-like text summary.
pub fn text(rec: &Recording, a: &Analysis, top: usize) -> String {
    let mut out = String::new();
    if let Some(h) = &rec.header {
        let what = if h.target.mode == leak_format::TargetMode::Kernel {
            let filters = h.target.command_line.join(" ");
            match (&rec.process, filters.is_empty()) {
                (Some(p), _) => {
                    // The filters beside --pid (--comm, --cache): the name says that one.
                    let mut more = Vec::new();
                    let mut args = h.target.command_line.iter();
                    while let Some(arg) = args.next() {
                        match arg.as_str() {
                            "--pid" => _ = args.next(),
                            arg => more.push(arg),
                        }
                    }
                    let more = more.join(" ");
                    format!(
                        "Kernel recording of PID {} ({}){}",
                        p.pid,
                        process_label(p),
                        if more.is_empty() {
                            String::new()
                        } else {
                            format!(" with {more}")
                        }
                    )
                }
                (None, true) => "Kernel recording (every task)".to_string(),
                (None, false) => format!("Kernel recording ({filters})"),
            }
        } else {
            let exec = rec.exec_process().map_or(String::new(), |p| {
                format!(", which exec'd {}", process_label(p))
            });
            format!(
                "Recording of PID {} ({}{exec})",
                h.target.pid,
                shell_line(&h.target.command_line)
            )
        };
        let _ = writeln!(
            out,
            "{what} on {}: {} over {}, every {}",
            h.host.hostname,
            count(u64::from(rec.snapshots), "snapshot"),
            human_duration(rec.duration),
            human_duration(h.interval_ns as f64 / 1e9)
        );
    } else {
        // A memleak log names no target; a recording whose Header is missing lost it.
        let what = if rec.memleak_log {
            "memleak log"
        } else {
            "Recording without its Header"
        };
        let _ = writeln!(
            out,
            "{what}: {} over {}",
            count(u64::from(rec.snapshots), "snapshot"),
            human_duration(rec.duration)
        );
    }
    if let Some(note) = sampling_note(rec) {
        let _ = writeln!(out, "{note}");
    }
    for w in &a.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let leaks: Vec<&StackReport> = a
        .stacks
        .iter()
        .filter(|s| s.verdict == Verdict::ContinuousLeak)
        .collect();
    if leaks.is_empty() {
        let _ = writeln!(out, "\n{}.", no_leak_headline(rec, a).1);
    } else {
        let _ = writeln!(
            out,
            "\n{} continuous leak{} growing {}/s in total ({}){}",
            leaks.len(),
            if leaks.len() == 1 { "" } else { "s" },
            human_bytes(a.leak_rate),
            per_day(a.leak_rate),
            exhaustion(a).map_or(String::new(), |e| format!("; {e}"))
        );
    }
    if let Some(line) = left_out(a) {
        let _ = writeln!(out, "{line}");
    }
    let shown = top.min(a.stacks.len());
    if shown > 0 {
        let turnover = a
            .stacks
            .iter()
            .any(|s| s.verdict == Verdict::AttachTurnover);
        let _ = writeln!(
            out,
            "\nTop {shown} {} (leaks first, {}then by outstanding bytes):",
            if shown == 1 { "stack" } else { "stacks" },
            if turnover {
                "then turnover since the attach, "
            } else {
                ""
            }
        );
    }
    for s in a.stacks.iter().take(top) {
        let d = &s.detection;
        let _ = writeln!(
            out,
            "\n{} in {} from stack {}{}: {}{}, {}{}{}",
            human_bytes(s.outstanding_bytes as f64),
            count(s.outstanding_count, "allocation"),
            s.id,
            match s.kind {
                leak_format::AllocKind::Heap => String::new(),
                k => format!(" ({})", k.name()),
            },
            verdict_name(s.verdict),
            if d.suspected { " (suspected)" } else { "" },
            rate_with_ci(d),
            if s.strict_monotonic {
                "; grew at every snapshot"
            } else {
                ""
            },
            s.after_exit_bytes.map_or(String::new(), |b| format!(
                "; {} {}",
                human_bytes(b as f64),
                rec.exit_phrase()
            ))
        );
        if let Some(lost) = s.lost {
            let _ = writeln!(out, "        [stack unavailable: {lost}]");
        }
        for f in &s.frames {
            let _ = writeln!(
                out,
                "        {}{}",
                if f.inlined { "(inlined) " } else { "" },
                f.display()
            );
        }
        if s.truncated {
            let _ = writeln!(out, "        {}", crate::analysis::TRUNCATED_LINE);
        }
    }
    let more = a.stacks.len().saturating_sub(top);
    if more > 0 {
        let leaks_left = leaks.len().saturating_sub(top);
        let _ = writeln!(
            out,
            "\n{more} more {} not listed{} (--top N lists more; --json lists every one)",
            if more == 1 { "stack" } else { "stacks" },
            if leaks_left > 0 {
                format!(
                    ", {leaks_left} of them {}",
                    if leaks_left == 1 {
                        "a continuous leak"
                    } else {
                        "continuous leaks"
                    }
                )
            } else {
                String::new()
            }
        );
    }
    out
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    schema_version: u32,
    tool: String,
    recording: JsonRecording<'a>,
    summary: JsonSummary,
    stacks: Vec<JsonStack<'a>>,
    warnings: &'a [String],
}

#[derive(Serialize)]
struct JsonRecording<'a> {
    target: Option<JsonTarget<'a>>,
    host: Option<&'a leak_format::HostInfo>,
    snapshots: u32,
    duration_seconds: f64,
    interval_seconds: Option<f64>,
    truncated: bool,
    tail_problem: Option<String>,
    ended: Option<JsonEnd>,
    drops: &'a leak_format::Losses,
    unseen: &'a leak_format::Unseen,
    process: Option<&'a leak_format::Process>,
    total_drops: u64,
    sample_bytes: Option<u64>,
    estimates: bool,
}

#[derive(Serialize)]
struct JsonTarget<'a> {
    mode: &'static str,
    pid: u32,
    command_line: &'a [String],
    exe: &'a str,
}

#[derive(Serialize)]
struct JsonEnd {
    reason: &'static str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    message: Option<String>,
}

fn json_end(reason: &leak_format::EndReason) -> JsonEnd {
    use leak_format::EndReason as E;
    let (reason, exit_code, signal, message) = match reason {
        E::Duration => ("duration", None, None, None),
        E::Signal(s) => ("signal", None, Some(*s), None),
        E::TargetExited { code, signal } => ("target_exited", *code, *signal, None),
        E::Error(m) => ("error", None, None, Some(m.clone())),
    };
    JsonEnd {
        reason,
        exit_code,
        signal,
        message,
    }
}

#[derive(Serialize)]
struct JsonSummary {
    continuous_leaks: usize,
    attach_turnovers: usize,
    unknown_free_rate_per_sec: Option<f64>,
    leak_rate_bytes_per_sec: f64,
    leak_rate_high_bytes_per_sec: f64,
    time_to_exhaustion_seconds: Option<f64>,
    memory_limit_bytes: Option<u64>,
    suppressed_stacks: usize,
    baseline_stacks: usize,
    min_outstanding_bytes: Option<u64>,
    below_min_outstanding_stacks: usize,
    below_min_outstanding_leaks: usize,
    cache_page_stacks: usize,
    cache_page_bytes: u64,
}

#[derive(Serialize)]
struct JsonStack<'a> {
    id: u32,
    kind: &'static str,
    kernel: bool,
    verdict: Verdict,
    suspected: bool,
    strict_monotonic: bool,
    outstanding_bytes: u64,
    outstanding_count: u64,
    growth_bytes: i64,
    rate_bytes_per_sec: Option<f64>,
    rate_ci: Option<[f64; 2]>,
    count_rate_per_sec: Option<f64>,
    mean_object_size: Option<f64>,
    kendall_tau: Option<f64>,
    p_value: Option<f64>,
    active_at_end: bool,
    lost: Option<String>,
    truncated: bool,
    after_exit_bytes: Option<u64>,
    gates: &'a [crate::detect::Gate],
    frames: &'a [crate::symbolize::SymFrame],
}

/// `9.9 KiB/s [9.8 KiB/s .. 10.0 KiB/s]`, or `rate unknown` when it was not measured.
pub fn rate_with_ci(d: &crate::detect::Detection) -> String {
    if d.rate_known() {
        format!(
            "{}/s [{}/s .. {}/s]",
            human_bytes(d.rate),
            human_bytes(d.rate_ci.0),
            human_bytes(d.rate_ci.1)
        )
    } else {
        "rate unknown".to_string()
    }
}

fn json_stack(s: &StackReport) -> JsonStack<'_> {
    let d = &s.detection;
    let known = d.rate_known();
    JsonStack {
        id: s.id,
        kind: s.kind.name(),
        kernel: s.kind.is_kernel(),
        verdict: s.verdict,
        suspected: d.suspected,
        strict_monotonic: s.strict_monotonic,
        outstanding_bytes: s.outstanding_bytes,
        outstanding_count: s.outstanding_count,
        growth_bytes: s.growth_bytes,
        rate_bytes_per_sec: known.then_some(d.rate),
        rate_ci: known.then_some([d.rate_ci.0, d.rate_ci.1]),
        count_rate_per_sec: d.count_rate,
        mean_object_size: d.mean_object_size,
        kendall_tau: known.then_some(d.tau),
        p_value: known.then_some(d.p_value),
        active_at_end: d.active_at_end,
        lost: s.lost.map(|l| {
            match l {
                leak_format::StackLoss::TableFull => "table_full",
                leak_format::StackLoss::WalkFailed => "walk_failed",
                leak_format::StackLoss::CountersFull => "counters_full",
                leak_format::StackLoss::Empty => "empty",
            }
            .to_string()
        }),
        truncated: s.truncated,
        after_exit_bytes: s.after_exit_bytes,
        gates: &d.gates,
        frames: &s.frames,
    }
}

/// The JSON document (pretty-printed, stable key order; docs/json.md).
pub fn json(rec: &Recording, a: &Analysis) -> String {
    let doc = JsonDoc {
        schema_version: SCHEMA_VERSION,
        tool: format!("leak-report {}", env!("CARGO_PKG_VERSION")),
        recording: JsonRecording {
            target: rec.header.as_ref().map(|h| JsonTarget {
                mode: match h.target.mode {
                    leak_format::TargetMode::Attach => "attach",
                    leak_format::TargetMode::Command => "command",
                    leak_format::TargetMode::Kernel => "kernel",
                },
                pid: h.target.pid,
                command_line: &h.target.command_line,
                exe: &h.target.exe,
            }),
            host: rec.header.as_ref().map(|h| &h.host),
            snapshots: rec.snapshots,
            duration_seconds: rec.duration,
            interval_seconds: rec.header.as_ref().map(|h| h.interval_ns as f64 / 1e9),
            truncated: rec.tail.is_some(),
            tail_problem: rec.tail.as_ref().map(ToString::to_string),
            ended: rec.end.as_ref().map(|e| json_end(&e.reason)),
            drops: &rec.losses,
            unseen: &rec.unseen,
            process: rec.process.as_ref(),
            total_drops: rec.losses.total_drops() + rec.unseen.total(),
            sample_bytes: rec.sample_bytes,
            estimates: rec.sample_bytes.is_some(),
        },
        summary: JsonSummary {
            continuous_leaks: a
                .stacks
                .iter()
                .filter(|s| s.verdict == Verdict::ContinuousLeak)
                .count(),
            attach_turnovers: a
                .stacks
                .iter()
                .filter(|s| s.verdict == Verdict::AttachTurnover)
                .count(),
            unknown_free_rate_per_sec: a.unknown_free_rate,
            leak_rate_bytes_per_sec: a.leak_rate,
            leak_rate_high_bytes_per_sec: a.leak_rate_high,
            time_to_exhaustion_seconds: a.time_to_exhaustion,
            memory_limit_bytes: a.memory_limit,
            suppressed_stacks: a.suppressed,
            baseline_stacks: a.in_baseline,
            min_outstanding_bytes: a.min_outstanding,
            below_min_outstanding_stacks: a.below_min,
            below_min_outstanding_leaks: a.below_min_leaks,
            cache_page_stacks: a.cache_pages,
            cache_page_bytes: a.cache_pages_bytes,
        },
        stacks: a.stacks.iter().map(json_stack).collect(),
        warnings: &a.warnings,
    };
    let mut text =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// The stacks the options left out, in one sentence (None when none was).
pub fn left_out(a: &Analysis) -> Option<String> {
    let mut parts = Vec::new();
    if a.suppressed > 0 {
        parts.push(format!("{} stack(s) suppressed", a.suppressed));
    }
    if a.in_baseline > 0 {
        parts.push(format!(
            "{} leak(s) already in the baseline, as fast",
            a.in_baseline
        ));
    }
    if let (Some(min), true) = (a.min_outstanding, a.below_min > 0) {
        parts.push(format!(
            "{} stack(s) below --min-outstanding {} ({} of them continuous leaks)",
            a.below_min,
            human_bytes(min as f64),
            a.below_min_leaks
        ));
    }
    if a.cache_pages > 0 {
        parts.push(format!(
            "{} kernel stack(s) of page-cache or slab pages holding {} (the page cache is \
             reclaimable; slab pages hold objects counted on their own stacks; \
             --keep-cache-pages shows them)",
            a.cache_pages,
            human_bytes(a.cache_pages_bytes as f64)
        ));
    }
    (!parts.is_empty()).then(|| format!("Left out: {}.", parts.join("; ")))
}

/// When the pessimistic rate reaches the memory limit, in one clause (None without leaks).
pub fn exhaustion(a: &Analysis) -> Option<String> {
    let (t, limit) = (a.time_to_exhaustion?, a.memory_limit?);
    let limit = human_bytes(limit as f64);
    Some(if t > 0.0 {
        format!(
            "{} to reach {limit} at the pessimistic rate",
            human_duration(t)
        )
    } else {
        format!("already above the memory limit of {limit}")
    })
}

/// What the folded stacks are weighted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FoldedWeight {
    /// Outstanding bytes at the last snapshot.
    Outstanding,
    /// Growth of outstanding bytes over the window (stacks that shrank are left out).
    Growth,
}

/// Brendan Gregg's collapsed stacks (root first, `;`-separated, then a space and the weight),
/// one line per stack, for flamegraph.pl / inferno.
pub fn folded(a: &Analysis, weight: FoldedWeight) -> String {
    let mut lines: Vec<String> = a
        .stacks
        .iter()
        .filter_map(|s| {
            let w = match weight {
                FoldedWeight::Outstanding => s.outstanding_bytes as i64,
                FoldedWeight::Growth => s.growth_bytes,
            };
            if w <= 0 {
                return None;
            }
            let mut names: Vec<String> = s
                .frames
                .iter()
                .rev()
                .map(|f| {
                    let place = || format!("{}+{:#x}", f.module, f.offset);
                    let name = match &f.function {
                        // Each such address its own frame, not one "[not code]" for all.
                        Some(_) if f.is_not_code() => {
                            format!("{} {}", crate::symbolize::NOT_CODE, place())
                        }
                        Some(name) => name.clone(),
                        None => place(),
                    };
                    // `;` separates frames and the last space separates the weight.
                    let name = name.replace(';', ":").replace(['\n', '\r'], " ");
                    // Kernel frames carry the suffix stackcollapse-perf --kernel gives them.
                    if s.kind.is_kernel() {
                        format!("{name}_[k]")
                    } else {
                        name
                    }
                })
                .collect();
            if s.truncated {
                names.insert(0, crate::analysis::TRUNCATED_ROOT.to_string());
            }
            if let Some(lost) = s.lost {
                names.push(format!("[stack unavailable: {lost}]"));
            }
            if names.is_empty() {
                names.push(format!("[stack {}]", s.id));
            }
            Some(format!("{} {w}", names.join(";")))
        })
        .collect();
    lines.sort();
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{human_duration, shell_line};

    #[test]
    fn command_lines_are_quoted_as_a_shell_takes_them() {
        let line =
            |args: &[&str]| shell_line(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(
            line(&["/usr/bin/svc", "--port=80", "a.b"]),
            "/usr/bin/svc --port=80 a.b"
        );
        assert_eq!(
            line(&["redis-server", "--save", "", "--appendonly", "no"]),
            "redis-server --save '' --appendonly no"
        );
        assert_eq!(line(&["sh", "-c", "echo it's"]), r"sh -c 'echo it'\''s'");
        assert_eq!(
            line(&["python3", "-c", "import os\nos.abort()"]),
            r"python3 -c $'import os\nos.abort()'"
        );
        assert_eq!(line(&["x", "\u{1b}[31m"]), r"x $'\x1b[31m'");
    }

    #[test]
    fn durations_keep_a_hundredth_below_a_second_and_a_tenth_below_ten() {
        let cases = [
            (0.0, "0 s"),
            (0.5, "0.5 s"),
            (0.25, "0.25 s"),
            (0.1, "0.1 s"),
            (0.999, "1 s"),
            (1.0, "1 s"),
            (2.34, "2.3 s"),
            (9.96, "10 s"),
            (91.0, "91 s"),
            (150.0, "2.5 min"),
            (130.0, "2.2 min"),
            (600.0, "10 min"),
            (86_400.0, "24.0 h"),
            (f64::INFINITY, "never"),
        ];
        for (secs, shown) in cases {
            assert_eq!(human_duration(secs), shown, "{secs}");
        }
    }
}
