//! Flash-style attention on host memory (float32): the forward in query tiles against only the
//! keys a tile can see, keeping each query's log-sum-exp, and the backward recomputing each
//! tile's probabilities from it (FlashAttention-2's algorithm, one `(row, head)` at a time).
//!
//! A tile of `QUERY_TILE` queries scores at most the keys `first..end` before its last query
//! (`[tile, keys]` floats, never `[T, T]`); the products run through `gemm` (the kernel flex's
//! own `matmul` uses) and the softmax, the mask and the soft-capping in one pass over the
//! tile. Every query's softmax is the blocked attention's: the same `(q * scale)·kᵀ`, the same
//! soft-capping `cap * tanh(s / cap)`, `exp(s - max)` over the visible keys divided by their
//! sum; results agree with it to float rounding (the products see other shapes).
//!
//! A query that sees no key at all (a left-padded row's leading padding) gets a zero output
//! and no gradient; the blocked attention gives it the uniform average of the keys instead.
//! Nothing a loss reads depends on either: such a position is padding, hidden as a key from
//! every real query.

use rayon::prelude::*;

use super::visibility::Visibility;
use crate::vector::{probabilities_and_gradient, softmax};

/// Queries per tile: `[QUERY_TILE, keys]` scores per task (256 KiB at 1024 keys).
const QUERY_TILE: usize = 64;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq: usize,
    pub head_dim: usize,
}

impl Dims {
    fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }

    fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// How scores are formed: `(q * scale)·kᵀ`, then `cap * tanh(s / cap)` when soft-capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scoring {
    pub scale: f32,
    pub softcap: Option<f32>,
}

/// The forward's results: the merged output `[rows, T, heads * head_dim]` and each query's
/// log-sum-exp `[rows, heads, T]` (`-inf` where a query sees no key).
pub(crate) struct Forward {
    pub output: Vec<f32>,
    pub logsumexp: Vec<f32>,
}

/// `softmax((q * scale)·kᵀ)·v` over the visible keys, heads merged.
///
/// # Shapes
/// - `q`: `[rows, heads, T, head_dim]`; `k`, `v`: `[rows, kv_heads, T, head_dim]` (contiguous)
pub(crate) fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: Dims,
    scoring: Scoring,
    visibility: &Visibility,
) -> Forward {
    let Dims {
        rows,
        heads,
        seq,
        head_dim: d,
        ..
    } = dims;
    let plane = seq * d;
    let mut per_head = vec![0.0f32; rows * heads * plane];
    let mut logsumexp = vec![0.0f32; rows * heads * seq];
    per_head
        .par_chunks_mut(plane.max(1))
        .zip(logsumexp.par_chunks_mut(seq.max(1)))
        .enumerate()
        .for_each(|(task, (out, lse))| {
            let (row, head) = (task / heads, task % heads);
            let kv = head / dims.groups();
            let kv_plane = (row * dims.kv_heads + kv) * plane;
            let qs = scaled(&q[task * plane..(task + 1) * plane], scoring.scale);
            let keys = &k[kv_plane..kv_plane + plane];
            let values = &v[kv_plane..kv_plane + plane];
            let mut scores = Vec::new();
            for tile in tiles(seq, visibility) {
                let Tile {
                    start: s,
                    end: e,
                    first,
                } = tile;
                let (n, n_keys) = (tile.queries(), tile.keys());
                raw_scores(&mut scores, &qs, keys, tile, d);
                for (i, tile_row) in scores.chunks_mut(n_keys.max(1)).enumerate() {
                    let query = s + i;
                    lse[query] = softmax_row(tile_row, row, query, first, scoring, visibility);
                }
                // out[s..e] = p · values[first..e]
                product(
                    &mut out[s * d..e * d],
                    Out::rows(d),
                    (n, d, n_keys),
                    Operand::rows(&scores, 0, n_keys),
                    Operand::rows(values, first * d, d),
                    1.0,
                    false,
                );
            }
        });
    let mut output = vec![0.0f32; rows * seq * dims.width()];
    for (task, plane_values) in per_head.chunks(plane.max(1)).enumerate() {
        let (row, head) = (task / heads, task % heads);
        for (t, src) in plane_values.chunks(d.max(1)).enumerate() {
            let at = (row * seq + t) * dims.width() + head * d;
            output[at..at + d].copy_from_slice(src);
        }
    }
    Forward { output, logsumexp }
}

