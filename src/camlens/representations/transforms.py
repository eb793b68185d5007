"""Random jitter, scaling and rotation of the pictures being optimised (transformation robustness).

Olah et al. (Distill 2017, "Feature Visualization", section "Transformation robustness") and
Mordvintsev et al. (2015) apply small random transformations to the picture before each forward:
a picture that only works at one exact pixel offset is an adversarial pattern, one that keeps
the activation high under jitter, scaling and rotation shows a feature. lucid composes pad,
jitter, scale, rotate and jitter again; here one random affine map per picture and step does the
same in a single resampling:

``T(p) = grid_sample(p, A_i)``, ``A_i = [s_i R(θ_i) | t_i]``, with ``t_i`` uniform in
``±jitter`` pixels, ``s_i`` uniform in ``[1 - scale, 1 + scale]`` and ``θ_i`` uniform in
``±degrees``, bilinear, reflected at the border (no constant frame for the model to react to).

The draws come from the object's own seeded :class:`torch.Generator` (on the CPU), so two runs
with one seed see the same transformations on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["RandomTransforms"]


@dataclass
class RandomTransforms:
    """A random affine map per picture: shift up to ``jitter`` pixels, scale by a factor in
    ``[1 - scale, 1 + scale]``, rotate by up to ``degrees``; all zero is the identity."""

    jitter: float = 4.0
    scale: float = 0.05
    degrees: float = 5.0
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("jitter", "scale", "degrees"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.scale >= 1:
            raise ValueError(f"scale must be below 1 (a factor in [1 - scale, 1 + scale]), got "
                             f"{self.scale}")
        self.generator = torch.Generator().manual_seed(int(self.seed))

    @property
    def is_identity(self) -> bool:
        return self.jitter == 0 and self.scale == 0 and self.degrees == 0

    def describe(self) -> str:
        if self.is_identity:
            return "no transformations"
        return (f"random jitter ±{self.jitter:g} px, scale ±{self.scale:g}, rotation "
                f"±{self.degrees:g}° (seed {self.seed})")

    def __call__(self, pictures: torch.Tensor) -> torch.Tensor:
        """``pictures`` ``(B, C, H, W)``, each moved by its own random affine map."""
        if self.is_identity:
            return pictures
        batch, _, height, width = pictures.shape

        def uniform(bound: float) -> torch.Tensor:
            return (torch.rand(batch, generator=self.generator) * 2 - 1) * bound

        shift_x = uniform(self.jitter) * 2 / width  # grid coordinates span 2 over the image
        shift_y = uniform(self.jitter) * 2 / height
        zoom = 1 + uniform(self.scale)
        angle = uniform(math.radians(self.degrees))
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift_x], 1),
                             torch.stack([sin, cos, shift_y], 1)], 1)
        theta = theta.to(device=pictures.device, dtype=pictures.dtype)
        grid = F.affine_grid(theta, list(pictures.shape), align_corners=False)
        return F.grid_sample(pictures, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)
