//! What a forward pass returns, and the output head shared by the architectures: its logits
//! and, for the memory-bounded engine, its backward without autodiff.

use burn::module::{Param, ParamId};
use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::precision::MatmulPrecision;

/// Logits for every position and the hidden states transformers reports with
/// `output_hidden_states=True`.
#[derive(Debug, Clone)]
pub struct CausalLmOutput {
    /// `[batch, seq, vocab]`: logits at position `t` score the token at `t + 1`.
    pub logits: Tensor<3>,
    /// `num_hidden_layers + 1` tensors `[batch, seq, hidden]`: the embeddings (GPT-2: token +
    /// position), the output of every block but the last, and the last block's output after
    /// the final norm (the input of the output head).
    pub hidden_states: Vec<Tensor<3>>,
}

/// The gradients [`crate::CausalLm::lm_head_backward`] gives for one chunk of positions.
#[derive(Debug)]
pub struct HeadGradients {
    /// `[n, hidden]`: the gradient of the head's input (the final norm's output).
    pub input: Tensor<2>,
    /// The gradient of the head's weight (the token embedding table when tied), in the
    /// parameter's shape and dtype; `None` when the weight is frozen.
    pub weight: Option<(ParamId, Tensor<2>)>,
    /// The gradient of the head's bias; `None` without a bias or when it is frozen.
    pub bias: Option<(ParamId, Tensor<1>)>,
}

/// A model's output head as its forward and the engine's backward see it: an untied head
/// (`[hidden, vocab]`, maybe with a bias), or the token embedding table read transposed
/// (`tie_word_embeddings`); the product in `precision`, the logits in float32, soft-capped
/// (`cap · tanh(logits / cap)`) where the family does so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputHead<'a> {
    pub(crate) head: Option<&'a Linear>,
    pub(crate) embedding: &'a Embedding,
    pub(crate) precision: MatmulPrecision,
    pub(crate) soft_cap: Option<f64>,
}

