"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, ICML 2022).

Deleting pixels by setting them to zero (RISE deletion) measures the model's reaction to
out-of-distribution holes as much as the map, and the holes' *shape* leaks which pixels the map
chose. ROAD removes a fraction of the pixels instead by **noisy linear imputation**: each removed
pixel takes the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the
diagonal ones, renormalised at the border), which for all removed pixels at once is one sparse
linear system per image, ``(D - W) x_removed = W_known x_known``, solved for every channel; then
Gaussian noise of standard deviation ``noise`` is added to the imputed values. :func:`road` builds
the systems of all its images and fractions at once and solves them by banded Cholesky
(:func:`linear_imputation`; 2-3x faster than a conjugate-gradient solve per image and channel on
the 64x64 digits, ``benchmarks/bench_road.py``), with the same masks and noise draws.

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

__all__ = ["ROADScores", "linear_imputation", "noisy_linear_imputation", "road", "road_scores"]

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: The imputation's neighbour weights (ROAD's): direct neighbours 1/6, diagonal ones 1/12.
NEIGHBOURS = ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
              (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12))
#: Values a batch of imputations holds at most (the band, or the CG vectors; float64: 64 MB).
SOLVE_ELEMENTS = 1 << 23
#: :func:`linear_imputation` solves images up to this wide by banded Cholesky, wider by CG (the
#: band costs ``W^2`` per unknown and ``W + 2`` values of memory: 2-3x faster than CG at 64 and
#: 224 pixels in ``benchmarks/ROAD.md``, even near 450 by the ``W^4`` vs ``W^3`` scaling; 135 MB
#: for one 256x256 image).
BANDED_WIDTH = 256


