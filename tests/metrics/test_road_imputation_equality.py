"""ROAD's fast imputation equals the original per-image sparse solve (kept here as the reference).

The reference is camlens's noisy linear imputation before it was batched (Rong et al., ICML 2022:
each removed pixel the weighted mean of its 8 neighbours, 1/6 direct and 1/12 diagonal, one
sparse system per image and channel solved by conjugate gradients, then Gaussian noise), copied
verbatim, and the ``road`` loop that called it image by image. The fast code must give the same
images (within float tolerance: both solves stop at a relative residual of 1e-10) and draw the
noise from the generator in the same order, so ROAD's figures do not move.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from camlens.metrics import noisy_linear_imputation, road
from camlens.metrics.faithfulness import (
    _checked_images_and_maps,
    _resolve_targets,
    probabilities,
)
from camlens.metrics.road_metric import (
    _block_system,
    _cg_solve,
    _removal_masks,
    linear_imputation,
)

NEIGHBOURS = ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
              (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12))


def reference_imputation(image: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """The original ``noisy_linear_imputation`` (one scipy CG solve per channel)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import cg, spsolve

    mask = removed.detach().cpu().numpy().astype(bool)
    count = int(mask.sum())
    if count == 0:
        return image.clone()
    values = image.detach().double().cpu().numpy()
    height, width = mask.shape
    index = -np.ones(mask.shape, dtype=np.int64)
    index[mask] = np.arange(count)
    rows_y, rows_x = np.nonzero(mask)
    weight_sums = np.zeros(count)
    rows: list[Any] = []
    cols: list[Any] = []
    data: list[Any] = []
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
    rows.append(np.arange(count))
    cols.append(np.arange(count))
    data.append(weight_sums)
    system = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(count, count)).tocsr()
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


def reference_road(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Any,
                   fractions: tuple[float, ...], order: str, noise: float, seed: int,
                   batch_size: int = 64) -> torch.Tensor:
    """The original ``road``: the reference imputation image by image, fraction by fraction."""
    images, saliency = _checked_images_and_maps(model, images, maps)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        chosen = _resolve_targets(model, images, targets, batch_size, None)
        imputed = []
        for fraction in fractions:
            masks = _removal_masks(saliency, float(fraction), order, generator)
            imputed.append(torch.stack([
                reference_imputation(image, mask, noise, generator)
                for image, mask in zip(images, masks, strict=True)]))
        flat = torch.stack(imputed, dim=1).reshape(-1, *images.shape[1:])
        repeated = chosen.repeat_interleave(len(fractions))
        scores = probabilities(model, flat, repeated, None)
    return scores.reshape(images.shape[0], len(fractions))


def _masks(height: int, width: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    scattered = torch.rand(height, width, generator=generator) < 0.5
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    blob = ((yy - height / 3) ** 2 + (xx - width / 4) ** 2) < (0.45 * height) ** 2
    nearly_all = torch.ones(height, width, dtype=torch.bool)
    nearly_all[height - 1, 0] = False
    border = torch.zeros(height, width, dtype=torch.bool)
    border[0, :] = border[:, -1] = True
    return {"scattered": scattered, "blob": blob, "nearly all": nearly_all, "border": border,
            "none": torch.zeros(height, width, dtype=torch.bool)}


@pytest.mark.parametrize("name", ["scattered", "blob", "nearly all", "border", "none"])
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_imputation_equals_the_reference(name: str, noise: float) -> None:
    image = torch.rand(3, 23, 31, generator=torch.Generator().manual_seed(2))
    removed = _masks(23, 31)[name]
    fast = noisy_linear_imputation(image, removed, noise, torch.Generator().manual_seed(5))
    slow = reference_imputation(image, removed, noise, torch.Generator().manual_seed(5))
    assert fast.dtype == slow.dtype and fast.shape == slow.shape
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-6)
    assert torch.equal(fast[:, ~removed], image[:, ~removed])


def test_imputation_of_a_double_image_matches_to_solver_precision() -> None:
    image = torch.rand(2, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    removed = _masks(40, 40)["blob"]
    fast = noisy_linear_imputation(image, removed, 0.0)
    slow = reference_imputation(image, removed, 0.0)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-8)


class PatchModel(nn.Module):
    """Logits from a few fixed linear read-outs of the image: ROAD's scores move with every
    imputed pixel."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.read = nn.Linear(channels * size * size, 4)
        torch.nn.init.normal_(self.read.weight, std=0.2, generator=torch.Generator().manual_seed(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read(x.flatten(1))


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_equals_the_reference(order: str) -> None:
    images = torch.rand(5, 2, 16, 16, generator=torch.Generator().manual_seed(7))
    maps = torch.rand(5, 4, 4, generator=torch.Generator().manual_seed(8))  # resized; ties
    model = PatchModel(2, 16).eval()
    fractions = (0.1, 0.5, 0.9)
    fast = road(model, images, maps, fractions=fractions, order=order, noise=0.01, seed=3)  # type: ignore[arg-type]
    slow = reference_road(model, images, maps, None, fractions, order, 0.01, 3)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("solver", ["banded", "cg"])
def test_both_solvers_of_a_batch_equal_the_reference(solver: str) -> None:
    images = torch.rand(4, 2, 19, 26, generator=torch.Generator().manual_seed(4))
    masks = torch.stack(list(_masks(19, 26).values())[:4])  # scattered, blob, nearly all, border
    fast = linear_imputation(images, masks, solver)  # type: ignore[arg-type]
    for image, mask, filled in zip(images, masks, fast, strict=True):
        torch.testing.assert_close(filled.float(), reference_imputation(image, mask, 0.0),
                                   rtol=1e-6, atol=1e-6)


def test_cg_falls_back_to_a_direct_solve_when_it_runs_out_of_iterations() -> None:
    images = torch.rand(2, 1, 12, 12, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(6))
    masks = torch.stack([_masks(12, 12)["blob"], _masks(12, 12)["none"]])
    system = _block_system(masks.numpy(), images.numpy())
    direct = _cg_solve(system, max_iterations=1)  # one step: far from solved, so spsolve
    expected = linear_imputation(images, masks, "banded")[0, 0][masks[0]]
    torch.testing.assert_close(torch.from_numpy(direct[:, 0]), expected, rtol=0, atol=1e-10)


def test_linear_imputation_refuses_a_bad_solver_or_shape() -> None:
    with pytest.raises(ValueError, match="solver must be"):
        linear_imputation(torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool), "lu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"masks \(N, H, W\)"):
        linear_imputation(torch.rand(1, 1, 4, 4), torch.zeros(4, 4, dtype=torch.bool))
