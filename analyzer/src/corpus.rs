//! The detector's evaluation corpus (docs/detection.md, "Corpus"): seeded, labelled synthetic
//! stacks of every pattern family, at two levels (parametric series, and an event-level simulation
//! of allocations and frees), multi-stack "process" runs, real recordings written with the format
//! writer and read back with `series::read`, and the scores. Used by `examples/evaluate.rs` and
//! `tests/detection_floors.rs`; the `leak-report` command does not use it.
use std::io::Write;

use leak_format::{
    AllocKind, End, EndReason, Error, Frame, Header, HostInfo, Losses, MapEntry, Module, Probe,
    ProbeSide, ProcMemory, Reader, Record, RecordConfig, Snapshot, SnapshotCost, Stack, StackStats,
    Target, TargetMode, Writer,
};

use crate::detect::{self, Config, Point, Verdict};
use crate::series::{self, Series};

/// Seconds between snapshots (the recorder's default interval).
pub const INTERVAL: f64 = 5.0;
/// Recording lengths of the corpus, in snapshots: one minute to four hours.
pub const LENGTHS: [usize; 9] = [12, 20, 30, 60, 120, 360, 720, 1440, 2880];
/// Target signal-to-noise ratios of the cells: growth over the window / RMS noise.
pub const SNR_LEVELS: [f64; 5] = [0.5, 2.0, 5.0, 15.0, 50.0];
/// Lower edges of the SNR bins the results are reported in.
pub const SNR_EDGES: [f64; 5] = [0.0, 1.0, 3.0, 10.0, 30.0];
/// Labels of the SNR bins.
pub const SNR_LABELS: [&str; 5] = ["< 1", "1-3", "3-10", "10-30", ">= 30"];
/// Leak rates (and the scale of non-leak structure) are drawn log-uniformly between these
/// multiples of the detector's minimum rate.
pub const RATE_MULTIPLES: (f64, f64) = (2.0, 64.0);
/// The first stack id of a written recording (ids below are the recorder's placeholders).
pub const FIRST_STACK: u32 = 16;

const MIB: f64 = 1024.0 * 1024.0;
const START_WALL_NS: u64 = 1_700_000_000_000_000_000;
const START_MONO_NS: u64 = 1_000_000_000;
const MODULE_PATH: &str = "/opt/corpus/bin/synthetic";

/// The SNR bin (index into `SNR_LABELS`) of a ratio.
pub fn snr_bin(snr: f64) -> usize {
    SNR_EDGES.iter().rposition(|&edge| snr >= edge).unwrap_or(0)
}

fn min_rate() -> f64 {
    Config::default().min_rate
}

// ---- seeds and random numbers ----

/// Which seeds: thresholds are tuned on `Tune` only; the tables of docs/detection.md come from
/// `Report`; the CI floors (tests/detection_floors.rs) use `Ci`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedSet {
    /// For tuning the detector's thresholds.
    Tune,
    /// For the published results.
    Report,
    /// For the floors held in CI.
    Ci,
}

impl SeedSet {
    /// Parses `tune`, `report` or `ci`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "tune" => Some(Self::Tune),
            "report" => Some(Self::Report),
            "ci" => Some(Self::Ci),
            _ => None,
        }
    }

    /// The set's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tune => "tune",
            Self::Report => "report",
            Self::Ci => "ci",
        }
    }

    /// A seed from this set for the given coordinates (independent streams per set).
    pub fn seed(self, parts: &[u64]) -> u64 {
        let mut h = match self {
            Self::Tune => 0x7475_6e65_0000_0001,
            Self::Report => 0x7265_706f_7274_0002,
            Self::Ci => 0x6369_0000_0000_0003,
        };
        for &p in parts {
            h = mix(h ^ mix(p.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        }
        h
    }
}

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a pattern's name: seeds follow names, not positions in the list.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64 with Box-Muller normals, exponential and Poisson variates: deterministic, no
/// dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in (0, 1): never 0, so its logarithm is finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in (lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Log-uniform in (lo, hi), both > 0.
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.uniform()).exp()
    }

    /// Uniform integer in lo..=hi.
    pub fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.uniform().ln()
    }

    /// Poisson with mean `lambda`: by multiplication of uniforms below 10, else by Hörmann's
    /// transformed rejection with squeeze (PTRS, 1993).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda < 10.0 {
            let limit = (-lambda).exp();
            let (mut k, mut p) = (0, self.uniform());
            while p > limit {
                p *= self.uniform();
                k += 1;
            }
            return k;
        }
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.024_83 * b;
        let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
                <= -lambda + k * loglam - ln_factorial(k)
            {
                return k as u64;
            }
        }
    }
}

/// ln(k!) for a whole k >= 0: exact sum below 10, Stirling's series above.
fn ln_factorial(k: f64) -> f64 {
    if k < 10.0 {
        return (2..=k as u64).map(|i| (i as f64).ln()).sum();
    }
    let x = k + 1.0;
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x.powi(3))
        + 1.0 / (1260.0 * x.powi(5))
}

// ---- traces ----

/// Cumulative counters of one stack at one snapshot (what the recorder writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes allocated since the start.
    pub alloc_bytes: u64,
    /// Allocations since the start.
    pub alloc_count: u64,
    /// Bytes freed since the start.
    pub free_bytes: u64,
    /// Frees since the start.
    pub free_count: u64,
}

impl Counters {
    /// Outstanding bytes.
    pub fn bytes(&self) -> u64 {
        self.alloc_bytes.saturating_sub(self.free_bytes)
    }

    /// Live allocations.
    pub fn count(&self) -> u64 {
        self.alloc_count.saturating_sub(self.free_count)
    }
}

/// One synthetic stack: its counters at every snapshot and what is true about it.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Counters at snapshots 1..=n, taken every `INTERVAL` seconds from the start.
    pub counters: Vec<Counters>,
    /// The leak's long-run rate, bytes/s (leak patterns only).
    pub true_rate: Option<f64>,
    /// Growth over the window: the leak's rate times the window, or for a non-leak the size of
    /// its structure (a cap, a step) or the growth a leak of its cell would have.
    pub growth: f64,
    /// RMS deviation of the outstanding bytes from the pattern's noise-free path, bytes.
    pub noise: f64,
}

impl Trace {
    /// Snapshots in the trace.
    pub fn snapshots(&self) -> usize {
        self.counters.len()
    }

    /// Growth over noise (infinite for a noise-free trace).
    pub fn snr(&self) -> f64 {
        if self.noise > 0.0 {
            self.growth / self.noise
        } else {
            f64::INFINITY
        }
    }

    /// The series the detector sees, with the same times as a recording read by
    /// `series::read`: snapshot k at (k + 1) * `INTERVAL` seconds.
    pub fn points(&self) -> Vec<Point> {
        self.counters
            .iter()
            .enumerate()
            .map(|(k, c)| Point {
                t: (k + 1) as f64 * INTERVAL,
                bytes: Some(c.bytes() as f64),
                count: Some(c.count() as f64),
            })
            .collect()
    }

    /// Counters from outstanding levels: rises are allocations, falls are frees.
    fn from_levels(bytes: &[f64], counts: &[f64], expected: &[f64], truth: Facts) -> Self {
        let mut c = Counters::default();
        let (mut pb, mut pc) = (0u64, 0u64);
        let mut counters = Vec::with_capacity(bytes.len());
        for (&b, &n) in bytes.iter().zip(counts) {
            let b = b.max(0.0).round() as u64;
            let n = n.max(0.0).round() as u64;
            if b >= pb {
                c.alloc_bytes += b - pb;
            } else {
                c.free_bytes += pb - b;
            }
            if n >= pc {
                c.alloc_count += n - pc;
            } else {
                c.free_count += pc - n;
            }
            (pb, pc) = (b, n);
            counters.push(c);
        }
        Self::finish(counters, expected, truth)
    }

    fn finish(counters: Vec<Counters>, expected: &[f64], truth: Facts) -> Self {
        let n = counters.len().max(1) as f64;
        let sum: f64 = counters
            .iter()
            .zip(expected)
            .map(|(c, e)| (c.bytes() as f64 - e).powi(2))
            .sum();
        Trace {
            counters,
            true_rate: truth.rate,
            growth: truth.growth,
            noise: (sum / n).sqrt(),
        }
    }
}

/// What a generator knows to be true about the trace it made.
#[derive(Debug, Clone, Copy)]
struct Facts {
    rate: Option<f64>,
    growth: f64,
}

impl Facts {
    fn leak(rate: f64, d: &Draw) -> Self {
        Self {
            rate: Some(rate),
            growth: rate * d.span,
        }
    }
    fn none(d: &Draw) -> Self {
        Self {
            rate: None,
            growth: d.growth,
        }
    }
}

// ---- patterns ----

/// What a pattern is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// A continuous leak: should be flagged.
    Leak,
    /// Not a leak: should not be flagged.
    NotLeak,
    /// Scored on its own (logarithmic growth, 64 B per interval, a load ramp): not part of
    /// precision and recall.
    Separate,
}

