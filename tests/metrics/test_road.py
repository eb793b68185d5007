"""ROAD: noisy linear imputation by hand; MoRF and LeRF tell a faithful map from a wrong one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camlens.metrics import noisy_linear_imputation, road, road_scores


def test_a_removed_pixel_takes_the_weighted_mean_of_its_neighbours():
    image = torch.zeros(1, 3, 3)
    image[0, 1, 0] = image[0, 1, 2] = image[0, 0, 1] = image[0, 2, 1] = 1.0  # direct: 1
    image[0, 1, 1] = 9.0  # removed
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[1, 1] = True
    filled = noisy_linear_imputation(image, removed, noise=0.0)
    assert float(filled[0, 1, 1]) == pytest.approx(4 / 6)  # 4 x 1/6 x 1 + 4 x 1/12 x 0
    assert torch.equal(filled[:, ~removed], image[:, ~removed])


def test_a_corner_renormalises_its_weights():
    image = torch.tensor([[[0.0, 3.0, 0.0], [6.0, 12.0, 0.0], [0.0, 0.0, 0.0]]])
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[0, 0] = True
    filled = noisy_linear_imputation(image, removed, noise=0.0)
    expected = (3.0 / 6 + 6.0 / 6 + 12.0 / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert float(filled[0, 0, 0]) == pytest.approx(expected)


def test_neighbouring_removed_pixels_are_solved_together():
    torch.manual_seed(0)
    image = torch.rand(2, 6, 7)
    removed = torch.zeros(6, 7, dtype=torch.bool)
    removed[2:4, 2:5] = True
    filled = noisy_linear_imputation(image, removed, noise=0.0)
    for y, x in torch.nonzero(removed).tolist():  # every removed pixel: its neighbours' mean
        total = weight = 0.0
        for dy, dx, w in ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
                          (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)):
            total = total + w * filled[:, y + dy, x + dx]
            weight += w
        torch.testing.assert_close(filled[:, y, x], total / weight)


def test_imputation_noise_is_seeded_and_of_the_given_size():
    image = torch.zeros(1, 40, 40)
    removed = torch.zeros(40, 40, dtype=torch.bool)
    removed[::2, ::2] = True
    first = noisy_linear_imputation(image, removed, 0.05, torch.Generator().manual_seed(3))
    again = noisy_linear_imputation(image, removed, 0.05, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert float(first[0][removed].std()) == pytest.approx(0.05, rel=0.15)
    with pytest.raises(ValueError, match="every pixel removed"):
        noisy_linear_imputation(image, torch.ones(40, 40, dtype=torch.bool))


class CornerModel(nn.Module):
    """Class 1's logit is the brightness of the top-left 4x4 corner; class 0's is fixed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, :4, :4].mean(dim=(1, 2, 3)) * 20
        return torch.stack([torch.full_like(corner, 5.0), corner], dim=1)


def test_road_tells_a_faithful_map_from_a_wrong_one():
    images = torch.rand(3, 1, 12, 12) * 0.2
    images[:, :, :4, :4] = 1.0  # class 1 wins: the corner is bright
    right = torch.zeros(3, 12, 12)
    right[:, :4, :4] = 1.0
    wrong = torch.zeros(3, 12, 12)
    wrong[:, -4:, -4:] = 1.0
    fractions = (0.1, 0.2)
    good = road_scores(CornerModel(), images, right, targets=1, fractions=fractions, noise=0.0)
    bad = road_scores(CornerModel(), images, wrong, targets=1, fractions=fractions, noise=0.0)
    assert good.morf.shape == (3, 2)
    # Removing the corner first (MoRF of the right map) drops the probability of class 1.
    assert bool((good.morf_mean < bad.morf_mean - 0.3).all())
    assert bool((good.combined > bad.combined).all())
    assert bool((good.lerf_mean > 0.9).all())


def test_road_refuses_bad_arguments():
    model, images, maps = CornerModel(), torch.rand(1, 1, 8, 8), torch.rand(1, 8, 8)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        road(model, images, maps, fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="order must be 'morf' or 'lerf'"):
        road(model, images, maps, order="both")
    with pytest.raises(ValueError, match=r"ROAD imputes images \(B, C, H, W\)"):
        road(model, torch.rand(1, 1, 8), torch.rand(1, 8))
