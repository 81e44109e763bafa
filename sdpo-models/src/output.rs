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
    match head {
        Some(head) => precision.linear(x, head.weight.val(), head.bias.as_ref().map(Param::val)),
        None => precision.linear(x, embedding.weight.val().transpose(), None),
    }
}

/// Embedding rows for `ids`, in float32 whatever dtype the table is stored in
/// ([`crate::store_matrices_as`]).
///
/// # Shapes
/// - `ids`: `[batch, seq]`; output: `[batch, seq, hidden]`
pub(crate) fn embed(embedding: &Embedding, ids: Tensor<2, Int>) -> Tensor<3> {
    embedding.forward(ids).cast(FloatDType::F32)
}
