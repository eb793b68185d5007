"""Where an image's pixels land in the model's input: annotations follow the preprocessing.

A model's preprocessing may resize, crop or pad (torchvision's ImageNet transforms resize the
short side to 256 and crop the centre 224 x 224), so a box drawn on the image file is not a box
of the model's input until it goes through the same geometry. :func:`probe_geometry` finds that
geometry by running the preprocessing itself on probe pictures of the image's size: a black
picture and pictures with one white stripe, a tenth of the side wide, at a known place (20%,
35%, 50%, 65%, 80% of the width, then of the height; a stripe cut by a crop, which touches the
input's edge, is not used). The stripe's centre in the output (the centroid of the difference
to the black picture) against its centre in the picture gives, per axis,
``out = scale * in + offset`` (least squares in continuous pixel coordinates: pixel ``i`` spans
``[i, i + 1)``). A preprocessing that
is not a per-axis scale and shift of the picture (a rotation, a random crop, a flip) leaves the
stripes off one line, or moves them between two runs: it is refused, never guessed.

Per-pixel changes of value (normalisation, grey conversion) do not matter: only where the stripe
goes is measured. A fit within 1% of a plain resize of the axis (no shift) is taken as exactly
that resize.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["GeometryError", "InputGeometry", "PROBE_POSITIONS", "probe_geometry"]

#: Where the probe stripes sit, as fractions of the picture's side (inside a centre crop).
PROBE_POSITIONS = (0.2, 0.35, 0.5, 0.65, 0.8)
#: The largest misfit (input pixels) of a stripe's centre to the fitted line that is accepted.
TOLERANCE = 0.75


class GeometryError(ValueError):
    """The preprocessing is not a scale and shift of the picture per axis; the message says why."""


@dataclass(frozen=True)
class InputGeometry:
    """``x_in = scale_x * x_image + offset_x`` (the same for y) in continuous pixel coordinates,
    and the model input's ``size = (H, W)``."""

    scale_x: float
    offset_x: float
    scale_y: float
    offset_y: float
    size: tuple[int, int]

    @classmethod
    def resize(cls, image_size: tuple[int, int], size: tuple[int, int]) -> InputGeometry:
        """The geometry of a plain resize of an ``image_size = (H, W)`` picture to ``size``."""
        return cls(size[1] / image_size[1], 0.0, size[0] / image_size[0], 0.0,
                   (int(size[0]), int(size[1])))

    @property
    def identity(self) -> bool:
        return (abs(self.scale_x - 1) < 1e-6 and abs(self.scale_y - 1) < 1e-6
                and abs(self.offset_x) < 1e-6 and abs(self.offset_y) < 1e-6)

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``(N, 4)`` ``(x0, y0, x1, y1)`` of the picture as boxes of the input, clipped
        to it (a box cropped away entirely becomes empty, ``x1 <= x0``)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        height, width = self.size
        mapped = np.stack([boxes[:, 0] * self.scale_x + self.offset_x,
                           boxes[:, 1] * self.scale_y + self.offset_y,
                           boxes[:, 2] * self.scale_x + self.offset_x,
                           boxes[:, 3] * self.scale_y + self.offset_y], axis=1)
        mapped[:, 0::2] = mapped[:, 0::2].clip(0, width)
        mapped[:, 1::2] = mapped[:, 1::2].clip(0, height)
        return mapped

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """A boolean mask ``(h, w)`` of the picture as a mask of the input ``(H, W)``: each input
        pixel takes the picture pixel under its centre (nearest; False outside the picture)."""
        mask = np.asarray(mask, dtype=bool)
        if self.identity and mask.shape == self.size:
            return mask
        height, width = self.size
        xs = np.floor(((np.arange(width) + 0.5) - self.offset_x) / self.scale_x).astype(np.int64)
        ys = np.floor(((np.arange(height) + 0.5) - self.offset_y) / self.scale_y).astype(np.int64)
        inside_x = (xs >= 0) & (xs < mask.shape[1])
        inside_y = (ys >= 0) & (ys < mask.shape[0])
        taken = mask[np.clip(ys, 0, mask.shape[0] - 1)[:, None],
                     np.clip(xs, 0, mask.shape[1] - 1)[None, :]]
        return taken & inside_y[:, None] & inside_x[None, :]


