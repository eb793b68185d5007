"""SSIM between maps (Wang et al. 2004, Gaussian window 11 / sigma 1.5) and Spearman of absolute
values: the sanity checks' similarities (Adebayo et al. 2018)."""

from __future__ import annotations

import math

import pytest
import torch

from camlens.metrics import spearman, ssim
from camlens.metrics.ssim import gaussian_window

ndimage = pytest.importorskip("scipy.ndimage")
stats = pytest.importorskip("scipy.stats")


def reference_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """skimage.metrics.structural_similarity(x, y, data_range=..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False), written out with scipy's Gaussian filter (scikit-
    image is not installed here): filter, then average over the map less a 5-pixel border."""
    a, b = x.double().numpy(), y.double().numpy()
    blur = lambda values: ndimage.gaussian_filter(values, sigma=1.5, truncate=3.5)  # noqa: E731
    mean_a, mean_b = blur(a), blur(b)
    var_a = blur(a * a) - mean_a**2
    var_b = blur(b * b) - mean_b**2
    cov = blur(a * b) - mean_a * mean_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return float(index[5:-5, 5:-5].mean())


def test_gaussian_window_is_the_normalised_gaussian():
    weights = gaussian_window()
    assert weights.shape == (11,)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert (weights[5] / weights[6]).item() == pytest.approx(math.exp(1 / (2 * 1.5**2)))
    assert torch.equal(weights, weights.flip(0))
    with pytest.raises(ValueError, match="odd"):
        gaussian_window(10)


def test_ssim_matches_the_written_out_reference():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(3, 24, 30, generator=generator)
    b = (a + 0.5 * torch.rand(3, 24, 30, generator=generator)).clamp(0, 1)
    found = ssim(a, b, normalize=False)
    assert found.shape == (3,)
    for index in range(3):
        expected = reference_ssim(a[index], b[index])
        assert found[index].item() == pytest.approx(expected, abs=1e-12)
        assert 0.1 < expected < 0.95  # a case that is neither trivial nor degenerate


def test_ssim_of_constant_maps_is_the_luminance_term():
    # Both maps flat: no variance, the structure term is C2 / C2 = 1 and what is left is
    # (2 a b + C1) / (a^2 + b^2 + C1), by hand.
    a, b = torch.full((16, 16), 0.5), torch.full((16, 16), 0.25)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert ssim(a, b, normalize=False).item() == pytest.approx(expected, abs=1e-12)
    assert ssim(a, a, normalize=False).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_normalises_each_map_first():
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(2, 20, 20, generator=generator)
    scaled = 7 * a - 3  # same map after min-max scaling
    assert torch.allclose(ssim(a, scaled), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert ssim(a, scaled, normalize=False).max().item() < 0.5  # raw values differ
    inverted = ssim(a, 1 - a)  # structure reversed: the covariance term is negative
    assert (inverted < 0).all()
    assert torch.allclose(ssim(a, a.flip(-1)), ssim(a.flip(-1), a))  # symmetric


def test_ssim_refuses_small_or_mismatched_maps():
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(10, 10), torch.rand(10, 10))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(torch.rand(12, 12), torch.rand(12, 13))


def test_absolute_spearman_ranks_magnitudes():
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(4, 9, 9, generator=generator)
    b = a + 0.5 * torch.randn(4, 9, 9, generator=generator)
    found = spearman(a, b, absolute=True)
    for index in range(4):
        expected = stats.spearmanr(a[index].abs().flatten(), b[index].abs().flatten()).statistic
        assert found[index].item() == pytest.approx(expected, abs=1e-10)
    assert torch.allclose(spearman(a, -a, absolute=True), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(spearman(a, -a), -torch.ones(4, dtype=torch.float64))
    positive = a.abs()
    assert torch.equal(spearman(positive, b.abs()), spearman(positive, b.abs(), absolute=True))
