"""Does the map point at the object? The pointing game and its energy-based variant.

- Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016):
  the map's maximum for the ground-truth class is a hit when a ground-truth pixel of that class
  lies within ``tolerance`` (15) pixels of it; accuracy = hits / (hits + misses) per class,
  averaged over classes.
- Energy-based pointing game (Wang et al., "Score-CAM", CVPR workshops 2020): the share of the
  map's mass inside the object's box, ``sum_{(i,j) in box} L_ij / sum_ij L_ij``.

Regions are boolean masks ``(..., H, W)`` or boxes ``(..., 4)`` ``(x0, y0, x1, y1)`` in pixels,
``x1, y1`` exclusive (see :mod:`camlens.metrics.localization`), at the map's resolution.
"""

from __future__ import annotations

import torch

from camlens.metrics.localization import box_masks

__all__ = ["DIGITS_TOLERANCE", "class_mean_accuracy", "energy_pointing_game", "pointing_accuracy",
           "pointing_game"]

#: The pointing game's 15 px tolerance on a 224-px image (Zhang et al.) scaled to the 64-px-high
#: digit canvases of :mod:`camlens.data`: 4 px, one cell of the digit models' feature maps.
DIGITS_TOLERANCE = 4


def _region_masks(regions: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Boolean masks shaped like ``maps (..., H, W)`` from masks or boxes ``(..., 4)``."""
    if not isinstance(regions, torch.Tensor):
        raise TypeError(f"regions must be a tensor of masks or boxes, got {type(regions).__name__}")
    regions = regions.to(maps.device)
    if regions.dtype == torch.bool:
        if regions.shape != maps.shape:
            raise ValueError(
                f"region masks of shape {tuple(regions.shape)} do not match maps of shape "
                f"{tuple(maps.shape)}"
            )
        return regions
    if regions.shape[-1:] != (4,) or regions.shape[:-1] != maps.shape[:-2]:
        raise ValueError(
            f"regions must be boolean masks {tuple(maps.shape)} or boxes "
            f"{(*maps.shape[:-2], 4)} (x0, y0, x1, y1), got {regions.dtype} of shape "
            f"{tuple(regions.shape)}"
        )
    return box_masks(regions, maps.shape[-2:])


def _check_maps(maps: torch.Tensor) -> None:
    if not isinstance(maps, torch.Tensor) or maps.ndim < 2:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor (..., H, W), got {shape}")


def pointing_game(
    maps: torch.Tensor, regions: torch.Tensor, tolerance: float = 15
) -> torch.Tensor:
    """Bool ``(...,)``: is each map's maximum within ``tolerance`` pixels of its region?

    Zhang et al. (ECCV 2016): take the point of the map's maximum (the first in raster order
    among ties); it is a hit when some region pixel lies at Euclidean distance
    ``< tolerance`` from it, as in TorchRay's reference implementation of the benchmark. The point
    itself always counts, so ``tolerance=0`` asks for the maximum to lie inside the region.
    An empty region is a miss (the benchmark skips such image/class pairs: drop them first).
    ``maps (..., H, W)``; ``regions``: masks ``(..., H, W)`` bool or boxes ``(..., 4)``.
    """
    _check_maps(maps)
    if tolerance < 0:
        raise ValueError(f"tolerance is a distance in pixels and must be >= 0, got {tolerance}")
    masks = _region_masks(regions, maps)
    height, width = maps.shape[-2:]
    flat = maps.reshape(-1, height * width)
    peak = flat.argmax(dim=1)
    peak_y, peak_x = (peak // width).float(), (peak % width).float()
    ys = torch.arange(height, device=maps.device, dtype=torch.float32)
    xs = torch.arange(width, device=maps.device, dtype=torch.float32)
    squared_distance = (ys[None, :, None] - peak_y[:, None, None]) ** 2 + (
        xs[None, None, :] - peak_x[:, None, None]
    ) ** 2
    accepted = (squared_distance < tolerance**2) | (squared_distance == 0)
    hits = (accepted & masks.reshape(-1, height, width)).flatten(1).any(dim=1)
    return hits.reshape(maps.shape[:-2])


def energy_pointing_game(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Share ``(...,)`` in [0, 1] of each map's mass inside its region (Score-CAM, Wang et al.
    2020): ``sum_{(i,j) in box} L_ij / sum_ij L_ij``.

    ``maps (..., H, W)`` must be non-negative (camlens maps are); a uniform map scores the
    region's area over the image's area, the chance level. An all-zero map has no mass to place
    and scores 0. ``regions``: boxes ``(..., 4)`` as in the paper, or boolean masks.
    ``Explanation.maps`` are min-max normalised, which subtracts each map's minimum; for the mass
    as the method computed it pass ``camlens.explanation.upsample(exp.raw, exp.input_size)``.
    """
    _check_maps(maps)
    if (maps < 0).any():
        raise ValueError("energy_pointing_game needs non-negative maps (mass), got negative values")
    masks = _region_masks(regions, maps)
    maps = maps if maps.is_floating_point() else maps.float()
    total = maps.sum(dim=(-2, -1))
    inside = (maps * masks).sum(dim=(-2, -1))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def pointing_accuracy(hits: torch.Tensor, classes: torch.Tensor | None = None) -> float:
    """Hits / (hits + misses); with ``classes`` (one per hit), the mean over the classes present
    of each class's accuracy, as the pointing game reports it (Zhang et al., ECCV 2016)."""
    hits = torch.as_tensor(hits).reshape(-1).float()
    if hits.numel() == 0:
        raise ValueError("pointing_accuracy needs at least one result")
    if classes is None:
        return hits.mean().item()
    classes = torch.as_tensor(classes, device=hits.device).reshape(-1)
    if classes.shape != hits.shape:
        raise ValueError(f"got {hits.numel()} hits but {classes.numel()} classes")
    present, index = classes.unique(return_inverse=True)
    totals = hits.new_zeros(len(present)).index_add_(0, index, hits)
    counts = hits.new_zeros(len(present)).index_add_(0, index, torch.ones_like(hits))
    return (totals / counts).mean().item()


