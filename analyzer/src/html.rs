//! The HTML report: one self-contained file (inline CSS and one inline script allowed by its
//! hash in the Content-Security-Policy, SVG charts, flame graphs), escaped throughout (askama),
//! bounded in size (details for the top stacks only, series downsampled for drawing) and
//! deterministic (the same input gives the same bytes; no timestamp unless asked).
use askama::Template;
use base64::Engine as _;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use sha2::Digest as _;

use crate::analysis::{Analysis, StackReport};
use crate::detect::{Point, Verdict};
use crate::output::{self, human_bytes, FoldedWeight};
use crate::series::Recording;

const CSS: &str = include_str!("../../templates/report.css");
const JS: &str = include_str!("../../templates/report.js");
/// Points drawn per chart at most.
const DRAW_POINTS: usize = 300;
/// Continuous leaks listed at least (more when `--report-top` asks).
const MAX_LEAK_ROWS: usize = 200;

/// Report settings.
#[derive(Debug, Clone)]
pub struct HtmlOptions {
    /// Stacks listed with details besides the continuous leaks.
    pub top: usize,
    /// A generation time to print (None keeps the output deterministic).
    pub timestamp: Option<String>,
}

struct Fact {
    name: &'static str,
    value: String,
}

struct FrameRow {
    function: String,
    location: String,
    module: String,
    inlined: bool,
}

struct GateRow {
    name: &'static str,
    passed: bool,
    detail: String,
}

struct Row {
    id: u32,
    /// The kind, shown as a tag, for anything but heap stacks.
    kind_tag: Option<&'static str>,
    verdict: &'static str,
    verdict_label: &'static str,
    suspected: bool,
    strict: bool,
    rate: f64,
    rate_text: String,
    ci_text: String,
    outstanding: u64,
    outstanding_text: String,
    /// What stayed at or after the target's exit (`StackReport::after_exit_bytes`), with
    /// `Recording::exit_phrase`.
    after_exit_text: Option<String>,
    count: u64,
    growth: i64,
    growth_text: String,
    sparkline: String,
    leaf: String,
    frames: Vec<FrameRow>,
    chart: String,
    gates: Vec<GateRow>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn flame_graph_controls_go_and_ids_are_prefixed() {
        let svg = "<svg><defs><linearGradient id=\"background\"/></defs><rect fill=\"url(#background)\"/><text id=\"title\">T</text><text id=\"search\" x=\"1\">Search</text><text id=\"unzoom\" class=\"hide\">Reset Zoom</text><text id=\"details\"> </text><text id=\"matched\"> </text><g id=\"frames\"/></svg>";
        assert_eq!(
            super::own_ids(&super::without_controls(svg), "fo"),
            "<svg><defs><linearGradient id=\"fo-background\"/></defs><rect fill=\"url(#fo-background)\"/><text id=\"fo-title\">T</text><g id=\"fo-frames\"/></svg>"
        );
    }

    #[test]
    fn flame_graphs_carry_no_script() {
        let svg = "<svg onload=\"init(evt)\" x=\"1\"><!--see http://x--><script type=\"text/ecmascript\"><![CDATA[var a;]]></script><g>f</g><script>b</script></svg>";
        assert_eq!(super::without_scripts(svg), "<svg x=\"1\"><g>f</g></svg>");
    }
}

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    csp: String,
    title: String,
    css: &'static str,
    js: &'static str,
    facts: Vec<Fact>,
    /// Sampled recordings: says that every figure is an estimate.
    sampling_note: Option<String>,
    banner_class: &'static str,
    banner_title: String,
    banner_lines: Vec<String>,
    warnings: &'a [String],
    timeline_svg: String,
    timeline_caption: &'static str,
    stacked_svg: String,
    verdict_names: Vec<&'static str>,
    rows: Vec<Row>,
    aggregated_stacks: usize,
    aggregated_leaks: usize,
    aggregated_bytes: String,
    flame_outstanding: String,
    flame_growth: String,
    footer: String,
}