impl OutputHead<'_> {
    /// The logits of `x`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; output: `[batch, seq, vocab]`
    pub(crate) fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let (weight, bias) = self.product_operands();
        let logits = raw_logits(x, weight, bias, self.precision);
        match self.soft_cap {
            Some(cap) => soft_cap(logits, cap),
            None => logits,
        }
    }

    /// The head's backward for the positions `x` (`[n, hidden]`, untracked), computed with
    /// plain tensor operations and without keeping anything for autodiff: the logits (the
    /// forward's bits), `seed(logits)` as the gradient of the logits, then the gradient of the
    /// input and, where they are trained, of the weight and bias. Autodiff through
    /// [`OutputHead::logits`] would keep the head's operands of the product for its backward:
    /// for a head stored in a lower dtype than its product, a float32 copy of the largest
    /// matrix of the model (0.9 GB at a 152k vocabulary and hidden 1536).
    pub(crate) fn backward(
        &self,
        x: Tensor<2>,
        seed: impl FnOnce(Tensor<2>) -> Tensor<2>,
    ) -> HeadGradients {
        let x = x.without_autodiff();
        let [n, hidden] = x.dims();
        let (weight, bias) = self.product_operands();
        let (weight, bias) = (
            weight.without_autodiff(),
            bias.map(Tensor::without_autodiff),
        );
        let [_, vocab] = weight.dims();
        let raw = raw_logits(
            x.clone().reshape([1, n, hidden]),
            weight.clone(),
            bias,
            self.precision,
        )
        .reshape([n, vocab]);
        // The cap's chain rule in autodiff's order: ·cap, ·(1 − tanh²), ÷cap.
        let (logits, cap_derivative) = match self.soft_cap {
            Some(cap) => {
                let tanh = (raw / cap).tanh();
                let derivative = tanh.clone().square().neg().add_scalar(1.0);
                (tanh * cap, Some((cap, derivative)))
            }
            None => (raw, None),
        };
        let dlogits = seed(logits);
        let draw = match cap_derivative {
            Some((cap, derivative)) => (dlogits * cap) * derivative / cap,
            None => dlogits,
        };

        // dx = draw · Wᵀ, one vocabulary slice of the weight widened at a time.
        let mut input: Option<Tensor<2>> = None;
        for (start, len) in vocab_slices(vocab, self.widens(&weight)) {
            let part = self.precision.matmul(
                draw.clone().narrow(1, start, len),
                weight.clone().narrow(1, start, len).transpose(),
            );
            input = Some(match input {
                Some(sum) => sum + part,
                None => part,
            });
        }
        let input = input.unwrap_or_else(|| Tensor::zeros([n, hidden], &x.device()));

        let (weight_param, bias_param) = self.params();
        let weight = trained(weight_param).then(|| {
            let grad = match self.head {
                // [hidden, vocab]: xᵀ · draw.
                Some(_) => self.precision.matmul(x.clone().transpose(), draw.clone()),
                // The embedding's [vocab, hidden]: drawᵀ · x.
                None => self.precision.matmul(draw.clone().transpose(), x),
            };
            (weight_param.id, grad.cast(dtype_of(weight_param)))
        });
        let bias = bias_param.filter(|b| trained(b)).map(|b| {
            let grad = draw.sum_dim(0).reshape([vocab]).cast(dtype_of(b));
            (b.id, grad)
        });
        HeadGradients {
            input,
            weight,
            bias,
        }
    }

    /// The weight as the product's right operand (`[hidden, vocab]`) and the bias.
    fn product_operands(&self) -> (Tensor<2>, Option<Tensor<1>>) {
        match self.head {
            Some(head) => (head.weight.val(), head.bias.as_ref().map(Param::val)),
            None => (self.embedding.weight.val().transpose(), None),
        }
    }

    /// The weight and bias parameters.
    fn params(&self) -> (&Param<Tensor<2>>, Option<&Param<Tensor<1>>>) {
        match self.head {
            Some(head) => (&head.weight, head.bias.as_ref()),
            None => (&self.embedding.weight, None),
        }
    }

    fn widens(&self, weight: &Tensor<2>) -> bool {
        self.precision.dtype() != weight.dtype().into()
    }
}

/// `x · weight + bias` with the product in `precision`. A weight stored in a lower dtype than
/// its product (a frozen base held in bfloat16, a float32 run) is widened one vocabulary slice
/// at a time: widening it whole would hold a float32 copy of the largest matrix of the model for
/// the product (0.9 GB at a 152k vocabulary). Each logit is the same dot product either way.
fn raw_logits(
    x: Tensor<3>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    precision: MatmulPrecision,
) -> Tensor<3> {
    let [_, vocab] = weight.dims();
    let widened = precision.dtype() != weight.dtype().into();
    let slices = vocab_slices(vocab, widened);
    if slices.len() == 1 {
        return precision.linear(x, weight, bias);
    }
    let slices: Vec<Tensor<3>> = slices
        .into_iter()
        .map(|(start, len)| {
            let w = weight.clone().narrow(1, start, len);
            let b = bias.clone().map(|b| b.narrow(0, start, len));
            precision.linear(x.clone(), w, b)
        })
        .collect();
    Tensor::cat(slices, 2)
}

/// `(start, len)` of the vocabulary slices a head's product runs over: [`HEAD_SLICE`] entries
/// at a time when the weight is widened for it, else the whole vocabulary at once.
fn vocab_slices(vocab: usize, widened: bool) -> Vec<(usize, usize)> {
    if !widened || vocab <= HEAD_SLICE {
        return vec![(0, vocab)];
    }
    (0..vocab)
        .step_by(HEAD_SLICE)
        .map(|start| (start, HEAD_SLICE.min(vocab - start)))
        .collect()
}