/// The gradients `(dq, dk, dv)` from `grad`, the gradient of the merged output, and what the
/// forward returned. A key/value head's gradient sums over the query heads it serves.
///
/// # Shapes
/// - `q`, `k`, `v` as for [`forward`]; `output`, `grad`: `[rows, T, heads * head_dim]`;
///   `logsumexp`: `[rows, heads, T]`
/// - output: `dq` `[rows, heads, T, head_dim]`, `dk`, `dv` `[rows, kv_heads, T, head_dim]`
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    output: &[f32],
    logsumexp: &[f32],
    grad: &[f32],
    dims: Dims,
    scoring: Scoring,
    visibility: &Visibility,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims {
        rows,
        heads,
        kv_heads,
        seq,
        head_dim: d,
    } = dims;
    let groups = dims.groups();
    let width = dims.width();
    let plane = seq * d;
    let mut dq = vec![0.0f32; rows * heads * plane];
    let mut dk = vec![0.0f32; rows * kv_heads * plane];
    let mut dv = vec![0.0f32; rows * kv_heads * plane];
    dq.par_chunks_mut((groups * plane).max(1))
        .zip(dk.par_chunks_mut(plane.max(1)))
        .zip(dv.par_chunks_mut(plane.max(1)))
        .enumerate()
        .for_each(|(task, ((dq_group, dk_plane), dv_plane))| {
            let (row, kv) = (task / kv_heads, task % kv_heads);
            let kv_plane = task * plane;
            let keys = &k[kv_plane..kv_plane + plane];
            let values = &v[kv_plane..kv_plane + plane];
            let (mut p, mut dp, mut slopes) = (Vec::new(), Vec::new(), Vec::new());
            for g in 0..groups {
                let head = kv * groups + g;
                let q_plane = (row * heads + head) * plane;
                let qs = scaled(&q[q_plane..q_plane + plane], scoring.scale);
                let lse = &logsumexp[(row * heads + head) * seq..][..seq];
                // The output's and its gradient's rows for this head: stride `width`.
                let head_at = row * seq * width + head * d;
                let delta: Vec<f32> = (0..seq)
                    .map(|t| {
                        let at = head_at + t * width;
                        dot(&grad[at..at + d], &output[at..at + d])
                    })
                    .collect();
                let dq_plane = &mut dq_group[g * plane..(g + 1) * plane];
                for tile in tiles(seq, visibility) {
                    let Tile {
                        start: s,
                        end: e,
                        first,
                    } = tile;
                    let (n, n_keys) = (tile.queries(), tile.keys());
                    raw_scores(&mut p, &qs, keys, tile, d);
                    // dp = dO[s..e] · values[first..e]ᵀ
                    dp.clear();
                    dp.resize(n * n_keys, 0.0);
                    product(
                        &mut dp,
                        Out::rows(n_keys),
                        (n, n_keys, d),
                        Operand::rows(grad, head_at + s * width, width),
                        Operand::transposed(values, first * d, d),
                        1.0,
                        false,
                    );
                    for i in 0..n {
                        let query = s + i;
                        let tile_row = &mut p[i * n_keys..(i + 1) * n_keys];
                        let dp_row = &mut dp[i * n_keys..(i + 1) * n_keys];
                        score_gradient_row(
                            tile_row,
                            dp_row,
                            (lse[query], delta[query]),
                            (row, query, first),
                            (scoring, &mut slopes),
                            visibility,
                        );
                    }
                    // p now holds the probabilities, dp the scores' gradient.
                    // dv[first..e] += pᵀ · dO[s..e]
                    product(
                        &mut dv_plane[first * d..e * d],
                        Out::rows(d),
                        (n_keys, d, n),
                        Operand::transposed(&p, 0, n_keys),
                        Operand::rows(grad, head_at + s * width, width),
                        1.0,
                        true,
                    );
                    // dq[s..e] = scale * ds · keys[first..e]
                    product(
                        &mut dq_plane[s * d..e * d],
                        Out::rows(d),
                        (n, d, n_keys),
                        Operand::rows(&dp, 0, n_keys),
                        Operand::rows(keys, first * d, d),
                        scoring.scale,
                        false,
                    );
                    // dk[first..e] += dsᵀ · qs[s..e]
                    product(
                        &mut dk_plane[first * d..e * d],
                        Out::rows(d),
                        (n_keys, d, n),
                        Operand::transposed(&dp, 0, n_keys),
                        Operand::rows(&qs, s * d, d),
                        1.0,
                        true,
                    );
                }
            }
        });
    (dq, dk, dv)
}

/// One query tile: the queries `start..end` against the keys `first..end` (the keys after the
/// tile are causally hidden, those before `first` outside every query's window).
#[derive(Debug, Clone, Copy)]
struct Tile {
    start: usize,
    end: usize,
    first: usize,
}

impl Tile {
    fn queries(&self) -> usize {
        self.end - self.start
    }

    fn keys(&self) -> usize {
        self.end - self.first
    }
}

/// The query tiles covering `0..seq`.
fn tiles<'a>(seq: usize, visibility: &'a Visibility<'a>) -> impl Iterator<Item = Tile> + 'a {
    (0..seq).step_by(QUERY_TILE).map(move |start| Tile {
        start,
        end: (start + QUERY_TILE).min(seq),
        first: visibility.first_key(start),
    })
}