/// How a pattern's series is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A formula plus noise, bytes and counts.
    Parametric,
    /// Simulated allocations (Poisson arrivals) and frees (lifetimes), giving bytes and counts.
    Event,
}

/// The parameters a series is drawn from: its cell (length, target SNR) and the scale.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    /// Snapshots.
    pub snapshots: usize,
    /// Target growth / noise.
    pub snr: f64,
    /// Leak rate of the cell, bytes/s (the scale of non-leak structure).
    pub rate: f64,
    /// Seconds from the first snapshot to the last.
    pub span: f64,
    /// `rate * span`.
    pub growth: f64,
    /// Target RMS noise, `growth / snr`.
    pub sigma: f64,
}

impl Draw {
    /// The cell's parameters for a rate.
    pub fn new(snapshots: usize, snr: f64, rate: f64) -> Self {
        let span = (snapshots.max(2) - 1) as f64 * INTERVAL;
        let growth = rate * span;
        Draw {
            snapshots,
            snr,
            rate,
            span,
            growth,
            sigma: growth / snr,
        }
    }

    /// Seconds from the start to the last snapshot (events are simulated up to here).
    fn horizon(&self) -> f64 {
        self.snapshots as f64 * INTERVAL
    }
}

/// A labelled pattern family.
#[derive(Debug, Clone, Copy)]
pub struct Pattern {
    /// Short name, unique (seeds derive from it).
    pub name: &'static str,
    /// Parametric or event-level.
    pub level: Level,
    /// Leak, not a leak, or scored separately.
    pub truth: Truth,
    /// The verdicts that describe the pattern correctly (multi-class accuracy).
    pub expected: &'static [Verdict],
    make: fn(&Draw, &mut Rng) -> Trace,
}

impl Pattern {
    /// One series of the pattern: the rate is drawn from the seed (`RATE_MULTIPLES`).
    pub fn generate(&self, snapshots: usize, snr: f64, seed: u64) -> Trace {
        let mut rng = Rng::new(seed);
        let rate = min_rate() * rng.log_range(RATE_MULTIPLES.0, RATE_MULTIPLES.1);
        (self.make)(&Draw::new(snapshots, snr, rate), &mut rng)
    }

    /// One series with a given rate (scale), bytes/s.
    pub fn generate_with_rate(&self, snapshots: usize, snr: f64, rate: f64, seed: u64) -> Trace {
        let mut rng = Rng::new(seed);
        (self.make)(&Draw::new(snapshots, snr, rate), &mut rng)
    }

    /// Whether a verdict is correct for the pattern. With fewer than 13 snapshots (fewer than
    /// 12 points after the warm-up) the only correct verdict is insufficient data.
    pub fn correct(&self, verdict: Verdict, snapshots: usize) -> bool {
        if snapshots <= detect::MIN_POINTS {
            verdict == Verdict::InsufficientData
        } else {
            self.expected.contains(&verdict)
        }
    }
}

const LEAK: &[Verdict] = &[Verdict::ContinuousLeak];
const STABLE: &[Verdict] = &[Verdict::Stable];
const NOT_A_LEAK: &[Verdict] = &[
    Verdict::Stable,
    Verdict::Shrinking,
    Verdict::BoundedGrowth,
    Verdict::DeceleratingGrowth,
    Verdict::InconsistentGrowth,
    Verdict::ImmaterialGrowth,
];
const SATURATING: &[Verdict] = &[
    Verdict::BoundedGrowth,
    Verdict::DeceleratingGrowth,
    Verdict::Stable,
];
const EARLY_PLATEAU: &[Verdict] = &[Verdict::BoundedGrowth, Verdict::Stable];
const STOPPED: &[Verdict] = &[Verdict::BoundedGrowth, Verdict::InconsistentGrowth];
const DECELERATING: &[Verdict] = &[Verdict::DeceleratingGrowth];
const IMMATERIAL: &[Verdict] = &[Verdict::ImmaterialGrowth];

const fn pattern(
    name: &'static str,
    level: Level,
    truth: Truth,
    expected: &'static [Verdict],
    make: fn(&Draw, &mut Rng) -> Trace,
) -> Pattern {
    Pattern {
        name,
        level,
        truth,
        expected,
        make,
    }
}

use Level::{Event, Parametric};
use Truth::{Leak, NotLeak, Separate};

/// Every pattern family of the corpus (docs/detection.md, "Corpus").
pub static PATTERNS: [Pattern; 37] = [
    // Parametric leaks.
    pattern("linear + white noise", Parametric, Leak, LEAK, p_linear),
    pattern("linear + AR(1) noise", Parametric, Leak, LEAK, p_linear_ar),
    pattern(
        "slow linear (1.25-2x min rate)",
        Parametric,
        Leak,
        LEAK,
        p_slow,
    ),
    pattern("bursty, exact flats", Parametric, Leak, LEAK, p_bursty),
    pattern("bursty + noise", Parametric, Leak, LEAK, p_bursty_noise),
    pattern(
        "sawtooth on a rising floor",
        Parametric,
        Leak,
        LEAK,
        p_sawtooth_rising,
    ),
    pattern("leak while load is on", Parametric, Leak, LEAK, p_load_leak),
    pattern(
        "staircase (sampled recorder)",
        Parametric,
        Leak,
        LEAK,
        p_staircase,
    ),
    pattern(
        "realloc growth (count flat)",
        Parametric,
        Leak,
        LEAK,
        p_realloc,
    ),
    // Parametric non-leaks.
    pattern("white noise", Parametric, NotLeak, STABLE, p_white),
    pattern("AR(1) noise", Parametric, NotLeak, STABLE, p_ar),
    pattern(
        "zero-drift random walk",
        Parametric,
        NotLeak,
        NOT_A_LEAK,
        p_walk,
    ),
    pattern(
        "cache warm-up (saturating)",
        Parametric,
        NotLeak,
        SATURATING,
        p_cache,
    ),
    pattern("fill to a cap", Parametric, NotLeak, EARLY_PLATEAU, p_fill),
    pattern(
        "startup allocation",
        Parametric,
        NotLeak,
        EARLY_PLATEAU,
        p_startup,
    ),
    pattern(
        "one-time step mid-run",
        Parametric,
        NotLeak,
        STOPPED,
        p_step,
    ),
    pattern(
        "sawtooth, no growth",
        Parametric,
        NotLeak,
        STABLE,
        p_sawtooth,
    ),
    pattern(
        "leak stops mid-run",
        Parametric,
        NotLeak,
        STOPPED,
        p_stopped,
    ),
    // Parametric, scored separately.
    pattern("logarithmic", Parametric, Separate, DECELERATING, p_log),
    pattern("64 B per interval", Parametric, Separate, IMMATERIAL, p_64),
    pattern(
        "load ramp (working set)",
        Parametric,
        Separate,
        LEAK,
        p_ramp,
    ),
    // Event-level leaks.
    pattern(
        "churn + leak (heavy churn)",
        Event,
        Leak,
        LEAK,
        e_churn_leak,
    ),
    pattern("bursty leak (sparse arrivals)", Event, Leak, LEAK, e_bursty),
    pattern(
        "batches + leak (rising floor)",
        Event,
        Leak,
        LEAK,
        e_batch_leak,
    ),
    pattern(
        "leak while load is on (events)",
        Event,
        Leak,
        LEAK,
        e_load_leak,
    ),
    pattern("sampled recorder staircase", Event, Leak, LEAK, e_sampled),
    pattern("realloc growth (events)", Event, Leak, LEAK, e_realloc),
    // Event-level non-leaks.
    pattern("churn", Event, NotLeak, STABLE, e_churn),
    pattern(
        "cache of distinct keys",
        Event,
        NotLeak,
        SATURATING,
        e_cache,
    ),
    pattern(
        "pool filled to a cap",
        Event,
        NotLeak,
        EARLY_PLATEAU,
        e_fill,
    ),
    pattern(
        "startup allocations",
        Event,
        NotLeak,
        EARLY_PLATEAU,
        e_startup,
    ),
    pattern("one-time burst mid-run", Event, NotLeak, STOPPED, e_step),
    pattern("batches, no growth", Event, NotLeak, STABLE, e_batches),
    pattern(
        "leak stops mid-run (events)",
        Event,
        NotLeak,
        STOPPED,
        e_stopped,
    ),
    // Event-level, scored separately.
    pattern(
        "logarithmic (decaying arrivals)",
        Event,
        Separate,
        DECELERATING,
        e_log,
    ),
    pattern(
        "64 B malloc per interval",
        Event,
        Separate,
        IMMATERIAL,
        e_64,
    ),
    pattern("load ramp (events)", Event, Separate, LEAK, e_ramp),
];

/// The index of a pattern by name.
pub fn pattern_index(name: &str) -> Option<usize> {
    PATTERNS.iter().position(|p| p.name == name)
}

// ---- parametric families ----

