"""Is attention an explanation? The permutation and uniform-weights tests, and attention mass on
words, for a model with one attention pooling layer (``accent-attention``).

- :func:`pooled_states`: run the model once with hooks and keep, per recording, what enters the
  pooling (the BLSTM states ``h_t`` of its ``n`` valid segments) and the weights ``alpha_t`` it
  used, so the pooling can be redone with other weights: ``logits = head(sum_t w_t h_t)``.
- :func:`permutation_test`: Jain and Wallace, "Attention is not Explanation" (NAACL 2019),
  Section 4.2: permute the attention weights over the valid segments ``P`` times (100 in the
  paper), ``w = alpha[perm]``, and measure the change of the output distribution by the total
  variation distance ``TVD(y, y') = 1/2 sum_c |y_c - y'_c|`` (their output-difference measure);
  per recording the median (their ``Delta y^med``) and the largest change over the
  permutations, and how often the predicted class survives. A small median change means the
  output does not depend on which segment gets which weight, so the weights do not single out
  the segments that decide.
- The uniform-weights comparison of Wiegreffe and Pinter, "Attention is not not Explanation"
  (EMNLP 2019), Section 3.1: the same pooling with ``w_t = 1/n`` (every valid segment alike).
  Where uniform weights give the same output, the learned weights are not needed; their
  stronger form, a model trained with uniform weights, is ``accent-mean``.
- :func:`word_attention_mass`: the share of the weights on the accent-voice words and on the
  neutral words. A segment ``t`` covering the span ``[a_t, b_t)`` passes its weight to time
  evenly, so the mass on a set of words ``W`` is ``sum_t alpha_t |[a_t, b_t) & W| / (b_t - a_t)``
  (uniform weights give each set its share of the segments' time: the reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from camlens.experiments.audio_batches import RaggedWaveforms
from camlens.model_state import preserved_model_state
from camlens.zoo.accent import AccentAttention

__all__ = ["PermutationResult", "PooledRecording", "WordMass", "permutation_test",
           "pooled_states", "random_orders", "total_variation", "word_attention_mass"]


@dataclass
class PooledRecording:
    """One recording's pooling inputs: ``states`` ``(n, D)`` (the BLSTM output of its ``n``
    valid segments), the weights ``alpha`` ``(n,)`` the model used and its ``logits`` ``(C,)``."""

    states: torch.Tensor
    alpha: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def pooled_states(model: AccentAttention, waveforms: RaggedWaveforms, batch_size: int = 32
                  ) -> list[PooledRecording]:
    """Run ``model`` (an :class:`~camlens.zoo.accent.AccentAttention`, either pooling) on every
    recording in eval mode and keep each one's pooling inputs and weights (in the order of
    ``waveforms``); the model's state is restored after."""
    captured: dict[str, Any] = {}

    def before_pooling(_module: nn.Module, args: tuple) -> None:
        states = args[0]
        mask = args[1] if len(args) > 1 else None
        captured["states"], captured["mask"] = states, mask

    def weights_out(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        captured["alpha"] = output[:, 0, :]

    results: dict[int, PooledRecording] = {}
    handles = [model.attention.register_forward_pre_hook(before_pooling),
               model.attention.weights.register_forward_hook(weights_out)]
    try:
        with preserved_model_state(model):
            order = torch.argsort(waveforms.lengths, stable=True)  # similar lengths together
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                logits = model(waveforms[rows], waveforms.lengths[rows])
                states, alpha, mask = captured["states"], captured["alpha"], captured["mask"]
                counts = (mask.sum(dim=1) if mask is not None
                          else torch.full((len(rows),), states.shape[1]))
                for position, row in enumerate(rows.tolist()):
                    n = int(counts[position])
                    results[row] = PooledRecording(states[position, :n].clone(),
                                                   alpha[position, :n].clone(),
                                                   logits[position].clone())
    finally:
        for handle in handles:
            handle.remove()
    return [results[row] for row in range(len(waveforms))]


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``TVD(p, q) = 1/2 sum_c |p_c - q_c|`` over the last axis (0: the same distribution, 1:
    disjoint supports); Jain and Wallace (2019)'s measure of output change."""
    return 0.5 * (p - q).abs().sum(dim=-1)


def random_orders(n: int, permutations: int, generator: torch.Generator) -> torch.Tensor:
    """``(permutations, n)``: independent uniform random permutations of ``range(n)``."""
    return torch.argsort(torch.rand(permutations, n, generator=generator), dim=1)


@dataclass(frozen=True)
class PermutationResult:
    """One recording under the permutation and uniform-weights tests.

    ``median_tvd``, ``max_tvd``: median and largest TVD of the output distribution over the
    permutations; ``survival``: the share of permutations that keep the predicted class;
    ``uniform_tvd`` and ``uniform_survives``: the same for uniform weights ``1/n``."""

    median_tvd: float
    max_tvd: float
    survival: float
    uniform_tvd: float
    uniform_survives: bool


@torch.no_grad()
def permutation_test(recording: PooledRecording, head: Callable[[torch.Tensor], torch.Tensor],
                     orders: torch.Tensor) -> PermutationResult:
    """Jain and Wallace's permutation test and Wiegreffe and Pinter's uniform weights on one
    recording: ``y = softmax(head(sum_t alpha_t h_t))`` against ``y' = softmax(head(sum_t
    alpha_{pi(t)} h_t))`` for each row ``pi`` of ``orders`` ``(P, n)``, and against uniform
    weights. ``head``: the layers after the pooling (``model.classifier``, in eval mode).

    The original output is recomputed from the stored states and weights (not taken from the
    model's logits), so every comparison goes through the same arithmetic."""
    states, alpha = recording.states, recording.alpha
    n = len(alpha)
    if orders.ndim != 2 or orders.shape[1] != n:
        raise ValueError(f"orders must be (P, {n}) permutations of the {n} valid segments, got "
                         f"{tuple(orders.shape)}")
    if not torch.equal(orders.sort(dim=1).values, torch.arange(n).expand_as(orders)):
        raise ValueError("every row of orders must be a permutation of range(n)")
    weights = torch.cat([alpha[None], alpha[orders], torch.full((1, n), 1.0 / n,
                                                                dtype=alpha.dtype)])
    probabilities = head(weights @ states).softmax(dim=-1)
    original, permuted, uniform = probabilities[0], probabilities[1:-1], probabilities[-1]
    changes = total_variation(permuted, original[None])
    predicted = original.argmax()
    return PermutationResult(
        median_tvd=float(changes.median()) if len(changes) else 0.0,
        max_tvd=float(changes.max()) if len(changes) else 0.0,
        survival=float((permuted.argmax(dim=1) == predicted).float().mean())
        if len(changes) else 1.0,
        uniform_tvd=float(total_variation(uniform, original)),
        uniform_survives=bool(uniform.argmax() == predicted),
    )


@dataclass(frozen=True)
class WordMass:
    """Attention mass of one recording on its accent-voice (informative) and neutral words, and
    the mass uniform weights would give each (their share of the segments' time)."""

    informative: float
    neutral: float
    uniform_informative: float
    uniform_neutral: float


def _overlap(spans: torch.Tensor, words: Sequence[tuple[float, float]]) -> torch.Tensor:
    """``(S,)`` the share of each segment span ``(S, 2)`` covered by the (disjoint) word
    spans."""
    covered = torch.zeros(len(spans), dtype=torch.float64)
    for start, end in words:
        covered += (torch.minimum(spans[:, 1], torch.tensor(end, dtype=torch.float64))
                    - torch.maximum(spans[:, 0], torch.tensor(start, dtype=torch.float64))
                    ).clamp(min=0)
    return covered / (spans[:, 1] - spans[:, 0]).clamp(min=1e-9)


def word_attention_mass(alpha: torch.Tensor, spans: torch.Tensor, words: Sequence[dict]
                        ) -> WordMass:
    """:class:`WordMass` of weights ``alpha`` ``(S,)`` over segments spanning ``spans``
    ``(S, 2)`` seconds, for ``words`` (dicts with ``start_s``, ``end_s``, ``informative``):
    ``sum_t alpha_t |segment_t & W| / |segment_t|`` for W the informative, then the neutral
    words."""
    if len(alpha) != len(spans):
        raise ValueError(f"{len(alpha)} weights for {len(spans)} segments")
    spans = spans.to(torch.float64)
    weights = alpha.to(torch.float64)
    uniform = torch.full_like(weights, 1.0 / len(weights))
    masses = []
    for informative in (True, False):
        share = _overlap(spans, [(word["start_s"], word["end_s"]) for word in words
                                 if bool(word["informative"]) == informative])
        masses += [float(weights @ share), float(uniform @ share)]
    return WordMass(informative=masses[0], neutral=masses[2], uniform_informative=masses[1],
                    uniform_neutral=masses[3])
