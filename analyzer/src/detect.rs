//! Continuous-leak detection over one stack's time series (see docs/detection.md): a robust trend
//! test (Mann-Kendall with the Hamed-Rao autocorrelation correction), its Theil-Sen rate, and the
//! gates that tell a continuous leak from bounded, decelerating, inconsistent or immaterial growth.
//! Pure functions over series: no I/O, no clock, no randomness.
use serde::Serialize;

/// Fewer usable points than this (after warm-up and downsampling): insufficient data.
pub const MIN_POINTS: usize = 12;
/// From this many usable points on, a full verdict; below, a leak is only "suspected".
pub const FULL_POINTS: usize = 30;
/// Share of samples since first appearance whose bytes must be known.
pub const MIN_KNOWN_SHARE: f64 = 0.8;
/// With 12 to 29 points the trend must pass `alpha / STRICT_ALPHA_DIVISOR` (0.001 by default).
pub const STRICT_ALPHA_DIVISOR: f64 = 10.0;
/// Head and tail are this share of the points used (first and last 40%).
pub const END_SHARE: f64 = 0.4;
/// Persistence: the tail's slope must be at least this share of the overall slope...
pub const PERSISTENCE_RATIO: f64 = 0.3;
/// ...and the tail's own one-sided Mann-Kendall p below this...
pub const PERSISTENCE_ALPHA: f64 = 0.10;
/// Deceleration also: in a continuous two-piece line fitted to the whole window (bending where
/// the tail starts), the slope after the bend is below this share of the overall slope.
pub const HINGE_RATIO: f64 = 0.5;
/// A plateau counts as bounded growth only if its level rose this many median absolute
/// deviations (of the plateau) above the start.
pub const PLATEAU_RISE_MADS: f64 = 5.0;

/// Deceleration: tail slope below this share of the head slope (and CIs disjoint).
pub const DECELERATION_RATIO: f64 = 1.0 / 3.0;
/// Consistency: a quarter has stalled when even the upper bound of its slope's 95% CI is below
/// this share of the overall slope (slower than the leak beyond its own noise)...
pub const STALLED_RATIO: f64 = 0.5;
/// ...and the growth is inconsistent when more than this many of the four quarters stalled.
pub const MAX_STALLED_QUARTERS: usize = 1;
/// `max_points` below this is raised to it (the gates need a full-verdict series).
const MIN_MAX_POINTS: usize = FULL_POINTS;
/// Mann-Kendall uses its exact null distribution up to this many points (no ties).
const EXACT_MAX_N: usize = 10;
/// The 0.975 quantile of the standard normal distribution.
const Z_975: f64 = 1.959_963_984_540_054;

/// One observation of a stack: seconds since the recording started, outstanding bytes and live
/// allocation count. `None` value = unknown at that time (e.g. a text log interval that did not list
/// the stack) — unknown is NOT zero. Points are in time order; non-finite values count as unknown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the recording started.
    pub t: f64,
    /// Outstanding bytes, if known.
    pub bytes: Option<f64>,
    /// Live allocations, if known.
    pub count: Option<f64>,
}

/// Detector settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Minimum material growth rate, bytes/s (default 96, about 8 MiB/day).
    pub min_rate: f64,
    /// Share of the window dropped at the start (default 0.10; at least one point when > 0).
    pub warmup: f64,
    /// Per-stack significance of the one-sided trend test (default 0.01).
    pub alpha: f64,
    /// Downsample target: at most this many block medians (default 240, at least 30).
    pub max_points: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            min_rate: 96.0,
            warmup: 0.10,
            alpha: 0.01,
            max_points: 240,
        }
    }
}

/// What a stack's outstanding bytes did over the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significant, material growth that persists to the end, does not slow down markedly and
    /// has not stalled in two or more of the four quarters.
    ContinuousLeak,
    /// A continuous leak by every gate, in a recording attached to a running process (`-p`)
    /// while it freed blocks allocated before the attach at least half as fast as the stack
    /// gained blocks (a budget shared by the stacks): the growth may be new blocks replacing
    /// those (a cache renewing its entries), which the
    /// recorder cannot tell from a leak until the old ones are all gone. Set by the analysis,
    /// not by [`detect`].
    AttachTurnover,
    /// Growth that stopped or levelled off (plateau, stopped leak, one-time step).
    BoundedGrowth,
    /// Still growing, but much slower at the end than at the start (saturating, logarithmic).
    DeceleratingGrowth,
    /// Significant overall growth, but two or more quarters stalled (it grew in one or two).
    InconsistentGrowth,
    /// Significant growth slower than `Config::min_rate`.
    ImmaterialGrowth,
    /// No significant trend.
    Stable,
    /// Significant decrease.
    Shrinking,
    /// Ends at zero outstanding bytes after having held memory.
    Freed,
    /// Too few known points to judge.
    InsufficientData,
}

/// One detector step, as evaluated for one stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// Stable identifier: `eligibility`, `not_freed`, `points`, `trend`, `slope_ci`,
    /// `materiality`, `persistence`, `deceleration`, `consistency`, `shape`.
    pub name: &'static str,
    /// Whether the stack passed it (passing every gate is a continuous leak).
    pub passed: bool,
    /// The numbers behind the decision, e.g. `p = 3.1e-5 < 0.01`.
    pub detail: String,
}

/// The detector's findings for one stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// The class.
    pub verdict: Verdict,
    /// A continuous leak seen on only 12 to 29 usable points (it passed the strict trend test):
    /// true only together with `Verdict::ContinuousLeak`.
    pub suspected: bool,
    /// The seed rule: bytes strictly increase between every pair of consecutive known snapshots
    /// after first appearance (at least two), on the raw series.
    pub strict_monotonic: bool,
    /// Theil-Sen slope of bytes, bytes/s (0 when insufficient).
    pub rate: f64,
    /// 95% CI of the slope, bytes/s.
    pub rate_ci: (f64, f64),
    /// Theil-Sen slope of counts, allocations/s.
    pub count_rate: Option<f64>,
    /// `rate / count_rate` when both are positive, bytes.
    pub mean_object_size: Option<f64>,
    /// Kendall's tau-b of bytes against time.
    pub tau: f64,
    /// One-sided (growth) Mann-Kendall p, autocorrelation-corrected.
    pub p_value: f64,
    /// The tail (last 40%) still grows: its slope is at least 0.3x the larger of the overall
    /// slope and `min_rate`, and its one-sided Mann-Kendall p is below 0.10. Always true for a
    /// continuous leak (the persistence gate).
    pub active_at_end: bool,
    /// Points the statistics ran on (after warm-up and downsampling).
    pub points_used: usize,
    /// The Hamed-Rao variance factor applied to the trend test (>= 1; 1 when not applied).
    pub autocorrelation_factor: f64,
    /// Time of the last point used, seconds.
    pub end_time: f64,
    /// The Theil-Sen line's level at `end_time`, bytes (0 when insufficient).
    pub end_level: f64,
    /// Every gate evaluated, in order; evaluation stops at the first that fails.
    pub gates: Vec<Gate>,
}

impl Detection {
    /// Whether a rate was measured: not below the points a trend needs, where the rate, its
    /// interval, tau and p are unknown (not zero).
    pub fn rate_known(&self) -> bool {
        self.points_used >= MIN_POINTS
    }

    fn insufficient(strict_monotonic: bool) -> Self {
        Self {
            verdict: Verdict::InsufficientData,
            suspected: false,
            strict_monotonic,
            rate: 0.0,
            rate_ci: (0.0, 0.0),
            count_rate: None,
            mean_object_size: None,
            tau: 0.0,
            p_value: 1.0,
            active_at_end: false,
            points_used: 0,
            autocorrelation_factor: 1.0,
            end_time: 0.0,
            end_level: 0.0,
            gates: Vec::new(),
        }
    }

    fn gate(&mut self, name: &'static str, passed: bool, detail: String) -> bool {
        self.gates.push(Gate {
            name,
            passed,
            detail,
        });
        passed
    }
}

/// The default robust detector: the gates of docs/detection.md on bytes; counts are analysed too,
/// for `count_rate`.
pub fn detect(points: &[Point], cfg: &Config) -> Detection {
    let mut d = Detection::insufficient(strict_monotonic(points));
    let Some(first) = first_appearance(points) else {
        d.gate("eligibility", false, "bytes never known".to_string());
        return d;
    };
    let window = &points[first..];
    let known = window.iter().filter(|p| known_bytes(p).is_some()).count();
    let share = known as f64 / window.len() as f64;
    let eligible = d.gate(
        "eligibility",
        share >= MIN_KNOWN_SHARE,
        format!(
            "{known} of {} samples since first appearance known ({:.0}%, need >= {:.0}%)",
            window.len(),
            share * 100.0,
            MIN_KNOWN_SHARE * 100.0
        ),
    );
    if !eligible {
        return d;
    }

    let bytes = prepare(window, |p| p.bytes, cfg);
    let counts = prepare(window, |p| p.count, cfg);
    d.points_used = bytes.t.len();
    if counts.t.len() >= MIN_POINTS {
        d.count_rate = Some(sen_slope(&counts.t, &counts.y));
    }
    let analysis = (bytes.t.len() >= MIN_POINTS).then(|| Analysis::new(&bytes.t, &bytes.y));
    if let Some(a) = &analysis {
        d.rate = a.overall.slope;
        d.rate_ci = a.overall.ci;
        d.tau = a.overall.mk.tau;
        d.p_value = a.overall.mk.p_up;
        d.autocorrelation_factor = a.overall.mk.factor;
        // The persistence condition, against at least the minimum rate.
        d.active_at_end = a.tail.slope > 0.0
            && a.tail.slope >= PERSISTENCE_RATIO * a.overall.slope.max(cfg.min_rate)
            && a.tail.mk.p_up < PERSISTENCE_ALPHA;
        d.end_time = a.end_time;
        d.end_level = a.end_level;
        if let Some(count_rate) = d.count_rate {
            if d.rate > 0.0 && count_rate > 0.0 {
                d.mean_object_size = Some(d.rate / count_rate);
            }
        }
    }

    let last = window.iter().rev().find_map(known_bytes).unwrap_or(0.0);
    let peak = window.iter().filter_map(known_bytes).fold(0.0, f64::max);
    let freed = last == 0.0 && peak > 0.0;
    let detail = if freed {
        format!("ends at 0 B after a peak of {peak:.0} B")
    } else {
        format!("ends at {last:.0} B")
    };
    if !d.gate("not_freed", !freed, detail) {
        d.verdict = Verdict::Freed;
        return d;
    }

    let n = bytes.t.len();
    let mut detail = format!("{n} points used (warm-up dropped {} samples", bytes.dropped);
    if bytes.block > 1 {
        detail.push_str(&format!(", medians of {} points", bytes.block));
    }
    detail.push(')');
    if n < MIN_POINTS {
        detail.push_str(&format!("; need >= {MIN_POINTS}"));
    } else if n < FULL_POINTS {
        detail.push_str(&format!(
            "; fewer than {FULL_POINTS}: a leak is only suspected and needs the strict p"
        ));
    }
    d.gate("points", n >= MIN_POINTS, detail);
    let Some(a) = analysis else {
        return d;
    };
    classify(&mut d, &a, n < FULL_POINTS, cfg);
    d
}

