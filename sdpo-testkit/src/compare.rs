//! NaN-aware numeric comparison for tests: one rule for every tolerance check of the workspace.
//!
//! The usual one-liner, a fold of the absolute differences with `f32::max` starting at 0,
//! **ignores NaN** (`f32::max(0.0, NaN)` is `0.0`), so a model that outputs NaN passes it. Here a
//! NaN on either side is always a mismatch, an infinity matches only the same infinity, and the
//! report names the worst element so a failure explains itself.
//!
//! ```
//! use sdpo_testkit::{Tolerance, assert_close, compare};
//!
//! // f32 model output against f64 golden values, 1e-4 absolute.
//! assert_close(&[0.5f32, -1.25], &[0.5f64, -1.25004], Tolerance::absolute(1e-4), "logits");
//! // NaN never passes, whatever the tolerance.
//! assert!(compare(&[f32::NAN], &[0.0f64], Tolerance::absolute(f64::MAX)).is_err());
//! ```

use std::fmt;

/// How far an actual value may be from its expected value.
///
/// The bound for element `i` is `abs + rel * |expected[i]| + rel_to_max * max_j |expected[j]|`;
/// the constructors set one or two of the three terms. Choose by what the reference says:
/// log-probs and logits are compared absolutely, loss values spanning many magnitudes per
/// element, gradients relative to the tensor's largest entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part, the same for every element.
    pub abs: f64,
    /// Relative part, times the element's own `|expected|`.
    pub rel: f64,
    /// Relative part, times the largest `|expected|` of the whole slice.
    pub rel_to_max: f64,
}

impl Tolerance {
    /// Exact equality (equal infinities included).
    pub const EXACT: Tolerance = Tolerance {
        abs: 0.0,
        rel: 0.0,
        rel_to_max: 0.0,
    };

    /// `|a - e| <= abs`.
    pub fn absolute(abs: f64) -> Self {
        Self { abs, ..Self::EXACT }
    }

    /// `|a - e| <= rel * |e|`, per element.
    pub fn relative(rel: f64) -> Self {
        Self { rel, ..Self::EXACT }
    }

    /// `|a - e| <= abs + rel * |e|`, per element (NumPy's `isclose` rule).
    pub fn elementwise(abs: f64, rel: f64) -> Self {
        Self {
            abs,
            rel,
            rel_to_max: 0.0,
        }
    }

    /// `|a - e| <= rel_to_max * max_j |e_j|`: relative to the slice's largest magnitude, the
    /// rule for gradient tensors whose small entries are rounding noise of the large ones.
    pub fn relative_to_max(rel_to_max: f64) -> Self {
        Self {
            rel_to_max,
            ..Self::EXACT
        }
    }

    /// The bound for one element with expected value `expected`, in a slice whose largest
    /// `|expected|` is `scale`.
    pub fn bound(&self, expected: f64, scale: f64) -> f64 {
        self.abs + self.rel * expected.abs() + self.rel_to_max * scale
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "abs {:e} + rel {:e}·|e| + rel_to_max {:e}·max|e|",
            self.abs, self.rel, self.rel_to_max
        )
    }
}

/// What a passing comparison measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Number of elements compared.
    pub checked: usize,
    /// Largest `|actual - expected|` (0 for equal infinities).
    pub max_abs_diff: f64,
    /// Largest `|actual - expected| / bound` (<= 1 when it passed; 0 when every bound is 0
    /// and every element equal).
    pub max_ratio: f64,
    /// Index of the element with the largest ratio.
    pub worst_index: usize,
}

