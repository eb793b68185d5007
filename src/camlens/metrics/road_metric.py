"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, ICML 2022).

Deleting pixels by setting them to zero (RISE deletion) measures the model's reaction to
out-of-distribution holes as much as the map, and the holes' *shape* leaks which pixels the map
chose. ROAD removes a fraction of the pixels instead by **noisy linear imputation**: each removed
pixel takes the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the
diagonal ones, renormalised at the border), which for all removed pixels at once is one sparse
linear system per image, ``(D - W) x_removed = W_known x_known``, solved for every channel; then
Gaussian noise of standard deviation ``noise`` is added to the imputed values.

- **MoRF** (most relevant first): remove the top ``p`` of the pixels by the map; a faithful map
  makes the class probability fall fast (lower curve is better).
- **LeRF** (least relevant first): remove the bottom ``p``; the probability should stay (higher
  is better).

:func:`road` gives the class probability ``(B, F)`` at each fraction; :func:`road_scores` both
curves, their means over the fractions, and ``combined = mean(LeRF - MoRF) / 2`` (pytorch-grad-
cam's ROADCombined; higher is better).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from camlens.metrics.faithfulness import (
    _check_batch_size,
    _checked_images_and_maps,
    _resolve_targets,
    probabilities,
)
from camlens.model_state import preserved_model_state
from camlens.targets import Target

__all__ = ["ROADScores", "noisy_linear_imputation", "road", "road_scores"]

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: The imputation's neighbour weights (ROAD's): direct neighbours 1/6, diagonal ones 1/12.
NEIGHBOURS = ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
              (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12))