/// Steps 4-10 on a series with enough points.
fn classify(d: &mut Detection, a: &Analysis, small: bool, cfg: &Config) {
    let o = &a.overall;
    let alpha = if small {
        cfg.alpha / STRICT_ALPHA_DIVISOR
    } else {
        cfg.alpha
    };
    let method = if o.mk.exact {
        "exact".to_string()
    } else {
        format!("Hamed-Rao factor {:.2}", o.mk.factor)
    };
    let growing = o.mk.p_up < alpha;
    let alpha_text = fmt_alpha(alpha);
    let detail = format!(
        "S = {:.0}, tau = {:.3}, {method}: p = {} {} {alpha_text}",
        o.mk.s,
        o.mk.tau,
        fmt_p(o.mk.p_up),
        if growing { "<" } else { ">=" },
    );
    if !d.gate("trend", growing, detail) {
        if o.mk.p_down < alpha {
            d.verdict = Verdict::Shrinking;
            if let Some(g) = d.gates.last_mut() {
                g.detail.push_str(&format!(
                    "; decrease p = {} < {alpha_text}",
                    fmt_p(o.mk.p_down)
                ));
            }
        } else if a.head.mk.p_up < cfg.alpha
            && a.head.ci.0 >= 0.0
            && a.head.slope >= cfg.min_rate
            && a.tail.mk.p_up >= cfg.alpha
            && a.rise > PLATEAU_RISE_MADS * a.tail_mad
        {
            // No trend over the whole window, but the first 40% grew materially, the rest did
            // not, and the plateau stands well above the start compared with its own noise
            // (which stationary noise never does): it grew, then stopped (a cache that filled
            // and stayed full). The head's CI may reach 0 when its growth ended within it on an
            // exactly flat plateau (the zero slopes of the plateau's pairs), as memleak logs of
            // a full cache show. At the plain alpha also in a short series: the strict one
            // guards the leak verdict, and an exact test of a short head could never pass it.
            d.verdict = Verdict::BoundedGrowth;
            if let Some(g) = d.gates.last_mut() {
                g.detail.push_str(&format!(
                    "; but the head grew ({:.1} B/s, p = {}) and stopped",
                    a.head.slope,
                    fmt_p(a.head.mk.p_up)
                ));
            }
        } else if small && o.mk.p_up < cfg.alpha {
            // It grew (at the plain alpha), in too few points to say a leak or more: not
            // "stable".
            d.verdict = Verdict::InsufficientData;
            if let Some(g) = d.gates.last_mut() {
                g.detail.push_str(&format!(
                    "; it grew (p = {} < {}), but {FULL_POINTS} points are needed at that \
                     level",
                    fmt_p(o.mk.p_up),
                    fmt_alpha(cfg.alpha)
                ));
            }
        } else {
            d.verdict = Verdict::Stable;
        }
        return;
    }

    let (lo, hi) = o.ci;
    let detail = format!("95% CI [{lo:.1}, {hi:.1}] B/s, lower bound must be > 0");
    if !d.gate("slope_ci", lo > 0.0, detail) {
        // Significant by ranks yet a median pairwise slope that may be zero: the rise came in a
        // few isolated steps between long flats.
        d.verdict = Verdict::BoundedGrowth;
        return;
    }

    let detail = format!(
        "rate {:.1} B/s {} minimum {:.1} B/s",
        o.slope,
        if o.slope >= cfg.min_rate { ">=" } else { "<" },
        cfg.min_rate
    );
    if !d.gate("materiality", o.slope >= cfg.min_rate, detail) {
        d.verdict = Verdict::ImmaterialGrowth;
        return;
    }

    let t = &a.tail;
    let persists = t.slope >= PERSISTENCE_RATIO * o.slope && t.mk.p_up < PERSISTENCE_ALPHA;
    let detail = format!(
        "last {} points: slope {:.1} B/s = {:.2}x overall (need >= {PERSISTENCE_RATIO}), \
         p = {} (need < {PERSISTENCE_ALPHA})",
        t.n,
        t.slope,
        t.slope / o.slope,
        fmt_p(t.mk.p_up)
    );
    if !d.gate("persistence", persists, detail) {
        d.verdict = Verdict::BoundedGrowth;
        return;
    }

    let h = &a.head;
    let after_bend = a.after_bend();
    let slowed = after_bend < HINGE_RATIO * o.slope;
    let decelerating = is_decelerating(h, t) || slowed;
    let detail = format!(
        "head slope {:.1} B/s [{:.1}, {:.1}], tail {:.1} B/s [{:.1}, {:.1}]: tail/head = {:.2} \
         (decelerating when the CIs are disjoint and < {:.2}); two-piece line: {:.1} B/s after \
         the bend = {:.2}x overall (decelerating when < {HINGE_RATIO})",
        h.slope,
        h.ci.0,
        h.ci.1,
        t.slope,
        t.ci.0,
        t.ci.1,
        if h.slope > 0.0 {
            t.slope / h.slope
        } else {
            f64::INFINITY
        },
        DECELERATION_RATIO,
        after_bend,
        after_bend / o.slope,
    );
    if !d.gate("deceleration", !decelerating, detail) {
        d.verdict = Verdict::DeceleratingGrowth;
        return;
    }

    let below = STALLED_RATIO * o.slope;
    let quarters = a.quarters();
    let stalled = quarters.iter().filter(|q| q.ci.1 < below).count();
    let slopes: Vec<String> = quarters
        .iter()
        .map(|q| format!("{:.1} [{:.1}, {:.1}]", q.slope, q.ci.0, q.ci.1))
        .collect();
    let detail = format!(
        "quarter slopes {} B/s: {stalled} of 4 stalled (CI below {STALLED_RATIO}x overall = \
         {below:.1} B/s; at most {MAX_STALLED_QUARTERS} allowed)",
        slopes.join(", ")
    );
    if !d.gate("consistency", stalled <= MAX_STALLED_QUARTERS, detail) {
        d.verdict = Verdict::InconsistentGrowth;
        return;
    }

    let (line_rss, step_rss) = a.line_and_step_rss();
    let linear = line_rss < step_rss;
    let detail = format!(
        "residual sum of squares: straight line {line_rss:.3e} {} one step {step_rss:.3e}",
        if linear { "<" } else { ">=" },
    );
    if !d.gate("shape", linear, detail) {
        // A single jump between two levels explains the series at least as well as steady
        // growth: a one-time allocation burst, not a leak.
        d.verdict = Verdict::BoundedGrowth;
        return;
    }

    d.verdict = Verdict::ContinuousLeak;
    d.suspected = small;
}

/// Step 8: the tail's 95% CI lies wholly below the head's and its slope is below 1/3 of the
/// head's.
fn is_decelerating(head: &Fit, tail: &Fit) -> bool {
    tail.ci.1 < head.ci.0 && tail.slope < DECELERATION_RATIO * head.slope
}

/// The seed rule alone: strictly increasing bytes in every consecutive known snapshot.
pub fn strict_monotonic(points: &[Point]) -> bool {
    let Some(first) = first_appearance(points) else {
        return false;
    };
    let mut known = points[first..].iter().filter_map(known_bytes);
    let Some(mut previous) = known.next() else {
        return false;
    };
    let mut n = 1;
    for y in known {
        if y <= previous {
            return false;
        }
        previous = y;
        n += 1;
    }
    n >= 2
}

/// Benjamini-Hochberg over many stacks' p-values at level q: returns which are discoveries.
/// NaN p-values are never discoveries.
pub fn benjamini_hochberg(p_values: &[f64], q: f64) -> Vec<bool> {
    let m = p_values.len();
    let key = |i: usize| {
        let p = p_values[i];
        if p.is_nan() {
            f64::INFINITY
        } else {
            p
        }
    };
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
    let mut discoveries = 0;
    for (rank, &i) in order.iter().enumerate() {
        if key(i) <= (rank + 1) as f64 * q / m as f64 {
            discoveries = rank + 1;
        }
    }
    let mut out = vec![false; m];
    for &i in &order[..discoveries] {
        out[i] = true;
    }
    out
}

fn known_bytes(p: &Point) -> Option<f64> {
    p.bytes.filter(|b| b.is_finite())
}

/// The first point holding memory (or, if none ever does, the first known point).
fn first_appearance(points: &[Point]) -> Option<usize> {
    points
        .iter()
        .position(|p| known_bytes(p).is_some_and(|b| b > 0.0))
        .or_else(|| points.iter().position(|p| known_bytes(p).is_some()))
}

/// A series after warm-up trimming and downsampling.
struct Prepared {
    t: Vec<f64>,
    y: Vec<f64>,
    /// Snapshots dropped as warm-up.
    dropped: usize,
    /// Points per block median (1: no downsampling).
    block: usize,
}

/// Steps 2 and 3: drop the warm-up snapshots, keep the known values, downsample by block medians.
fn prepare(window: &[Point], value: impl Fn(&Point) -> Option<f64>, cfg: &Config) -> Prepared {
    let dropped = warmup_len(window.len(), cfg.warmup);
    let (t, y): (Vec<f64>, Vec<f64>) = window[dropped..]
        .iter()
        .filter(|p| p.t.is_finite())
        .filter_map(|p| value(p).filter(|v| v.is_finite()).map(|v| (p.t, v)))
        .unzip();
    let block = t.len().div_ceil(cfg.max_points.max(MIN_MAX_POINTS)).max(1);
    if block == 1 {
        return Prepared {
            t,
            y,
            dropped,
            block,
        };
    }
    Prepared {
        t: t.chunks(block).map(median).collect(),
        y: y.chunks(block).map(median).collect(),
        dropped,
        block,
    }
}

/// The most points a series of `snapshots` samples keeps after the warm-up (a stack seen and
/// known in every snapshot; downsampling keeps at least [`MIN_MAX_POINTS`]): below
/// [`MIN_POINTS`], no stack of the recording can have a verdict.
pub fn usable_points(snapshots: usize, cfg: &Config) -> usize {
    snapshots - warmup_len(snapshots, cfg.warmup)
}

