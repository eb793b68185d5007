"""The result of one explanation call, and the map post-processing every method shares.

An :class:`Explanation` is plain data: pictures of it are :mod:`camlens.viz` functions
(``explanation_overlays``, ``explanation_grid``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["FUSION_RULES", "Explanation", "ExplanationWarning", "fuse_layers", "normalize",
           "upsample"]


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
    - ``per_layer``: for ``layer=[...]``, each layer's own Explanation by name; the fields
      above then hold their fusion (:func:`fuse_layers`), ``layer`` the names joined by ``+``.
    """

    raw: torch.Tensor
    scores: torch.Tensor
    targets: torch.Tensor | None
    method: str
    layer: str
    input_size: tuple[int, ...]
    attributions: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    per_layer: dict[str, Explanation] = field(default_factory=dict)
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
            per_layer={name: exp.to(device) for name, exp in self.per_layer.items()},
            _maps=move(self._maps),
        )

    def __getattr__(self, name: str) -> Any:
        # Pictures live in camlens.viz, so the engine imports no plotting code.
        if name in _MOVED_TO_VIZ:
            raise AttributeError(f"Explanation.{name}() moved: use {_MOVED_TO_VIZ[name]}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


#: How :func:`fuse_layers` merges the scaled maps of several layers.
FUSION_RULES = {"max": "the elementwise maximum", "mean": "the mean"}


def fuse_layers(per_layer: dict[str, Explanation], rule: str = "max",
                notes: list[str] | None = None) -> Explanation:
    """One map from the maps of several layers of the same call (same inputs, same targets).

    Each layer's raw map ``M_l`` (after ReLU) is divided by its own maximum, upsampled to the
    finest grid among the layers (most positions), and the scaled maps are merged position by
    position: ``M = max_l M_l / max(M_l)`` (``"max"``: the multi-layer fusion of LayerCAM,
    Jiang et al., IEEE TIP 2021, without its tanh rescaling of shallow layers) or their mean
    (``"mean"``, as pytorch-grad-cam aggregates layers). The fused map is unitless, in [0, 1];
    a layer whose map is zero everywhere adds nothing. The scores and targets are the layers'
    (one forward pass gives them all).
    """
    if rule not in FUSION_RULES:
        raise ValueError(f"fuse must be one of {', '.join(FUSION_RULES)}, got {rule!r}")
    if not per_layer:
        raise ValueError("no layer maps to fuse")
    explanations = list(per_layer.values())
    first = explanations[0]
    lead = first.scores.ndim  # (B,) or (B, K) before the spatial axes
    spatial = {name: tuple(exp.raw.shape[lead:]) for name, exp in per_layer.items()}
    if len({len(shape) for shape in spatial.values()}) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in spatial.items())
        raise ValueError(f"cannot fuse maps with different numbers of spatial axes: {listed}")
    finest = max(spatial.values(), key=lambda shape: (math.prod(shape), shape))
    axes = tuple(range(lead, lead + len(finest)))
    scaled = []
    for exp in explanations:
        peak = exp.raw.amax(dim=axes, keepdim=True)
        unit = torch.where(peak > 0, exp.raw / torch.where(peak > 0, peak, 1.0), 0.0)
        scaled.append(upsample(unit, finest).clamp(min=0.0))
    stacked = torch.stack(scaled)
    fused = stacked.amax(dim=0) if rule == "max" else stacked.mean(dim=0)
    finest_layer = next(name for name, shape in spatial.items() if shape == finest)
    note = (f"fused {len(per_layer)} layers ({', '.join(per_layer)}): each map divided by its "
            f"maximum, upsampled to the {'x'.join(map(str, finest))} grid of {finest_layer!r}, "
            f"then {FUSION_RULES[rule]}")
    layer_notes = [note for exp in explanations for note in exp.notes]
    return Explanation(
        raw=fused,
        scores=first.scores,
        targets=first.targets,
        method=first.method,
        layer="+".join(per_layer),
        input_size=first.input_size,
        notes=[*dict.fromkeys([*(notes or []), note, *layer_notes])],
        per_layer=dict(per_layer),
    )


_MOVED_TO_VIZ = {
    "overlay": "camlens.viz.explanation_overlays(exp, inputs, colormap=..., alpha=...)",
    "show": "camlens.viz.explanation_grid(exp, inputs, index=..., class_names=...)",
}