/// Renders the report.
pub fn render(rec: &Recording, a: &Analysis, opts: &HtmlOptions) -> Result<String, String> {
    let hash = sha2::Sha256::digest(JS.as_bytes());
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'unsafe-inline'; img-src data:; \
         base-uri 'none'; form-action 'none'",
        base64::engine::general_purpose::STANDARD.encode(hash)
    );
    let title = match (&rec.header, &rec.process) {
        (Some(_), Some(p)) if rec.is_kernel() => output::process_label(p),
        (Some(h), _) => rec.exec_process().map_or_else(
            || output::shell_line(&h.target.command_line),
            output::process_label,
        ),
        (None, _) => "memleak log".to_string(),
    };
    let leaks: Vec<&StackReport> = a
        .stacks
        .iter()
        .filter(|s| s.verdict == Verdict::ContinuousLeak)
        .collect();
    let (banner_class, banner_title) = if leaks.is_empty() {
        match output::no_leak_headline(rec, a) {
            (true, title) => ("ok", title),
            (false, title) => ("unsure", title),
        }
    } else {
        (
            "leak",
            format!(
                "{} continuous leak{} found",
                leaks.len(),
                if leaks.len() == 1 { "" } else { "s" }
            ),
        )
    };
    let mut banner_lines = Vec::new();
    if !leaks.is_empty() {
        banner_lines.push(format!(
            "Growing {}/s in total ({}; up to {}/s at the 95% bound).",
            human_bytes(a.leak_rate),
            crate::output::per_day(a.leak_rate),
            human_bytes(a.leak_rate_high)
        ));
        if let Some(e) = output::exhaustion(a) {
            banner_lines.push(format!("Memory: {e}."));
        }
    }
    if let Some(line) = output::left_out(a) {
        banner_lines.push(line);
    }
    // Rows: the continuous leaks (at most max(top, 200)), then the top stacks by outstanding
    // bytes; charts for the first `top` rows only; the rest summed. This bounds the size of the
    // report whatever the recording.
    let leak_rows = opts.top.max(MAX_LEAK_ROWS);
    let others = || {
        a.stacks
            .iter()
            .filter(|s| s.verdict != Verdict::ContinuousLeak)
    };
    let mut listed: Vec<&StackReport> = leaks.iter().take(leak_rows).copied().collect();
    listed.extend(others().take(opts.top));
    let rest: Vec<&StackReport> = leaks
        .iter()
        .skip(leak_rows)
        .copied()
        .chain(others().skip(opts.top))
        .collect();
    let rows = listed
        .iter()
        .enumerate()
        .map(|(i, s)| row(rec, s, i < opts.top))
        .collect();
    let page = Page {
        csp,
        title,
        css: CSS,
        js: JS,
        facts: facts(rec),
        sampling_note: output::sampling_note(rec),
        banner_class,
        banner_title,
        banner_lines,
        warnings: &a.warnings,
        timeline_svg: timeline(rec)?,
        timeline_caption: if rec.is_kernel() {
            "Outstanding kernel bytes over all stacks (traced: slab objects, pages and, with \
             --percpu, per-CPU memory)."
        } else {
            "Outstanding heap bytes over all stacks (traced) and the process's resident set \
             size (RSS)."
        },
        stacked_svg: stacked(rec, a)?,
        verdict_names: ALL_VERDICTS
            .iter()
            .map(|v| output::verdict_id(*v))
            .collect(),
        rows,
        aggregated_stacks: rest.len(),
        aggregated_leaks: rest
            .iter()
            .filter(|s| s.verdict == Verdict::ContinuousLeak)
            .count(),
        aggregated_bytes: human_bytes(rest.iter().map(|s| s.outstanding_bytes as f64).sum()),
        flame_outstanding: flame(
            a,
            FoldedWeight::Outstanding,
            "Outstanding bytes at the end",
            "fo",
        )?,
        flame_growth: flame(
            a,
            FoldedWeight::Growth,
            "Growth of outstanding bytes over the window",
            "fg",
        )?,
        footer: match &opts.timestamp {
            Some(t) => format!("leak-report {}, generated {t}", env!("CARGO_PKG_VERSION")),
            None => format!("leak-report {}", env!("CARGO_PKG_VERSION")),
        },
    };
    page.render()
        .map_err(|e| format!("cannot render the report: {e}"))
}