fn warmup_len(len: usize, warmup: f64) -> usize {
    if len == 0 || warmup.is_nan() || warmup <= 0.0 {
        return 0;
    }
    // Truncation is the intent: floor of a non-negative share of `len`.
    let k = (warmup.min(1.0) * len as f64).floor() as usize;
    k.clamp(1, len)
}

/// What the gates look at: the fits every stack needs (its rate, CI and trend are reported),
/// computed at once, and what only the later gates use, computed when a stack reaches them (most
/// stop at the trend gate).
struct Analysis<'a> {
    t: &'a [f64],
    y: &'a [f64],
    overall: Fit,
    head: Fit,
    tail: Fit,
    end_time: f64,
    end_level: f64,
    /// Median of the tail minus median of the first tenth: how far the level moved.
    rise: f64,
    /// Median absolute deviation of the tail around its median: its noise.
    tail_mad: f64,
    /// Where the tail starts.
    tail_start: usize,
}

impl<'a> Analysis<'a> {
    fn new(t: &'a [f64], y: &'a [f64]) -> Self {
        let n = t.len();
        let overall = Fit::new(t, y);
        let end_len = ((n as f64 * END_SHARE).round() as usize).clamp(3.min(n), n);
        let head = Fit::new(&t[..end_len], &y[..end_len]);
        let tail = Fit::new(&t[n - end_len..], &y[n - end_len..]);
        let residuals: Vec<f64> = t
            .iter()
            .zip(y)
            .map(|(&ti, &yi)| yi - overall.slope * ti)
            .collect();
        let end_time = t[n - 1];
        let end_level = median(&residuals) + overall.slope * end_time;
        let tail_values = &y[n - end_len..];
        let tail_median = median(tail_values);
        let start = median(&y[..(n / 10).max(3).min(n)]);
        let deviations: Vec<f64> = tail_values
            .iter()
            .map(|v| (v - tail_median).abs())
            .collect();
        let rise = tail_median - start;
        let tail_mad = median(&deviations);
        Self {
            t,
            y,
            overall,
            head,
            tail,
            end_time,
            end_level,
            rise,
            tail_mad,
            tail_start: n - end_len,
        }
    }

    /// Theil-Sen fits of the four quarters.
    fn quarters(&self) -> [Fit; 4] {
        let n = self.t.len();
        std::array::from_fn(|k| {
            let (from, to) = (k * n / 4, (k + 1) * n / 4);
            Fit::new(&self.t[from..to], &self.y[from..to])
        })
    }

    /// The slope after the start of the tail in a continuous two-piece line fitted to the whole
    /// window.
    fn after_bend(&self) -> f64 {
        slope_after_bend(self.t, self.y, self.t[self.tail_start])
    }

    /// Residual sum of squares of the least-squares line, and of the best single mean shift.
    fn line_and_step_rss(&self) -> (f64, f64) {
        line_and_step_rss(self.t, self.y)
    }
}

/// The residual sums of squares of the least-squares line through `(t, y)` and of the best
/// two-level step (one mean before a change point, another after).
fn line_and_step_rss(t: &[f64], y: &[f64]) -> (f64, f64) {
    let n = t.len() as f64;
    let (mt, my) = (t.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (&ti, &yi) in t.iter().zip(y) {
        sxx += (ti - mt) * (ti - mt);
        sxy += (ti - mt) * (yi - my);
        syy += (yi - my) * (yi - my);
    }
    let line = if sxx > 0.0 {
        syy - sxy * sxy / sxx
    } else {
        syy
    };
    // Two means: RSS = syy - (gain of splitting), computed from prefix sums.
    let total: f64 = y.iter().map(|v| v - my).sum();
    let mut best = syy;
    let mut left = 0.0;
    for (k, v) in y.iter().enumerate().take(y.len().saturating_sub(1)) {
        left += v - my;
        let nl = (k + 1) as f64;
        let nr = n - nl;
        let right = total - left;
        let rss = syy - left * left / nl - right * right / nr;
        best = best.min(rss);
    }
    (line.max(0.0), best.max(0.0))
}

/// The slope after `knot` of the least-squares fit of `y = a + b t + c max(0, t - knot)`, a
/// line that may bend at `knot` but not jump (`b + c`; 0 when the fit is degenerate). Unlike a
/// line fitted to the tail alone, it is anchored by everything before the knot.
fn slope_after_bend(t: &[f64], y: &[f64], knot: f64) -> f64 {
    let n = t.len() as f64;
    let mean_t = t.iter().sum::<f64>() / n;
    // Design columns: 1, t - mean_t, max(0, t - knot).
    let mut xtx = [[0.0; 3]; 3];
    let mut xty = [0.0; 3];
    for (&ti, &yi) in t.iter().zip(y) {
        let x = [1.0, ti - mean_t, (ti - knot).max(0.0)];
        for r in 0..3 {
            for c in 0..3 {
                xtx[r][c] += x[r] * x[c];
            }
            xty[r] += x[r] * yi;
        }
    }
    let Some(inv) = invert3(&xtx) else {
        return 0.0;
    };
    let coef = |r: usize| -> f64 { (0..3).map(|c| inv[r][c] * xty[c]).sum() };
    coef(1) + coef(2)
}

/// The inverse of a symmetric 3x3 matrix, if it is not singular.
fn invert3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let c =
        |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let cof = [
        [c(1, 2, 1, 2), -c(1, 2, 0, 2), c(1, 2, 0, 1)],
        [-c(0, 2, 1, 2), c(0, 2, 0, 2), -c(0, 2, 0, 1)],
        [c(0, 1, 1, 2), -c(0, 1, 0, 2), c(0, 1, 0, 1)],
    ];
    let det = m[0][0] * cof[0][0] + m[0][1] * cof[0][1] + m[0][2] * cof[0][2];
    if !det.is_finite() || det.abs() < f64::MIN_POSITIVE {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for r in 0..3 {
        for col in 0..3 {
            inv[r][col] = cof[col][r] / det;
        }
    }
    Some(inv)
}

/// Theil-Sen slope, its 95% CI and the Mann-Kendall test of one (sub-)series.
struct Fit {
    n: usize,
    slope: f64,
    ci: (f64, f64),
    mk: MannKendall,
}

impl Fit {
    fn new(t: &[f64], y: &[f64]) -> Self {
        let mut slopes = pairwise_slopes(t, y);
        let slope = median_in_place(&mut slopes);
        let mk = mann_kendall(t, y, slope);
        let ci = sen_ci(&mut slopes, mk.var_s * mk.factor);
        Self {
            n: t.len(),
            slope,
            ci,
            mk,
        }
    }
}

/// One-sided Mann-Kendall test.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MannKendall {
    /// S = sum over i < j of sgn(y_j - y_i).
    s: f64,
    /// Var(S) under independence, tie-corrected.
    var_s: f64,
    /// Hamed-Rao variance factor (1 when not applied).
    factor: f64,
    /// P(S >= observed) under no trend: evidence of growth.
    p_up: f64,
    /// P(S <= observed) under no trend: evidence of decrease.
    p_down: f64,
    /// Kendall's tau-b.
    tau: f64,
    /// The p-values come from the exact distribution (n <= 10, no ties).
    exact: bool,
}

/// Mann-Kendall on `y` in order; `slope` (Theil-Sen, per unit of `t`) detrends for Hamed-Rao.
fn mann_kendall(t: &[f64], y: &[f64], slope: f64) -> MannKendall {
    let n = y.len();
    let s = kendall_s(y);
    let ties = tie_sizes(y);
    let var_s = mk_variance(n, &ties);
    let pairs = (n * n.saturating_sub(1) / 2) as f64;
    let tied_pairs: f64 = ties.iter().map(|&k| (k * (k - 1) / 2) as f64).sum();
    let denominator = (pairs * (pairs - tied_pairs)).sqrt();
    let tau = if denominator > 0.0 {
        s / denominator
    } else {
        0.0
    };
    if n <= EXACT_MAX_N && ties.is_empty() && n >= 2 {
        return MannKendall {
            s,
            var_s,
            factor: 1.0,
            p_up: exact_upper_tail(n, s),
            p_down: exact_upper_tail(n, -s),
            tau,
            exact: true,
        };
    }
    let factor = if n > EXACT_MAX_N {
        hamed_rao_factor(t, y, slope)
    } else {
        1.0
    };
    let z = mk_z(s, var_s * factor);
    MannKendall {
        s,
        var_s,
        factor,
        p_up: upper_tail(z),
        p_down: upper_tail(-z),
        tau,
        exact: false,
    }
}

