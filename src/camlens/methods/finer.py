"""Finer-CAM (Zhang et al., CVPR 2025): explain a class *against* the classes most like it.

For the explained class ``c`` of an input, the comparison classes ``N(c)`` are the ``comparisons``
classes whose logits are closest to ``y_c``; the explained score is their probability-weighted
difference

    ``s = sum_{j in N(c)} p_j (y_c - alpha y_j) / sum_{j in N(c)} p_j``,   ``p = softmax(y)``,

and the map is Grad-CAM's rule on ``s``: it keeps the evidence that tells ``c`` apart from its
look-alikes and drops what they share (``alpha = 0`` gives Grad-CAM of ``y_c``). The explained
classes are resolved as for any method (top-1 by default), so ``exp.targets`` are the main
classes; ``exp.scores`` are the differences ``s``.
"""

from __future__ import annotations

from typing import Any

import torch

from camlens.methods.gradient import GradCAM
from camlens.targets import ResolvedTarget, class_logits

__all__ = ["FinerCAM", "finer_scores"]


def finer_scores(logits: torch.Tensor, classes: torch.Tensor, alpha: float = 1.0,
                 comparisons: int = 3) -> torch.Tensor:
    """The Finer-CAM scores ``(B, K)`` of ``classes (B, K)`` from ``logits (B, N)``."""
    count = min(comparisons, logits.shape[1] - 1)
    if count < 1:
        raise ValueError("Finer-CAM compares a class with others; the model has one class")
    main = logits.gather(1, classes)  # (B, K)
    distance = (logits[:, None, :] - main[..., None]).abs()  # (B, K, N)
    distance = distance.scatter(2, classes[..., None], float("inf"))  # never itself
    nearest = distance.topk(count, dim=2, largest=False).indices  # (B, K, count)
    probabilities = torch.softmax(logits, dim=1)[:, None, :].expand_as(distance)
    weights = probabilities.gather(2, nearest)
    others = logits[:, None, :].expand_as(distance).gather(2, nearest)
    return (weights * (main[..., None] - alpha * others)).sum(dim=2) / (
        weights.sum(dim=2) + 1e-9)


class FinerCAM(GradCAM):
    """Finer-CAM: Grad-CAM of a class's logit minus its most similar classes' (see the module).

    Args:
        alpha: how much of the comparison classes' logits is subtracted (1 in the paper).
        comparisons: how many of the closest classes are compared against (3).

    Example:
        >>> exp = FinerCAM(model, layer="layer4", alpha=1.0)(images)  # doctest: +SKIP
    """

    name = "finercam"
    paper = "Zhang et al., Finer-CAM, CVPR 2025"

    def __init__(self, model, layer=None, *, alpha: float = 1.0, comparisons: int = 3,
                 **options) -> None:
        super().__init__(model, layer, **options)
        if isinstance(comparisons, bool) or not isinstance(comparisons, int) or comparisons < 1:
            raise ValueError(f"comparisons must be an int >= 1, got {comparisons!r}")
        self.alpha, self.comparisons = float(alpha), comparisons

    def target_scores(self, resolved: ResolvedTarget, scores: torch.Tensor, output: Any
                      ) -> torch.Tensor:
        if resolved.classes is None:
            raise ValueError("Finer-CAM compares classes; a callable target has none (give "
                             "class targets, or use gradcam)")
        return finer_scores(class_logits(output), resolved.classes, self.alpha,
                            self.comparisons)