/// A tile's raw scores `qs[start..end] · keys[first..end]ᵀ` into `scores` (`[queries, keys]`,
/// row-major, resized), `qs` the scaled queries and `keys` the head's keys, `d` floats a row.
fn raw_scores(scores: &mut Vec<f32>, qs: &[f32], keys: &[f32], tile: Tile, d: usize) {
    let (n, n_keys) = (tile.queries(), tile.keys());
    scores.clear();
    scores.resize(n * n_keys, 0.0);
    product(
        scores,
        Out::rows(n_keys),
        (n, n_keys, d),
        Operand::rows(qs, tile.start * d, d),
        Operand::transposed(keys, tile.first * d, d),
        1.0,
        false,
    );
}

/// `x * scale` element by element (the blocked attention scales the queries, not the scores).
fn scaled(x: &[f32], scale: f32) -> Vec<f32> {
    x.iter().map(|&value| value * scale).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Soft-capping as the blocked attention computes it: `cap * tanh(s / cap)`.
fn capped(score: f32, cap: f32) -> f32 {
    (score / cap).tanh() * cap
}

/// One query's raw scores over keys `first..` → its probabilities (0 on the keys it cannot
/// see), in place; returns its log-sum-exp (`-inf` when it sees no key, all probabilities 0).
fn softmax_row(
    scores: &mut [f32],
    row: usize,
    query: usize,
    first: usize,
    scoring: Scoring,
    visibility: &Visibility,
) -> f32 {
    visibility.mask_row(scores, row, query, first);
    if let Some(cap) = scoring.softcap {
        for score in scores.iter_mut().filter(|s| s.is_finite()) {
            *score = capped(*score, cap);
        }
    }
    softmax(scores)
}

/// One query's raw scores → its probabilities `p` (from the forward's log-sum-exp), and its
/// `dp` (the probabilities' gradient) → the raw scores' gradient
/// `p * (dp - delta)` (times `1 - tanh²` through the soft-capping, kept in `slopes`, a buffer
/// reused across rows), both in place.
fn score_gradient_row(
    p: &mut [f32],
    dp: &mut [f32],
    (lse, delta): (f32, f32),
    (row, query, first): (usize, usize, usize),
    (scoring, slopes): (Scoring, &mut Vec<f32>),
    visibility: &Visibility,
) {
    if lse == f32::NEG_INFINITY {
        p.fill(0.0);
        dp.fill(0.0);
        return;
    }
    visibility.mask_row(p, row, query, first);
    if let Some(cap) = scoring.softcap {
        slopes.clear();
        slopes.extend(p.iter_mut().map(|score| {
            if !score.is_finite() {
                return 0.0;
            }
            let t = (*score / cap).tanh();
            *score = t * cap;
            1.0 - t * t
        }));
    }
    probabilities_and_gradient(p, dp, lse, delta);
    if scoring.softcap.is_some() {
        for (g, slope) in dp.iter_mut().zip(slopes.iter()) {
            *g *= slope;
        }
    }
}

/// Where a product's output goes: a row-major block with `stride` floats between rows.
#[derive(Clone, Copy)]
struct Out {
    stride: usize,
}

impl Out {
    fn rows(stride: usize) -> Self {
        Self { stride }
    }
}

/// A matrix operand read from a slice: element `(i, j)` at `offset + i * row + j * col`.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    offset: usize,
    row: usize,
    col: usize,
}

impl<'a> Operand<'a> {
    /// Row-major rows of `stride` floats starting at `offset`.
    fn rows(data: &'a [f32], offset: usize, stride: usize) -> Self {
        Self {
            data,
            offset,
            row: stride,
            col: 1,
        }
    }

    /// The transpose of row-major rows of `stride` floats starting at `offset`.
    fn transposed(data: &'a [f32], offset: usize, stride: usize) -> Self {
        Self {
            data,
            offset,
            row: 1,
            col: stride,
        }
    }

    /// Whether an `m x n` matrix fits in the slice.
    fn fits(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || self.offset + (m - 1) * self.row + (n - 1) * self.col < self.data.len()
    }
}

/// `dst = beta * lhs · rhs` (`accumulate`: `dst += ...`), `lhs` `m x k`, `rhs` `k x n`, `dst`
/// `m x n` row-major with `out.stride` floats between rows.
///
/// # Panics
/// When an operand or the output does not fit in its slice (a bug in this module).
fn product(
    dst: &mut [f32],
    out: Out,
    (m, n, k): (usize, usize, usize),
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    beta: f32,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let dst_fits = (m - 1) * out.stride + n <= dst.len();
    assert!(
        dst_fits && lhs.fits(m, k) && rhs.fits(k, n),
        "attention tile product out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * out.stride..r * out.stride + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the checks above keep every element gemm reads or writes inside its slice; the
    // output is a `&mut` borrow, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            out.stride as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.col as isize,
            lhs.row as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.col as isize,
            rhs.row as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