/// `f(tau, rng)` gives (value, noise-free value) at `tau` seconds after the first snapshot;
/// they are put on a base level well above 0, and counts are bytes over an object size drawn
/// here (or `flat_count`).
fn parametric(
    d: &Draw,
    rng: &mut Rng,
    truth: Facts,
    flat_count: Option<f64>,
    mut f: impl FnMut(f64, &mut Rng) -> (f64, f64),
) -> Trace {
    let size = rng.log_range(16.0, 4096.0);
    let base = MIB + 10.0 * (truth.growth.max(d.growth) + d.sigma);
    let n = d.snapshots;
    let (mut bytes, mut counts, mut expected) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for k in 0..n {
        let (y, e) = f(k as f64 * INTERVAL, rng);
        bytes.push(base + y);
        expected.push(base + e);
        counts.push(flat_count.unwrap_or((base + y) / size));
    }
    Trace::from_levels(&bytes, &counts, &expected, truth)
}

fn p_linear(d: &Draw, rng: &mut Rng) -> Trace {
    let (r, s) = (d.rate, d.sigma);
    parametric(d, rng, Facts::leak(r, d), None, |tau, rng| {
        (r * tau + s * rng.normal(), r * tau)
    })
}

/// AR(1) noise with marginal standard deviation `sigma`.
fn ar1(rng: &mut Rng, sigma: f64) -> impl FnMut(&mut Rng) -> f64 {
    let phi = rng.range(0.5, 0.95);
    let mut e = sigma * rng.normal();
    let innovation = sigma * (1.0 - phi * phi).sqrt();
    move |rng| {
        let now = e;
        e = phi * e + innovation * rng.normal();
        now
    }
}

fn p_linear_ar(d: &Draw, rng: &mut Rng) -> Trace {
    let r = d.rate;
    let mut noise = ar1(rng, d.sigma);
    parametric(d, rng, Facts::leak(r, d), None, |tau, rng| {
        (r * tau + noise(rng), r * tau)
    })
}

fn p_slow(d: &Draw, rng: &mut Rng) -> Trace {
    let r = min_rate() * rng.range(1.25, 2.0);
    let s = r * d.span / d.snr;
    parametric(d, rng, Facts::leak(r, d), None, |tau, rng| {
        (r * tau + s * rng.normal(), r * tau)
    })
}

/// Compound Poisson steps: per interval Poisson(lambda) allocations of one size, never freed.
fn bursty(d: &Draw, rng: &mut Rng, sigma: f64) -> Trace {
    let r = d.rate;
    let lambda = rng.log_range(0.1, 0.5);
    let size = r * INTERVAL / lambda;
    let mut level = 0.0;
    parametric(d, rng, Facts::leak(r, d), None, move |tau, rng| {
        if tau > 0.0 {
            level += size * rng.poisson(lambda) as f64;
        }
        (level + sigma * rng.normal(), r * tau)
    })
}

fn p_bursty(d: &Draw, rng: &mut Rng) -> Trace {
    bursty(d, rng, 0.0)
}

fn p_bursty_noise(d: &Draw, rng: &mut Rng) -> Trace {
    bursty(d, rng, d.sigma)
}

/// A sawtooth of period 10 to 60 snapshots whose RMS is `sigma`, and its mean.
fn sawtooth(rng: &mut Rng, sigma: f64) -> impl Fn(f64) -> f64 {
    let period = rng.range(10.0, 60.0) * INTERVAL;
    let phase = rng.uniform() * period;
    let amplitude = sigma * 12f64.sqrt();
    move |tau| amplitude * ((tau + phase) / period).fract()
}

fn p_sawtooth_rising(d: &Draw, rng: &mut Rng) -> Trace {
    let r = d.rate;
    let amplitude = d.sigma * 12f64.sqrt();
    let saw = sawtooth(rng, d.sigma);
    parametric(d, rng, Facts::leak(r, d), None, move |tau, rng| {
        (
            r * tau + saw(tau) + 0.01 * amplitude * rng.normal(),
            r * tau + amplitude / 2.0,
        )
    })
}

/// Load on for a share `duty` of every period of 10 to 60 snapshots: seconds of load on
/// between 0 and `tau`.
fn on_off(rng: &mut Rng) -> (f64, impl Fn(f64) -> f64, impl Fn(f64) -> bool) {
    let period = rng.range(10.0, 60.0) * INTERVAL;
    let duty = rng.range(0.3, 0.7);
    let phase = rng.uniform() * period;
    let on_before = move |x: f64| {
        let cycles = (x / period).floor();
        cycles * duty * period + (x - cycles * period).min(duty * period)
    };
    let on_time = move |tau: f64| on_before(tau + phase) - on_before(phase);
    let is_on = move |tau: f64| ((tau + phase) / period).fract() < duty;
    (duty, on_time, is_on)
}

fn p_load_leak(d: &Draw, rng: &mut Rng) -> Trace {
    let (r, s) = (d.rate, d.sigma);
    let (duty, on_time, _) = on_off(rng);
    parametric(d, rng, Facts::leak(r, d), None, move |tau, rng| {
        (r / duty * on_time(tau) + s * rng.normal(), r * tau)
    })
}

fn p_staircase(d: &Draw, rng: &mut Rng) -> Trace {
    // A recorder that samples one allocation per `quantum` bytes sees memory in steps of it:
    // one step every 2 to 20 snapshots on average.
    let (r, s) = (d.rate, d.sigma);
    let quantum = r * INTERVAL * rng.log_range(2.0, 20.0);
    let offset = rng.uniform() * quantum;
    parametric(d, rng, Facts::leak(r, d), None, move |tau, rng| {
        let y = r * tau + s * rng.normal() + offset;
        (
            quantum * (y / quantum).floor(),
            r * tau + offset - quantum / 2.0,
        )
    })
}

fn p_realloc(d: &Draw, rng: &mut Rng) -> Trace {
    let (r, s) = (d.rate, d.sigma);
    let buffers = rng.int(1, 4) as f64;
    parametric(d, rng, Facts::leak(r, d), Some(buffers), |tau, rng| {
        (r * tau + s * rng.normal(), r * tau)
    })
}

fn p_white(d: &Draw, rng: &mut Rng) -> Trace {
    let s = d.sigma;
    parametric(d, rng, Facts::none(d), None, |_, rng| {
        (s * rng.normal(), 0.0)
    })
}

fn p_ar(d: &Draw, rng: &mut Rng) -> Trace {
    let mut noise = ar1(rng, d.sigma);
    parametric(d, rng, Facts::none(d), None, |_, rng| (noise(rng), 0.0))
}

fn p_walk(d: &Draw, rng: &mut Rng) -> Trace {
    // The RMS distance of an n-step walk from its start is about step * sqrt(n / 2).
    let step = d.sigma * (2.0 / d.snapshots as f64).sqrt();
    let mut x = 0.0;
    parametric(d, rng, Facts::none(d), None, move |tau, rng| {
        if tau > 0.0 {
            x += step * rng.normal();
        }
        (x, 0.0)
    })
}

fn p_cache(d: &Draw, rng: &mut Rng) -> Trace {
    let (g, s) = (d.growth, d.sigma);
    let theta = rng.range(0.05, 0.25) * d.span;
    parametric(d, rng, Facts::none(d), None, move |tau, rng| {
        let e = g * (1.0 - (-tau / theta).exp());
        (e + s * rng.normal(), e)
    })
}

/// Grows at the cell's rate up to `stop` seconds, then stays.
fn plateau(d: &Draw, rng: &mut Rng, stop: f64) -> Trace {
    let (r, s) = (d.rate, d.sigma);
    parametric(d, rng, Facts::none(d), None, move |tau, rng| {
        let e = r * tau.min(stop);
        (e + s * rng.normal(), e)
    })
}

fn p_fill(d: &Draw, rng: &mut Rng) -> Trace {
    let stop = rng.range(0.1, 0.4) * d.span;
    plateau(d, rng, stop)
}

fn p_stopped(d: &Draw, rng: &mut Rng) -> Trace {
    let stop = rng.range(0.4, 0.7) * d.span;
    plateau(d, rng, stop)
}

/// A step of the cell's growth at `at` seconds.
fn step(d: &Draw, rng: &mut Rng, at: f64) -> Trace {
    let (g, s) = (d.growth, d.sigma);
    parametric(d, rng, Facts::none(d), None, move |tau, rng| {
        let e = if tau >= at { g } else { 0.0 };
        (e + s * rng.normal(), e)
    })
}

fn p_startup(d: &Draw, rng: &mut Rng) -> Trace {
    let at = rng.range(0.0, 0.05) * d.span;
    step(d, rng, at)
}

fn p_step(d: &Draw, rng: &mut Rng) -> Trace {
    let at = rng.range(0.3, 0.7) * d.span;
    step(d, rng, at)
}

fn p_sawtooth(d: &Draw, rng: &mut Rng) -> Trace {
    let amplitude = d.sigma * 12f64.sqrt();
    let saw = sawtooth(rng, d.sigma);
    parametric(d, rng, Facts::none(d), None, move |tau, rng| {
        (saw(tau) + 0.01 * amplitude * rng.normal(), amplitude / 2.0)
    })
}