const ALL_VERDICTS: [Verdict; 10] = [
    Verdict::ContinuousLeak,
    Verdict::AttachTurnover,
    Verdict::BoundedGrowth,
    Verdict::DeceleratingGrowth,
    Verdict::InconsistentGrowth,
    Verdict::ImmaterialGrowth,
    Verdict::Stable,
    Verdict::Shrinking,
    Verdict::Freed,
    Verdict::InsufficientData,
];

fn facts(rec: &Recording) -> Vec<Fact> {
    let mut f = Vec::new();
    let mut add = |name, value: String| f.push(Fact { name, value });
    if let Some(h) = &rec.header {
        if h.target.mode == leak_format::TargetMode::Kernel {
            let filters = h.target.command_line.join(" ");
            add(
                "traced",
                match filters.is_empty() {
                    true => "kernel allocations of every task".to_string(),
                    false => format!("kernel allocations ({filters})"),
                },
            );
            if let Some(p) = &rec.process {
                add(
                    "process",
                    format!("PID {}: {}", p.pid, output::process_label(p)),
                );
            }
        } else {
            add("PID", h.target.pid.to_string());
            if let Some(p) = rec.exec_process() {
                add("exec'd", output::process_label(p));
                add(
                    match h.target.mode {
                        leak_format::TargetMode::Attach => "attached to",
                        _ => "started as",
                    },
                    output::shell_line(&h.target.command_line),
                );
            }
        }
        add("host", h.host.hostname.clone());
        add(
            "kernel",
            format!("{} ({})", h.host.kernel_release, h.host.arch),
        );
        add("started", utc(h.start_wall_ns));
        if let Some(e) = &rec.end {
            add("ended", utc(e.wall_ns));
        }
        add(
            "interval",
            output::human_duration(h.interval_ns as f64 / 1e9),
        );
        add("recorder", h.tool.clone());
    }
    add("snapshots", rec.snapshots.to_string());
    add("duration", output::human_duration(rec.duration));
    add(
        "analyzer",
        format!("leak-report {}", env!("CARGO_PKG_VERSION")),
    );
    f
}

/// `2026-11-21 20:38:07 UTC` from nanoseconds since the epoch.
pub fn utc(ns: u64) -> String {
    let (y, m, d, hh, mm, ss) = leak_format::units::utc_fields(ns / 1_000_000_000);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

fn row(rec: &Recording, s: &StackReport, with_chart: bool) -> Row {
    let d = &s.detection;
    let mut frames: Vec<FrameRow> = s
        .frames
        .iter()
        .map(|f| FrameRow {
            function: f
                .function
                .clone()
                .unwrap_or_else(|| format!("{:#x}", f.offset)),
            location: match (&f.file, f.line) {
                (Some(file), Some(line)) => format!("{file}:{line}"),
                (Some(file), None) => file.clone(),
                _ => String::new(),
            },
            module: f.module.rsplit('/').next().unwrap_or(&f.module).to_string(),
            inlined: f.inlined,
        })
        .collect();
    let leaf = match s.lost {
        Some(l) => format!("[stack unavailable: {l}]"),
        None => frames
            .get(crate::analysis::site(s.kind, &s.frames))
            .map_or_else(|| "[no frames]".to_string(), |f| f.function.clone()),
    };
    if s.truncated {
        frames.push(FrameRow {
            function: crate::analysis::TRUNCATED_LINE.into(),
            location: String::new(),
            module: String::new(),
            inlined: false,
        });
    }
    let points = rec
        .series
        .get(&(s.id, s.kind))
        .map(|x| x.points())
        .unwrap_or_default();
    Row {
        id: s.id,
        kind_tag: (s.kind != leak_format::AllocKind::Heap).then(|| s.kind.name()),
        verdict: output::verdict_id(s.verdict),
        verdict_label: output::verdict_name(s.verdict),
        suspected: d.suspected,
        strict: s.strict_monotonic,
        rate: d.rate,
        rate_text: if d.rate_known() {
            format!("{}/s", human_bytes(d.rate))
        } else {
            "unknown".to_string()
        },
        ci_text: if d.rate_known() {
            format!(
                "[{}/s .. {}/s]",
                human_bytes(d.rate_ci.0),
                human_bytes(d.rate_ci.1)
            )
        } else {
            String::new()
        },
        outstanding: s.outstanding_bytes,
        outstanding_text: human_bytes(s.outstanding_bytes as f64),
        after_exit_text: s
            .after_exit_bytes
            .map(|b| format!("{} {}", human_bytes(b as f64), rec.exit_phrase())),
        count: s.outstanding_count,
        growth: s.growth_bytes,
        growth_text: human_bytes(s.growth_bytes as f64),
        sparkline: sparkline(&points),
        leaf,
        frames,
        chart: if with_chart {
            stack_chart(s, &points).unwrap_or_default()
        } else {
            String::new()
        },
        gates: d
            .gates
            .iter()
            .map(|g| GateRow {
                name: g.name,
                passed: g.passed,
                detail: g.detail.clone(),
            })
            .collect(),
    }
}

/// Known (t, bytes) pairs, at most `DRAW_POINTS`, evenly picked.
fn drawable(points: &[Point]) -> Vec<(f64, f64)> {
    let known: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.bytes.map(|b| (p.t, b)))
        .collect();
    let step = known.len().div_ceil(DRAW_POINTS).max(1);
    known.into_iter().step_by(step).collect()
}

