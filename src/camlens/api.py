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

    ``target``: None (top-1 class), an int, one class per input, a ``(B, K)`` tensor,
    ``camlens.TopK(k)``, ``"all"`` or a callable ``score_fn(output) -> (B,) or (B, K)``.
    ``options`` go to the method (``output_fn``, ``channels_last``, ``token_grid``,
    ``prefix_tokens``, ``input_size``; ``batch_size`` for scorecam and ablationcam).
    The model is left exactly as it was: mode, hooks, flags and gradients.
    """
    return get_method(method)(model, layer, **options)(inputs, target=target)
