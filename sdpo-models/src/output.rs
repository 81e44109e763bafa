//! What a forward pass returns, and the tied output head shared by the architectures.

use burn::module::Param;
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

/// Logits from the output head, or from the token embedding matrix when there is none
/// (`tie_word_embeddings`: `x · Eᵀ`); the product in `precision`, the logits in float32.
///
/// # Shapes
/// - `x`: `[batch, seq, hidden]`; output: `[batch, seq, vocab]`
pub(crate) fn head_logits(
    x: Tensor<3>,
    head: Option<&Linear>,
    embedding: &Embedding,
    precision: MatmulPrecision,
) -> Tensor<3> {
    let (weight, bias) = match head {
        Some(head) => (head.weight.val(), head.bias.as_ref().map(Param::val)),
        None => (embedding.weight.val().transpose(), None),
    };
    let [_, vocab] = weight.dims();
    let widened = precision.dtype() != weight.dtype().into();
    if !widened || vocab <= HEAD_SLICE {
        return precision.linear(x, weight, bias);
    }
    // A head stored in a lower dtype than its product (a frozen base held in bfloat16, a
    // float32 run): widening it whole would hold a float32 copy of the largest matrix of the
    // model for the product (0.9 GB at a 152k vocabulary). Slices of the vocabulary are widened
    // and multiplied one after the other instead; each logit is the same dot product.
    let slices: Vec<Tensor<3>> = (0..vocab)
        .step_by(HEAD_SLICE)
        .map(|start| {
            let end = (start + HEAD_SLICE).min(vocab);
            let w = weight.clone().narrow(1, start, end - start);
            let b = bias.clone().map(|b| b.narrow(0, start, end - start));
            precision.linear(x.clone(), w, b)
        })
        .collect();
    Tensor::cat(slices, 2)
}

/// Vocabulary entries per slice when a head stored in a lower dtype is widened for its product
/// (16384 × hidden 1536 × 4 B = 100 MB at a time).
const HEAD_SLICE: usize = 16384;

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

    use super::*;

    /// A bfloat16 head larger than one slice gives, slice by slice, exactly the logits of the
    /// whole head widened at once; tied (embedding) and untied (with bias) alike.
    #[test]
    fn a_low_dtype_head_is_widened_slice_by_slice_with_the_same_logits() {
        let device = Device::flex();
        let (hidden, vocab) = (8, 2 * HEAD_SLICE + 123);
        let embedding = EmbeddingConfig::new(vocab, hidden).init(&device);
        let head = LinearConfig::new(hidden, vocab).init(&device);
        let bf16 = |t: Tensor<2>| Param::from_tensor(t.cast(FloatDType::BF16));
        let embedding = Embedding {
            weight: bf16(embedding.weight.val()),
        };
        let head = Linear {
            weight: bf16(head.weight.val()),
            bias: head.bias,
        };
        let x = Tensor::<3>::random(
            [2, 3, hidden],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
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
            let sliced = head_logits(x.clone(), head, &embedding, f32);
            assert_eq!(sliced.dims(), [2, 3, vocab]);
            let (a, b) = (sliced.into_data(), whole.into_data());
            assert_eq!(a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        }
    }
}