fn kendall_s(y: &[f64]) -> f64 {
    let mut s: i64 = 0;
    for (i, &a) in y.iter().enumerate() {
        for &b in &y[i + 1..] {
            s += match b.total_cmp(&a) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    s as f64
}

/// Sizes of the groups of equal values (only groups of two or more).
fn tie_sizes(y: &[f64]) -> Vec<usize> {
    let mut sorted = y.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut sizes = Vec::new();
    let mut run = 1;
    for w in sorted.windows(2) {
        if w[0] == w[1] {
            run += 1;
        } else {
            if run > 1 {
                sizes.push(run);
            }
            run = 1;
        }
    }
    if run > 1 {
        sizes.push(run);
    }
    sizes
}

/// Var(S) = [n(n-1)(2n+5) - sum t(t-1)(2t+5)] / 18.
fn mk_variance(n: usize, ties: &[usize]) -> f64 {
    let term = |k: usize| {
        let k = k as f64;
        k * (k - 1.0) * (2.0 * k + 5.0)
    };
    (term(n) - ties.iter().map(|&k| term(k)).sum::<f64>()) / 18.0
}

/// The continuity-corrected normal score of S.
fn mk_z(s: f64, var: f64) -> f64 {
    if var <= 0.0 || s == 0.0 {
        0.0
    } else if s > 0.0 {
        (s - 1.0) / var.sqrt()
    } else {
        (s + 1.0) / var.sqrt()
    }
}

/// P(S >= s) for n untied values in random order. S = N - 2 * inversions, and the number of
/// permutations with k inversions is the Mahonian number I(n, k).
fn exact_upper_tail(n: usize, s: f64) -> f64 {
    let pairs = n * (n - 1) / 2;
    let mut counts = vec![0.0f64; pairs + 1];
    counts[0] = 1.0;
    for m in 2..=n {
        let mut next = vec![0.0f64; pairs + 1];
        for (k, &c) in counts.iter().enumerate() {
            if c == 0.0 {
                continue;
            }
            for j in 0..m {
                if k + j <= pairs {
                    next[k + j] += c;
                }
            }
        }
        counts = next;
    }
    let total: f64 = counts.iter().sum();
    // S >= s  <=>  inversions <= (N - s) / 2.
    let limit = (pairs as f64 - s) / 2.0;
    if limit < 0.0 {
        return 0.0;
    }
    let mut tail = 0.0;
    for (k, &c) in counts.iter().enumerate() {
        if k as f64 <= limit {
            tail += c;
        }
    }
    tail / total
}

/// Hamed and Rao (1998): the ratio n/n* by which autocorrelation inflates Var(S). The series is
/// detrended with the Theil-Sen slope, its residuals ranked, and only the lags whose rank
/// autocorrelation is significantly positive at 5% (rho > 1.96 / sqrt(n)) contribute: the
/// negative sample autocorrelations of a persistent series at middle lags are mostly an artefact
/// of removing the mean, and counting them shrinks the correction (docs/detection.md). Never
/// below 1.
fn hamed_rao_factor(t: &[f64], y: &[f64], slope: f64) -> f64 {
    let n = y.len();
    if n < 3 {
        return 1.0;
    }
    let residuals: Vec<f64> = t.iter().zip(y).map(|(&ti, &yi)| yi - slope * ti).collect();
    // Residuals of an exact line differ only by rounding: equal within this tolerance.
    let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()))
        + t.iter().fold(0.0f64, |m, v| m.max((slope * v).abs()));
    let ranks = average_ranks(&residuals, scale * 1e-9);
    let mean = (n as f64 + 1.0) / 2.0;
    let centred: Vec<f64> = ranks.iter().map(|r| r - mean).collect();
    let denominator: f64 = centred.iter().map(|c| c * c).sum();
    if denominator <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let bound = Z_975 / nf.sqrt();
    let mut sum = 0.0;
    for lag in 1..n - 2 {
        let rho: f64 = centred
            .iter()
            .zip(&centred[lag..])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / denominator;
        if rho > bound {
            let m = (n - lag) as f64;
            sum += m * (m - 1.0) * (m - 2.0) * rho;
        }
    }
    (1.0 + 2.0 / (nf * (nf - 1.0) * (nf - 2.0)) * sum).max(1.0)
}