/// Why a comparison failed, with enough to find the element.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// The slices differ in length.
    Length {
        /// `actual.len()`.
        actual: usize,
        /// `expected.len()`.
        expected: usize,
    },
    /// At least one element is outside its bound or not finite where it should be.
    Values {
        /// The first failing element.
        first_index: usize,
        /// Its actual value.
        actual: f64,
        /// Its expected value.
        expected: f64,
        /// Its bound (NaN when the expected value is NaN or infinite).
        bound: f64,
        /// How many elements failed.
        failed: usize,
        /// Elements compared.
        checked: usize,
        /// Largest `|actual - expected|` over the elements with finite values on both sides
        /// (+inf if any element has a NaN or an unmatched infinity).
        max_abs_diff: f64,
        /// The tolerance used.
        tolerance: Tolerance,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Length { actual, expected } => {
                write!(f, "length {actual}, expected {expected}")
            }
            Mismatch::Values {
                first_index,
                actual,
                expected,
                bound,
                failed,
                checked,
                max_abs_diff,
                tolerance,
            } => write!(
                f,
                "{failed} of {checked} elements differ; first at [{first_index}]: got {actual:e}, \
                 expected {expected:e} (|diff| {:e} > bound {bound:e}); max |diff| {max_abs_diff:e}; \
                 tolerance {tolerance}",
                (actual - expected).abs()
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Compares `actual` with `expected` element by element under `tol`.
///
/// Fails on a length mismatch, on a NaN on either side, on an infinity not matched by the same
/// infinity, and on any finite difference above the element's bound. The slices may hold `f32`
/// or `f64` (widened to f64 exactly). `tol.rel_to_max` multiplies the largest finite
/// `|expected|` of the slice.
pub fn compare<A, E>(actual: &[A], expected: &[E], tol: Tolerance) -> Result<Comparison, Mismatch>
where
    A: Copy + Into<f64>,
    E: Copy + Into<f64>,
{
    let expected: Vec<f64> = expected.iter().map(|&e| e.into()).collect();
    let scale = expected
        .iter()
        .filter(|e| e.is_finite())
        .fold(0.0f64, |m, e| m.max(e.abs()));
    compare_impl(actual, &expected, |_| scale, tol)
}

/// [`compare`] with a scale per element: `tol.rel_to_max` multiplies `scales[i]` instead of the
/// slice's largest `|expected|`.
///
/// For derived values whose error is proportional to the inputs they were computed from rather
/// than to their own size: a difference of two sums of ~1e30 is only as exact as the sums, so
/// its scale is `|a| + |b|` of *that* element (not the largest in the batch). A NaN or infinite
/// scale fails like a NaN value.
///
/// # Panics
/// When `scales` is not as long as `expected`.
pub fn compare_scaled<A, E>(
    actual: &[A],
    expected: &[E],
    scales: &[f64],
    tol: Tolerance,
) -> Result<Comparison, Mismatch>
where
    A: Copy + Into<f64>,
    E: Copy + Into<f64>,
{
    assert_eq!(
        scales.len(),
        expected.len(),
        "compare_scaled: one scale per element"
    );
    let expected: Vec<f64> = expected.iter().map(|&e| e.into()).collect();
    compare_impl(actual, &expected, |i| scales[i], tol)
}

fn compare_impl<A>(
    actual: &[A],
    expected: &[f64],
    scale: impl Fn(usize) -> f64,
    tol: Tolerance,
) -> Result<Comparison, Mismatch>
where
    A: Copy + Into<f64>,
{
    if actual.len() != expected.len() {
        return Err(Mismatch::Length {
            actual: actual.len(),
            expected: expected.len(),
        });
    }
    let mut failed = 0usize;
    let mut first: Option<(usize, f64, f64, f64)> = None;
    let (mut max_abs_diff, mut max_ratio, mut worst_index) = (0.0f64, 0.0f64, 0usize);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let a: f64 = a.into();
        let (ok, diff, bound) = if a.is_nan() || e.is_nan() {
            (false, f64::INFINITY, f64::NAN)
        } else if e.is_infinite() || a.is_infinite() {
            let same = a == e;
            (same, if same { 0.0 } else { f64::INFINITY }, f64::NAN)
        } else {
            let diff = (a - e).abs();
            let scale = scale(i);
            let bound = tol.bound(e, scale);
            (scale.is_finite() && diff <= bound, diff, bound)
        };
        max_abs_diff = max_abs_diff.max(diff);
        let ratio = match (ok, diff == 0.0) {
            (false, _) => f64::INFINITY,
            (true, true) => 0.0,
            (true, false) => diff / bound,
        };
        if ratio > max_ratio {
            max_ratio = ratio;
            worst_index = i;
        }
        if !ok {
            failed += 1;
            first.get_or_insert((i, a, e, bound));
        }
    }
    match first {
        None => Ok(Comparison {
            checked: expected.len(),
            max_abs_diff,
            max_ratio,
            worst_index,
        }),
        Some((first_index, actual, expected_value, bound)) => Err(Mismatch::Values {
            first_index,
            actual,
            expected: expected_value,
            bound,
            failed,
            checked: expected.len(),
            max_abs_diff,
            tolerance: tol,
        }),
    }
}

/// [`compare`], panicking with `what` and the mismatch report on failure.
///
/// Returns what was measured, for a test's summary line.
#[track_caller]
pub fn assert_close<A, E>(actual: &[A], expected: &[E], tol: Tolerance, what: &str) -> Comparison
where
    A: Copy + Into<f64>,
    E: Copy + Into<f64>,
{
    compare(actual, expected, tol).unwrap_or_else(|m| panic!("{what}: {m}"))
}

/// [`assert_close`] with `tol` for all but a fraction of the elements: every element within
/// the absolute `bound`, at most `outliers * len` of them beyond `tol` (a NaN counts as beyond
/// and fails the bound). For comparisons where rounding is amplified element by element (Adam's
/// per-element scaling of the smallest gradients after several steps). Returns the comparison
/// against `bound` and the number of elements beyond `tol`.
#[track_caller]
pub fn assert_close_but_outliers(
    actual: &[f32],
    expected: &[f32],
    tol: Tolerance,
    (outliers, bound): (f64, f64),
    what: &str,
) -> (Comparison, usize) {
    let c = assert_close(actual, expected, Tolerance::absolute(bound), what);
    let beyond = actual
        .iter()
        .zip(expected)
        .filter(|&(&a, &e)| {
            let diff = (f64::from(a) - f64::from(e)).abs();
            diff.is_nan() || diff > tol.bound(f64::from(e), 0.0)
        })
        .count();
    assert!(
        beyond as f64 <= outliers * actual.len() as f64,
        "{what}: {beyond} of {} elements beyond {tol:?}",
        actual.len()
    );
    (c, beyond)
}

/// [`compare_scaled`], panicking with `what` and the mismatch report on failure.
#[track_caller]
pub fn assert_close_scaled<A, E>(
    actual: &[A],
    expected: &[E],
    scales: &[f64],
    tol: Tolerance,
    what: &str,
) -> Comparison
where
    A: Copy + Into<f64>,
    E: Copy + Into<f64>,
{
    compare_scaled(actual, expected, scales, tol).unwrap_or_else(|m| panic!("{what}: {m}"))
}

/// Largest `|a - b|`, NaN-aware: +inf when either side has a NaN at some index or the two
/// sides have different infinities there; equal infinities count as 0.
///
/// # Panics
/// When the lengths differ.
pub fn max_abs_diff<A, B>(a: &[A], b: &[B]) -> f64
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    assert_eq!(a.len(), b.len(), "max_abs_diff: lengths differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let (x, y): (f64, f64) = (x.into(), y.into());
            if x == y {
                0.0
            } else {
                let d = (x - y).abs();
                // NaN (from a NaN operand or inf - inf) counts as infinitely far.
                if d.is_nan() { f64::INFINITY } else { d }
            }
        })
        .fold(0.0, f64::max) // nan-checked: a NaN difference is mapped to infinity above
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_slices_pass_with_zero_difference() {
        let c = compare(&[1.0f32, -2.5, 0.0], &[1.0f64, -2.5, 0.0], Tolerance::EXACT).unwrap();
        assert_eq!(c.checked, 3);
        assert_eq!(c.max_abs_diff, 0.0);
        assert_eq!(c.max_ratio, 0.0);
    }

    #[test]
    fn nan_fails_on_either_side_whatever_the_tolerance() {
        let huge = Tolerance::elementwise(f64::MAX, f64::MAX);
        assert!(compare(&[f64::NAN], &[1.0f64], huge).is_err());
        assert!(compare(&[1.0f64], &[f64::NAN], huge).is_err());
        assert!(compare(&[f64::NAN], &[f64::NAN], huge).is_err());
        assert!(compare(&[f32::NAN], &[0.0f32], huge).is_err());
        // A NaN hidden among good values still fails, and is counted.
        match compare(&[0.0, f64::NAN, 2.0], &[0.0f64, 1.0, 2.0], huge) {
            Err(Mismatch::Values {
                first_index,
                failed,
                max_abs_diff,
                ..
            }) => {
                assert_eq!((first_index, failed), (1, 1));
                assert_eq!(max_abs_diff, f64::INFINITY);
            }
            other => panic!("expected a value mismatch, got {other:?}"),
        }
    }

    #[test]
    fn infinities_match_only_themselves() {
        let loose = Tolerance::absolute(1e300);
        assert!(compare(&[f64::NEG_INFINITY], &[f64::NEG_INFINITY], loose).is_ok());
        assert!(compare(&[f32::INFINITY], &[f64::INFINITY], loose).is_ok());
        assert!(compare(&[f64::INFINITY], &[f64::NEG_INFINITY], loose).is_err());
        assert!(compare(&[f64::INFINITY], &[1.0f64], loose).is_err());
        assert!(compare(&[1.0f64], &[f64::NEG_INFINITY], loose).is_err());
    }

    #[test]
    fn a_difference_above_the_bound_fails_and_is_reported() {
        let err = compare(
            &[1.0, 2.0, 3.1],
            &[1.0f64, 2.0, 3.0],
            Tolerance::absolute(0.05),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("1 of 3 elements differ"), "{text}");
        assert!(text.contains("[2]"), "{text}");
        // Just inside passes.
        let ok = compare(
            &[1.0, 2.0, 3.04],
            &[1.0f64, 2.0, 3.0],
            Tolerance::absolute(0.05),
        )
        .unwrap();
        assert_eq!(ok.worst_index, 2);
        assert!((ok.max_abs_diff - 0.04).abs() < 1e-12);
        assert!(ok.max_ratio > 0.79 && ok.max_ratio < 0.81);
    }

    #[test]
    fn length_mismatch_fails() {
        assert_eq!(
            compare(&[1.0f64, 2.0], &[1.0f64], Tolerance::absolute(1.0)),
            Err(Mismatch::Length {
                actual: 2,
                expected: 1
            })
        );
    }

    #[test]
    fn relative_modes_scale_as_documented() {
        // Per element: 1e24 ± 1e18 is within 1e-5 relative, 1.0 ± 1e-4 is not.
        let rel = Tolerance::relative(1e-5);
        assert!(compare(&[1e24 + 1e18], &[1e24f64], rel).is_ok());
        assert!(compare(&[1.0001], &[1.0f64], rel).is_err());
        // Relative to the slice's max: the small element may be off by 1e-4 · 100.
        let to_max = Tolerance::relative_to_max(1e-4);
        assert!(compare(&[100.0, 0.005], &[100.0f64, 0.0], to_max).is_ok());
        assert!(compare(&[100.0, 0.02], &[100.0f64, 0.0], to_max).is_err());
        // Per-element relative does not borrow the large element's scale.
        assert!(compare(&[1e24, 0.5], &[1e24f64, 0.0], rel).is_err());
    }

    #[test]
    fn per_element_scales_replace_the_slice_maximum() {
        // Element 1's error scale is its own 1e30, element 0's is 1: a 1e24 error passes on
        // element 1 and a 1e-3 error fails on element 0 (compare() would let it pass).
        let tol = Tolerance::relative_to_max(1e-5);
        let (actual, expected) = ([1.0, 5e29 + 1e24], [1.0f64, 5e29]);
        assert!(compare_scaled(&actual, &expected, &[1.0, 1e30], tol).is_ok());
        let (actual, expected) = ([1.001, 5e29], [1.0f64, 5e29]);
        assert!(compare(&actual, &expected, tol).is_ok());
        assert!(compare_scaled(&actual, &expected, &[1.0, 1e30], tol).is_err());
        // A scale that is not finite would accept anything: it fails instead.
        assert!(compare_scaled(&[1.0f64], &[1.0f64], &[f64::NAN], tol).is_err());
        assert!(compare_scaled(&[1.5f64], &[1.0f64], &[f64::INFINITY], tol).is_err());
    }

    #[test]
    #[should_panic(expected = "logits: 1 of 1 elements differ")]
    fn assert_close_panics_with_the_name() {
        assert_close(&[1.0f32], &[2.0f64], Tolerance::absolute(0.5), "logits");
    }

    #[test]
    fn max_abs_diff_does_not_ignore_nan() {
        // What folding with `f32::max` from 0 gets wrong: it would report 0 here.
        let lossy = [f32::NAN, 1.0]
            .iter()
            .zip(&[0.0f32, 1.0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max); // nan-checked: the lossy form, on purpose
        assert_eq!(lossy, 0.0);
        assert_eq!(
            max_abs_diff(&[f32::NAN, 1.0], &[0.0f32, 1.0]),
            f64::INFINITY
        );
        assert_eq!(max_abs_diff(&[1.0f64], &[f64::NAN]), f64::INFINITY);
        assert_eq!(
            max_abs_diff(&[f64::INFINITY], &[f64::NEG_INFINITY]),
            f64::INFINITY
        );
        assert_eq!(max_abs_diff(&[f64::INFINITY], &[f64::INFINITY]), 0.0);
        assert_eq!(max_abs_diff(&[1.5f64, -2.0], &[1.0f64, -2.25]), 0.5);
    }
}
