//! Vectorized host kernels for flex: the softmax rows of the fused attention and the gated
//! SiLU of the MLP. `exp` is a polynomial the compiler turns into SIMD code; every kernel is
//! compiled for AVX-512 and AVX2+FMA and picked at run time (the baseline x86-64 build has SSE2
//! only), the portable version elsewhere.
//!
//! `exp` is Cephes' `expf` (range reduction by `ln 2` in two parts and a degree-6 polynomial;
//! relative error below 2e-7 on its range), exactly 0 for inputs below `-87.3` (so a masked
//! `-inf` score gives probability 0).

/// `scores` (masked entries `-inf`) → `softmax(scores)` in place; returns the log-sum-exp
/// (`-inf`, and all zeros, when every entry is masked).
pub(crate) fn softmax(scores: &mut [f32]) -> f32 {
    dispatch!(softmax_impl(scores))
}

/// Raw scores `p` (masked entries `-inf`) and the probabilities' gradient `dp` → the
/// probabilities `exp(p - lse)` and the scores' gradient `p * (dp - delta)`, in place.
pub(crate) fn probabilities_and_gradient(p: &mut [f32], dp: &mut [f32], lse: f32, delta: f32) {
    dispatch!(probabilities_and_gradient_impl(p, dp, lse, delta))
}

/// `out = silu(g) * u` element by element, `silu(g) = g * sigmoid(g)`.
pub(crate) fn silu_gate(g: &[f32], u: &[f32], out: &mut [f32]) {
    dispatch!(silu_gate_impl(g, u, out))
}

/// The gradients of [`silu_gate`]: `du = d_out * silu(g)` and
/// `dg = d_out * u * sigmoid(g) * (1 + g * (1 - sigmoid(g)))`.
pub(crate) fn silu_gate_backward(
    (g, u, d_out): (&[f32], &[f32], &[f32]),
    dg: &mut [f32],
    du: &mut [f32],
) {
    dispatch!(silu_gate_backward_impl(g, u, d_out, dg, du))
}

/// Runs `$f` compiled for the best instruction set this CPU has.
macro_rules! dispatch {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, the only feature `avx512` enables.
                return unsafe { avx512::$f($($arg),*) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA, the features `avx2` enables.
                return unsafe { avx2::$f($($arg),*) };
            }
        }
        portable::$f($($arg),*)
    }};
}
use dispatch;