/// A 120x28 polyline; no text, nothing from the data but numbers.
fn sparkline(points: &[Point]) -> String {
    let pts = drawable(points);
    if pts.len() < 2 {
        return String::new();
    }
    let (t0, t1) = (pts[0].0, pts[pts.len() - 1].0);
    let (lo, hi) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let sx = |t: f64| {
        if t1 > t0 {
            (t - t0) / (t1 - t0) * 118.0 + 1.0
        } else {
            1.0
        }
    };
    let sy = |y: f64| {
        if hi > lo {
            27.0 - (y - lo) / (hi - lo) * 26.0
        } else {
            14.0
        }
    };
    let path: Vec<String> = pts
        .iter()
        .map(|&(t, y)| format!("{:.1},{:.1}", sx(t), sy(y)))
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 120 28\" role=\"img\"><polyline \
         fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        path.join(" ")
    )
}

fn axis_scale(max_bytes: f64) -> (f64, &'static str) {
    match max_bytes {
        m if m >= 1e9 => (1024.0 * 1024.0 * 1024.0, "GiB"),
        m if m >= 1e6 => (1024.0 * 1024.0, "MiB"),
        m if m >= 1e3 => (1024.0, "KiB"),
        _ => (1.0, "B"),
    }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> String {
    format!("cannot draw a chart: {e:?}")
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// An SVG chart of `size` on white, x in seconds from 0 to `t_max`, y from 0 to `y_top` in
/// `unit`, with its axes drawn; `draw` adds the series; `legend` draws the series labels.
fn svg_chart(
    size: (u32, u32),
    (t_max, y_top): (f64, f64),
    (x_desc, unit): (&str, &str),
    legend: bool,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_top)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(unit)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
        draw(&mut chart)?;
        if legend {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Outstanding bytes over all stacks and RSS over time.
fn timeline(rec: &Recording) -> Result<String, String> {
    let step = rec.timeline.len().div_ceil(DRAW_POINTS).max(1);
    let pts: Vec<_> = rec.timeline.iter().step_by(step).collect();
    if pts.len() < 2 {
        return Ok(String::new());
    }
    let t_max = pts.iter().map(|p| p.t).fold(0.0, f64::max).max(1.0);
    let y_max = pts
        .iter()
        .map(|p| (p.outstanding as f64).max(p.memory.map_or(0.0, |m| m.rss as f64)))
        .fold(0.0, f64::max)
        .max(1.0);
    let (scale, unit) = axis_scale(y_max);
    let y_top = y_max / scale * 1.05;
    svg_chart(
        (1000, 280),
        (t_max, y_top),
        ("seconds since start", unit),
        true,
        |chart| {
            let traced = RGBColor(9, 105, 218);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.t, p.outstanding as f64 / scale)),
                    traced.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label("outstanding (traced)")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], traced.stroke_width(2))
                });
            if pts.iter().any(|p| p.memory.is_some()) {
                let rss = RGBColor(154, 103, 0);
                chart
                    .draw_series(LineSeries::new(
                        pts.iter()
                            .filter_map(|p| p.memory.map(|m| (p.t, m.rss as f64 / scale))),
                        rss.stroke_width(2),
                    ))
                    .map_err(draw_err)?
                    .label("RSS")
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], rss.stroke_width(2))
                    });
            }
            Ok(())
        },
    )
}

