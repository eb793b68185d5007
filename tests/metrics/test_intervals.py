"""The intervals against textbook values, and their refusals."""

from __future__ import annotations

import pytest
import torch

from camlens.metrics.intervals import bootstrap_interval, seed_interval, wilson_interval


def test_wilson_matches_the_textbook_case():
    # Brown, Cai and DasGupta's example form: 8 of 10 -> (0.490, 0.943)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 20)[1] > 0.1  # never a zero-width interval at the edge
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)


@pytest.mark.parametrize(("successes", "total", "words"), [
    (3, 0, "positive int"), (5, 4, r"in \[0, 4\]"), (-1, 4, r"in \[0, 4\]")])
def test_wilson_refuses_impossible_counts(successes, total, words):
    with pytest.raises(ValueError, match=words):
        wilson_interval(successes, total)


def test_bootstrap_covers_the_mean_and_shrinks_with_more_items():
    values = torch.randn(400, generator=torch.Generator().manual_seed(1)) + 0.3
    low, high = bootstrap_interval(values)
    assert low < float(values.mean()) < high
    assert high - low == pytest.approx(2 * 1.96 / 20, rel=0.25)  # ~ 2 z sd / sqrt(n)
    narrow = bootstrap_interval(values.repeat(4))
    assert narrow[1] - narrow[0] < (high - low) * 0.7
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)


def test_bootstrap_refuses_nan_and_nothing():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([])


def test_seed_interval_uses_students_t():
    mean, low, high = seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 * 1.0 / 3 ** 0.5, rel=1e-3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_interval([1.0])


def test_bootstrap_of_any_statistic_over_items():
    hits = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])  # items x thresholds
    best = lambda resampled: resampled.mean(dim=1).amax(dim=1)  # noqa: E731 - MaxBoxAcc's form
    low, high = bootstrap_interval(hits, 500, seed=1, statistic=best)
    assert 0.5 <= low <= 0.75 <= high <= 1.0
    # the draws do not depend on the chunk size
    assert bootstrap_interval(hits, 500, seed=1, statistic=best, chunk=7) == (low, high)
