//! What a forward pass returns, and the tied output head shared by the architectures.

use burn::nn::Embedding;
use burn::prelude::*;
use burn::tensor::module::linear;

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

/// Logits from the token embedding matrix (`tie_word_embeddings`): `x · Eᵀ`.
///
/// # Shapes
/// - `x`: `[batch, seq, hidden]`; output: `[batch, seq, vocab]`
pub(crate) fn tied_logits(x: Tensor<3>, embedding: &Embedding) -> Tensor<3> {
    linear(x, embedding.weight.val().transpose(), None)
}