/// Ranks 1..=n, values within `tolerance` of their neighbour in sorted order sharing the
/// average rank of their group.
fn average_ranks(values: &[f64], tolerance: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] - values[order[end - 1]] <= tolerance {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// All slopes (y_j - y_i) / (t_j - t_i), i < j, t_j != t_i, in no particular order, as
/// [`order_key`]s (for selection).
fn pairwise_slopes(t: &[f64], y: &[f64]) -> Vec<i64> {
    let mut slopes = Vec::with_capacity(t.len() * t.len().saturating_sub(1) / 2);
    for (i, (&ti, &yi)) in t.iter().zip(y).enumerate() {
        let (t, y) = (&t[i + 1..], &y[i + 1..y.len().min(t.len())]);
        if t.iter().all(|&tj| tj - ti != 0.0) {
            // The usual case (no tied times): a loop without branches, which vectorizes.
            slopes.extend(
                t.iter()
                    .zip(y)
                    .map(|(&tj, &yj)| order_key((yj - yi) / (tj - ti))),
            );
        } else {
            for (&tj, &yj) in t.iter().zip(y) {
                let dt = tj - ti;
                if dt != 0.0 {
                    slopes.push(order_key((yj - yi) / dt));
                }
            }
        }
    }
    slopes
}

/// The Theil-Sen slope: the median of the pairwise slopes (0 without any pair).
fn sen_slope(t: &[f64], y: &[f64]) -> f64 {
    median_in_place(&mut pairwise_slopes(t, y))
}

/// The rank-based 95% CI of the Theil-Sen slope (Gilbert 1987): with N slopes and
/// C = z_0.975 * sqrt(Var(S)), the order statistics round((N - C) / 2) and round((N + C) / 2) + 1.
/// `slopes` must be as `median_in_place` leaves them (partitioned at N / 2): each bound is
/// selected on its side only.
fn sen_ci(slopes: &mut [i64], var_s: f64) -> (f64, f64) {
    let n = slopes.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let c = Z_975 * var_s.max(0.0).sqrt();
    let nf = n as f64;
    // 1-based ranks, clamped to the slopes there are.
    let rank = |r: f64| r.round().clamp(1.0, nf) as usize - 1;
    let lower = select_beside(slopes, n / 2, rank((nf - c) / 2.0));
    let upper = select_beside(slopes, n / 2, rank((nf + c) / 2.0 + 1.0));
    (lower, upper)
}

/// The k-th smallest (0-based) of `values`, which `select` has partitioned at `pivot` (nothing
/// larger before it, nothing smaller after it): only the side holding rank k is searched, and
/// it stays on its side, so the partition holds for the next call.
fn select_beside(values: &mut [i64], pivot: usize, k: usize) -> f64 {
    match k.cmp(&pivot) {
        std::cmp::Ordering::Less => select(&mut values[..pivot], k),
        std::cmp::Ordering::Equal => from_order_key(values[pivot]),
        std::cmp::Ordering::Greater => select(&mut values[pivot + 1..], k - pivot - 1),
    }
}

/// `f64::total_cmp`'s order as integers: `order_key(a) < order_key(b)` exactly when `a` is
/// before `b`. Selecting on these plain integers gives the same order statistics as selecting
/// the floats with `total_cmp`, about twice as fast (the selection is most of the detector).
fn order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    // The bit flip of `f64::total_cmp`: negative values count down. It is its own inverse.
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// The value of an [`order_key`].
fn from_order_key(key: i64) -> f64 {
    f64::from_bits((key ^ (((key >> 63) as u64) >> 1) as i64) as u64)
}

/// The k-th smallest (0-based) of `values` (order keys), which are reordered: O(n), where
/// sorting the 28,680 slopes of 240 points would dominate the detector's time.
fn select(values: &mut [i64], k: usize) -> f64 {
    from_order_key(*values.select_nth_unstable(k).1)
}

/// The median of `values` (order keys), which are reordered (0 when empty).
fn median_in_place(values: &mut [i64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let upper = select(values, n / 2);
    if n % 2 == 1 {
        return upper;
    }
    // After the selection the lower half holds the n/2 smallest: the lower middle is its maximum.
    let lower = values[..n / 2]
        .iter()
        .copied()
        .max()
        .map_or(upper, from_order_key);
    (lower + upper) / 2.0
}

/// The median of `values` (0 when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    median_in_place(&mut values.iter().copied().map(order_key).collect::<Vec<_>>())
}

/// erfc(x) by the Chebyshev fit of Numerical Recipes (`erfcc`), fractional error < 1.2e-7.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// 1 - Phi(z), accurate in the far tail.
fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// A significance level as given (`0.01`), or in scientific notation when small (`1e-13`, not
/// `0.0000000000001`).
fn fmt_alpha(alpha: f64) -> String {
    if alpha >= 1e-3 {
        format!("{alpha}")
    } else {
        format!("{alpha:e}")
    }
}

fn fmt_p(p: f64) -> String {
    if p == 0.0 || p >= 1e-3 {
        format!("{p:.4}")
    } else {
        format!("{p:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // splitmix64 with Box-Muller normals and Poisson by multiplication (means below 10 here).
    use crate::corpus::Rng;

    /// Snapshot interval of the synthetic series, seconds.
    const STEP: f64 = 5.0;
    /// A base level well above zero, so that noise never clamps at 0.
    const BASE: f64 = 64.0 * 1024.0 * 1024.0;

    /// `n` snapshots every 5 s; bytes = f(t) rounded and clamped at 0; counts = bytes / 64.
    fn series(n: usize, mut f: impl FnMut(f64) -> f64) -> Vec<Point> {
        (0..n)
            .map(|i| {
                let t = i as f64 * STEP;
                let b = f(t).max(0.0).round();
                Point {
                    t,
                    bytes: Some(b),
                    count: Some((b / 64.0).round()),
                }
            })
            .collect()
    }

    /// Phi(z), the standard normal CDF.
    fn normal_cdf(z: f64) -> f64 {
        0.5 * erfc(-z / std::f64::consts::SQRT_2)
    }

    fn linear(n: usize, rate: f64, sigma: f64, seed: u64) -> Vec<Point> {
        let mut rng = Rng::new(seed);
        series(n, |t| BASE + rate * t + sigma * rng.normal())
    }

    fn ar1(n: usize, phi: f64, sigma: f64, seed: u64) -> Vec<Point> {
        let mut rng = Rng::new(seed);
        let mut x = 0.0;
        series(n, |_| {
            x = phi * x + sigma * rng.normal();
            BASE + x
        })
    }

    fn random_walk(n: usize, sigma: f64, seed: u64) -> Vec<Point> {
        let mut rng = Rng::new(seed);
        let mut x = BASE;
        series(n, |_| {
            x += sigma * rng.normal();
            x
        })
    }

    /// Compound Poisson steps: per interval Poisson(lambda) allocations of `size` bytes, never
    /// freed; exact flats between them.
    fn bursty(n: usize, lambda: f64, size: f64, sigma: f64, seed: u64) -> Vec<Point> {
        let mut rng = Rng::new(seed);
        let mut x = BASE;
        series(n, |_| {
            x += size * rng.poisson(lambda) as f64;
            x + sigma * rng.normal()
        })
    }

    fn capped(n: usize, rate: f64, cap_at: f64, sigma: f64, seed: u64) -> Vec<Point> {
        let mut rng = Rng::new(seed);
        series(n, |t| BASE + rate * t.min(cap_at) + sigma * rng.normal())
    }

    fn logarithmic(n: usize, amplitude: f64, tau: f64, sigma: f64, seed: u64) -> Vec<Point> {
        let mut rng = Rng::new(seed);
        series(n, |t| {
            BASE + amplitude * (1.0 + t / tau).ln() + sigma * rng.normal()
        })
    }

    fn sawtooth(n: usize, rate: f64, amplitude: f64, period: f64, seed: u64) -> Vec<Point> {
        let mut rng = Rng::new(seed);
        let phase = rng.uniform() * period;
        series(n, |t| {
            BASE + rate * t
                + amplitude * ((t + phase) / period).fract()
                + 0.01 * amplitude * rng.normal()
        })
    }

    /// A cache warming up: approaches `size` with time constant `tau`.
    fn saturating(n: usize, size: f64, tau: f64, sigma: f64, seed: u64) -> Vec<Point> {
        let mut rng = Rng::new(seed);
        series(n, |t| {
            BASE + size * (1.0 - (-t / tau).exp()) + sigma * rng.normal()
        })
    }

    fn names(d: &Detection) -> Vec<(&'static str, bool)> {
        d.gates.iter().map(|g| (g.name, g.passed)).collect()
    }

    /// The gate that decided a verdict: the last one evaluated, which failed.
    fn failed_gate(d: &Detection) -> &'static str {
        match d.gates.last() {
            Some(g) if !g.passed => g.name,
            _ => "none",
        }
    }

    const ALL_GATES: [&str; 10] = [
        "eligibility",
        "not_freed",
        "points",
        "trend",
        "slope_ci",
        "materiality",
        "persistence",
        "deceleration",
        "consistency",
        "shape",
    ];

    // ---- statistics ----

    #[test]
    fn erfc_and_normal_cdf_match_tables() {
        // (x, erfc(x)) to 16 digits.
        let table = [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_1),
            (2.0, 0.004_677_734_981_047_265),
            (3.0, 2.209_049_699_858_544e-5),
            (-1.0, 1.842_700_792_949_715),
        ];
        for (x, want) in table {
            let got = erfc(x);
            assert!(
                ((got - want) / want).abs() < 1.2e-7,
                "erfc({x}) = {got}, want {want}"
            );
        }
        assert!((normal_cdf(1.96) - 0.975_002_104_851_779_5).abs() < 1e-7);
        assert!((normal_cdf(-1.96) - 0.024_997_895_148_220_435).abs() < 1e-7);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        let tail = upper_tail(3.0);
        assert!(((tail - 0.001_349_898_031_630_103_5) / tail).abs() < 1.2e-7);
        assert!((normal_cdf(Z_975) - 0.975).abs() < 1e-7);
    }

    #[test]
    fn mann_kendall_small_example_with_ties() {
        // Pairs of [1, 2, 2, 3, 1]: from 1: +1 +1 +1 0; from 2: 0 +1 -1; from 2: +1 -1;
        // from 3: -1. S = 3 + 0 + 0 - 1 = 2. Two tie groups of 2:
        // Var = (5*4*15 - 2*(2*1*9)) / 18 = 264 / 18.
        let y = [1.0, 2.0, 2.0, 3.0, 1.0];
        assert_eq!(kendall_s(&y), 2.0);
        assert_eq!(tie_sizes(&y), vec![2, 2]);
        assert!((mk_variance(5, &tie_sizes(&y)) - 264.0 / 18.0).abs() < 1e-12);
        // tau-b = S / sqrt(N0 (N0 - N1)) = 2 / sqrt(10 * 8).
        let mk = mann_kendall(&[0.0, 1.0, 2.0, 3.0, 4.0], &y, 0.0);
        assert!((mk.tau - 2.0 / 80f64.sqrt()).abs() < 1e-12);
        assert!(!mk.exact, "ties: normal approximation");

        // Digits of pi: S = 25; ties 1 x2, 3 x2, 5 x3:
        // Var = (12*11*29 - 18 - 18 - 66) / 18 = 207; Z = 24 / sqrt(207).
        let y = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0];
        assert_eq!(kendall_s(&y), 25.0);
        assert_eq!(tie_sizes(&y), vec![2, 2, 3]);
        assert_eq!(mk_variance(12, &tie_sizes(&y)), 207.0);
        let z = mk_z(25.0, 207.0);
        assert!((z - 24.0 / 207f64.sqrt()).abs() < 1e-12);
        assert!((upper_tail(z) - 0.047_646_419_011_728_34).abs() < 1e-7);
        assert_eq!(mk_z(-25.0, 207.0), -z);
        assert_eq!(mk_z(0.0, 207.0), 0.0);
    }

    #[test]
    fn kendall_s_counts_in_total_cmp_order() {
        let y = [
            3.0,
            -0.0,
            0.0,
            f64::NAN,
            1.5,
            f64::NEG_INFINITY,
            3.0,
            -f64::NAN,
            f64::INFINITY,
            0.0,
            -2.5,
        ];
        let mut expected = 0i64;
        for i in 0..y.len() {
            for j in i + 1..y.len() {
                expected += y[j].total_cmp(&y[i]) as i64;
            }
        }
        assert_eq!(kendall_s(&y), expected as f64);
        // -0 before +0, and two equal values, as total_cmp counts them.
        assert_eq!(kendall_s(&[0.0, -0.0]), -1.0);
        assert_eq!(kendall_s(&[-0.0, 0.0, 0.0]), 2.0);
    }

    #[test]
    fn mann_kendall_exact_distribution_for_small_n() {
        // n = 3: S = 3, 1, -1, -3 in 1, 2, 2, 1 of the 6 orders.
        assert!((exact_upper_tail(3, 1.0) - 0.5).abs() < 1e-15);
        assert!((exact_upper_tail(3, 3.0) - 1.0 / 6.0).abs() < 1e-15);
        // n = 4: S = 6 only in order; S >= 4 with at most one inversion: 1 + 3 orders.
        assert!((exact_upper_tail(4, 6.0) - 1.0 / 24.0).abs() < 1e-15);
        assert!((exact_upper_tail(4, 4.0) - 4.0 / 24.0).abs() < 1e-15);
        assert!((exact_upper_tail(4, -6.0) - 1.0).abs() < 1e-15);
        assert!((exact_upper_tail(10, 45.0) - 1.0 / 3_628_800.0).abs() < 1e-18);
        let t: Vec<f64> = (0..5).map(f64::from).collect();
        let mk = mann_kendall(&t, &[1.0, 2.0, 3.0, 4.0, 5.0], 1.0);
        assert!(mk.exact);
        assert!((mk.p_up - 1.0 / 120.0).abs() < 1e-15);
        assert!((mk.p_down - 1.0).abs() < 1e-15);
        assert_eq!(mk.factor, 1.0);
    }

    #[test]
    fn theil_sen_on_an_exact_line_and_its_rank_ci() {
        let t: Vec<f64> = (0..20).map(|i| 5.0 * f64::from(i)).collect();
        let mut y: Vec<f64> = t.iter().map(|t| 7.0 + 2.5 * t).collect();
        let fit = Fit::new(&t, &y);
        assert_eq!(fit.slope, 2.5);
        assert_eq!(fit.ci, (2.5, 2.5));
        assert_eq!(fit.mk.factor, 1.0, "residuals of a line are all tied");
        // One wild outlier moves 19 of 190 slopes: the median stays.
        y[7] += 1e9;
        assert_eq!(sen_slope(&t, &y), 2.5);
        // Rank CI: N = 10 slopes 1..=10 and C = 4 pick the 3rd and the 8th.
        let mut slopes: Vec<i64> = (1..=10).rev().map(|v| order_key(f64::from(v))).collect();
        assert_eq!(median_in_place(&mut slopes), 5.5);
        let var = (4.0 / Z_975).powi(2);
        assert_eq!(sen_ci(&mut slopes, var), (3.0, 8.0));
        assert_eq!(
            sen_ci(&mut slopes, 1e12),
            (1.0, 10.0),
            "clamped to the slopes there are"
        );
    }

    #[test]
    fn medians_by_selection() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[5.0, 5.0, 1.0, 9.0, 5.0, 5.0]), 5.0);
        assert_eq!(median(&[]), 0.0);
        let mut v = [9.0, 7.0, 8.0, 1.0].map(order_key);
        assert_eq!(select(&mut v, 0), 1.0);
        assert_eq!(select(&mut v, 3), 9.0);
    }

    #[test]
    fn order_keys_sort_as_total_cmp_and_round_trip() {
        let mut values = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            2.5,
            1e300,
            f64::INFINITY,
            f64::NAN,
            -f64::NAN,
        ];
        for &v in &values {
            assert_eq!(from_order_key(order_key(v)).to_bits(), v.to_bits());
        }
        let mut keys = values.map(order_key);
        keys.sort_unstable();
        values.sort_unstable_by(f64::total_cmp);
        assert_eq!(
            keys.map(|k| from_order_key(k).to_bits()),
            values.map(f64::to_bits)
        );
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 30.0], 0.0),
            vec![1.5, 3.0, 1.5, 4.0]
        );
        assert_eq!(
            average_ranks(&[1.0, 1.0 + 1e-12, 5.0], 1e-9),
            vec![1.5, 1.5, 3.0]
        );
    }

    #[test]
    fn hamed_rao_factor_grows_with_persistence() {
        let t: Vec<f64> = (0..300).map(f64::from).collect();
        let line: Vec<f64> = t.iter().map(|t| 100.0 + 3.0 * t).collect();
        assert_eq!(hamed_rao_factor(&t, &line, 3.0), 1.0);
        let mut rng = Rng::new(7);
        let white: Vec<f64> = t.iter().map(|_| rng.normal()).collect();
        let f_white = hamed_rao_factor(&t, &white, 0.0);
        let mut x = 0.0;
        let ar: Vec<f64> = t
            .iter()
            .map(|_| {
                x = 0.9 * x + rng.normal();
                x
            })
            .collect();
        let f_ar = hamed_rao_factor(&t, &ar, sen_slope(&t, &ar));
        assert!(
            (1.0..1.5).contains(&f_white),
            "white noise factor {f_white}"
        );
        assert!(f_ar > 4.0, "AR(1) 0.9 factor {f_ar}");
    }

    #[test]
    fn deceleration_needs_disjoint_cis_and_a_third() {
        let fit = |slope, ci| Fit {
            n: 96,
            slope,
            ci,
            mk: mann_kendall(&[0.0, 1.0], &[0.0, 1.0], 1.0),
        };
        let head = fit(300.0, (250.0, 350.0));
        assert!(is_decelerating(&head, &fit(90.0, (60.0, 120.0))));
        assert!(
            !is_decelerating(&head, &fit(90.0, (20.0, 260.0))),
            "CIs overlap"
        );
        assert!(
            !is_decelerating(&head, &fit(110.0, (90.0, 130.0))),
            "more than a third"
        );
    }

    #[test]
    fn benjamini_hochberg_textbook_example() {
        // Benjamini & Hochberg (1995), section 4: 15 p-values, q = 0.05: the four smallest are
        // discoveries (0.0095 <= 4/15 * 0.05; 0.0201 > 5/15 * 0.05, and so on up).
        let p = [
            0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262,
            0.5719, 0.6528, 0.7590, 1.0000,
        ];
        let found = benjamini_hochberg(&p, 0.05);
        let want: Vec<bool> = (0..15).map(|i| i < 4).collect();
        assert_eq!(found, want);
        // Order does not matter; NaN is never a discovery.
        let mut reversed = p.to_vec();
        reversed.reverse();
        let mut want_reversed = want.clone();
        want_reversed.reverse();
        assert_eq!(benjamini_hochberg(&reversed, 0.05), want_reversed);
        assert_eq!(
            benjamini_hochberg(&[f64::NAN, 0.001], 0.05),
            vec![false, true]
        );
        assert!(benjamini_hochberg(&[], 0.05).is_empty());
        // Step-up: a p above its own line is still found when a later one passes.
        assert_eq!(benjamini_hochberg(&[0.03, 0.04], 0.05), vec![true, true]);
    }

    // ---- the seed rule ----

    #[test]
    fn strict_monotonic_rule() {
        let pts = |v: &[Option<f64>]| -> Vec<Point> {
            v.iter()
                .enumerate()
                .map(|(i, &bytes)| Point {
                    t: i as f64,
                    bytes,
                    count: None,
                })
                .collect()
        };
        let cases: [(&[Option<f64>], bool); 8] = [
            (&[Some(1.0), Some(2.0), Some(3.0)], true),
            (&[Some(1.0), Some(2.0), Some(2.0), Some(3.0)], false),
            (&[Some(1.0), None, Some(2.0), None, Some(3.0)], true),
            (&[Some(3.0), None, Some(2.0)], false),
            (&[None, Some(0.0), Some(0.0), Some(5.0), Some(6.0)], true),
            (&[Some(5.0)], false),
            (&[None, None], false),
            (&[Some(1.0), Some(f64::NAN), Some(2.0)], true),
        ];
        for (series, want) in cases {
            assert_eq!(strict_monotonic(&pts(series)), want, "{series:?}");
        }
    }

    // ---- the classes ----

    #[test]
    fn steady_linear_leak_is_a_continuous_leak_with_the_true_rate_in_its_ci() {
        let rate = 1000.0;
        let window = 360.0 * STEP;
        let mut covered = 0;
        for (snr, seeds) in [(20.0, 0..20u64), (5.0, 100..120)] {
            for seed in seeds {
                let d = detect(
                    &linear(360, rate, rate * window / snr, seed),
                    &Config::default(),
                );
                assert_eq!(d.verdict, Verdict::ContinuousLeak, "snr {snr} seed {seed}");
                assert!(!d.suspected);
                assert!(d.active_at_end);
                assert_eq!(
                    names(&d),
                    ALL_GATES.iter().map(|&g| (g, true)).collect::<Vec<_>>()
                );
                assert!(d.p_value < 1e-6, "p {}", d.p_value);
                // counts are bytes / 64: 64-byte objects.
                let size = d.mean_object_size.unwrap_or(0.0);
                assert!((size - 64.0).abs() < 4.0, "object size {size}");
                if d.rate_ci.0 <= rate && rate <= d.rate_ci.1 {
                    covered += 1;
                }
            }
        }
        // A 95% interval: 40 trials, at least 36 cover.
        assert!(
            covered >= 36,
            "the CI covered the true rate {covered} of 40 times"
        );
    }

    #[test]
    fn slow_leak_below_the_minimum_rate_is_immaterial() {
        for seed in 0..10 {
            let d = detect(&linear(720, 20.0, 2000.0, seed), &Config::default());
            assert_eq!(d.verdict, Verdict::ImmaterialGrowth, "seed {seed}");
            assert_eq!(failed_gate(&d), "materiality");
            assert!((10.0..30.0).contains(&d.rate), "rate {}", d.rate);
        }
        // The same leak is material against a lower minimum.
        let cfg = Config {
            min_rate: 5.0,
            ..Config::default()
        };
        assert_eq!(
            detect(&linear(720, 20.0, 2000.0, 0), &cfg).verdict,
            Verdict::ContinuousLeak
        );
    }

    #[test]
    fn sixty_four_bytes_per_interval_is_immaterial_and_strictly_monotonic() {
        for n in [13, 20, 29, 31, 100, 360, 720, 2880] {
            let points = series(n, |t| 4096.0 + 64.0 * t / STEP);
            let d = detect(&points, &Config::default());
            assert_eq!(d.verdict, Verdict::ImmaterialGrowth, "n = {n}");
            assert!(d.strict_monotonic, "n = {n}");
            assert!(strict_monotonic(&points));
            assert!((d.rate - 12.8).abs() < 1e-9, "n = {n}: rate {}", d.rate);
            assert_eq!(d.rate_ci.0, d.rate_ci.1);
        }
    }

    #[test]
    fn cache_fill_to_a_cap_is_bounded() {
        let window = 360.0 * STEP;
        for seed in 0..10 {
            let fill = capped(360, 4000.0, 0.6 * window, 16384.0, seed);
            let d = detect(&fill, &Config::default());
            assert_eq!(
                d.verdict,
                Verdict::BoundedGrowth,
                "linear fill, seed {seed}"
            );
            assert_eq!(failed_gate(&d), "persistence");
            assert!(!d.active_at_end);
            let warm = saturating(360, 1024.0 * 1024.0, 0.15 * window, 4096.0, seed);
            let d = detect(&warm, &Config::default());
            assert_eq!(
                d.verdict,
                Verdict::BoundedGrowth,
                "cache warm-up, seed {seed}"
            );
            assert_eq!(failed_gate(&d), "persistence");
        }
    }

    /// The cache of fixtures/memleak/bcc.log: 16 intervals of growth to 50.8 KB, then 44 flat
    /// ones (the plateau's persistence inflates the trend test's variance 7-fold, so the
    /// whole-window test fails). It grew, then stopped: bounded growth, not "stable".
    #[test]
    fn a_cache_that_filled_early_and_stayed_full_is_bounded() {
        let points: Vec<Point> = (0..60)
            .map(|k| Point {
                t: 5.0 * k as f64,
                bytes: Some(if k < 16 {
                    800.0 + 10000.0 * k as f64 / 3.0
                } else {
                    50800.0
                }),
                count: Some(1.0),
            })
            .collect();
        let d = detect(&points, &Config::default());
        assert_eq!(d.verdict, Verdict::BoundedGrowth, "{:#?}", d.gates);
    }

    #[test]
    fn leak_that_stops_mid_run_is_bounded() {
        let window = 360.0 * STEP;
        for seed in 0..20 {
            let d = detect(
                &capped(360, 4000.0, 0.7 * window, 16384.0, seed),
                &Config::default(),
            );
            assert_eq!(d.verdict, Verdict::BoundedGrowth, "seed {seed}");
            // The tail failed persistence, or (a long plateau) the whole-window trend failed
            // while the head grew.
            assert!(
                ["persistence", "trend"].contains(&failed_gate(&d)),
                "seed {seed}"
            );
        }
        // Stopping at half-time leaves one rise and one plateau: by the autocorrelation-corrected
        // trend test that is sometimes no trend over the whole window, but then the head grew
        // and the plateau stands above the start: bounded growth, never a leak.
        let mut bounded = 0;
        for seed in 0..50 {
            let d = detect(
                &capped(360, 4000.0, 0.5 * window, 16384.0, seed),
                &Config::default(),
            );
            match d.verdict {
                Verdict::BoundedGrowth => {
                    assert!(
                        ["persistence", "trend"].contains(&failed_gate(&d)),
                        "seed {seed}"
                    );
                    bounded += 1;
                }
                Verdict::Stable => {
                    assert_eq!(failed_gate(&d), "trend");
                    assert!(d.autocorrelation_factor > 2.0);
                }
                other => panic!("seed {seed}: {other:?}"),
            }
            assert!(!d.active_at_end);
        }
        assert!(bounded >= 45, "{bounded} of 50 bounded");
    }

    #[test]
    fn logarithmic_growth_is_decelerating() {
        // ln(1 + t/10 s) from the first snapshot. Over a window whose start is a tenth of its
        // end, the tail's Theil-Sen slope is 0.33 of the head's: just under the 1/3 line, so only
        // long, quiet series are called decelerating (docs/detection.md).
        for (n, seed) in [(720, 0), (720, 1), (720, 2), (2880, 3), (2880, 4)] {
            let d = detect(
                &logarithmic(n, 1024.0 * 1024.0, 10.0, 1024.0, seed),
                &Config::default(),
            );
            assert_eq!(d.verdict, Verdict::DeceleratingGrowth, "n {n} seed {seed}");
            assert_eq!(failed_gate(&d), "deceleration");
            assert!(d.active_at_end, "still growing at the end");
        }
    }

    #[test]
    fn growth_in_two_quarters_is_inconsistent() {
        // 400 snapshots: 40 of warm-up, then four quarters of 90. Memory grows by 2,000 B/s in
        // the second and the fourth quarter only (a leak only while a load is on), exactly flat
        // otherwise. Fast load cycles make a leak; two long bursts make inconsistent growth.
        let on = |t: f64| {
            let i = t / STEP;
            let burst = |from: f64| (i.min(from + 90.0) - from).max(0.0);
            2000.0 * STEP * (burst(130.0) + burst(310.0))
        };
        let d = detect(&series(400, |t| BASE + on(t)), &Config::default());
        assert_eq!(d.verdict, Verdict::InconsistentGrowth);
        assert_eq!(failed_gate(&d), "consistency");
        assert!(
            d.gates[8].detail.contains("2 of 4 stalled"),
            "{}",
            d.gates[8].detail
        );
        let cycles = |t: f64| {
            let i = t / STEP;
            2000.0 * STEP * ((i / 20.0).floor() * 10.0 + (i % 20.0).min(10.0))
        };
        let d = detect(&series(400, |t| BASE + cycles(t)), &Config::default());
        assert_eq!(d.verdict, Verdict::ContinuousLeak);
        // A leak paused for the whole second quarter: one stalled quarter is allowed.
        let paused = |t: f64| {
            let i = t / STEP;
            2000.0 * STEP * (i.min(130.0) + (i - 220.0).max(0.0))
        };
        let d = detect(&series(400, |t| BASE + paused(t)), &Config::default());
        assert_eq!(d.verdict, Verdict::ContinuousLeak);
        assert!(
            d.gates[8].detail.contains("1 of 4 stalled"),
            "{}",
            d.gates[8].detail
        );
    }

    #[test]
    fn quarters_flat_within_their_noise_have_not_stalled() {
        // A steady leak at growth = 3x the noise over 120 snapshots: each quarter of 27 points
        // grows by only 0.7 sigma, so some quarters' slopes come out <= 0 by chance. Counting
        // signs (the first rule) called such leaks inconsistent; a quarter stalls only when its
        // CI lies below half the overall rate.
        let (n, rate) = (120, 200.0);
        let sigma = rate * STEP * n as f64 / 3.0;
        let mut sign_rule_misses = 0;
        for seed in 0..200 {
            let d = detect(&linear(n, rate, sigma, seed), &Config::default());
            let Some(g) = d.gates.iter().find(|g| g.name == "consistency") else {
                continue;
            };
            let slopes: Vec<f64> = g.detail["quarter slopes ".len()..]
                .split("], ")
                .map(|q| q.split(' ').next().and_then(|v| v.parse().ok()).unwrap())
                .collect();
            assert_eq!(slopes.len(), 4, "{}", g.detail);
            if slopes.iter().filter(|&&v| v > 0.0).count() < 3 {
                sign_rule_misses += 1;
                assert!(g.passed, "seed {seed}: {}", g.detail);
            }
        }
        assert!(sign_rule_misses >= 3, "{sign_rule_misses}");
    }

    #[test]
    fn isolated_steps_are_bounded() {
        // Two 1 MB steps (at 818 s and 1,636 s of 1,800 s) between exact flats: significant by
        // ranks, but most pairs of points lie on one flat, so the median pairwise slope and the
        // CI's lower bound are 0.
        let d = detect(
            &series(360, |t| BASE + 1e6 * (t / 1800.0 * 2.2).floor()),
            &Config::default(),
        );
        assert_eq!(d.verdict, Verdict::BoundedGrowth);
        assert_eq!(failed_gate(&d), "slope_ci");
        assert_eq!(d.rate_ci.0, 0.0);
        assert!(d.p_value < 0.01);
    }

    #[test]
    fn two_piece_line_and_step_fits_are_exact_on_exact_data() {
        let t: Vec<f64> = (0..100).map(f64::from).collect();
        let bent: Vec<f64> = t
            .iter()
            .map(|&x| {
                if x < 60.0 {
                    2.0 * x
                } else {
                    120.0 + 0.5 * (x - 60.0)
                }
            })
            .collect();
        assert!((slope_after_bend(&t, &bent, 60.0) - 0.5).abs() < 1e-9);
        let line: Vec<f64> = t.iter().map(|&x| 7.0 + 3.0 * x).collect();
        assert!((slope_after_bend(&t, &line, 60.0) - 3.0).abs() < 1e-9);
        let (line_rss, step_rss) = line_and_step_rss(&t, &line);
        assert!(
            line_rss < 1e-6 && step_rss > 1000.0,
            "{line_rss} {step_rss}"
        );
        let step: Vec<f64> = t
            .iter()
            .map(|&x| if x < 70.0 { 5.0 } else { 9.0 })
            .collect();
        let (line_rss, step_rss) = line_and_step_rss(&t, &step);
        assert!(step_rss < 1e-9 && line_rss > 10.0, "{line_rss} {step_rss}");
        // Degenerate input: a knot after every point leaves the bend unidentified.
        assert_eq!(slope_after_bend(&t[..3], &line[..3], 1000.0), 0.0);
    }

    #[test]
    fn one_time_steps_fail_the_shape_gate_not_as_leaks() {
        // The corpus's one-time steps and bursts (tuning seeds), 120 to 2,880 snapshots, every
        // SNR: those that get past every other gate are stopped by the shape gate.
        use crate::corpus::{pattern_index, Case, SeedSet};
        let steps = ["one-time step mid-run", "one-time burst mid-run"].map(|name| {
            pattern_index(name).unwrap_or_else(|| panic!("{name} is not in the corpus"))
        });
        let (mut leaks, mut by_shape) = (0, 0);
        for case in Case::grid(&steps, &[120, 360, 720, 1440, 2880], &[0, 1, 2, 3, 4], 4) {
            let d = detect(&case.trace(SeedSet::Tune).points(), &Config::default());
            leaks += usize::from(d.verdict == Verdict::ContinuousLeak);
            if failed_gate(&d) == "shape" {
                by_shape += 1;
                assert_eq!(d.verdict, Verdict::BoundedGrowth);
            }
        }
        assert_eq!(leaks, 0, "of 180");
        assert!(
            by_shape >= 3,
            "only {by_shape} of 180 reached the shape gate"
        );
    }

    #[test]
    fn a_leak_that_slows_to_a_crawl_is_decelerating() {
        // 2 kB/s for 75% of the window, then 200 B/s: the tail still grows significantly, but
        // the two-piece line's slope after the bend is far below the overall slope.
        let sigma = 20_000.0;
        let end = 0.75 * 720.0 * STEP;
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let d = detect(
                &series(720, |t| {
                    let grown = 2000.0 * t.min(end) + 200.0 * (t - end).max(0.0);
                    BASE + grown + sigma * rng.normal()
                }),
                &Config::default(),
            );
            assert_ne!(d.verdict, Verdict::ContinuousLeak, "seed {seed}");
        }
    }

    #[test]
    fn noise_is_stable() {
        let mib = 1024.0 * 1024.0;
        for seed in 0..50 {
            let d = detect(&linear(360, 0.0, mib, seed), &Config::default());
            assert_eq!(d.verdict, Verdict::Stable, "white noise, seed {seed}");
            assert_eq!(failed_gate(&d), "trend");
        }
        // Persistent noise: without the Hamed-Rao correction about a third of these series show
        // a "significant" trend one way or the other.
        for (phi, min_stable, max_leaks) in [(0.7, 190, 1), (0.9, 180, 4)] {
            let (mut stable, mut leaks) = (0, 0);
            for seed in 0..200 {
                let d = detect(&ar1(360, phi, mib, seed), &Config::default());
                stable += usize::from(d.verdict == Verdict::Stable);
                leaks += usize::from(d.verdict == Verdict::ContinuousLeak);
            }
            assert!(stable >= min_stable, "AR(1) {phi}: {stable} of 200 stable");
            assert!(leaks <= max_leaks, "AR(1) {phi}: {leaks} of 200 leaks");
        }
    }

    #[test]
    fn shrinking_series_is_shrinking() {
        for seed in 0..10 {
            let d = detect(&linear(360, -1000.0, 20000.0, seed), &Config::default());
            assert_eq!(d.verdict, Verdict::Shrinking, "seed {seed}");
            assert_eq!(failed_gate(&d), "trend");
            assert!(d.p_value > 0.99);
            assert!(d.rate < 0.0 && d.rate_ci.1 < 0.0);
        }
    }

    #[test]
    fn freed_series_ends_at_zero() {
        // A leak that is released at the end, and a buffer freed early that stays freed.
        let released = series(360, |t| if t < 1700.0 { 4096.0 + 1000.0 * t } else { 0.0 });
        let early = series(360, |t| if t < 100.0 { 1e6 } else { 0.0 });
        for points in [released, early] {
            let d = detect(&points, &Config::default());
            assert_eq!(d.verdict, Verdict::Freed);
            assert_eq!(failed_gate(&d), "not_freed");
        }
        // Zero in the middle is not freed.
        let dip = series(360, |t| {
            if (900.0..950.0).contains(&t) {
                0.0
            } else {
                4096.0 + 1000.0 * t
            }
        });
        assert_ne!(detect(&dip, &Config::default()).verdict, Verdict::Freed);
    }

    /// leak-record's advice on short recordings counts on the detector's defaults.
    #[test]
    fn the_snapshots_to_judge_are_the_fewest_with_enough_points() {
        let cfg = Config::default();
        let fewest = (0..100)
            .find(|&n| usable_points(n, &cfg) >= MIN_POINTS)
            .unwrap();
        assert_eq!(fewest, leak_format::SNAPSHOTS_TO_JUDGE as usize);
        // As the detector counts them.
        let n = fewest;
        let d = detect(&series(n, |t| 4096.0 + 1000.0 * t), &cfg);
        assert_eq!(d.points_used, MIN_POINTS);
        let d = detect(&series(n - 1, |t| 4096.0 + 1000.0 * t), &cfg);
        assert_eq!(d.points_used, MIN_POINTS - 1);
    }

    #[test]
    fn too_few_points_is_insufficient() {
        let cfg = Config::default();
        for n in [0, 1, 2, 5, 11, 12] {
            // 12 snapshots leave 11 after the warm-up.
            let d = detect(&series(n, |t| 4096.0 + 1000.0 * t), &cfg);
            assert_eq!(d.verdict, Verdict::InsufficientData, "n = {n}");
            assert_eq!(d.rate, 0.0);
            assert!(!d.suspected);
        }
        let d = detect(&series(12, |t| 4096.0 + 1000.0 * t), &cfg);
        assert_eq!(failed_gate(&d), "points");
        assert_eq!(d.points_used, 11);
        // 13 snapshots of a fast, clean leak: a leak, but only suspected.
        let d = detect(&series(13, |t| 4096.0 + 1000.0 * t), &cfg);
        assert_eq!(d.points_used, 12);
        assert_eq!(d.verdict, Verdict::ContinuousLeak);
        assert!(d.suspected);
        // Never known at all.
        let unknown = vec![
            Point {
                t: 0.0,
                bytes: None,
                count: None
            };
            100
        ];
        let d = detect(&unknown, &cfg);
        assert_eq!(d.verdict, Verdict::InsufficientData);
        assert_eq!(failed_gate(&d), "eligibility");
    }

    #[test]
    fn sparse_series_is_insufficient_and_unknown_is_not_zero() {
        let leak = linear(360, 1000.0, 20000.0, 3);
        let drop_every = |k: usize| -> Vec<Point> {
            leak.iter()
                .enumerate()
                .map(|(i, p)| Point {
                    bytes: if i % k == k - 1 { None } else { p.bytes },
                    ..*p
                })
                .collect()
        };
        // 75% known after first appearance: not eligible.
        let d = detect(&drop_every(4), &Config::default());
        assert_eq!(d.verdict, Verdict::InsufficientData);
        assert_eq!(failed_gate(&d), "eligibility");
        // 90% known: the unknown points are skipped, not read as zero.
        let d = detect(&drop_every(10), &Config::default());
        assert_eq!(d.verdict, Verdict::ContinuousLeak);
        // Leading unknowns (the stack did not exist yet) do not count against it.
        let mut late = vec![
            Point {
                t: 0.0,
                bytes: None,
                count: None
            };
            300
        ];
        late.extend(linear(100, 1000.0, 2000.0, 4));
        for (i, p) in late.iter_mut().enumerate() {
            p.t = i as f64 * STEP;
        }
        assert_eq!(
            detect(&late, &Config::default()).verdict,
            Verdict::ContinuousLeak
        );
    }

    #[test]
    fn bursty_leak_with_exact_flats_is_a_leak_the_seed_rule_misses() {
        // 0.3 allocations of 4 KiB per 5 s on average, never freed: 246 B/s, and about three
        // intervals in four with no allocation at all.
        for seed in 0..20 {
            let d = detect(&bursty(360, 0.3, 4096.0, 0.0, seed), &Config::default());
            assert_eq!(d.verdict, Verdict::ContinuousLeak, "seed {seed}");
            assert!(!d.strict_monotonic, "seed {seed}");
            assert!((150.0..350.0).contains(&d.rate), "rate {}", d.rate);
        }
    }

    #[test]
    fn noisy_linear_leak_is_a_leak_the_seed_rule_misses() {
        // Growth of 20x the noise over the window: the seed rule's recall is 0% from 20 snapshots.
        for (n, suspected) in [(24, true), (29, true), (40, false), (120, false)] {
            for seed in 0..10 {
                let rate = 1000.0;
                let sigma = rate * n as f64 * STEP / 20.0;
                let d = detect(&linear(n, rate, sigma, seed), &Config::default());
                assert!(!d.strict_monotonic, "n {n} seed {seed}");
                assert_eq!(d.verdict, Verdict::ContinuousLeak, "n {n} seed {seed}");
                assert_eq!(d.suspected, suspected, "n {n} seed {seed}");
            }
        }
    }

    #[test]
    fn short_series_need_the_strict_p() {
        // A 21-snapshot series (20 points used) whose trend p lies between 0.001 and 0.01:
        // a full-length series would pass the trend gate, a short one does not.
        let cfg = Config::default();
        let mut found = 0;
        for seed in 0..2000 {
            let d = detect(&linear(21, 1000.0, 15000.0, seed), &cfg);
            if d.points_used != 19 || !(0.001..0.01).contains(&d.p_value) {
                continue;
            }
            found += 1;
            assert_ne!(d.verdict, Verdict::ContinuousLeak, "seed {seed}");
            assert_eq!(failed_gate(&d), "trend");
            assert!(
                d.gates[3].detail.contains(">= 0.001"),
                "{}",
                d.gates[3].detail
            );
            // It grew, at the plain alpha: never "stable".
            assert!(
                matches!(
                    d.verdict,
                    Verdict::InsufficientData | Verdict::BoundedGrowth
                ),
                "seed {seed}: {:?}",
                d.verdict
            );
        }
        assert!(found >= 5, "only {found} series in range");
    }

    #[test]
    fn a_short_series_that_grew_then_stopped_is_bounded_not_stable() {
        // 15 snapshots (a kernel recording of 15 s at -i 1s): 2 KiB per step for 6 steps, then
        // flat. The trend's p misses the strict level a short series needs, so it is no leak;
        // but it grew and stopped.
        let pts = series(15, |t| 2048.0 * (1.0 + t / STEP).min(7.0));
        let d = detect(&pts, &Config::default());
        assert_eq!(d.verdict, Verdict::BoundedGrowth, "{:?}", d.gates);
    }

    #[test]
    fn sawtooth_with_rising_floor_is_a_leak() {
        // A 1 MiB buffer that fills and empties every 5 minutes, on a floor rising 2000 B/s.
        for seed in 0..10 {
            let d = detect(
                &sawtooth(360, 2000.0, 1024.0 * 1024.0, 300.0, seed),
                &Config::default(),
            );
            assert_eq!(d.verdict, Verdict::ContinuousLeak, "seed {seed}");
            assert!(!d.strict_monotonic);
        }
    }

    #[test]
    fn sawtooth_without_growth_is_not_a_leak() {
        for seed in 0..20 {
            let d = detect(
                &sawtooth(360, 0.0, 1024.0 * 1024.0, 300.0, seed),
                &Config::default(),
            );
            assert!(
                matches!(d.verdict, Verdict::Stable | Verdict::BoundedGrowth),
                "seed {seed}: {:?}",
                d.verdict
            );
        }
    }

    #[test]
    fn zero_drift_random_walk_is_rarely_a_leak() {
        // Steps of 64 KiB per 5 s: slopes of chance are far above the minimum rate, so only
        // the statistics stand between a random walk and a leak verdict.
        let leaks = (0..200)
            .filter(|&seed| {
                detect(&random_walk(360, 65536.0, seed), &Config::default()).verdict
                    == Verdict::ContinuousLeak
            })
            .count();
        assert!(leaks <= 20, "{leaks} of 200 random walks called leaks");
    }

    #[test]
    fn realloc_growth_has_no_count_rate() {
        // One buffer grown by realloc: bytes grow, the live count stays 1.
        let mut points = linear(360, 1000.0, 20000.0, 5);
        for p in &mut points {
            p.count = Some(1.0);
        }
        let d = detect(&points, &Config::default());
        assert_eq!(d.verdict, Verdict::ContinuousLeak);
        assert_eq!(d.count_rate, Some(0.0));
        assert_eq!(d.mean_object_size, None);
    }

    #[test]
    fn long_series_are_downsampled() {
        let d = detect(&linear(2880, 1000.0, 50000.0, 6), &Config::default());
        // 2,880 - 288 warm-up = 2,592 known points in medians of 11: 236 points.
        assert_eq!(d.points_used, 236);
        assert_eq!(d.verdict, Verdict::ContinuousLeak);
        assert!(d.gates[2].detail.contains("medians of 11 points"));
        // The fitted end level is close to the true one at the last median's time.
        let truth = BASE + 1000.0 * d.end_time;
        assert!(
            (d.end_level - truth).abs() < 20000.0,
            "{} vs {truth}",
            d.end_level
        );
    }

    #[test]
    fn verdicts_serialize_in_snake_case() {
        let d = detect(&linear(100, 1000.0, 1000.0, 1), &Config::default());
        let json = format!("{:?}", serde_json::to_string(&d.verdict).ok());
        assert_eq!(json, "Some(\"\\\"continuous_leak\\\"\")");
    }
    /// Not a test: prints the verdicts of the synthetic families over reporting seeds (10,000
    /// and up; the tests and the tuning used seeds below 2,000), the table in docs/detection.md.
    /// `cargo test -p leak-report --release --lib calibration_table -- --ignored --nocapture`
    /// (`CALIBRATION_SEEDS=200` by default).
    #[test]
    #[ignore = "prints the calibration table of docs/detection.md"]
    fn calibration_table() {
        type Family = (&'static str, bool, fn(usize, u64) -> Vec<Point>);
        const MIB: f64 = 1024.0 * 1024.0;
        let families: [Family; 20] = [
            ("linear, noise = rise/20", true, |n, s| {
                linear(n, 1000.0, 1000.0 * n as f64 * STEP / 20.0, s)
            }),
            ("linear, noise = rise/5", true, |n, s| {
                linear(n, 1000.0, 1000.0 * n as f64 * STEP / 5.0, s)
            }),
            ("linear, noise = rise/2", true, |n, s| {
                linear(n, 1000.0, 1000.0 * n as f64 * STEP / 2.0, s)
            }),
            ("bursty 0.3 x 4 KiB / 5 s", true, |n, s| {
                bursty(n, 0.3, 4096.0, 0.0, s)
            }),
            ("bursty 0.1 x 8 KiB / 5 s", true, |n, s| {
                bursty(n, 0.1, 8192.0, 0.0, s)
            }),
            ("bursty 0.3 x 4 KiB + noise", true, |n, s| {
                bursty(n, 0.3, 4096.0, 4096.0, s)
            }),
            ("sawtooth 1 MiB / 5 min, floor +2 KB/s", true, |n, s| {
                sawtooth(n, 2000.0, MIB, 300.0, s)
            }),
            ("white noise", false, |n, s| linear(n, 0.0, MIB, s)),
            ("AR(1) 0.7", false, |n, s| ar1(n, 0.7, MIB, s)),
            ("AR(1) 0.9", false, |n, s| ar1(n, 0.9, MIB, s)),
            ("random walk, 64 KiB steps", false, |n, s| {
                random_walk(n, 65536.0, s)
            }),
            ("fill to a cap at 60%", false, |n, s| {
                capped(n, 4000.0, 0.6 * n as f64 * STEP, 16384.0, s)
            }),
            ("cache warm-up, tau = 15%", false, |n, s| {
                saturating(n, MIB, 0.15 * n as f64 * STEP, 4096.0, s)
            }),
            ("leak stops at 50%", false, |n, s| {
                capped(n, 4000.0, 0.5 * n as f64 * STEP, 16384.0, s)
            }),
            ("leak stops at 70%", false, |n, s| {
                capped(n, 4000.0, 0.7 * n as f64 * STEP, 16384.0, s)
            }),
            ("sawtooth without growth", false, |n, s| {
                sawtooth(n, 0.0, MIB, 300.0, s)
            }),
            ("log, tau = 10 s", false, |n, s| {
                logarithmic(n, MIB, 10.0, 1024.0, s)
            }),
            ("log, tau = 10 s, noisy", false, |n, s| {
                logarithmic(n, MIB, 10.0, 65536.0, s)
            }),
            ("log, tau = 60 s", false, |n, s| {
                logarithmic(n, MIB, 60.0, 1024.0, s)
            }),
            ("64 B per 5 s", false, |n, _| {
                series(n, |t| 4096.0 + 64.0 * t / STEP)
            }),
        ];
        let seeds: u64 = std::env::var("CALIBRATION_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let lengths = [20, 30, 60, 120, 360, 720, 2880];
        println!("share called continuous leak (suspected included), {seeds} seeds each");
        print!("| family | leak? |");
        for n in lengths {
            print!(" {n} |");
        }
        println!();
        for (name, leak, make) in families {
            print!("| {name} | {} |", if leak { "yes" } else { "no" });
            for n in lengths {
                let mut verdicts = std::collections::BTreeMap::new();
                for seed in 10_000..10_000 + seeds {
                    *verdicts
                        .entry(detect(&make(n, seed), &Config::default()).verdict)
                        .or_insert(0u64) += 1;
                }
                let leaks = verdicts.get(&Verdict::ContinuousLeak).copied().unwrap_or(0);
                print!(" {:.0}% |", 100.0 * leaks as f64 / seeds as f64);
                eprintln!("{name} n={n}: {verdicts:?}");
            }
            println!();
        }
    }

    #[test]
    fn growth_that_stopped_early_is_bounded_not_stable() {
        // A cache filled in the first quarter, then full for the rest of the window: the trend
        // over the whole window is not significant once corrected for autocorrelation, but the
        // head grew and the tail did not.
        let points: Vec<Point> = (0..91)
            .map(|i| {
                let t = i as f64;
                let bytes = 2_000.0 + 65_536.0 * i.min(30) as f64 / 30.0 * 32.0;
                Point {
                    t,
                    bytes: Some(bytes),
                    count: Some(1.0 + (i.min(30) as f64)),
                }
            })
            .collect();
        let d = detect(&points, &Config::default());
        assert_eq!(d.verdict, Verdict::BoundedGrowth, "{:?}", d.gates);
    }
}
