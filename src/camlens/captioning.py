"""Grad-CAM for image captioning: a map for the whole caption and one per generated word.

Selvaraju et al. (Grad-CAM, ICCV 2017, Sec. 7.2) explain a caption by differentiating its
log-probability, ``y = log p(caption | image) = sum_t log p(w_t | image, w_<t)``, with respect to
the encoder's last convolutional features. :class:`CaptionTarget` is that score, computed under
teacher forcing from the model's output, so every camlens method explains captions: with
``per_token=True`` one call returns maps ``(B, T, H, W)``, one per position, from one forward
pass and one batched backward pass.

A word's own map differentiates that word's *logit* by default, as Grad-CAM does for a class
(the score before the softmax). Its log-probability ``z_w - log sum_v exp z_v`` has the gradient
``(1 - p_w) dz_w - sum_{v != w} p_v dz_v``: for a confident word (``p_w`` near 1) the word's own
evidence is scaled towards zero and what is left is evidence *against* the other words, which in
a scene are the other digits, elsewhere in the image. On held-out digit scenes, Grad-CAM's
per-word maps peak on their own digit for ~80% of the words with logits against ~48% with
log-probabilities (``camlens reproduce captioning``); ``score="logprob"`` keeps the paper's
choice, which stays the default for the whole caption.

Any captioning model works through ``output_fn`` (the same option as everywhere in camlens): a
callable that turns the model's output into per-step scores ``(B, T, V)`` of the next token
(logits; log-probabilities work too, since ``log_softmax`` leaves them unchanged)::

    target = CaptionTarget(caption_tokens, per_token=True, output_fn=lambda out: out.logits)
    exp = explain(model, (images, decoder_inputs), layer="encoder.layer4", target=target)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import InitVar, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from camlens import metrics
from camlens.api import explain
from camlens.explanation import Explanation
from camlens.targets import adapt_output

__all__ = ["SCORES", "CaptionTarget", "caption_tokens", "energy_inside_share", "explain_caption",
           "inside_outside_ratio"]

SCORES = ("logit", "logprob")


@dataclass
class CaptionTarget:
    """Scores of the token sequence ``tokens`` ``(B, T)`` (padding ``< 0``) under teacher
    forcing: ``(B,)`` for whole captions, or ``(B, T)`` per token (``per_token=True``; padded
    positions score 0, so their maps are zero).

    ``score``: ``"logit"`` (each token's pre-softmax score) or ``"logprob"`` (its
    log-probability; the whole caption's score is the sum over tokens). Default: ``"logit"``
    per token, ``"logprob"`` for the whole caption, as in the Grad-CAM paper. ``output_fn``:
    turns the model's output into next-token scores ``(B, T, V)`` (default: the output itself,
    or its ``logits``; ``logits=`` is its old name)."""

    tokens: torch.Tensor
    per_token: bool = False
    score: str | None = None
    output_fn: Callable[[Any], torch.Tensor] | None = None
    logits: InitVar[Callable[[Any], torch.Tensor] | None] = None

    def __post_init__(self, logits: Callable[[Any], torch.Tensor] | None) -> None:
        if logits is not None:
            warnings.warn("CaptionTarget(logits=...) is now CaptionTarget(output_fn=...)",
                          DeprecationWarning, stacklevel=3)
            self.output_fn = self.output_fn or logits
        if self.score is None:
            self.score = "logit" if self.per_token else "logprob"
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")

    def __call__(self, output: Any) -> torch.Tensor:
        logits = adapt_output(output, self.output_fn)
        tokens = self.tokens.to(logits.device)
        if logits.ndim != 3 or logits.shape[:2] != tokens.shape:
            raise ValueError(
                f"caption scores must be (B, T, V) with (B, T) = {tuple(tokens.shape)} "
                f"(the tokens' shape); got {tuple(logits.shape)}"
            )
        scores = F.log_softmax(logits, dim=-1) if self.score == "logprob" else logits
        valid = tokens >= 0
        picked = scores.gather(2, tokens.clamp(min=0).unsqueeze(2)).squeeze(2)
        per_token = torch.where(valid, picked, torch.zeros_like(picked))
        return per_token if self.per_token else per_token.sum(dim=1)


def explain_caption(model, images: torch.Tensor, decoder_inputs: torch.Tensor,
                    caption: torch.Tensor, method: str = "gradcam",
                    layer: str | None = "encoder",
                    per_token: bool = True, score: str | None = None,
                    **options) -> Explanation:
    """Maps of a caption: ``(B, T, H, W)`` per token, or ``(B, H, W)`` for the whole caption.

    ``decoder_inputs`` are the teacher-forcing inputs (start token then the caption), ``caption``
    the tokens scored at each step (padded with -1); ``score`` as in :class:`CaptionTarget`."""
    target = CaptionTarget(caption, per_token=per_token, score=score)
    return explain(model, (images, decoder_inputs), method=method, layer=layer, target=target,
                   **options)


def caption_tokens(words: list[list[int]], end: int, start: int, length: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder inputs, scored tokens) ``(B, length)`` for generated digit sequences: inputs are
    <start> and the words; scored tokens the words then <end>, padded with -1."""
    batch = len(words)
    inputs = torch.full((batch, length), end, dtype=torch.long)
    scored = torch.full((batch, length), -1, dtype=torch.long)
    inputs[:, 0] = start
    for row, sequence in enumerate(words):
        sequence = sequence[: length - 1]
        inputs[row, 1 : len(sequence) + 1] = torch.tensor(sequence, dtype=torch.long)
        scored[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        scored[row, len(sequence)] = end
    return inputs, scored


def _inside_boxes(maps: torch.Tensor, boxes: torch.Tensor, counts: torch.Tensor
                  ) -> torch.Tensor:
    """Per map ``(B, H, W)``, the pixels inside any of the scene's ``counts`` boxes."""
    size = tuple(maps.shape[-2:])
    inside = torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    for row in range(maps.shape[0]):
        masks = metrics.box_masks(boxes[row, : int(counts[row])], size)
        inside[row] = masks.any(dim=0)
    return inside


def energy_inside_share(maps: torch.Tensor, boxes: torch.Tensor, counts: torch.Tensor
                        ) -> torch.Tensor:
    """The share of each map's total mass inside the scene's digit boxes (the energy-based
    pointing game's measure, Score-CAM; the boxes' share of the area for a uniform map, 0 for a
    map that is zero everywhere)."""
    inside = _inside_boxes(maps, boxes, counts)
    total = maps.sum(dim=(1, 2))
    return torch.where(total > 0, (maps * inside).sum(dim=(1, 2)) / total.clamp(min=1e-12),
                       torch.zeros_like(total))


def inside_outside_ratio(maps: torch.Tensor, boxes: torch.Tensor, counts: torch.Tensor
                         ) -> torch.Tensor:
    """Mean map value inside the scene's digit boxes over the mean outside them, per map
    (the DenseCap check of the Grad-CAM paper: 1.0 for a uniform map)."""
    inside = _inside_boxes(maps, boxes, counts)
    inside_mean = (maps * inside).sum(dim=(1, 2)) / inside.sum(dim=(1, 2)).clamp(min=1)
    outside_mean = (maps * ~inside).sum(dim=(1, 2)) / (~inside).sum(dim=(1, 2)).clamp(min=1)
    return inside_mean / outside_mean.clamp(min=1e-12)