def _as_input(output: Any) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise GeometryError(f"the preprocessing gave {type(output).__name__}, not a tensor")
    tensor = output.detach().float().cpu()
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3:
        raise GeometryError(f"the preprocessing gave shape {tuple(output.shape)}; regions need "
                            "an image input (C, H, W) or (1, C, H, W)")
    return tensor


def _centroid(difference: torch.Tensor, axis: int) -> float | None:
    """The centroid (continuous coordinates) along ``axis`` (0: y, 1: x) of ``|difference|``."""
    weight = difference.abs().sum(dim=0)  # (H, W)
    profile = weight.sum(dim=1 - axis)
    total = float(profile.sum())
    if total <= 1e-9:
        return None
    positions = torch.arange(len(profile), dtype=torch.float64) + 0.5
    return float((positions * profile.double()).sum() / total)


def probe_geometry(preprocess: Callable[[Any], Any], image_size: tuple[int, int]
                   ) -> InputGeometry:
    """The :class:`InputGeometry` of ``preprocess`` (PIL picture -> input tensor) on pictures of
    ``image_size = (H, W)``; see the module docstring. Runs ``preprocess`` 12 times (one a
    repeat that checks it is deterministic); a caller caches the result per size."""
    from PIL import Image

    height, width = image_size
    black = Image.new("RGB", (width, height))
    base = _as_input(preprocess(black))
    if not torch.equal(base, _as_input(preprocess(black))):
        raise GeometryError("the preprocessing gives different inputs for the same picture "
                            "(random augmentation?); regions cannot follow it")
    size = (int(base.shape[-2]), int(base.shape[-1]))
    fits = []
    for axis, side in ((1, width), (0, height)):
        stripe = max(2, round(side * 0.1))
        points_in, points_out = [], []
        for fraction in PROBE_POSITIONS:
            start = min(max(0, round(side * fraction - stripe / 2)), side - stripe)
            picture = np.zeros((height, width, 3), dtype=np.uint8)
            if axis == 1:
                picture[:, start:start + stripe] = 255
            else:
                picture[start:start + stripe, :] = 255
            output = _as_input(preprocess(Image.fromarray(picture)))
            if tuple(output.shape) != tuple(base.shape):
                raise GeometryError(f"the preprocessing gives inputs of shape "
                                    f"{tuple(output.shape)} and {tuple(base.shape)} for two "
                                    f"pictures of the same size {width}x{height}")
            difference = (output - base).abs().sum(dim=0)
            profile = difference.sum(dim=1 - axis)
            if float(profile.sum()) <= 1e-9 or float(profile[0]) > 1e-9 or \
                    float(profile[-1]) > 1e-9:
                continue  # cropped away, or cut by the crop (it touches the input's edge)
            centre = _centroid(output - base, axis)
            if centre is None:
                continue
            points_in.append(start + stripe / 2)
            points_out.append(centre)
        name = "x" if axis == 1 else "y"
        if len(points_in) < 2:
            raise GeometryError(f"the preprocessing keeps too little of a {width}x{height} "
                                f"picture along {name} to place regions in its input")
        scale, offset = np.polyfit(points_in, points_out, 1)
        if scale <= 0:
            raise GeometryError(f"the preprocessing mirrors or squashes the picture along {name}"
                                " (a flip?); regions cannot follow it")
        misfit = max(abs(scale * p + offset - q) / scale
                     for p, q in zip(points_in, points_out, strict=True))
        if misfit > TOLERANCE * max(1.0, 1.0 / scale):
            raise GeometryError(f"the preprocessing is not a scale and shift along {name} "
                                f"(probe stripes off a line by {misfit:.1f} px); regions "
                                "cannot follow it")
        ratio = (size[1] if axis == 1 else size[0]) / side
        if abs(scale - ratio) < 0.01 * ratio and abs(offset) < 0.25:
            scale, offset = ratio, 0.0  # a plain resize of this axis: exact, not estimated
        fits.append((float(scale), float(offset)))
    (scale_x, offset_x), (scale_y, offset_y) = fits
    return InputGeometry(scale_x, offset_x, scale_y, offset_y, size)