fn p_log(d: &Draw, rng: &mut Rng) -> Trace {
    let s = d.sigma;
    let theta = rng.log_range(0.002, 0.05) * d.span;
    let a = d.growth / (1.0 + d.span / theta).ln();
    parametric(d, rng, Facts::none(d), None, move |tau, rng| {
        let e = a * (1.0 + tau / theta).ln();
        (e + s * rng.normal(), e)
    })
}

fn p_64(d: &Draw, _rng: &mut Rng) -> Trace {
    // One 64-byte object more at every snapshot, exactly: 12.8 B/s.
    let n = d.snapshots;
    let bytes: Vec<f64> = (0..n).map(|k| 4096.0 + 64.0 * k as f64).collect();
    let counts: Vec<f64> = bytes.iter().map(|b| b / 64.0).collect();
    Trace::from_levels(&bytes, &counts, &bytes, Facts::leak(64.0 / INTERVAL, d))
}

fn p_ramp(d: &Draw, rng: &mut Rng) -> Trace {
    // A working set that follows a load ramp: a curve, not a line, but monotonic.
    let (g, s, span) = (d.growth, d.sigma, d.span);
    let gamma = rng.range(0.7, 1.3);
    parametric(d, rng, Facts::none(d), None, move |tau, rng| {
        let e = g * (tau / span).powf(gamma);
        (e + s * rng.normal(), e)
    })
}

// ---- the event-level simulation ----

/// Object sizes: a mean, and log-normal spread (0: every object the same size).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    mean: f64,
    log_sigma: f64,
}

impl Sizes {
    /// Half the stacks allocate one size, the others sizes spread by a log-normal factor.
    fn draw_spread(rng: &mut Rng) -> f64 {
        if rng.uniform() < 0.5 {
            0.0
        } else {
            rng.range(0.3, 1.0)
        }
    }

    /// E[size^2] / E[size]^2.
    fn kappa(log_sigma: f64) -> f64 {
        (log_sigma * log_sigma).exp()
    }

    fn sample(&self, rng: &mut Rng) -> f64 {
        if self.log_sigma == 0.0 {
            self.mean
        } else {
            let s = self.log_sigma;
            self.mean * (s * rng.normal() - 0.5 * s * s).exp()
        }
    }
}

/// Allocations with lifetimes, added to the counters of the first snapshot at or after their
/// time (no sorting: every event is bucketed by snapshot, then the buckets are summed).
#[derive(Debug)]
struct Sim {
    horizon: f64,
    /// A sampling recorder's period, bytes: an object of size s is seen with probability
    /// 1 - exp(-s / period) and then counted as s / p bytes and 1 / p objects.
    sample: Option<f64>,
    /// Per snapshot: what was allocated and freed since the previous one.
    deltas: Vec<Counters>,
}

impl Sim {
    fn new(d: &Draw) -> Self {
        Sim {
            horizon: d.horizon(),
            sample: None,
            deltas: vec![Counters::default(); d.snapshots],
        }
    }

    /// The snapshot that first sees an event at `t` seconds (None: after the last one).
    fn bucket(&mut self, t: f64) -> Option<&mut Counters> {
        let k = ((t / INTERVAL).ceil() - 1.0).max(0.0);
        // Truncation is exact: k is a whole number >= 0.
        self.deltas.get_mut(k as usize)
    }

    /// A free of `bytes` in `count` objects at `t`.
    fn free(&mut self, t: f64, bytes: u64, count: u64) {
        if let Some(c) = self.bucket(t) {
            c.free_bytes += bytes;
            c.free_count += count;
        }
    }

    /// One allocation at `t`, freed at `death` (never if None or after the horizon).
    fn object(&mut self, rng: &mut Rng, t: f64, size: f64, death: Option<f64>) {
        let mut bytes = size.max(1.0);
        let mut count = 1.0;
        if let Some(period) = self.sample {
            let p = 1.0 - (-bytes / period).exp();
            if rng.uniform() >= p {
                return;
            }
            bytes /= p;
            count /= p;
        }
        let (bytes, count) = (bytes.round() as u64, (count.round() as u64).max(1));
        let Some(c) = self.bucket(t) else {
            return;
        };
        c.alloc_bytes += bytes;
        c.alloc_count += count;
        if let Some(death) = death {
            self.free(death, bytes, count);
        }
    }

    /// One allocation of a size drawn from `sizes`.
    fn alloc(&mut self, rng: &mut Rng, t: f64, sizes: Sizes, death: Option<f64>) {
        let size = sizes.sample(rng);
        self.object(rng, t, size, death);
    }

    /// Arrival times of a Poisson process of `rate` per second on [from, to).
    fn arrivals(rng: &mut Rng, rate: f64, from: f64, to: f64) -> Vec<f64> {
        let mut times = Vec::new();
        if rate <= 0.0 {
            return times;
        }
        let mut t = from + rng.exponential(1.0 / rate);
        while t < to {
            times.push(t);
            t += rng.exponential(1.0 / rate);
        }
        times
    }

    /// Stationary churn: `live` objects on average, exponential lifetimes of mean `life`,
    /// arrivals thinned by `load(t)` in [0, 1] at the peak rate `live / life / mean_load`.
    fn churn(&mut self, rng: &mut Rng, c: &Churn, load: impl Fn(f64) -> f64) {
        for _ in 0..rng.poisson(c.live) {
            let death = rng.exponential(c.life);
            self.alloc(rng, 0.0, c.sizes, Some(death));
        }
        let peak = c.live / c.life / c.mean_load;
        for t in Self::arrivals(rng, peak, 0.0, self.horizon) {
            if c.mean_load >= 1.0 || rng.uniform() < load(t) {
                let death = t + rng.exponential(c.life);
                self.alloc(rng, t, c.sizes, Some(death));
            }
        }
    }

    /// Objects arriving at `rate` per second on [from, to), never freed.
    fn leak(&mut self, rng: &mut Rng, rate: f64, sizes: Sizes, from: f64, to: f64) {
        for t in Self::arrivals(rng, rate, from, to) {
            self.alloc(rng, t, sizes, None);
        }
    }

    /// Batch jobs every `period` seconds: about `per_batch` objects of `size` arriving over the
    /// first 80% of the period, all freed at its end. Returns the mean level.
    fn batches(&mut self, rng: &mut Rng, period: f64, per_batch: f64, size: f64) -> f64 {
        let mut start = -rng.uniform() * period;
        while start < self.horizon {
            for _ in 0..rng.poisson(per_batch) {
                let t = (start + rng.uniform() * 0.8 * period).max(0.0);
                self.object(rng, t, size, Some(start + period));
            }
            start += period;
        }
        // The level ramps up over 80% of the period and holds for 20%.
        0.6 * per_batch * size
    }

    fn counters(self) -> Vec<Counters> {
        let mut c = Counters::default();
        self.deltas
            .iter()
            .map(|d| {
                c.alloc_bytes += d.alloc_bytes;
                c.alloc_count += d.alloc_count;
                c.free_bytes += d.free_bytes;
                c.free_count += d.free_count;
                c
            })
            .collect()
    }

    /// The trace, with the noise-free path `expected(t)` (t: seconds since the start).
    fn trace(self, d: &Draw, truth: Facts, expected: impl Fn(f64) -> f64) -> Trace {
        let n = d.snapshots;
        let counters = self.counters();
        let path: Vec<f64> = (0..n)
            .map(|k| expected((k + 1) as f64 * INTERVAL))
            .collect();
        Trace::finish(counters, &path, truth)
    }
}

/// Mean lifetimes of churning objects, seconds (log-uniform): from one snapshot interval,
/// below which the noise is white at the snapshots anyway, to a minute (a lag-one
/// autocorrelation up to exp(-5 / 60) = 0.92, the range of the AR(1) family).
const LIFETIMES: (f64, f64) = (5.0, 60.0);

/// Churn parameters: stationary live objects, lifetimes, sizes.
#[derive(Debug, Clone, Copy)]
struct Churn {
    /// Mean live objects.
    live: f64,
    /// Mean lifetime, seconds.
    life: f64,
    sizes: Sizes,
    /// Mean of the load modulation (1: constant load).
    mean_load: f64,
}

impl Churn {
    /// Churn whose outstanding bytes have standard deviation `sigma`: `live` objects on average
    /// (log-uniform in `live_range`), living `LIFETIMES`, half the stacks with one size and half
    /// with log-normal sizes.
    fn new(rng: &mut Rng, sigma: f64, live_range: (f64, f64)) -> Self {
        let live = rng.log_range(live_range.0, live_range.1);
        let life = rng.log_range(LIFETIMES.0, LIFETIMES.1);
        let log_sigma = Sizes::draw_spread(rng);
        // Var = live * E[size^2] = live * mean^2 * kappa.
        let mean = sigma / (live * Sizes::kappa(log_sigma)).sqrt();
        Churn {
            live,
            life,
            sizes: Sizes { mean, log_sigma },
            mean_load: 1.0,
        }
    }

