//! Byte sampling (`--sample-bytes`): the tables the BPF side draws its gaps and weights from
//! (bpf/leak.h explains both), and turning its fixed-point block counts back into counts.

/// Gap table: slot `i` is the mean of -ln(u) over u in [i/slots, (i+1)/slots), in units of
/// 2^-shift. Conditional means (rather than midpoints) keep the table's mean at exactly 1, so
/// gaps of N * table[random slot] (rounded up to whole bytes) have mean N; the chance that a
/// block of s bytes ends a gap is then 1 - exp(-s/N) to within 3.2e-5 relative, for every N
/// and s (computed exactly over the table; docs/performance.md, "Sampling").
pub fn gap_table(slots: u32, shift: u32) -> Vec<u32> {
    let slots_f = f64::from(slots);
    // Antiderivative of -ln(u): u - u ln u (0 at u = 0).
    let integral = |u: f64| if u <= 0.0 { 0.0 } else { u - u * u.ln() };
    (0..slots)
        .map(|i| {
            let (u0, u1) = (f64::from(i) / slots_f, f64::from(i + 1) / slots_f);
            let mean = (integral(u1) - integral(u0)) * slots_f;
            fixed(mean, shift)
        })
        .collect()
}

/// Weight table: entry `i` is f(i / steps), f(x) = x / (1 - exp(-x)) (f(0) = 1), in units of
/// 2^-shift, for `slots` entries. A block of s bytes sampled at one per N bytes stands for
/// N * f(s/N) bytes and f(s/N) / (s/N) blocks.
pub fn weight_table(slots: u32, steps: u32, shift: u32) -> Vec<u32> {
    (0..slots)
        .map(|i| fixed(f(f64::from(i) / f64::from(steps)), shift))
        .collect()
}

/// x / (1 - exp(-x)): the expected bytes represented by a sampled block, over N.
pub fn f(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        x / -(-x).exp_m1()
    }
}

fn fixed(v: f64, shift: u32) -> u32 {
    (v * f64::from(1u32 << shift)).round() as u32
}

/// A block count in units of 2^-shift, rounded to whole blocks.
pub fn whole_blocks(fixed: u64, shift: u32) -> u64 {
    (fixed + (1 << shift >> 1)) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_exponential_with_mean_one() {
        let t = gap_table(16384, 16);
        let mean = t.iter().map(|&g| f64::from(g)).sum::<f64>() / t.len() as f64 / 65536.0;
        assert!((mean - 1.0).abs() < 1e-5, "{mean}");
        // Decreasing in u: the first slot holds the tail, the last the smallest gaps.
        assert!(t.windows(2).all(|w| w[0] >= w[1]));
        // The median of Exp(1) is ln 2.
        let median = f64::from(t[8192]) / 65536.0;
        assert!((median - 2f64.ln()).abs() < 1e-3, "{median}");
    }

    #[test]
    fn blocks_are_sampled_with_the_probability_the_weights_assume() {
        // A thread allocating blocks of s bytes samples one block per ceil(g/s) blocks, g a gap
        // (bpf/common.bpf.h draw_gap: N * table[slot] rounded up). Over the table the sampled
        // fraction must be p = 1 - exp(-s/N), which the weights 1/p assume.
        let t = gap_table(16384, 16);
        for n in [1u64, 64, 1024, 65536, 1 << 32] {
            for s in [1, 16, n / 4, n, 3 * n, 10 * n, 15 * n].map(|s| s.max(1)) {
                let blocks_per_sample = t
                    .iter()
                    .map(|&g| (n * u64::from(g)).div_ceil(1 << 16).max(1).div_ceil(s) as f64)
                    .sum::<f64>()
                    / t.len() as f64;
                let p = -(-(s as f64) / n as f64).exp_m1();
                let bias = p * blocks_per_sample - 1.0;
                assert!(bias.abs() < 4e-5, "N {n}, s {s}: {bias:e}");
            }
        }
    }

    #[test]
    fn weights_match_the_estimator() {
        let t = weight_table(4097, 256, 20);
        let at = |i: usize| f64::from(t[i]) / f64::from(1u32 << 20);
        assert_eq!(t[0], 1 << 20); // tiny blocks: f -> 1, s/p -> N
        assert!((at(256) - 1.0 / (1.0 - (-1f64).exp())).abs() < 1e-6); // x = 1
        assert!((at(4096) - 16.0).abs() < 1e-5); // large blocks: s/p -> s
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn counts_round_to_whole_blocks() {
        assert_eq!(whole_blocks(0, 16), 0);
        assert_eq!(whole_blocks(3 << 16, 16), 3);
        assert_eq!(whole_blocks((3 << 16) + (1 << 15), 16), 4);
        assert_eq!(whole_blocks((3 << 16) + (1 << 15) - 1, 16), 3);
    }
}