/// The value of a step series at time `t` (the last known value at or before it).
fn value_at(pts: &[(f64, f64)], t: f64) -> f64 {
    let i = pts.partition_point(|p| p.0 <= t);
    if i == 0 {
        0.0
    } else {
        pts[i - 1].1
    }
}

/// A stacked chart's legend entry: the stack's site (its first frame past the allocator) and
/// id, the site cut to fit.
fn legend_label(s: &StackReport) -> String {
    let name = s.site_function().unwrap_or("?");
    let name: String = if name.chars().count() > 32 {
        name.chars().take(31).chain(['…']).collect()
    } else {
        name.to_string()
    };
    format!("{name} (stack {})", s.id)
}

/// The five fastest-growing stacks, stacked.
fn stacked(rec: &Recording, a: &Analysis) -> Result<String, String> {
    let mut growing: Vec<&StackReport> = a.stacks.iter().filter(|s| s.growth_bytes > 0).collect();
    growing.sort_by(|x, y| {
        y.detection
            .rate
            .total_cmp(&x.detection.rate)
            .then(x.id.cmp(&y.id))
    });
    growing.truncate(5);
    if growing.is_empty() || rec.timeline.len() < 2 {
        return Ok(String::new());
    }
    let step = rec.timeline.len().div_ceil(DRAW_POINTS).max(1);
    let grid: Vec<f64> = rec.timeline.iter().step_by(step).map(|p| p.t).collect();
    let layers: Vec<Vec<f64>> = growing
        .iter()
        .map(|s| {
            let pts = rec
                .series
                .get(&(s.id, s.kind))
                .map(|x| drawable(&x.points()))
                .unwrap_or_default();
            grid.iter().map(|&t| value_at(&pts, t)).collect()
        })
        .collect();
    let mut cumulative = vec![vec![0.0; grid.len()]; layers.len() + 1];
    for (i, layer) in layers.iter().enumerate() {
        for j in 0..grid.len() {
            cumulative[i + 1][j] = cumulative[i][j] + layer[j];
        }
    }
    let y_max = cumulative[layers.len()]
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .max(1.0);
    let (scale, unit) = axis_scale(y_max);
    let t_max = grid.last().copied().unwrap_or(1.0).max(1.0);
    let palette = [
        RGBColor(207, 34, 46),
        RGBColor(9, 105, 218),
        RGBColor(154, 103, 0),
        RGBColor(26, 127, 55),
        RGBColor(130, 80, 223),
    ];
    let y_top = y_max / scale * 1.05;
    svg_chart(
        (1000, 280),
        (t_max, y_top),
        ("seconds since start", unit),
        true,
        |chart| {
            // Draw the tallest band first so the lower ones paint over it.
            for i in (0..layers.len()).rev() {
                let color = palette[i % palette.len()];
                let top: Vec<(f64, f64)> = grid
                    .iter()
                    .zip(&cumulative[i + 1])
                    .map(|(&t, &y)| (t, y / scale))
                    .collect();
                chart
                    .draw_series(AreaSeries::new(top, 0.0, color.mix(0.55)).border_style(color))
                    .map_err(draw_err)?
                    .label(legend_label(growing[i]))
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.55).filled())
                    });
            }
            Ok(())
        },
    )
}

