"""The exact McNemar test and its discordant counts, checked against scipy's binomial test."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import binomtest

from camlens.metrics.paired_tests import discordant_counts, mcnemar_exact


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 1), (3, 7), (7, 3), (5, 5), (0, 12),
                                      (14, 2), (40, 61), (300, 240)])
def test_mcnemar_exact_is_the_two_sided_binomial_test_of_the_discordant_pairs(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_exact_is_symmetric_and_small_for_lopsided_counts():
    assert mcnemar_exact(3, 7) == mcnemar_exact(7, 3) == pytest.approx(0.34375)
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


@pytest.mark.parametrize("bad", [-1, 1.5, True, None])
def test_mcnemar_exact_refuses_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match="count"):
        mcnemar_exact(bad, 3)


def test_discordant_counts_count_items_only_one_classifier_gets_right():
    a = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    b = [True, False, True, False, False, True]
    assert discordant_counts(a, b) == (2, 2)
    assert discordant_counts(a, a) == (0, 0)
    with pytest.raises(ValueError, match="same items"):
        discordant_counts(a, b[:5])
