"""Comparing two classifiers on the same test items.

- :func:`discordant_counts`: McNemar's table (McNemar 1947): ``b`` items only the first
  classifier gets right, ``c`` items only the second gets right (items both get right or both get
  wrong say nothing about which is better).
- :func:`mcnemar_exact`: the exact (binomial) McNemar test: under "the two are equally accurate"
  each discordant item is a fair coin, so ``b ~ Binomial(b + c, 1/2)``; the two-sided p-value is
  ``min(1, 2 P(X <= min(b, c)))`` (Dietterich 1998 recommends the test for comparing two
  learners on one test set; the exact form is the one to use when ``b + c`` is small).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["discordant_counts", "mcnemar_exact"]


def discordant_counts(correct_a: Sequence[bool] | torch.Tensor,
                      correct_b: Sequence[bool] | torch.Tensor) -> tuple[int, int]:
    """``(b, c)``: how many items only ``a`` gets right, and only ``b`` gets right (the same
    items, in the same order, for both)."""
    a = torch.as_tensor(correct_a, dtype=torch.bool).reshape(-1)
    b = torch.as_tensor(correct_b, dtype=torch.bool).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"the two classifiers must be scored on the same items, got "
                         f"{a.numel()} and {b.numel()}")
    return int((a & ~b).sum()), int((~a & b).sum())


def mcnemar_exact(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value of discordant counts ``b`` and ``c``:
    ``min(1, 2 sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c))`` (1 when there are none).

    Example:
        >>> round(mcnemar_exact(3, 7), 3)
        0.344
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a count (a non-negative int), got {value!r}")
    total = b + c
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(b, c) + 1))
    # Exact integer arithmetic, then one division: no underflow for large counts.
    return min(1.0, 2 * tail / 2**total)