    /// The default churn of a stack: 10 to 100 live objects.
    fn default_for(rng: &mut Rng, sigma: f64) -> Self {
        Self::new(rng, sigma, (10.0, 100.0))
    }

    fn level(&self) -> f64 {
        self.live * self.sizes.mean
    }
}

/// A stack that allocates at a steady rate and never frees a share of it: churn of
/// `live_range` objects and a leak at the cell's rate, with as many leaked objects as the
/// target SNR needs (about snr * sqrt(live * kappa)), all of one size distribution.
fn churn_and_leak(d: &Draw, rng: &mut Rng, live_range: (f64, f64)) -> (Sim, Churn, f64, Sizes) {
    let mut churn = Churn::new(rng, d.sigma, live_range);
    let kappa = Sizes::kappa(churn.sizes.log_sigma);
    // Leaked objects over the window, and the object size that makes the cell's rate.
    let leaked = (d.snr * (churn.live * kappa).sqrt()).max(1.0);
    let leak_rate = leaked / d.span;
    churn.sizes.mean = d.rate / leak_rate;
    (Sim::new(d), churn, leak_rate, churn.sizes)
}

fn e_churn_leak(d: &Draw, rng: &mut Rng) -> Trace {
    let (mut sim, churn, leak_rate, sizes) = churn_and_leak(d, rng, (100.0, 500.0));
    sim.churn(rng, &churn, |_| 1.0);
    sim.leak(rng, leak_rate, sizes, 0.0, d.horizon());
    let (level, r) = (churn.level(), d.rate);
    sim.trace(d, Facts::leak(r, d), |t| level + r * t)
}

fn e_bursty(d: &Draw, rng: &mut Rng) -> Trace {
    let per_interval = rng.log_range(0.1, 0.5);
    let log_sigma = Sizes::draw_spread(rng);
    let sizes = Sizes {
        mean: d.rate * INTERVAL / per_interval,
        log_sigma,
    };
    let mut sim = Sim::new(d);
    sim.leak(rng, per_interval / INTERVAL, sizes, 0.0, d.horizon());
    let r = d.rate;
    sim.trace(d, Facts::leak(r, d), |t| r * t)
}

/// Batches whose sawtooth has RMS about `sigma`: period 10 to 60 snapshots, 20 to 500 objects.
fn batch_params(rng: &mut Rng, sigma: f64) -> (f64, f64, f64) {
    let period = rng.range(10.0, 60.0) * INTERVAL;
    let per_batch = rng.log_range(20.0, 500.0);
    let size = sigma * 12f64.sqrt() / per_batch;
    (period, per_batch, size)
}

fn e_batch_leak(d: &Draw, rng: &mut Rng) -> Trace {
    let (period, per_batch, size) = batch_params(rng, d.sigma);
    let per_interval = rng.log_range(1.0, 20.0);
    let sizes = Sizes {
        mean: d.rate * INTERVAL / per_interval,
        log_sigma: Sizes::draw_spread(rng),
    };
    let mut sim = Sim::new(d);
    let level = sim.batches(rng, period, per_batch, size);
    sim.leak(rng, per_interval / INTERVAL, sizes, 0.0, d.horizon());
    let r = d.rate;
    sim.trace(d, Facts::leak(r, d), |t| level + r * t)
}

fn e_load_leak(d: &Draw, rng: &mut Rng) -> Trace {
    // Requests arrive only while the load is on; a share of them leaks, the rest churns.
    let (mut sim, mut churn, leak_rate, sizes) = churn_and_leak(d, rng, (10.0, 100.0));
    let (duty, _, is_on) = on_off(rng);
    churn.mean_load = duty;
    let load = |t: f64| if is_on(t - INTERVAL) { 1.0 } else { 0.0 };
    sim.churn(rng, &churn, load);
    for t in Sim::arrivals(rng, leak_rate / duty, 0.0, d.horizon()) {
        if is_on(t - INTERVAL) {
            sim.alloc(rng, t, sizes, None);
        }
    }
    let (level, r) = (churn.level(), d.rate);
    sim.trace(d, Facts::leak(r, d), |t| level + r * t)
}

fn e_sampled(d: &Draw, rng: &mut Rng) -> Trace {
    let (mut sim, churn, leak_rate, sizes) = churn_and_leak(d, rng, (10.0, 100.0));
    // One sample (a step of `period` bytes) per 2 to 20 intervals of leak on average, as the
    // parametric staircase.
    sim.sample = Some(d.rate * INTERVAL * rng.log_range(2.0, 20.0));
    sim.churn(rng, &churn, |_| 1.0);
    sim.leak(rng, leak_rate, sizes, 0.0, d.horizon());
    let (level, r) = (churn.level(), d.rate);
    sim.trace(d, Facts::leak(r, d), |t| level + r * t)
}

fn e_realloc(d: &Draw, rng: &mut Rng) -> Trace {
    // 1 to 4 buffers grown by realloc (a free of the old block and an allocation of the new
    // one): bytes grow, their count does not. Churn around them makes the noise.
    let buffers = rng.int(1, 4) as usize;
    let mut sizes: Vec<f64> = (0..buffers)
        .map(|_| rng.log_range(1024.0, 65536.0))
        .collect();
    let initial: f64 = sizes.iter().sum();
    let per_interval = rng.log_range(0.5, 5.0);
    let append = d.rate * INTERVAL / per_interval;
    let churn = Churn::default_for(rng, d.sigma);
    let mut sim = Sim::new(d);
    for &s in &sizes {
        sim.object(rng, 0.0, s, None);
    }
    // Each buffer's current block is freed when it is next grown.
    for t in Sim::arrivals(rng, per_interval / INTERVAL, 0.0, d.horizon()) {
        let i = rng.int(0, buffers as u64 - 1) as usize;
        let old = sizes[i];
        sizes[i] += append * rng.exponential(1.0);
        sim.free(t, old.max(1.0).round() as u64, 1);
        sim.object(rng, t, sizes[i], None);
    }
    sim.churn(rng, &churn, |_| 1.0);
    let (level, r) = (churn.level() + initial, d.rate);
    sim.trace(d, Facts::leak(r, d), |t| level + r * t)
}

fn e_churn(d: &Draw, rng: &mut Rng) -> Trace {
    let churn = Churn::default_for(rng, d.sigma);
    let mut sim = Sim::new(d);
    sim.churn(rng, &churn, |_| 1.0);
    let level = churn.level();
    sim.trace(d, Facts::none(d), |_| level)
}

fn e_cache(d: &Draw, rng: &mut Rng) -> Trace {
    // Requests for random keys among `keys`; a key's first request allocates its entry, kept
    // for good: the entries approach `keys` as 1 - exp(-t / theta).
    let keys = rng.log_range(50.0, 2000.0).round() as usize;
    let theta = rng.range(0.05, 0.25) * d.span;
    let sizes = Sizes {
        mean: d.growth / keys as f64,
        log_sigma: Sizes::draw_spread(rng),
    };
    let churn = Churn::default_for(rng, d.sigma);
    let mut sim = Sim::new(d);
    let mut cached = vec![false; keys];
    for t in Sim::arrivals(rng, keys as f64 / theta, 0.0, d.horizon()) {
        let key = rng.int(0, keys as u64 - 1) as usize;
        if !cached[key] {
            cached[key] = true;
            sim.alloc(rng, t, sizes, None);
        }
    }
    sim.churn(rng, &churn, |_| 1.0);
    let full = keys as f64 * sizes.mean;
    let level = churn.level();
    sim.trace(d, Facts::none(d), move |t| {
        level + full * (1.0 - (-t / theta).exp())
    })
}

/// Objects arriving at the cell's rate until `stop` seconds, never freed, plus churn.
fn e_plateau(d: &Draw, rng: &mut Rng, stop: f64) -> Trace {
    let per_interval = rng.log_range(1.0, 20.0);
    let sizes = Sizes {
        mean: d.rate * INTERVAL / per_interval,
        log_sigma: Sizes::draw_spread(rng),
    };
    let churn = Churn::default_for(rng, d.sigma);
    let mut sim = Sim::new(d);
    sim.leak(rng, per_interval / INTERVAL, sizes, 0.0, stop);
    sim.churn(rng, &churn, |_| 1.0);
    let (level, r) = (churn.level(), d.rate);
    sim.trace(d, Facts::none(d), move |t| level + r * t.min(stop))
}

fn e_fill(d: &Draw, rng: &mut Rng) -> Trace {
    let stop = INTERVAL + rng.range(0.1, 0.4) * d.span;
    e_plateau(d, rng, stop)
}

fn e_stopped(d: &Draw, rng: &mut Rng) -> Trace {
    let stop = INTERVAL + rng.range(0.4, 0.7) * d.span;
    e_plateau(d, rng, stop)
}

