//! End-to-end tests of `--sample-bytes`: the real BPF program samples real fixture processes,
//! and the scaled-up figures must be unbiased estimates of known truths, within tolerances
//! derived from the estimator's variance. Root and BPF needed (a skip fails in CI=true).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use leak_format::{Losses, Sampling};

mod common;
use common::*;

/// The sampling period of the accuracy tests: small, so that a few hundred thousand
/// allocations give thousands of samples and a tight tolerance.
const N: u64 = 1024;

/// Leaks `k` blocks of `s` bytes from `leak_here` under `--sample-bytes N` and checks that the
/// estimated outstanding bytes and blocks are within 5 standard deviations of the truth.
///
/// Why that tolerance: each thread counts down an exponential gap of mean N bytes, so for any
/// allocation the chance that the gap ends inside it is p = 1 - exp(-s/N), independently of
/// every other allocation (the gap is memoryless; bpf/leak.h). The estimate of the leak's bytes
/// is the sum over its k blocks of X_i * s/p, X_i ~ Bernoulli(p) independent: its mean is k*s
/// (unbiased) and its variance k * (s/p)^2 * p(1-p), so its relative standard deviation is
/// sqrt((1-p) / (k p)). Likewise for the block count (weight 1/p). The discrete gap table moves
/// p by under 4e-5 relative (docs/performance.md, "Sampling"); rounding moves the estimate by
/// under one byte per sampled block. 5 sigma makes a false failure a one-in-a-million event,
/// while the chosen k keep 5 sigma below 10%, so that a scaling wrong by 10% fails.
fn assert_unbiased(k: u64, s: u64) {
    let r = record(
        &["-q", "-i", "1s", "--sample-bytes", &N.to_string()],
        &[&fixture("leaky"), "basic", &k.to_string(), &s.to_string()],
    );
    r.assert_clean();
    assert_eq!(r.state.sampling, Some(Sampling { bytes: N }));
    let p = 1.0 - (-(s as f64) / N as f64).exp();
    let rel_sd = ((1.0 - p) / (k as f64 * p)).sqrt();
    let tolerance = 5.0 * rel_sd;
    assert!(
        tolerance < 0.1,
        "k = {k} is too small to detect a 10% error"
    );
    let leak = r.by_function("leak_here");
    assert_eq!(leak.stacks, 1, "{}", r.stderr);
    let truth = (k * s) as f64;
    let bytes_err = (leak.bytes as f64 - truth) / truth;
    let count_err = (leak.count as f64 - k as f64) / k as f64;
    assert!(
        bytes_err.abs() <= tolerance,
        "{k} x {s} B at 1 per {N} B: estimated {} B, {:+.2}% off (5 sd = {:.2}%)",
        leak.bytes,
        bytes_err * 100.0,
        tolerance * 100.0
    );
    assert!(
        count_err.abs() <= tolerance,
        "{k} x {s} B at 1 per {N} B: estimated {} blocks, {:+.2}% off (5 sd = {:.2}%)",
        leak.count,
        count_err * 100.0,
        tolerance * 100.0
    );
    // The churn around the leak (basic mode) is balanced: nothing outstanding on its stacks.
    let churn = r.by_function("churn_balanced");
    assert_eq!((churn.bytes, churn.count), (0, 0));
    assert_no_losses(&r.state.losses);
}

fn assert_no_losses(l: &Losses) {
    assert_eq!(l.total_drops(), 0, "{l:?}");
    // Frees of blocks that were not sampled are expected and are not losses.
    assert_eq!(l.unknown_free, 0, "{l:?}");
}

#[test]
fn small_blocks_sampled_give_unbiased_estimates() {
    if !bpf_ready() {
        return;
    }
    // s = N/16: p = 0.061, about 12,000 samples; 5 sd = 4.4%.
    assert_unbiased(200_000, N / 16);
}

#[test]
fn blocks_larger_than_the_period_sampled_give_unbiased_estimates() {
    if !bpf_ready() {
        return;
    }
    // s = 2N: p = 0.865, each sampled block counts for 1.156 blocks; 5 sd = 1.4%, so
    // forgetting the weight (13.5% low) fails.
    assert_unbiased(20_000, 2 * N);
}

#[test]
fn blocks_of_sixteen_periods_or_more_are_all_recorded_exactly() {
    if !bpf_ready() {
        return;
    }
    // A gap never exceeds 10.7 N (the table's tail), so every block of 16 N or more ends one:
    // p = 1 and the figures are exact.
    let r = record(
        &["-q", "-i", "1s", "--sample-bytes", &N.to_string()],
        &[&fixture("leaky"), "basic", "500", &(16 * N).to_string()],
    );
    r.assert_clean();
    let leak = r.by_function("leak_here");
    assert_eq!(
        (leak.bytes, leak.count),
        (500 * 16 * N, 500),
        "{}",
        r.stderr
    );
    assert_no_losses(&r.state.losses);
}

#[test]
fn sampled_churn_leaves_nothing_outstanding_and_no_losses() {
    if !bpf_ready() {
        return;
    }
    // Two threads, each 100,000 malloc(64)/free pairs: most frees are of unsampled blocks.
    let r = record(
        &["-q", "-i", "1s", "--sample-bytes", "512"],
        &[&fixture("leaky"), "churn", "100000", "2"],
    );
    r.assert_clean();
    let churn = r.by_function("churn_loop");
    assert_eq!((churn.bytes, churn.count), (0, 0), "{}", r.stderr);
    // Some blocks were sampled (about 200,000 * 64 / 512 = 25,000), and every one was freed.
    assert!(
        churn.allocs > 20_000 && churn.allocs == churn.frees,
        "{churn:?}"
    );
    // Nothing else is outstanding, except what an exact recording also shows: glibc keeps a
    // finished thread's stack cached with its TLS vector (allocate_dtv's calloc in the dynamic
    // loader, 272 B each), and a sampled one of those stays outstanding.
    for ((stack, kind), t) in &r.state.totals {
        if t.outstanding_bytes() != 0 {
            let path = r.innermost_frame(*stack).map_or("?", |(path, _)| path);
            assert!(
                path.contains("ld-linux-x86-64"),
                "stack {stack} {kind:?} in {path}: {t:?}"
            );
        }
    }
    assert_no_losses(&r.state.losses);
}

#[test]
fn an_exact_recording_has_no_sampling_record() {
    if !bpf_ready() {
        return;
    }
    let r = record(
        &["-q", "-i", "1s"],
        &[&fixture("leaky"), "basic", "10", "100"],
    );
    r.assert_clean();
    assert_eq!(r.state.sampling, None);
    assert_eq!(r.by_function("leak_here").bytes, 1000);
}

// Bad input: a clear error, exit status 2, nothing written. No BPF needed.

#[test]
fn bad_sample_bytes_are_refused_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.zst");
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["-o", o, "--sample-bytes", "0", "-p", "1"],
            "must be at least 1 byte",
        ),
        (vec!["-o", o, "--sample-bytes", "lots", "-p", "1"], "'lots'"),
        (
            vec!["-o", o, "--sample-bytes", "5G", "-p", "1"],
            "too large",
        ),
        // Kernel mode samples too (tests/kernel.rs), and refuses the same bad values.
        (
            vec!["-o", o, "--kernel", "--sample-bytes", "0"],
            "must be at least 1 byte",
        ),
    ] {
        let (code, err) = run_recorder(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.lines().next().unwrap_or("").contains(needle),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?} left a file behind");
    }
}
