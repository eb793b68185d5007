"""The one verb: :func:`explain`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from camlens.explanation import Explanation
from camlens.methods import get_method
from camlens.targets import Target


def explain(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    target: Target = None,
    **options: Any,
) -> Explanation:
    """Explain ``model``'s scores for ``inputs`` with ``method`` at ``layer``.

    The model is left exactly as it was: mode, hooks, flags, buffers and gradients.

    Args:
        model: any ``torch.nn.Module`` (not TorchScript).
        inputs: a batch ``(B, ...)``, or a tuple of the model's positional inputs (the first is
            the explained one).
        method: a name from :func:`camlens.available_methods` (case and dashes ignored).
        layer: a dotted name from ``model.named_modules()``, a module, or None to choose one.
        target: None (top-1 class), an int, one class per input, a ``(B, K)`` tensor,
            ``camlens.TopK(k)``, ``"all"`` or a callable ``score_fn(output) -> (B,) or (B, K)``.
        options: go to the method: ``output_fn``, ``channels_last``, ``token_grid``,
            ``prefix_tokens``, ``input_size`` (:class:`~camlens.capture.CaptureOptions`);
            ``batch_size`` for scorecam and ablationcam.

    Returns:
        An :class:`~camlens.explanation.Explanation`: ``raw`` maps at the layer's resolution,
        ``maps`` at the input's in [0, 1], ``scores``, ``targets``, ``layer`` and ``notes``.

    Example:
        >>> exp = camlens.explain(model, images, method="gradcam", layer="layer4")
        ... # doctest: +SKIP
        >>> exp.maps.shape  # doctest: +SKIP
        torch.Size([4, 224, 224])
    """
    return get_method(method)(model, layer, **options)(inputs, target=target)