/// Vocabulary entries per slice when a head stored in a lower dtype is widened for its product
/// (16384 × hidden 1536 × 4 B = 100 MB at a time).
const HEAD_SLICE: usize = 16384;

/// Whether a parameter is trained (tracked, requiring its gradient).
fn trained<const D: usize>(param: &Param<Tensor<D>>) -> bool {
    param.val().is_require_grad()
}

fn dtype_of<const D: usize>(param: &Param<Tensor<D>>) -> FloatDType {
    param.val().dtype().into()
}

/// `cap · tanh(x / cap)`.
pub(crate) fn soft_cap<const D: usize>(x: Tensor<D>, cap: f64) -> Tensor<D> {
    (x / cap).tanh() * cap
}

/// Embedding rows for `ids`, in float32 whatever dtype the table is stored in
/// ([`crate::store_matrices_as`]).
///
/// # Shapes
/// - `ids`: `[batch, seq]`; output: `[batch, seq, hidden]`
pub(crate) fn embed(embedding: &Embedding, ids: Tensor<2, Int>) -> Tensor<3> {
    embedding.forward(ids).cast(FloatDType::F32)
}

#[cfg(test)]
mod tests {
    use burn::nn::{EmbeddingConfig, LinearConfig};
    use burn::tensor::Distribution;

    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.cast(FloatDType::F32)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("float32 values")
    }

    /// `|got - want| <= tol · max|want|` everywhere, NaN failing.
    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g - w).abs() <= tol * scale;
            assert!(ok, "{what}[{i}]: {g} vs {w} (max |want| {scale})");
        }
    }

    struct Heads {
        embedding: Embedding,
        head: Linear,
    }

    /// A tied table and an untied head with bias, matrices in `dtype`, each trained or frozen.
    fn heads(
        device: &Device,
        hidden: usize,
        vocab: usize,
        dtype: FloatDType,
        trained: bool,
    ) -> Heads {
        let embedding = EmbeddingConfig::new(vocab, hidden).init(device);
        let head = LinearConfig::new(hidden, vocab).init(device);
        let store =
            |t: Tensor<2>| Param::from_tensor(t.cast(dtype).detach()).set_require_grad(trained);
        Heads {
            embedding: Embedding {
                weight: store(embedding.weight.val()),
            },
            head: Linear {
                weight: store(head.weight.val()),
                bias: head.bias.map(|b| b.set_require_grad(trained)),
            },
        }
    }

    /// A bfloat16 head larger than one slice gives, slice by slice, exactly the logits of the
    /// whole head widened at once; tied (embedding) and untied (with bias) alike.
    #[test]
    fn a_low_dtype_head_is_widened_slice_by_slice_with_the_same_logits() {
        let device = Device::flex();
        let (hidden, vocab) = (8, 2 * HEAD_SLICE + 123);
        let Heads { embedding, head } = heads(&device, hidden, vocab, FloatDType::BF16, false);
        let x = Tensor::<3>::random([2, 3, hidden], Distribution::Normal(0.0, 1.0), &device);
        let f32 = MatmulPrecision::F32;
        for (head, whole) in [
            (
                Some(&head),
                f32.linear(
                    x.clone(),
                    head.weight.val().cast(FloatDType::F32),
                    head.bias.as_ref().map(Param::val),
                ),
            ),
            (
                None,
                f32.linear(
                    x.clone(),
                    embedding.weight.val().cast(FloatDType::F32).transpose(),
                    None,
                ),
            ),
        ] {
            let output = OutputHead {
                head,
                embedding: &embedding,
                precision: f32,
                soft_cap: None,
            };
            let sliced = output.logits(x.clone());
            assert_eq!(sliced.dims(), [2, 3, vocab]);
            assert_eq!(values(sliced), values(whole));
        }
    }

    /// The backward without autodiff gives autodiff's gradients of `sum(logits · seed)` for the
    /// input, the weight and the bias: tied and untied, float32 and bfloat16 (widened in
    /// slices) storage, products in float32 and bfloat16, with and without a soft-cap, trained
    /// and frozen; the seed sees the forward's logits.
    #[test]
    fn the_head_backward_equals_autodiff() {
        let device = Device::flex().autodiff();
        let (n, hidden) = (5, 8);
        let mut cases = 0;
        for (vocab, dtype, precision) in [
            (300, FloatDType::F32, MatmulPrecision::F32),
            (2 * HEAD_SLICE + 123, FloatDType::BF16, MatmulPrecision::F32),
            (300, FloatDType::F32, MatmulPrecision::Bf16),
        ] {
            for trained in [true, false] {
                let heads = heads(&device, hidden, vocab, dtype, trained);
                let x = Tensor::<2>::random([n, hidden], Distribution::Normal(0.0, 1.0), &device);
                let seed = Tensor::<2>::random([n, vocab], Distribution::Normal(0.0, 1.0), &device)
                    .without_autodiff();
                for tied in [true, false] {
                    for soft_cap in [None, Some(3.0)] {
                        let output = OutputHead {
                            head: (!tied).then_some(&heads.head),
                            embedding: &heads.embedding,
                            precision,
                            soft_cap,
                        };
                        let case = format!(
                            "{dtype:?} {precision:?} trained {trained} tied {tied} cap {soft_cap:?}"
                        );
                        let leaf = x.clone().without_autodiff().autodiff().require_grad();
                        let logits = output.logits(leaf.clone().reshape([1, n, hidden]));
                        let want_logits = values(logits.clone().without_autodiff());
                        let grads = (logits.reshape([n, vocab]) * seed.clone().autodiff())
                            .sum()
                            .backward();
                        let mut seen = None;
                        let got = output.backward(x.clone(), |logits| {
                            seen = Some(values(logits));
                            seed.clone()
                        });
                        assert_eq!(seen.expect("the seed ran"), want_logits, "{case}: logits");
                        let tol = if precision == MatmulPrecision::F32 {
                            1e-5
                        } else {
                            1e-2
                        };
                        let dx = leaf.grad(&grads).expect("input gradient");
                        assert_close(
                            &format!("{case}: input"),
                            &values(got.input),
                            &values(dx),
                            tol,
                        );
                        let (weight, bias) = output.params();
                        match (got.weight, weight.val().grad(&grads)) {
                            (Some((id, g)), Some(want)) => {
                                assert_eq!(id, weight.id, "{case}: weight id");
                                assert_eq!(g.dtype(), want.dtype(), "{case}: weight dtype");
                                assert_eq!(g.dims(), want.dims(), "{case}: weight shape");
                                // bfloat16 gradients: one rounding of the same float32 sums.
                                let tol = if dtype == FloatDType::F32 { tol } else { 1e-2 };
                                assert_close(
                                    &format!("{case}: weight"),
                                    &values(g),
                                    &values(want),
                                    tol,
                                );
                            }
                            (None, None) => {
                                assert!(!trained, "{case}: a trained weight without gradient")
                            }
                            (got, want) => panic!(
                                "{case}: weight gradient {} vs autodiff {}",
                                got.is_some(),
                                want.is_some()
                            ),
                        }
                        let want_bias = bias.and_then(|b| b.val().grad(&grads));
                        match (got.bias, want_bias) {
                            (Some((id, g)), Some(want)) => {
                                assert_eq!(Some(id), bias.map(|b| b.id), "{case}: bias id");
                                assert_close(
                                    &format!("{case}: bias"),
                                    &values(g),
                                    &values(want),
                                    tol,
                                );
                            }
                            (None, None) => {
                                assert!(!trained || tied, "{case}: a trained bias without gradient")
                            }
                            (got, want) => panic!(
                                "{case}: bias gradient {} vs autodiff {}",
                                got.is_some(),
                                want.is_some()
                            ),
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 24);
    }
}
