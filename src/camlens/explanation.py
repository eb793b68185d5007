"""The result of one explanation call, and the map post-processing every method shares.

An :class:`Explanation` is plain data: pictures of it are :mod:`camlens.viz` functions
(``explanation_overlays``, ``explanation_grid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Explanation", "ExplanationWarning", "normalize", "upsample"]


class ExplanationWarning(UserWarning):
    """A result camlens returns but does not stand behind (all-zero maps, ...); the same words
    are in ``Explanation.notes``."""

INTERPOLATION_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample(raw: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize maps ``(..., *spatial)`` to ``size`` (linear, bilinear or trilinear by the number of
    spatial axes, ``align_corners=False``)."""
    spatial_ndim = len(size)
    if tuple(raw.shape[-spatial_ndim:]) == tuple(size):
        return raw
    if spatial_ndim not in INTERPOLATION_MODES:
        raise ValueError(f"cannot upsample maps with {spatial_ndim} spatial axes (1, 2 or 3 work)")
    leading = raw.shape[:-spatial_ndim]
    flat = raw.reshape(-1, 1, *raw.shape[-spatial_ndim:])
    resized = F.interpolate(
        flat, size=tuple(size), mode=INTERPOLATION_MODES[spatial_ndim], align_corners=False
    )
    return resized.reshape(*leading, *size)


def normalize(maps: torch.Tensor, spatial_ndim: int) -> torch.Tensor:
    """Min-max normalise each map over its last ``spatial_ndim`` axes: its maximum becomes exactly
    1; a constant map (all zero included) becomes all zero, never NaN."""
    axes = tuple(range(-spatial_ndim, 0))
    low = maps.amin(dim=axes, keepdim=True)
    span = maps.amax(dim=axes, keepdim=True) - low
    safe_span = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe_span, torch.zeros_like(maps))


@dataclass(eq=False)
class Explanation:
    """Maps that say where the explained scores came from.

    - ``raw``: maps at the layer's resolution after ReLU, before normalisation, in the units of the
      score; shape ``(B, *spatial)`` for one target per input, ``(B, K, *spatial)`` for K.
    - ``maps``: the same at the input's resolution, min-max normalised to [0, 1] per map
      (computed on first access, then kept).
    - ``scores``: the explained scores ``(B,)`` or ``(B, K)``; ``targets``: their class indices
      (``None`` for a callable target).
    - ``method`` and ``layer`` (the resolved name); ``input_size`` the spatial size of the input.
    - ``attributions``: input-space gradients for the guided methods ``(B, [K,] C, H, W)``.
    - ``notes``: what the engine decided on the user's behalf (an automatic layer choice, ...).
    """

    raw: torch.Tensor
    scores: torch.Tensor
    targets: torch.Tensor | None
    method: str
    layer: str
    input_size: tuple[int, ...]
    attributions: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    _maps: torch.Tensor | None = field(default=None, repr=False)

    @property
    def maps(self) -> torch.Tensor:
        if self._maps is None:
            spatial_ndim = len(self.input_size)
            self._maps = normalize(upsample(self.raw, self.input_size), spatial_ndim)
        return self._maps

    def __len__(self) -> int:
        return self.raw.shape[0]

    def to(self, device: torch.device | str) -> Explanation:
        """A copy with every tensor moved to ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Explanation(
            raw=self.raw.to(device),
            scores=self.scores.to(device),
            targets=move(self.targets),
            method=self.method,
            layer=self.layer,
            input_size=self.input_size,
            attributions=move(self.attributions),
            notes=list(self.notes),
            _maps=move(self._maps),
        )

    def __getattr__(self, name: str) -> Any:
        # Pictures live in camlens.viz, so the engine imports no plotting code.
        if name in _MOVED_TO_VIZ:
            raise AttributeError(f"Explanation.{name}() moved: use {_MOVED_TO_VIZ[name]}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


_MOVED_TO_VIZ = {
    "overlay": "camlens.viz.explanation_overlays(exp, inputs, colormap=..., alpha=...)",
    "show": "camlens.viz.explanation_grid(exp, inputs, index=..., class_names=...)",
}