/// The row functions, written once and compiled once per instruction set.
macro_rules! row_functions {
    ($($attr:meta)?) => {
        #[inline]
        $(#[$attr])?
        pub(super) fn softmax_impl(scores: &mut [f32]) -> f32 {
            use super::LANES;
            // Lane-wise maxima and sums: a reduction the compiler keeps in vector registers
            // (a single running float would fix the order of every addition, and stay scalar).
            let mut maxima = [f32::NEG_INFINITY; LANES];
            let mut chunks = scores.chunks_exact(LANES);
            for chunk in &mut chunks {
                for (m, &s) in maxima.iter_mut().zip(chunk) {
                    *m = m.max(s);
                }
            }
            let max = chunks
                .remainder()
                .iter()
                .chain(&maxima)
                .fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            if max == f32::NEG_INFINITY {
                scores.fill(0.0);
                return f32::NEG_INFINITY;
            }
            let mut sums = [0.0f32; LANES];
            let mut chunks = scores.chunks_exact_mut(LANES);
            for chunk in &mut chunks {
                for (total, s) in sums.iter_mut().zip(chunk.iter_mut()) {
                    *s = super::exp(*s - max);
                    *total += *s;
                }
            }
            let mut sum = 0.0f32;
            for s in chunks.into_remainder() {
                *s = super::exp(*s - max);
                sum += *s;
            }
            let sum = sums.iter().sum::<f32>() + sum;
            let inverse = 1.0 / sum;
            for s in scores.iter_mut() {
                *s *= inverse;
            }
            max + sum.ln()
        }

        #[inline]
        $(#[$attr])?
        pub(super) fn probabilities_and_gradient_impl(
            p: &mut [f32],
            dp: &mut [f32],
            lse: f32,
            delta: f32,
        ) {
            for (s, g) in p.iter_mut().zip(dp.iter_mut()) {
                *s = super::exp(*s - lse);
                *g = *s * (*g - delta);
            }
        }

        #[inline]
        $(#[$attr])?
        pub(super) fn silu_gate_impl(g: &[f32], u: &[f32], out: &mut [f32]) {
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                let sigmoid = 1.0 / (1.0 + super::exp(-g));
                *o = g * sigmoid * u;
            }
        }

        #[inline]
        $(#[$attr])?
        pub(super) fn silu_gate_backward_impl(
            g: &[f32],
            u: &[f32],
            d_out: &[f32],
            dg: &mut [f32],
            du: &mut [f32],
        ) {
            let inputs = g.iter().zip(u).zip(d_out);
            for (((&g, &u), &d), (dg, du)) in inputs.zip(dg.iter_mut().zip(du.iter_mut())) {
                let sigmoid = 1.0 / (1.0 + super::exp(-g));
                *du = d * g * sigmoid;
                *dg = d * u * sigmoid * (1.0 + g * (1.0 - sigmoid));
            }
        }
    };
}

mod portable {
    row_functions!();
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    row_functions!(target_feature(enable = "avx512f"));
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    row_functions!(target_feature(enable = "avx2,fma"));
}

/// Floats per lane-wise accumulator: one AVX-512 register.
const LANES: usize = 16;

/// Cephes' `expf`, branch-free and without float-to-integer conversions (Rust's saturating
/// `as i32` stays scalar), so that loops over it vectorize.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LOWEST: f32 = -87.336_55;
    // 1.5 * 2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let clamped = x.clamp(LOWEST, 88.3);
    // n = round(x * log2(e)), in [-126, 127].
    let shifted = clamped.mul_add(LOG2E, MAGIC);
    let n = shifted - MAGIC;
    let r = n.mul_add(-LN2_HI, clamped);
    let r = n.mul_add(-LN2_LO, r);
    let r2 = r * r;
    let mut y = 1.987_569_1e-4f32;
    y = y.mul_add(r, 1.398_199_9e-3);
    y = y.mul_add(r, 8.333_452e-3);
    y = y.mul_add(r, 4.166_579_6e-2);
    y = y.mul_add(r, 1.666_666_5e-1);
    y = y.mul_add(r, 0.5);
    let y = y.mul_add(r2, r) + 1.0;
    // 2^n from n's bits: the biased exponent n + 127 shifted into place.
    let biased = shifted
        .to_bits()
        .wrapping_sub(MAGIC.to_bits())
        .wrapping_add(127);
    let scale = f32::from_bits(biased << 23);
    if x < LOWEST { 0.0 } else { y * scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_the_standard_library() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 2.5e-7 * want,
                "exp({x}) = {got}, std {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn softmax_matches_its_definition_on_every_instruction_set() {
        let scores: Vec<f32> = (0..37)
            .map(|i| ((i * 7) % 11) as f32 * 0.37 - 2.0)
            .collect();
        let mut masked = scores.clone();
        masked[5] = f32::NEG_INFINITY;
        let max = masked.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let sum: f32 = masked.iter().map(|s| (s - max).exp()).sum();
        let mut got = masked.clone();
        let lse = softmax(&mut got);
        assert!((lse - (max + sum.ln())).abs() < 1e-6, "{lse}");
        for (p, s) in got.iter().zip(&masked) {
            let want = (s - max).exp() / sum;
            assert!((p - want).abs() < 1e-6, "{p} vs {want}");
        }
        assert_eq!(got[5], 0.0);
        let mut portable = masked.clone();
        portable::softmax_impl(&mut portable);
        for (a, b) in got.iter().zip(&portable) {
            assert!((a - b).abs() < 1e-7);
        }
        let mut none = vec![f32::NEG_INFINITY; 4];
        assert_eq!(softmax(&mut none), f32::NEG_INFINITY);
        assert_eq!(none, vec![0.0; 4]);
    }

    #[test]
    fn gated_silu_and_its_gradients_match_their_definitions() {
        let g: Vec<f32> = (0..53)
            .map(|i| i as f32 * 0.61 - 16.0)
            .chain([-120.0, 95.0])
            .collect();
        let u: Vec<f32> = (0..g.len())
            .map(|i| ((i * 5) % 7) as f32 * 0.3 - 1.0)
            .collect();
        let d: Vec<f32> = (0..g.len())
            .map(|i| ((i * 3) % 11) as f32 * 0.2 - 1.0)
            .collect();
        let mut out = vec![0.0; g.len()];
        silu_gate(&g, &u, &mut out);
        let (mut dg, mut du) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        silu_gate_backward((&g, &u, &d), &mut dg, &mut du);
        for i in 0..g.len() {
            let (g, u, d) = (f64::from(g[i]), f64::from(u[i]), f64::from(d[i]));
            let s = 1.0 / (1.0 + (-g).exp());
            let close =
                |got: f32, want: f64| (f64::from(got) - want).abs() <= 1e-6 * (1.0 + want.abs());
            assert!(close(out[i], g * s * u), "silu_gate({g}) * {u}: {}", out[i]);
            assert!(close(du[i], d * g * s), "du at {g}: {}", du[i]);
            assert!(
                close(dg[i], d * u * s * (1.0 + g * (1.0 - s))),
                "dg at {g}: {}",
                dg[i]
            );
        }
    }
}
