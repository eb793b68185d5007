"""The inversion page's cells: mean, standard deviation and the mean's bootstrap interval over
the digits."""

from __future__ import annotations

import torch

from camlens.experiments.inversion import _spread
from camlens.metrics.intervals import bootstrap_interval


def test_a_cell_is_mean_sd_and_the_bootstrap_interval_of_the_mean():
    values = torch.tensor([0.10, 0.12, 0.15, 0.11, 0.30, 0.13, 0.14, 0.12])
    low, high = bootstrap_interval(values.double(), resamples=1000, seed=0)
    assert _spread(values) == (f"{float(values.mean()):.3f} ± {float(values.std()):.3f} "
                               f"[{low:.3f}, {high:.3f}]")
    assert low <= float(values.mean()) <= high and high - low > 0