/// The cell's growth in 10 to 1,000 objects allocated over [from, from + over), kept, plus
/// churn.
fn e_burst(d: &Draw, rng: &mut Rng, from: f64, over: f64) -> Trace {
    let objects = rng.log_range(10.0, 1000.0).round();
    let size = d.growth / objects;
    let churn = Churn::default_for(rng, d.sigma);
    let mut sim = Sim::new(d);
    for _ in 0..objects as u64 {
        let t = from + rng.uniform() * over;
        sim.object(rng, t, size, None);
    }
    sim.churn(rng, &churn, |_| 1.0);
    let (level, g) = (churn.level(), objects * size);
    sim.trace(d, Facts::none(d), move |t| {
        level + g * ((t - from) / over).clamp(0.0, 1.0)
    })
}

fn e_startup(d: &Draw, rng: &mut Rng) -> Trace {
    let over = 0.05 * d.span;
    e_burst(d, rng, 0.0, over)
}

fn e_step(d: &Draw, rng: &mut Rng) -> Trace {
    let from = INTERVAL + rng.range(0.3, 0.7) * d.span;
    e_burst(d, rng, from, 2.0 * INTERVAL)
}

fn e_batches(d: &Draw, rng: &mut Rng) -> Trace {
    let (period, per_batch, size) = batch_params(rng, d.sigma);
    let churn = Churn::default_for(rng, 0.1 * d.sigma);
    let mut sim = Sim::new(d);
    let level = sim.batches(rng, period, per_batch, size) + churn.level();
    sim.churn(rng, &churn, |_| 1.0);
    sim.trace(d, Facts::none(d), |_| level)
}

fn e_log(d: &Draw, rng: &mut Rng) -> Trace {
    // Arrivals at a rate a / (theta + t): the expected bytes grow as ln(1 + t / theta).
    let total = rng.log_range(200.0, 5000.0);
    let theta = rng.log_range(0.002, 0.05) * d.span;
    let a = total / (1.0 + d.horizon() / theta).ln();
    let sizes = Sizes {
        mean: d.growth / total,
        log_sigma: Sizes::draw_spread(rng),
    };
    let churn = Churn::default_for(rng, d.sigma);
    let mut sim = Sim::new(d);
    // Unit-rate arrivals e in "cumulative intensity" time: t = theta * (exp(e / a) - 1).
    let mut e = rng.exponential(1.0);
    loop {
        let t = theta * ((e / a).exp() - 1.0);
        if t >= d.horizon() {
            break;
        }
        sim.alloc(rng, t, sizes, None);
        e += rng.exponential(1.0);
    }
    sim.churn(rng, &churn, |_| 1.0);
    let (level, scale) = (churn.level(), a * sizes.mean);
    sim.trace(d, Facts::none(d), move |t| {
        level + scale * (1.0 + t / theta).ln()
    })
}

fn e_64(d: &Draw, rng: &mut Rng) -> Trace {
    let mut sim = Sim::new(d);
    for k in 0..d.snapshots {
        sim.object(rng, (k as f64 + 0.5) * INTERVAL, 64.0, None);
    }
    sim.trace(d, Facts::leak(64.0 / INTERVAL, d), |t| {
        64.0 * (t / INTERVAL).floor()
    })
}

fn e_ramp(d: &Draw, rng: &mut Rng) -> Trace {
    // Churn whose arrival rate rises linearly by a factor 1 + g: the working set follows.
    let g = rng.range(1.0, 3.0);
    let mut churn = Churn::default_for(rng, d.sigma);
    churn.sizes.mean = d.growth / (g * churn.live);
    let h = d.horizon();
    churn.mean_load = 1.0 / (1.0 + g);
    let mut sim = Sim::new(d);
    // Start at the base rate: thin the peak rate by (1 + g t / h) / (1 + g).
    let start = Churn {
        mean_load: 1.0,
        ..churn
    };
    for _ in 0..rng.poisson(start.live) {
        let death = rng.exponential(start.life);
        sim.alloc(rng, 0.0, start.sizes, Some(death));
    }
    let peak = churn.live / churn.life * (1.0 + g);
    for t in Sim::arrivals(rng, peak, 0.0, h) {
        if rng.uniform() < (1.0 + g * t / h) / (1.0 + g) {
            let death = t + rng.exponential(churn.life);
            sim.alloc(rng, t, churn.sizes, Some(death));
        }
    }
    let (live, life, mean) = (churn.live, churn.life, churn.sizes.mean);
    // dm/dt = lambda(t) - m / life with lambda(t) = live / life * (1 + g t / h).
    sim.trace(d, Facts::none(d), move |t| {
        mean * live * (1.0 + g / h * (t - life * (1.0 - (-t / life).exp())))
    })
}

// ---- recordings ----

fn header(snapshots: usize) -> Header {
    Header {
        tool: format!(
            "leak-report corpus {} ({snapshots} snapshots)",
            env!("CARGO_PKG_VERSION")
        ),
        host: HostInfo {
            hostname: "corpus".into(),
            kernel_release: "6.1.0".into(),
            kernel_version: "#1 SMP".into(),
            arch: "x86_64".into(),
            page_size: 4096,
            mem_total_bytes: 64 << 30,
        },
        target: Target {
            mode: TargetMode::Command,
            pid: 4242,
            command_line: vec![MODULE_PATH.into()],
            exe: MODULE_PATH.into(),
        },
        start_wall_ns: START_WALL_NS,
        start_mono_ns: START_MONO_NS,
        interval_ns: (INTERVAL * 1e9) as u64,
        config: RecordConfig {
            max_allocs: 1 << 22,
            max_stacks: 1 << 16,
            max_stack_depth: 64,
            min_size: None,
            max_size: None,
            mmap: false,
        },
        probes: ["malloc", "free"]
            .iter()
            .enumerate()
            .map(|(i, f)| Probe {
                function: (*f).into(),
                module: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                offset: 0x9_8000 + 0x400 * i as u64,
                side: ProbeSide::Entry,
            })
            .collect(),
    }
}

/// Writes `traces` as one recording: trace i is heap stack `FIRST_STACK + i` (two frames in one
/// module), a snapshot every `INTERVAL` seconds, every stack listed in the first snapshot and
/// afterwards only when its counters changed (as the recorder does), then an end record. All
/// traces must have the same length.
pub fn write_recording<W: Write>(out: W, traces: &[Trace]) -> Result<W, Error> {
    let snapshots = traces.first().map_or(0, Trace::snapshots);
    if traces.iter().any(|t| t.snapshots() != snapshots) {
        return Err(Error::Encode(
            "every trace of a recording needs the same number of snapshots".into(),
        ));
    }
    let mut w = Writer::new(out, &header(snapshots))?;
    let interval_ns = (INTERVAL * 1e9) as u64;
    let base = 0x5555_5555_0000u64;
    for k in 0..snapshots {
        let stats: Vec<StackStats> = traces
            .iter()
            .enumerate()
            .filter(|(_, tr)| k == 0 || tr.counters[k] != tr.counters[k - 1])
            .map(|(i, tr)| {
                let c = tr.counters[k];
                StackStats {
                    stack: FIRST_STACK + i as u32,
                    kind: AllocKind::Heap,
                    alloc_bytes: c.alloc_bytes,
                    alloc_count: c.alloc_count,
                    free_bytes: c.free_bytes,
                    free_count: c.free_count,
                }
            })
            .collect();
        let outstanding: u64 = traces.iter().map(|tr| tr.counters[k].bytes()).sum();
        let first = k == 0;
        let new_stacks = if first {
            (0..traces.len() as u32)
                .map(|i| Stack {
                    id: FIRST_STACK + i,
                    // Six frames: a leaf per stack, callers shared by groups of stacks.
                    frames: [
                        0x1_0000 + 0x40 * u64::from(i),
                        0x2000 + 0x40 * u64::from(i % 64),
                        0x3000 + 0x40 * u64::from(i % 8),
                        0x4000,
                        0x5000,
                        0x800,
                    ]
                    .iter()
                    .map(|&offset| Frame {
                        addr: base + offset,
                        module: Some(1),
                        offset,
                    })
                    .collect(),
                    truncated: false,
                    lost: None,
                })
                .collect()
        } else {
            Vec::new()
        };
        let step = (k as u64 + 1) * interval_ns;
        w.write(&Record::Snapshot(Snapshot {
            seq: k as u32,
            wall_ns: START_WALL_NS + step,
            mono_ns: START_MONO_NS + step,
            new_modules: if first {
                vec![Module {
                    id: 1,
                    path: MODULE_PATH.into(),
                    build_id: None,
                    file_size: 1 << 20,
                }]
            } else {
                Vec::new()
            },
            new_stacks,
            stats,
            maps: first.then(|| {
                vec![MapEntry {
                    start: base,
                    end: base + (1 << 20),
                    perms: "r-xp".into(),
                    offset: 0,
                    dev: "fe:01".into(),
                    inode: 1,
                    path: MODULE_PATH.into(),
                }]
            }),
            memory: Some(ProcMemory {
                rss: (64 << 20) + outstanding,
                rss_anon: outstanding,
                ..ProcMemory::default()
            }),
            losses: Losses::default(),
            cost: SnapshotCost::default(),
        }))?;
    }
    let end = snapshots as u64 * interval_ns;
    w.write(&Record::End(End {
        wall_ns: START_WALL_NS + end,
        mono_ns: START_MONO_NS + end,
        reason: EndReason::Duration,
        snapshots: snapshots as u32,
    }))?;
    w.flush()?;
    Ok(w.into_inner())
}

