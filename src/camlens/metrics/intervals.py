"""95% intervals for the figures camlens reports.

- :func:`wilson_interval`: a proportion over items (pointing accuracy, localization hits): the
  Wilson score interval (Wilson 1927; Brown, Cai and DasGupta 2001 recommend it over the normal
  approximation, which leaves [0, 1] and undercovers near 0 and 1),
  ``(p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``.
- :func:`bootstrap_interval`: a mean over items of any per-item figure (AUCs, ratios, shares):
  the percentile bootstrap (Efron 1979) with a seeded generator, so a table is reproducible.
- :func:`seed_interval`: a mean over a few training seeds: Student's t interval,
  ``mean -/+ t_{0.975, n-1} s / sqrt(n)`` (wide for 3 seeds, as it should be).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["bootstrap_interval", "seed_interval", "wilson_interval"]

# Student's t quantile t_{0.975, df} for df = 1..30 (beyond that, 1.96 within 2%).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
          2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
          2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``successes / total`` (95% for z = 1.96).

    Example:
        >>> wilson_interval(8, 10)  # doctest: +ELLIPSIS
        (0.49..., 0.94...)
    """
    if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
        raise ValueError(f"total must be a positive int, got {total!r}")
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, {total}], got {successes!r}")
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: Sequence[float] | torch.Tensor, resamples: int = 2000,
                       seed: int = 0, level: float = 0.95, *,
                       statistic: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       chunk: int = 100) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (one figure per item), or of
    ``statistic`` (resampled values ``(R, N, ...)`` -> ``(R,)``; items on the first axis of
    ``values``), from ``resamples`` resamples drawn with a generator seeded by ``seed``, ``chunk``
    resamples at a time (the draws do not depend on it).

    Without a statistic NaN values are refused (a figure that could not be computed must be
    dropped, and said so, before averaging)."""
    data = torch.as_tensor(values, dtype=torch.float64)
    if statistic is None:
        data = data.reshape(-1)
        if not bool(torch.isfinite(data).all()):
            raise ValueError("bootstrap_interval got NaN or infinite values; drop (and report) "
                             "the items whose figure could not be computed first")
        statistic = lambda resampled: resampled.mean(dim=1)  # noqa: E731
    if data.shape[0] == 0:
        raise ValueError("bootstrap_interval needs at least one value, got none")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive int, got {resamples!r}")
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for start in range(0, resamples, chunk):
        picks = torch.randint(0, data.shape[0], (min(chunk, resamples - start), data.shape[0]),
                              generator=generator)
        estimates.append(statistic(data[picks]))
    stacked = torch.cat(estimates).double()
    tail = (1 - level) / 2
    low, high = torch.quantile(stacked, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(low), float(high)


def seed_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): Student's t 95% interval of the mean of one figure over training
    seeds; at least two seeds are needed."""
    data = [float(value) for value in values]
    if len(data) < 2:
        raise ValueError(f"an interval over seeds needs at least 2 seeds, got {len(data)}")
    mean = sum(data) / len(data)
    sd = math.sqrt(sum((value - mean) ** 2 for value in data) / (len(data) - 1))
    df = len(data) - 1
    t = _T_975[df - 1] if df <= len(_T_975) else 1.96
    half = t * sd / math.sqrt(len(data))
    return mean, mean - half, mean + half
