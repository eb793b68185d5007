"""docs/detection.md's 95% intervals: every figure of a (layer, method) row is followed by its
interval over the digits, bootstrap for the mean and median energy inside the box, Wilson for
pointing, from the same per-digit values as the figure."""

from __future__ import annotations

import re

import pytest
import torch

from camlens.experiments.detection import detection_table, format_row, summarise_boxes
from camlens.metrics.intervals import bootstrap_interval, wilson_interval

ENERGY = r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]"
PERCENT = r"(\d+\.\d)% \[(\d+\.\d), (\d+\.\d)\]"
ROW = re.compile(rf"^\| (\S+) \| (\w+) \| {ENERGY} / {ENERGY} \| {PERCENT} \|$")


def test_a_row_is_summarised_with_the_intervals_of_its_digits() -> None:
    shares = [0.0, 0.5, 0.9, 1.0, 0.2, 0.7]  # the first digit was missed: 0 and a miss
    points = [0, 1, 1, 1, 0, 1]
    row = summarise_boxes(shares, points, resamples=200)
    assert row["energy_inside"] == pytest.approx(3.3 / 6)
    assert row["energy_inside_median"] == pytest.approx(0.6)  # mean of the two middle values
    assert row["pointing"] == pytest.approx(4 / 6) and row["digits"] == 6
    # Known answer: Wilson for 4 of 6, and the same seeded bootstraps called directly.
    assert row["pointing_interval"] == pytest.approx((0.3000, 0.9032), abs=1e-4)
    assert row["pointing_interval"] == wilson_interval(4, 6)
    assert row["energy_inside_interval"] == bootstrap_interval(shares, 200, 0)
    assert row["energy_inside_median_interval"] == bootstrap_interval(
        shares, 200, 0, statistic=lambda v: torch.quantile(v, 0.5, dim=1))
    for key in ("energy_inside", "energy_inside_median", "pointing"):
        low, high = row[f"{key}_interval"]
        assert low <= row[key] <= high, key
    with pytest.raises(ValueError, match="one share and one point per digit"):
        summarise_boxes(shares, points[:-1])


def test_a_row_shows_each_figure_then_its_interval() -> None:
    scores = {"energy_inside": 0.9731, "energy_inside_interval": (0.9652, 0.9804),
              "energy_inside_median": 0.992, "energy_inside_median_interval": (0.9905, 0.9931),
              "pointing": 0.589, "pointing_interval": (0.5417, 0.6344)}
    assert format_row("neck", "gradcam", scores) == (
        "| neck | gradcam | 0.973 [0.965, 0.980] / 0.992 [0.991, 0.993] | 58.9% [54.2, 63.4] |")


def test_the_page_has_an_interval_for_each_figure() -> None:
    page = detection_table(test_size=10, layers=("neck", ["features", "neck"]),
                           methods=("layercam",))
    assert "95% interval" in page and "bootstrap" in page and "Wilson" in page
    rows = [line for line in page.splitlines()
            if line.startswith("| ") and not line.startswith("| layer")]
    assert [row.split(" | ")[0][2:] for row in rows] == ["neck", "features+neck"]
    for row in rows:
        found = ROW.match(row)
        assert found, row
        numbers = [float(value) for value in found.groups()[2:]]
        for value, low, high in zip(numbers[0::3], numbers[1::3], numbers[2::3], strict=True):
            assert low <= value <= high, row