/// Reads a recording as leak-report does (`series::read` with its default cap) and judges
/// every heap stack `FIRST_STACK + i`, i < `stacks`.
pub fn judge_recording(bytes: &[u8], stacks: usize, cfg: &Config) -> Result<Vec<Outcome>, Error> {
    let rec = series::read(Reader::new(bytes)?, series::DEFAULT_CAP)?;
    if let Some(tail) = rec.tail {
        return Err(tail);
    }
    (0..stacks)
        .map(|i| {
            let key = (FIRST_STACK + i as u32, AllocKind::Heap);
            rec.series
                .get(&key)
                .map(|s| judge_series(s, cfg))
                .ok_or_else(|| Error::Encode(format!("stack {} missing", key.0)))
        })
        .collect()
}

// ---- scoring ----

/// The two rules compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The default detector (`detect::detect`).
    Robust,
    /// The seed rule: strictly increasing bytes at every snapshot.
    Strict,
}

/// What the detectors said about one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The default detector's verdict.
    pub verdict: Verdict,
    /// The seed rule.
    pub strict: bool,
    /// Theil-Sen rate, bytes/s.
    pub rate: f64,
    /// Its 95% CI.
    pub rate_ci: (f64, f64),
}

impl Outcome {
    /// Whether a rule flags the series as a continuous leak.
    pub fn flagged(&self, rule: Rule) -> bool {
        match rule {
            Rule::Robust => self.verdict == Verdict::ContinuousLeak,
            Rule::Strict => self.strict,
        }
    }

    /// The verdict under a rule, as `leak-report --detector` reports it (analysis.rs).
    pub fn verdict(&self, rule: Rule) -> Verdict {
        match rule {
            Rule::Robust => self.verdict,
            Rule::Strict if self.strict => Verdict::ContinuousLeak,
            Rule::Strict if self.verdict == Verdict::ContinuousLeak => Verdict::InconsistentGrowth,
            Rule::Strict => self.verdict,
        }
    }
}

fn outcome(d: &detect::Detection, strict: bool) -> Outcome {
    Outcome {
        verdict: d.verdict,
        strict,
        rate: d.rate,
        rate_ci: d.rate_ci,
    }
}

/// Judges an in-memory series (the seed rule on the same points).
pub fn judge_points(points: &[Point], cfg: &Config) -> Outcome {
    let d = detect::detect(points, cfg);
    outcome(&d, d.strict_monotonic)
}

/// Judges a series read from a recording as leak-report does (the seed rule over every raw
/// snapshot, the series possibly compacted).
pub fn judge_series(s: &Series, cfg: &Config) -> Outcome {
    let d = detect::detect(&s.points(), cfg);
    outcome(&d, s.strictly_increasing && s.strict_points >= 2)
}

/// One series of the corpus: a pattern in a cell, and a replicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// Index into `PATTERNS`.
    pub pattern: usize,
    /// Snapshots.
    pub snapshots: usize,
    /// Index into `SNR_LEVELS`.
    pub level: usize,
    /// Replicate number.
    pub replicate: u64,
}

impl Case {
    /// Every combination, patterns outermost.
    pub fn grid(patterns: &[usize], lengths: &[usize], levels: &[usize], reps: u64) -> Vec<Case> {
        let mut out = Vec::new();
        for &pattern in patterns {
            for &snapshots in lengths {
                for &level in levels {
                    for replicate in 0..reps {
                        out.push(Case {
                            pattern,
                            snapshots,
                            level,
                            replicate,
                        });
                    }
                }
            }
        }
        out
    }

    /// The case's seed in a set.
    pub fn seed(&self, set: SeedSet) -> u64 {
        set.seed(&[
            name_hash(PATTERNS[self.pattern].name),
            self.snapshots as u64,
            self.level as u64,
            self.replicate,
        ])
    }

    /// The case's series.
    pub fn trace(&self, set: SeedSet) -> Trace {
        PATTERNS[self.pattern].generate(self.snapshots, SNR_LEVELS[self.level], self.seed(set))
    }
}

/// A judged series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// What it was.
    pub case: Case,
    /// Its measured growth / noise.
    pub snr: f64,
    /// The leak's rate, bytes/s.
    pub true_rate: Option<f64>,
    /// What the detectors said.
    pub outcome: Outcome,
}

/// Generates and judges cases in memory.
pub fn score_in_memory(cases: &[Case], set: SeedSet, cfg: &Config) -> Vec<Scored> {
    cases
        .iter()
        .map(|case| {
            let trace = case.trace(set);
            Scored {
                case: *case,
                snr: trace.snr(),
                true_rate: trace.true_rate,
                outcome: judge_points(&trace.points(), cfg),
            }
        })
        .collect()
}

/// Generates cases (all of one length), writes them as one recording, reads it back with
/// `series::read` and judges every stack. The recording's bytes are returned too.
pub fn score_recorded(
    cases: &[Case],
    set: SeedSet,
    cfg: &Config,
) -> Result<(Vec<Scored>, Vec<u8>), Error> {
    let traces: Vec<Trace> = cases.iter().map(|c| c.trace(set)).collect();
    let bytes = write_recording(Vec::new(), &traces)?;
    let outcomes = judge_recording(&bytes, traces.len(), cfg)?;
    let scored = cases
        .iter()
        .zip(&traces)
        .zip(outcomes)
        .map(|((case, trace), outcome)| Scored {
            case: *case,
            snr: trace.snr(),
            true_rate: trace.true_rate,
            outcome,
        })
        .collect();
    Ok((scored, bytes))
}

/// Counts behind precision, recall, accuracy, slope error and CI coverage.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Series counted.
    pub series: u64,
    /// Leak series.
    pub leaks: u64,
    /// Non-leak series (separately scored patterns are neither).
    pub non_leaks: u64,
    /// Series flagged, per rule (robust, strict).
    pub flagged: [u64; 2],
    /// Leaks flagged, per rule.
    pub true_flags: [u64; 2],
    /// Non-leaks flagged, per rule.
    pub false_flags: [u64; 2],
    /// Series with a correct verdict (`Pattern::correct`), per rule.
    pub correct: [u64; 2],
    /// (rate - true rate) / true rate of the leaks the default detector flagged.
    pub slope_errors: Vec<f64>,
    /// Of those, how many had the true rate inside the 95% CI.
    pub covered: u64,
}

