"""The structural similarity index (SSIM) between two maps, as Adebayo et al. compare saliency maps.

SSIM (Wang, Bovik, Sheikh and Simoncelli, "Image Quality Assessment: From Error Visibility to
Structural Similarity", IEEE TIP 2004), with their Gaussian window: at every position the local
means ``mu``, variances ``sigma^2`` and covariance ``sigma_ab`` are Gaussian-weighted averages
(window 11 x 11, sigma 1.5, weights summing to 1; population, not sample, moments), and

    SSIM(a, b) = mean over positions of  (2 mu_a mu_b + C1) (2 sigma_ab + C2)
                                         / ((mu_a^2 + mu_b^2 + C1) (sigma_a^2 + sigma_b^2 + C2))

with ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` and ``L`` the data range (1 for maps in [0, 1]). The
mean is over the positions whose whole window lies inside the map (the border of half a window
is left out), which is what ``skimage.metrics.structural_similarity(a, b, data_range=1,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` computes.

Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018) compare an original and a
randomised map with SSIM after scaling each to [0, 1]: ``normalize=True`` (the default) min-max
normalises every map first (a constant map becomes all zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from camlens.explanation import normalize as min_max_normalize

__all__ = ["SSIM_SIGMA", "SSIM_WINDOW", "gaussian_window", "ssim"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The 1-D Gaussian weights ``(size,)`` float64, ``exp(-x^2 / 2 sigma^2)`` at the integer
    offsets ``x`` from the centre, normalised to sum to 1 (the 2-D window is their outer
    product)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the SSIM window must be an odd positive size, got {size}")
    if not sigma > 0:
        raise ValueError(f"the SSIM window's sigma must be positive, got {sigma}")
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-offsets.square() / (2 * sigma * sigma))
    return weights / weights.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, normalize: bool = True, data_range: float = 1.0,
         window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean SSIM ``(...,)`` between 2-D maps ``a`` and ``b`` ``(..., H, W)`` (Wang et al. 2004,
    Gaussian window ``window`` x ``window`` with ``sigma``; see the module docstring).

    ``normalize``: min-max normalise each map to [0, 1] first (Adebayo et al.), and use
    ``data_range=1``; without it the maps are taken as they are, with the given ``data_range``.
    Computed in float64; maps smaller than the window are refused. Identical maps give 1.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps to compare differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 2:
        raise ValueError(f"SSIM compares 2-D maps (..., H, W), got shape {tuple(a.shape)}")
    height, width = a.shape[-2:]
    if height < window or width < window:
        raise ValueError(f"maps of {height}x{width} are smaller than the {window}x{window} SSIM "
                         "window")
    leading = a.shape[:-2]
    x = a.detach().double().reshape(-1, 1, height, width)
    y = b.detach().double().to(x.device).reshape(x.shape)
    if normalize:
        x, y = min_max_normalize(x, 2), min_max_normalize(y, 2)
        data_range = 1.0
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    weights = gaussian_window(window, sigma).to(x.device)

    def local_mean(values: torch.Tensor) -> torch.Tensor:  # separable, 'valid' positions only
        across = F.conv2d(values, weights.reshape(1, 1, 1, window))
        return F.conv2d(across, weights.reshape(1, 1, window, 1))

    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mean_x.square()
    var_y = local_mean(y * y) - mean_y.square()
    cov_xy = local_mean(x * y) - mean_x * mean_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    index = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / (
        (mean_x.square() + mean_y.square() + c1) * (var_x + var_y + c2))
    result = index.mean(dim=(1, 2, 3))
    return result.reshape(leading) if leading else result.reshape(())

