"""The main localization table's 95% intervals: Wilson for the percentages of images, bootstrap
for the means, from the same per-image values as the points (evaluation.table's reduction)."""

from __future__ import annotations

import math

import pytest
import torch

from camlens import metrics
from camlens.api import explain
from camlens.data import ClutteredDigits, materialize
from camlens.evaluation.protocol import ROAD_FRACTIONS
from camlens.experiments.localization import (
    POINTING_TOLERANCE,
    SANITY_METHODS,
    _box_baseline,
    _cell,
    _evaluate_maps,
    _markdown_row,
    _sanity_lines,
)
from camlens.zoo import load


def test_a_cell_is_the_point_then_its_interval() -> None:
    assert _cell((19.5, 17.06, 22.14), "{:.1f}") == "19.5 [17.1, 22.1]"
    assert _cell((0.0971, 0.09, 0.1049), "{:.3f}") == "0.097 [0.090, 0.105]"
    assert _cell((91.8, math.nan, math.nan), "{:.1f}") == "91.8"
    row = _markdown_row("m", {"loc@0.20": (50.0, 40.0, 60.0)})
    assert row.startswith("| m | 50.0 [40.0, 60.0] | - |")


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    test = materialize(ClutteredDigits(12, "test", seed=0))
    model = load("digits-gap").eval()
    with torch.no_grad():
        predicted = model(test["image"]).argmax(dim=1)
    maps = explain(model, test["image"], method="gradcam", layer="features",
                   target=predicted).maps
    return {"image": test["image"], "label": test["label"], "box": test["box"],
            "predicted": predicted, "maps": maps}


@pytest.mark.slow  # about a minute on a loaded 2-core machine (ROAD and deletion curves)
def test_every_figure_has_the_interval_of_its_per_image_values(digits) -> None:
    model = load("digits-gap").eval()
    images, labels, boxes = digits["image"], digits["label"], digits["box"]
    predicted, maps = digits["predicted"], digits["maps"]
    row = _evaluate_maps(model, images, labels, boxes, predicted, maps, maps,
                         faithfulness_size=6, road_size=3)
    assert set(row) == {"loc@0.20", "loc@0.15", "pointing", "energy", "deletion", "insertion",
                        "drop", "increase", "road_morf", "road_lerf"}
    for key, (value, low, high) in row.items():
        assert low <= value <= high, key
    # A percentage of images: Wilson over all 12 images.
    hits = metrics.localization_hits(metrics.largest_component_boxes(maps, 0.20), boxes,
                                     predicted, labels)
    misses = int((~hits).sum())
    low, high = metrics.intervals.wilson_interval(misses, 12)
    assert row["loc@0.20"] == pytest.approx((100 * misses / 12, 100 * low, 100 * high))
    pointing = metrics.pointing_game(maps, boxes, POINTING_TOLERANCE)
    low, high = metrics.intervals.wilson_interval(int(pointing.sum()), 12)
    assert row["pointing"][1:] == pytest.approx((100 * low, 100 * high))
    # A mean: the bootstrap over the first road_size images only (the others were not run).
    road = metrics.road_scores(model, images[:3], maps[:3], targets=predicted[:3],
                               fractions=ROAD_FRACTIONS, batch_size=256)
    assert row["road_morf"][0] == pytest.approx(float(road.morf_mean.mean()))
    assert row["road_morf"][1:] == pytest.approx(
        metrics.intervals.bootstrap_interval(road.morf_mean, 1000, 0))
    assert row["road_morf"][2] - row["road_morf"][1] > 0


def test_the_box_baselines_have_wilson_intervals(digits) -> None:
    row = _box_baseline(digits["label"], digits["box"], digits["predicted"],
                        metrics.full_image_box((64, 64)))
    value, low, high = row["loc@0.20"]
    assert value == 100.0  # the full image never overlaps a digit by IoU 0.5
    assert (low, high) == pytest.approx(tuple(100 * b for b in
                                              metrics.intervals.wilson_interval(12, 12)))


@pytest.mark.slow  # eight methods through every randomisation step: ~6 s
def test_the_sanity_table_keeps_its_means_and_adds_bootstrap_intervals(digits) -> None:
    model = load("digits-gap").eval()
    images = digits["image"][:4]
    lines = _sanity_lines(model, images)
    table = [line for line in lines if line.startswith("| ") and "randomised" not in line]
    expected = dict(metrics.cascading_randomization(model, images, method="gradcam",
                                                    layer="features"))
    column = list(SANITY_METHODS).index("gradcam") + 1
    assert [line.split(" | ")[0][2:] for line in table] == list(expected)
    for line in table:
        layer, cell = line.split(" | ")[0][2:], line.split(" | ")[column]
        point, bounds = cell.split(" [")
        assert point == f"{expected[layer]:.2f}"  # the point as cascading_randomization's mean
        low, high = (float(b) for b in bounds.rstrip("]| ").split(", "))
        assert low <= float(point) <= high
