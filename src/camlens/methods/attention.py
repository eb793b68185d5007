"""Attention as explanation: the weights an attention layer puts on each position.

For a model that pools a sequence with attention, ``e = sum_t alpha_t h_t`` with
``alpha = softmax_t(c^T tanh(W h_t + b))`` (Bahdanau et al. 2015; Yang et al. 2016; for language
and accent recognition Padi, Mohan and Ganapathy, TASLP 2020), ``alpha_t`` says how much position
``t`` enters the pooled summary. The target layer is the module whose output *is* the weights,
``(B, H, T)`` with H heads or channels (1 for a single attention): a hook there reads them, and the
engine differentiates the score to them.

- ``attention``: ``L_t = mean_h alpha_{h,t}``, the weights themselves. Class-agnostic: the same map
  for every target (the targets' scores are still reported).
- ``attention-gradient``: ``L_t = ReLU(sum_h alpha_{h,t} * d y / d alpha_{h,t})``, attention times
  gradient. With ``e = sum_t alpha_t h_t``, ``d y / d alpha_t = (d y / d e) . h_t``: a position
  counts when it is attended to *and* its state pushes the score up. It is HiResCAM's rule at the
  attention layer.

Both give maps over the layer's positions (time segments for audio), a 1-D ``Explanation`` like
every other method on a sequence.
"""

from __future__ import annotations

import torch

from camlens.methods.base import Forward, LayerMapMethod
from camlens.methods.gradient import HiResCAM

__all__ = ["AttentionGradient", "AttentionWeights"]


class AttentionWeights(LayerMapMethod):
    """Attention weights: ``L_t = mean_h alpha_{h,t}`` at the layer whose output is the weights
    (class-agnostic; Padi et al., TASLP 2020).

    Example:
        >>> exp = AttentionWeights(model, layer="attention.weights")(waveform)  # doctest: +SKIP
        >>> exp.raw.shape  # (B, T) over the attention's positions
    """

    name = "attention"
    paper = "Padi, Mohan and Ganapathy, IEEE/ACM TASLP 2020"
    uses_gradients = False

    def layer_map(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        weights = forward.canonical()  # (B, H, *positions)
        mean = weights.mean(dim=1, keepdim=True)
        return mean.expand(-1, forward.scores.shape[1], *mean.shape[2:])


class AttentionGradient(HiResCAM):
    """Attention times gradient: ``L_t = ReLU(sum_h alpha_{h,t} d y / d alpha_{h,t})`` at the layer
    whose output is the attention weights (HiResCAM's rule there).

    Example:
        >>> exp = AttentionGradient(model, layer="attention.weights")(waveform)  # doctest: +SKIP
    """

    name = "attention-gradient"
    paper = "Padi, Mohan and Ganapathy, IEEE/ACM TASLP 2020 (with HiResCAM's rule)"