def class_mean_accuracy(hits: torch.Tensor, classes: torch.Tensor,
                        num_classes: int | None = None) -> torch.Tensor:
    """The per-class mean of hit rates over the last axis, batched: ``(..., N)`` hits and classes
    -> ``(...,)`` float64.

    Zhang et al. ("Top-Down Neural Attention by Excitation Backprop", ECCV 2016; IJCV 2018)
    report the pointing game as ``(1 / |C|) sum_{c in C} hits_c / (hits_c + misses_c)`` over the
    classes ``C`` present (in each row of the batch: a bootstrap resample may miss a class, which
    then does not count). The same as :func:`pointing_accuracy` with classes for one row; the
    leading axes let a bootstrap evaluate its resamples ``(R, N)`` at once. ``classes`` are
    ints in ``[0, num_classes)`` (default: one more than the largest).
    """
    hits = torch.as_tensor(hits)
    classes = torch.as_tensor(classes, device=hits.device)
    if hits.shape != classes.shape or hits.ndim < 1 or hits.shape[-1] == 0:
        raise ValueError(f"hits and classes must share a shape (..., N) with N >= 1, got "
                         f"{tuple(hits.shape)} and {tuple(classes.shape)}")
    if classes.is_floating_point() or bool((classes < 0).any()):
        raise ValueError("classes must be non-negative ints")
    count = int(classes.max()) + 1 if num_classes is None else num_classes
    if int(classes.max()) >= count:
        raise ValueError(f"classes go up to {int(classes.max())}, beyond num_classes={count}")
    one_hot = torch.nn.functional.one_hot(classes.long(), count).double()  # (..., N, C)
    totals = (one_hot * hits.double()[..., None]).sum(dim=-2)
    counts = one_hot.sum(dim=-2)
    present = counts > 0
    rates = torch.where(present, totals / counts.clamp_min(1), torch.zeros_like(totals))
    return rates.sum(dim=-1) / present.sum(dim=-1)