/// One stack's outstanding bytes (dots) and its Theil-Sen line.
fn stack_chart(s: &StackReport, points: &[Point]) -> Result<String, String> {
    let pts = drawable(points);
    if pts.len() < 2 {
        return Ok(String::new());
    }
    let t_max = pts.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0);
    let (scale, unit) = axis_scale(y_max);
    // Intercept: the median of y - rate * t (Theil-Sen's companion).
    let rate = s.detection.rate;
    let mut residual: Vec<f64> = pts.iter().map(|&(t, y)| y - rate * t).collect();
    residual.sort_by(f64::total_cmp);
    let intercept = residual[residual.len() / 2];
    let y_top = y_max / scale * 1.1;
    svg_chart(
        (640, 220),
        (t_max, y_top),
        ("seconds", unit),
        false,
        |chart| {
            let blue = RGBColor(9, 105, 218);
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(t, y)| Circle::new((t, y / scale), 2, blue.filled())),
                )
                .map_err(draw_err)?;
            if rate.is_finite() && rate != 0.0 {
                let t0 = pts[0].0;
                let line = [
                    (t0, (intercept + rate * t0) / scale),
                    (t_max, (intercept + rate * t_max) / scale),
                ];
                chart
                    .draw_series(LineSeries::new(line, RGBColor(207, 34, 46).stroke_width(2)))
                    .map_err(draw_err)?;
            }
            Ok(())
        },
    )
}

/// Frames narrower than this many pixels are left out of the flame graphs (their width goes to
/// their parent): they cannot be seen or pointed at, and a recording of tens of thousands of
/// stacks would otherwise put every one of them in the report. inferno's default is 0.01.
const FLAME_MIN_WIDTH: f64 = 1.0;

/// An inferno flame graph without JavaScript, ready to inline (no XML prolog); its element ids
/// start with `ids` so that two graphs in one page do not share any.
fn flame(a: &Analysis, weight: FoldedWeight, title: &str, ids: &str) -> Result<String, String> {
    let folded = output::folded(a, weight);
    if folded.trim().is_empty() {
        return Ok("<p class=\"aggregated\">Nothing to draw.</p>".to_string());
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = "bytes".to_string();
    opts.deterministic = true;
    opts.no_javascript = true;
    opts.min_width = FLAME_MIN_WIDTH;
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, folded.lines(), &mut out)
        .map_err(|e| format!("cannot draw a flame graph: {e}"))?;
    let svg = String::from_utf8_lossy(&out).into_owned();
    let svg = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => &svg[..],
    };
    Ok(own_ids(&without_controls(&without_scripts(svg)), ids))
}

/// The texts of inferno's interactive controls (search, zoom reset, the details and match
/// lines), which do nothing without its JavaScript. Frames keep their `<title>` tooltips.
fn without_controls(svg: &str) -> String {
    let mut svg = svg.to_string();
    for id in ["unzoom", "search", "matched", "details"] {
        let open = format!("<text id=\"{id}\"");
        if let Some(start) = svg.find(&open) {
            if let Some(len) = svg[start..].find("</text>") {
                svg.replace_range(start..start + len + "</text>".len(), "");
            }
        }
    }
    svg
}

/// inferno's fixed element ids (`background`, `frames`, `title`) prefixed, with the gradient's
/// reference.
fn own_ids(svg: &str, prefix: &str) -> String {
    svg.replace(" id=\"", &format!(" id=\"{prefix}-"))
        .replace("url(#", &format!("url(#{prefix}-"))
}

/// inferno writes a `<script>` block (settings for its JavaScript) and `onload="init(evt)"`
/// even without its JavaScript: the report has no script but its own, so both go, and its
/// comments with them.
fn without_scripts(svg: &str) -> String {
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(start) = rest.find("<script") {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find("</script>") {
            Some(end) => &rest[start + end + "</script>".len()..],
            None => "",
        };
    }
    out.push_str(rest);
    // Its comments (credits with links) too: inert, but bytes in every report.
    let mut clean = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(start) = rest.find("<!--") {
        clean.push_str(&rest[..start]);
        rest = match rest[start..].find("-->") {
            Some(end) => &rest[start + end + 3..],
            None => "",
        };
    }
    clean.push_str(rest);
    clean.replace(" onload=\"init(evt)\"", "")
}