def noisy_linear_imputation(image: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """``image (C, H, W)`` with the pixels where ``removed (H, W)`` is True imputed from their
    neighbours (see the module docstring), plus noise of standard deviation ``noise``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import cg, spsolve

    if image.ndim != 3 or tuple(removed.shape) != tuple(image.shape[1:]):
        raise ValueError(f"need an image (C, H, W) and a mask (H, W), got {tuple(image.shape)} "
                         f"and {tuple(removed.shape)}")
    mask = removed.detach().cpu().numpy().astype(bool)
    count = int(mask.sum())
    if count == 0:
        return image.clone()
    if count == mask.size:
        raise ValueError("ROAD cannot impute an image with every pixel removed (nothing to "
                         "impute from); use fractions below 1")
    values = image.detach().double().cpu().numpy()  # (C, H, W)
    height, width = mask.shape
    index = -np.ones(mask.shape, dtype=np.int64)
    index[mask] = np.arange(count)
    rows_y, rows_x = np.nonzero(mask)
    weight_sums = np.zeros(count)
    rows, cols, data = [], [], []
    right_side = np.zeros((count, values.shape[0]))
    for dy, dx, weight in NEIGHBOURS:
        y, x = rows_y + dy, rows_x + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        own = np.nonzero(inside)[0]
        y, x = y[inside], x[inside]
        weight_sums[own] += weight
        neighbour_removed = mask[y, x]
        unknown = own[neighbour_removed]
        rows.append(unknown)
        cols.append(index[y[neighbour_removed], x[neighbour_removed]])
        data.append(np.full(len(unknown), -weight))
        known = own[~neighbour_removed]
        right_side[known] += weight * values[:, y[~neighbour_removed], x[~neighbour_removed]].T
    # Each row: weight_sum * x_i - sum_(removed j) w_ij x_j = sum_(known j) w_ij v_j.
    rows.append(np.arange(count))
    cols.append(np.arange(count))
    data.append(weight_sums)
    system = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(count, count)).tocsr()
    # The system is symmetric and diagonally dominant: conjugate gradients, else a direct solve.
    solved = np.empty_like(right_side)
    for channel in range(right_side.shape[1]):
        solution, info = cg(system, right_side[:, channel], rtol=1e-10, atol=0.0)
        if info != 0:
            solution = np.asarray(spsolve(system, right_side[:, channel]))
        solved[:, channel] = solution
    filled = values.copy()
    filled[:, rows_y, rows_x] = solved.T
    result = torch.from_numpy(filled).to(image.dtype)
    if noise > 0:
        jitter = torch.randn((values.shape[0], count), generator=generator,
                             dtype=torch.float64).to(image.dtype) * noise
        result[:, rows_y, rows_x] += jitter
    return result.to(image.device)


def _removal_masks(saliency: torch.Tensor, fraction: float, order: str,
                   generator: torch.Generator) -> torch.Tensor:
    """The ``fraction`` of positions of each map to remove, ``(B, H, W)`` bool; ties in a
    random order from ``generator``."""
    batch, positions = saliency.shape[0], saliency[0].numel()
    shuffle = torch.randperm(positions, generator=generator).to(saliency.device)
    shuffled = saliency.reshape(batch, positions)[:, shuffle]
    ranked = shuffle[shuffled.argsort(dim=1, descending=order == "morf", stable=True)]
    count = int(round(fraction * positions))
    masks = torch.zeros(batch, positions, dtype=torch.bool, device=saliency.device)
    masks.scatter_(1, ranked[:, :count], True)
    return masks.reshape(saliency.shape)


def road(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Target = None,
         fractions: Sequence[float] = DEFAULT_FRACTIONS,
         order: Literal["morf", "lerf"] = "morf", noise: float = 0.01, seed: int = 0,
         batch_size: int = 64, output_fn: Callable[[Any], Any] | None = None) -> torch.Tensor:
    """The target class's probability ``(B, F)`` after removing each fraction of the pixels by
    ``order`` with noisy linear imputation (see the module docstring). ``images (B, C, H, W)``;
    ``maps (B, h, w)`` are resized to the images; ``targets`` as in
    :func:`~camlens.metrics.deletion_insertion` (default: the prediction on the image)."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    if not fractions or not all(0 < float(f) < 1 for f in fractions):
        raise ValueError(f"fractions must lie strictly between 0 and 1, got {list(fractions)}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    _check_batch_size(batch_size)
    images, saliency = _checked_images_and_maps(model, images, maps)
    if images.ndim != 4:
        raise ValueError(f"ROAD imputes images (B, C, H, W), got shape {tuple(images.shape)}")
    generator = torch.Generator().manual_seed(seed)
    with preserved_model_state(model), torch.no_grad():
        chosen = _resolve_targets(model, images, targets, batch_size, output_fn)
        imputed = []
        for fraction in fractions:
            masks = _removal_masks(saliency, float(fraction), order, generator)
            imputed.append(torch.stack([
                noisy_linear_imputation(image, mask, noise, generator)
                for image, mask in zip(images, masks, strict=True)]))
        stacked = torch.stack(imputed, dim=1)  # (B, F, C, H, W)
        flat = stacked.reshape(-1, *images.shape[1:])
        repeated = chosen.repeat_interleave(len(fractions))
        scores = torch.cat([probabilities(model, chunk, repeated[start:start + len(chunk)],
                                          output_fn)
                            for start, chunk in zip(range(0, len(flat), batch_size),
                                                    flat.split(batch_size), strict=True)])
    return scores.reshape(images.shape[0], len(fractions))


@dataclass
class ROADScores:
    """Both ROAD curves ``(B, F)`` at ``fractions``, their means over the fractions ``(B,)``,
    and ``combined = (lerf_mean - morf_mean) / 2`` (higher is better)."""

    fractions: tuple[float, ...]
    morf: torch.Tensor
    lerf: torch.Tensor

    @property
    def morf_mean(self) -> torch.Tensor:
        return self.morf.mean(dim=1)

    @property
    def lerf_mean(self) -> torch.Tensor:
        return self.lerf.mean(dim=1)

    @property
    def combined(self) -> torch.Tensor:
        return (self.lerf_mean - self.morf_mean) / 2


def road_scores(model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
                targets: Target = None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                noise: float = 0.01, seed: int = 0, batch_size: int = 64,
                output_fn: Callable[[Any], Any] | None = None) -> ROADScores:
    """MoRF and LeRF curves of :func:`road` for the same images, maps and targets."""
    curves = {order: road(model, images, maps, targets, fractions, order, noise, seed,
                          batch_size, output_fn) for order in ("morf", "lerf")}
    return ROADScores(tuple(float(f) for f in fractions), curves["morf"], curves["lerf"])