fn rule_index(rule: Rule) -> usize {
    match rule {
        Rule::Robust => 0,
        Rule::Strict => 1,
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Tally {
    /// Counts one judged series.
    pub fn add(&mut self, s: &Scored) {
        let p = &PATTERNS[s.case.pattern];
        self.series += 1;
        match p.truth {
            Truth::Leak => self.leaks += 1,
            Truth::NotLeak => self.non_leaks += 1,
            Truth::Separate => {}
        }
        for rule in [Rule::Robust, Rule::Strict] {
            let i = rule_index(rule);
            let flagged = s.outcome.flagged(rule);
            self.flagged[i] += u64::from(flagged);
            match p.truth {
                Truth::Leak => self.true_flags[i] += u64::from(flagged),
                Truth::NotLeak => self.false_flags[i] += u64::from(flagged),
                Truth::Separate => {}
            }
            self.correct[i] += u64::from(p.correct(s.outcome.verdict(rule), s.case.snapshots));
        }
        if let Some(truth) = s.true_rate.filter(|&r| r > 0.0) {
            if s.outcome.flagged(Rule::Robust) {
                self.slope_errors.push((s.outcome.rate - truth) / truth);
                let (lo, hi) = s.outcome.rate_ci;
                self.covered += u64::from(lo <= truth && truth <= hi);
            }
        }
    }

    /// Flagged leaks / flagged (leaks and non-leaks).
    pub fn precision(&self, rule: Rule) -> Option<f64> {
        let i = rule_index(rule);
        ratio(self.true_flags[i], self.true_flags[i] + self.false_flags[i])
    }

    /// Flagged leaks / leaks.
    pub fn recall(&self, rule: Rule) -> Option<f64> {
        ratio(self.true_flags[rule_index(rule)], self.leaks)
    }

    /// Flagged series / series.
    pub fn flag_rate(&self, rule: Rule) -> Option<f64> {
        ratio(self.flagged[rule_index(rule)], self.series)
    }

    /// Correct verdicts / series.
    pub fn accuracy(&self, rule: Rule) -> Option<f64> {
        ratio(self.correct[rule_index(rule)], self.series)
    }

    /// Median absolute relative slope error of the flagged leaks.
    pub fn slope_error(&self) -> Option<f64> {
        let mut abs: Vec<f64> = self.slope_errors.iter().map(|e| e.abs()).collect();
        if abs.is_empty() {
            return None;
        }
        abs.sort_by(f64::total_cmp);
        let n = abs.len();
        Some(if n % 2 == 1 {
            abs[n / 2]
        } else {
            (abs[n / 2 - 1] + abs[n / 2]) / 2.0
        })
    }

    /// Share of the flagged leaks whose CI covers the true rate.
    pub fn coverage(&self) -> Option<f64> {
        ratio(self.covered, self.slope_errors.len() as u64)
    }
}

// ---- process runs ----

/// Non-leak stacks of a synthetic process, with their weights.
const PROCESS_MIX: [(&str, f64); 8] = [
    ("churn", 0.62),
    ("cache of distinct keys", 0.10),
    ("pool filled to a cap", 0.05),
    ("startup allocations", 0.10),
    ("one-time burst mid-run", 0.03),
    ("batches, no growth", 0.06),
    ("leak stops mid-run (events)", 0.02),
    ("64 B malloc per interval", 0.02),
];

/// The event-level leak patterns injected into process runs.
const PROCESS_LEAKS: [&str; 6] = [
    "churn + leak (heavy churn)",
    "bursty leak (sparse arrivals)",
    "batches + leak (rising floor)",
    "leak while load is on (events)",
    "sampled recorder staircase",
    "realloc growth (events)",
];

/// A synthetic process: many stacks, a few of them leaks.
#[derive(Debug, Clone)]
pub struct ProcessRun {
    /// One trace per stack.
    pub traces: Vec<Trace>,
    /// The pattern of each stack.
    pub patterns: Vec<usize>,
    /// Which stacks leak.
    pub leaks: Vec<bool>,
}

/// A process of `stacks` event-level stacks over `snapshots`: `leaks` of them leak (SNR 3 to
/// 50, 2 to 64x the minimum rate), the others follow `PROCESS_MIX`, with the sizes of
/// examples/gen_recording.rs (most are small, and immaterial, as in a real process).
pub fn process_run(snapshots: usize, stacks: usize, leaks: usize, seed: u64) -> ProcessRun {
    let mut rng = Rng::new(seed);
    let total: f64 = PROCESS_MIX.iter().map(|m| m.1).sum();
    let mut leak_at = vec![false; stacks];
    let mut placed = 0;
    while placed < leaks.min(stacks) {
        let i = rng.int(0, stacks as u64 - 1) as usize;
        if !leak_at[i] {
            leak_at[i] = true;
            placed += 1;
        }
    }
    let mut traces = Vec::with_capacity(stacks);
    let mut patterns = Vec::with_capacity(stacks);
    for &leak in &leak_at {
        let stack_seed = rng.next_u64();
        let (name, snr, rate) = if leak {
            let name = PROCESS_LEAKS[rng.int(0, PROCESS_LEAKS.len() as u64 - 1) as usize];
            let rate = min_rate() * rng.log_range(RATE_MULTIPLES.0, RATE_MULTIPLES.1);
            (name, rng.log_range(3.0, 50.0), rate)
        } else {
            let mut pick = rng.uniform() * total;
            let mut name = PROCESS_MIX[0].0;
            for (n, w) in PROCESS_MIX {
                name = n;
                if pick < w {
                    break;
                }
                pick -= w;
            }
            // As in examples/gen_recording.rs: one object size of 16 B to 8 KiB, 1 to 2,000
            // live objects, churning with Poisson noise (sd = size * sqrt(live)); a cache, a
            // pool, a burst or a stopped leak grows by 0.2 to 2 times that level.
            let size = rng.log_range(16.0, 8192.0);
            let live = rng.log_range(1.0, 2000.0);
            let noise = size * live.sqrt();
            let growth = if name == "churn" {
                size * live
            } else {
                size * live * rng.log_range(0.2, 2.0)
            };
            let span = (snapshots.max(2) - 1) as f64 * INTERVAL;
            (name, growth / noise, growth / span)
        };
        let index = pattern_index(name).unwrap_or(0);
        traces.push(PATTERNS[index].generate_with_rate(snapshots, snr, rate, stack_seed));
        patterns.push(index);
    }
    ProcessRun {
        traces,
        patterns,
        leaks: leak_at,
    }
}

/// What the detectors found in one process run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunScore {
    /// Leaks injected.
    pub leaks: usize,
    /// Leaks flagged, per rule (robust, strict).
    pub found: [usize; 2],
    /// Non-leak stacks flagged, per rule.
    pub false_stacks: [usize; 2],
}

/// Writes the run as one recording, reads it back and scores it.
pub fn score_process(run: &ProcessRun, cfg: &Config) -> Result<RunScore, Error> {
    let bytes = write_recording(Vec::new(), &run.traces)?;
    let outcomes = judge_recording(&bytes, run.traces.len(), cfg)?;
    let mut score = RunScore {
        leaks: run.leaks.iter().filter(|&&l| l).count(),
        ..RunScore::default()
    };
    for (o, &leak) in outcomes.iter().zip(&run.leaks) {
        for rule in [Rule::Robust, Rule::Strict] {
            if o.flagged(rule) {
                let i = rule_index(rule);
                if leak {
                    score.found[i] += 1;
                } else {
                    score.false_stacks[i] += 1;
                }
            }
        }
    }
    Ok(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_and_normal_moments() {
        let mut rng = Rng::new(1);
        for lambda in [0.3, 4.0, 12.0, 250.0] {
            let n = 20_000;
            let xs: Vec<f64> = (0..n).map(|_| rng.poisson(lambda) as f64).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let se = (lambda / n as f64).sqrt();
            assert!(
                (mean - lambda).abs() < 5.0 * se,
                "lambda {lambda}: mean {mean}"
            );
            assert!(
                (var / lambda - 1.0).abs() < 0.1,
                "lambda {lambda}: var {var}"
            );
        }
        let zs: Vec<f64> = (0..20_000).map(|_| rng.normal()).collect();
        let mean = zs.iter().sum::<f64>() / zs.len() as f64;
        let var = zs.iter().map(|z| z * z).sum::<f64>() / zs.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert!((ln_factorial(10.0) - 3_628_800f64.ln()).abs() < 1e-9);
        assert!((ln_factorial(5.0) - 120f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn seeds_are_reproducible_and_sets_differ() {
        let case = Case {
            pattern: 0,
            snapshots: 60,
            level: 2,
            replicate: 3,
        };
        assert_eq!(
            case.trace(SeedSet::Report).counters,
            case.trace(SeedSet::Report).counters
        );
        assert_ne!(case.seed(SeedSet::Report), case.seed(SeedSet::Tune));
        assert_ne!(case.seed(SeedSet::Ci), case.seed(SeedSet::Tune));
    }

    #[test]
    fn every_pattern_makes_consistent_counters() {
        for (i, p) in PATTERNS.iter().enumerate() {
            for n in [12, 120] {
                let t = p.generate(n, 5.0, 7 + i as u64);
                assert_eq!(t.snapshots(), n, "{}", p.name);
                for w in t.counters.windows(2) {
                    assert!(w[1].alloc_bytes >= w[0].alloc_bytes, "{}", p.name);
                    assert!(w[1].free_bytes >= w[0].free_bytes, "{}", p.name);
                }
                assert!(
                    t.counters.iter().all(|c| c.free_bytes <= c.alloc_bytes),
                    "{}",
                    p.name
                );
                assert!(t.noise.is_finite() && t.growth > 0.0, "{}", p.name);
            }
        }
    }

    #[test]
    fn measured_snr_is_near_the_target() {
        // Families whose noise is set by the cell land near it (median over seeds).
        for name in [
            "linear + white noise",
            "churn + leak (heavy churn)",
            "churn",
        ] {
            let i = pattern_index(name).unwrap_or(0);
            let mut snrs: Vec<f64> = (0..41)
                .map(|s| PATTERNS[i].generate(360, 5.0, s).snr())
                .collect();
            snrs.sort_by(f64::total_cmp);
            let median = snrs[20];
            assert!((3.0..8.0).contains(&median), "{name}: median SNR {median}");
        }
    }

    #[test]
    fn recording_round_trip_gives_the_same_points() {
        let traces: Vec<Trace> = [0, 3, 21, 27]
            .iter()
            .map(|&i| PATTERNS[i].generate(40, 5.0, 11))
            .collect();
        let bytes = write_recording(Vec::new(), &traces).unwrap_or_default();
        let rec = series::read(Reader::new(&bytes[..]).unwrap(), series::DEFAULT_CAP).unwrap();
        assert_eq!(rec.snapshots, 40);
        for (i, t) in traces.iter().enumerate() {
            let s = &rec.series[&(FIRST_STACK + i as u32, AllocKind::Heap)];
            assert_eq!(s.points(), &t.points()[..], "trace {i}");
        }
    }
}