def noisy_linear_imputation(image: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """``image (C, H, W)`` with the pixels where ``removed (H, W)`` is True imputed from their
    neighbours (see the module docstring), plus noise of standard deviation ``noise``."""
    if image.ndim != 3 or tuple(removed.shape) != tuple(image.shape[1:]):
        raise ValueError(f"need an image (C, H, W) and a mask (H, W), got {tuple(image.shape)} "
                         f"and {tuple(removed.shape)}")
    mask = removed.detach().cpu().bool()
    _check_count(int(mask.sum()), mask.numel())
    jitter = _draw_noise(image, int(mask.sum()), noise, generator)
    return _noisy_imputations(image[None], mask[None], [jitter])[0]


def _check_count(count: int, positions: int) -> None:
    if count == positions:
        raise ValueError("ROAD cannot impute an image with every pixel removed (nothing to "
                         "impute from); use fractions below 1")


def _draw_noise(image: torch.Tensor, count: int, noise: float,
                generator: torch.Generator | None) -> torch.Tensor | None:
    """The noise of one image's ``count`` removed pixels ``(C, count)`` in ``image``'s dtype,
    drawn from ``generator`` in float64 (none when nothing is removed or ``noise`` is 0)."""
    if count == 0 or noise <= 0:
        return None
    return torch.randn((image.shape[0], count), generator=generator,
                       dtype=torch.float64).to(image.dtype) * noise


def _noisy_imputations(images: torch.Tensor, masks: torch.Tensor,
                       jitters: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """``images (N, C, H, W)`` imputed where ``masks (N, H, W)`` (on the CPU) are True, each
    plus its ``jitters[i] (C, count_i)`` on its removed pixels in row-major order; solved in
    float64, returned in ``images``' dtype and device."""
    values = images.detach().double().cpu()
    per_image = values[0].numel()
    step = max(1, SOLVE_ELEMENTS // per_image)
    filled = torch.cat([linear_imputation(values[start:start + step], masks[start:start + step])
                        for start in range(0, len(values), step)]).to(images.dtype)
    for result, mask, jitter in zip(filled, masks, jitters, strict=True):
        if jitter is not None:
            result[:, mask] += jitter
    return filled.to(images.device)


@dataclass
class _BlockSystem:
    """The systems of a batch of images as one block-diagonal system over all their removed
    pixels, numbered image by image in row-major order: ``diagonal`` (``D``, the weights of the
    in-image neighbours), the couplings between removed neighbours (``rows``, ``cols``,
    ``weights``: ``-W``, both directions), the right sides ``W_known x_known`` ``(unknowns,
    C)``, each image's unknowns ``counts`` and band (``bands``: its largest ``col - row``), and
    the removed pixels ``(image, y, x)``."""

    diagonal: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    right_side: np.ndarray
    counts: np.ndarray
    bands: np.ndarray
    pixels: tuple[np.ndarray, ...]


def _block_system(removed: np.ndarray, values: np.ndarray) -> _BlockSystem:
    """:class:`_BlockSystem` of ``removed (N, H, W)`` bool over ``values (N, C, H, W)``: for each
    neighbour offset, whole-batch array slices (the pixel here, its neighbour there) instead of
    per-pixel index arithmetic."""
    batch, height, width = removed.shape
    count = int(removed.sum())
    index = np.full(removed.shape, -1, dtype=np.int64)
    index[removed] = np.arange(count)
    pixels = np.nonzero(removed)
    neighbour_weights = np.zeros((height, width))  # D: the weights of the in-image neighbours
    kept = np.moveaxis(values, 1, -1) * ~removed[..., None]  # (N, H, W, C), 0 where removed
    known_sums = np.zeros_like(kept)  # W_known x_known, on the grid
    rows, cols, weights = [], [], []
    bands = np.zeros(batch, dtype=np.int64)
    for dy, dx, weight in NEIGHBOURS:
        here = (slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx)))
        there = (slice(max(0, dy), height + min(0, dy)), slice(max(0, dx), width + min(0, dx)))
        neighbour_weights[here] += weight
        known_sums[:, here[0], here[1]] += weight * kept[:, there[0], there[1]]
        both = removed[:, here[0], here[1]] & removed[:, there[0], there[1]]
        rows.append(index[:, here[0], here[1]][both])
        cols.append(index[:, there[0], there[1]][both])
        weights.append(np.full(len(rows[-1]), -weight))
        if (dy, dx) > (0, 0) and len(rows[-1]):  # a later unknown: how far on, per image
            found = both.reshape(batch, -1).sum(axis=1)
            starts = np.concatenate([[0], np.cumsum(found)[:-1]])
            bands[found > 0] = np.maximum(bands[found > 0], np.maximum.reduceat(
                cols[-1] - rows[-1], starts[found > 0]))
    counts = removed.reshape(batch, -1).sum(axis=1)
    return _BlockSystem(neighbour_weights[pixels[1], pixels[2]], np.concatenate(rows),
                        np.concatenate(cols), np.concatenate(weights), known_sums[removed],
                        counts, bands, pixels)


def linear_imputation(values: torch.Tensor, removed: torch.Tensor,
                      solver: Literal["auto", "banded", "cg"] = "auto") -> torch.Tensor:
    """ROAD's imputation without noise for a batch: ``values (N, C, H, W)`` with the pixels
    where ``removed (N, H, W)`` is True replaced by the solution of
    ``(D - W) x_removed = W_known x_known`` (module docstring), each image its own system (one
    right side per channel), in float64 on the CPU.

    The systems of a batch form one block-diagonal system, its indices computed for all the
    images at once (array slices per neighbour offset). Numbered in row-major order, a removed
    pixel's neighbours are at most ``W + 1`` unknowns away, so each block is banded:
    ``"banded"`` solves each block exactly by banded Cholesky, all channels with one
    factorisation (LAPACK ``pbsv`` via :func:`scipy.linalg.solveh_banded`,
    ``O(unknowns x band^2)``); ``"cg"`` by scipy's conjugate gradients per image and channel to
    a relative residual of 1e-10, as camlens did before (``O(W)`` iterations of
    ``O(unknowns)``, so cheaper for very wide images). ``"auto"``: banded up to
    :data:`BANDED_WIDTH` pixels wide, else CG. The two agree to ~1e-10."""
    if solver not in ("auto", "banded", "cg"):
        raise ValueError(f"solver must be 'auto', 'banded' or 'cg', got {solver!r}")
    if values.ndim != 4 or tuple(removed.shape) != (values.shape[0], *values.shape[2:]):
        raise ValueError(f"need values (N, C, H, W) and masks (N, H, W), got "
                         f"{tuple(values.shape)} and {tuple(removed.shape)}")
    data = values.detach().to(torch.float64).cpu().numpy()
    mask = removed.detach().cpu().numpy().astype(bool)
    filled = data.copy()
    if solver == "auto":
        solver = "banded" if mask.shape[-1] <= BANDED_WIDTH else "cg"
    # Chunks of images whose band (or CG vectors) fit in SOLVE_ELEMENTS values.
    per_unknown = mask.shape[-1] + 2 if solver == "banded" else 8 * data.shape[1]
    total = np.concatenate([[0], np.cumsum(mask.reshape(len(mask), -1).sum(axis=1))])
    start = 0
    while start < len(mask):
        fits = np.searchsorted(total, total[start] + SOLVE_ELEMENTS // per_unknown, "right") - 1
        stop = max(start + 1, int(fits))
        if total[stop] > total[start]:
            system = _block_system(mask[start:stop], data[start:stop])
            solve = _banded_solve if solver == "banded" else _cg_solve
            images, rows_y, rows_x = system.pixels
            filled[start + images, :, rows_y, rows_x] = solve(system)
        start = stop
    return torch.from_numpy(filled)


def _banded_solve(system: _BlockSystem) -> np.ndarray:
    """The blocks' solutions by banded Cholesky, each block with its own band (the blocks are
    symmetric positive definite: every group of removed pixels touches a kept one)."""
    from scipy.linalg import solveh_banded

    band = int(system.bands.max())
    upper = system.rows < system.cols
    rows, cols = system.rows[upper], system.cols[upper]
    packed = np.zeros((band + 1, len(system.diagonal)))  # LAPACK's upper band storage
    packed[band - (cols - rows), cols] = system.weights[upper]
    packed[band] = system.diagonal
    ends = np.cumsum(system.counts)
    solution = np.empty_like(system.right_side)
    for start, end, width in zip(ends - system.counts, ends, system.bands, strict=True):
        if end > start:
            solution[start:end] = solveh_banded(packed[band - width:, start:end],
                                                system.right_side[start:end],
                                                check_finite=False)
    return solution


def _cg_solve(system: _BlockSystem, rtol: float = 1e-10,
              max_iterations: int | None = None) -> np.ndarray:
    """The blocks' solutions by conjugate gradients, block by block and channel by channel
    (scipy's ``cg``, stopping at ``rtol`` times the right side; a system unsolved after
    ``max_iterations``, default scipy's 10 x its unknowns, by
    :func:`scipy.sparse.linalg.spsolve`): the per-image solve camlens used before, on the
    batch's vectorised system."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import cg, spsolve

    count = len(system.diagonal)
    matrix = coo_matrix((np.concatenate([system.diagonal, system.weights]),
                         (np.concatenate([np.arange(count), system.rows]),
                          np.concatenate([np.arange(count), system.cols]))),
                        shape=(count, count)).tocsr()
    ends = np.cumsum(system.counts)
    solution = np.empty_like(system.right_side)
    for start, end in zip(ends - system.counts, ends, strict=True):
        if end == start:
            continue
        block = matrix[start:end, start:end]
        for channel in range(solution.shape[1]):
            right_side = system.right_side[start:end, channel]
            solved, info = cg(block, right_side, rtol=rtol, atol=0.0, maxiter=max_iterations)
            if info != 0:
                solved = np.asarray(spsolve(block.tocsc(), right_side))
            solution[start:end, channel] = solved
    return solution


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
        # The masks and the noise are drawn fraction by fraction, image by image (the order of
        # the generator's draws), then every imputation is solved in one batch.
        masks, jitters = [], []
        for fraction in fractions:
            removed = _removal_masks(saliency, float(fraction), order, generator).cpu()
            count = int(removed[0].sum())
            _check_count(count, removed[0].numel())
            masks.append(removed)
            jitters += [_draw_noise(image, count, noise, generator) for image in images]
        repeated_images = images[None].expand(len(fractions), *images.shape).flatten(0, 1)
        stacked = _noisy_imputations(repeated_images, torch.cat(masks), jitters).reshape(
            len(fractions), *images.shape).transpose(0, 1)  # (B, F, C, H, W)
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
