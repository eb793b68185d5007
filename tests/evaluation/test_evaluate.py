"""camlens.evaluation: the table equals the metrics called directly, per-image values do not depend
on the batch, refusals and bad settings are said, intervals are bootstrap intervals."""

from __future__ import annotations

import json
import math

import pytest
import torch
from toy_models import FlattenNet, GapNet

from camlens.api import explain
from camlens.evaluation import EvaluationBatch, EvaluationSpec, evaluate, evaluate_batch
from camlens.evaluation.table import bootstrap_interval as statistic_interval
from camlens.metrics import (
    BOX_ACCURACY_THRESHOLDS,
    average_drop_increase,
    box_accuracy_hits,
    deletion_insertion,
    energy_pointing_game,
    largest_component_boxes,
    localization_hits,
    pointing_game,
    road_scores,
)
from camlens.metrics.intervals import bootstrap_interval, wilson_interval
from camlens.metrics.localization import _threshold_boxes


def _items(count: int = 6, size: int = 12):
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(count, 3, size, size, generator=generator)
    boxes = [torch.tensor([[1.0, 2.0, 7.0, 9.0]]), torch.tensor([[4.0, 4.0, 12.0, 12.0]]),
             torch.tensor([[0.0, 0.0, 5.0, 5.0], [6.0, 6.0, 11.0, 11.0]]), torch.zeros(0, 4),
             torch.tensor([[2.0, 3.0, 10.0, 8.0]]), torch.tensor([[0.0, 6.0, 6.0, 12.0]])]
    labels = [0, 1, 2, 3, 4, -1]
    return [{"image": images[i], "label": labels[i], "boxes": boxes[i], "file": f"f{i}.png"}
            for i in range(count)]


@pytest.fixture
def model() -> GapNet:
    torch.manual_seed(0)
    return GapNet().eval()


def test_the_table_equals_the_metrics_called_directly(model):
    items = _items()
    table = evaluate(model, items, methods=("gradcam",), layer="features", batch_size=4,
                     tolerance=2, resamples=100)
    images = torch.stack([item["image"] for item in items])
    labels = torch.tensor([item["label"] for item in items])
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    true = torch.where(labels >= 0, labels, predicted)
    maps_pred = explain(model, images, "gradcam", "features", target=predicted).maps
    maps_true = explain(model, images, "gradcam", "features", target=true).maps
    boxed = [0, 1, 2, 4, 5]  # image 3 has no box; image 5 no label
    hits = []
    for index in [0, 1, 2, 4]:
        found = largest_component_boxes(maps_pred[index:index + 1], 0.2)
        hits.append(bool(localization_hits(found, items[index]["boxes"][None],
                                           predicted[index:index + 1], labels[index:index + 1])))
    pointing, energy, box_hits = [], [], []
    for index in boxed:
        region = torch.zeros(12, 12, dtype=torch.bool)
        for x0, y0, x1, y1 in items[index]["boxes"].long().tolist():
            region[y0:y1, x0:x1] = True
        pointing.append(bool(pointing_game(maps_true[index:index + 1], region[None], 2)))
        energy.append(float(energy_pointing_game(maps_true[index:index + 1], region[None])))
        box_hits.append(box_accuracy_hits(maps_true[index:index + 1],
                                          items[index]["boxes"][None])[0])
    deletion = deletion_insertion(model, images, maps_pred, predicted, steps=32).auc
    insertion = deletion_insertion(model, images, maps_pred, predicted, steps=32,
                                   mode="insertion").auc
    confidence = average_drop_increase(model, images, maps_pred, predicted)
    morf = torch.cat([road_scores(model, images[i:i + 1], maps_pred[i:i + 1],
                                  predicted[i:i + 1]).morf_mean for i in range(6)])
    expected = {
        "loc@0.20": 100 * (1 - sum(hits) / len(hits)),
        "pointing": 100 * sum(pointing) / len(pointing),
        "energy": 100 * sum(energy) / len(energy),
        "maxboxacc": 100 * float(torch.stack(box_hits).float().mean(dim=0).max()),
        "deletion": float(deletion.mean()), "insertion": float(insertion.mean()),
        "drop": confidence["average_drop"], "increase": confidence["increase_in_confidence"],
        "road_morf": float(morf.mean()),
    }
    row = table["gradcam"]
    assert row.count == 6 and row.cells["loc@0.20"].count == 4
    assert row.cells["pointing"].count == 5 and row.cells["deletion"].count == 6
    for key, value in expected.items():
        # maps of a batch of 4 against one of 6: equal up to float rounding
        assert table.value("gradcam", key) == pytest.approx(value, rel=1e-4, abs=1e-9), key
        cell = row.cells[key]
        assert cell.low <= cell.value + 1e-9 and cell.value <= cell.high + 1e-9, key
    assert any("without a label" in note for note in table.notes)
    # proportions get Wilson intervals, means the seeded percentile bootstrap
    misses = round(len(hits) - sum(hits))
    low, high = wilson_interval(misses, len(hits))
    assert (row.cells["loc@0.20"].low, row.cells["loc@0.20"].high) == pytest.approx(
        (100 * low, 100 * high))
    low, high = bootstrap_interval(deletion, resamples=100, seed=0)
    assert (row.cells["deletion"].low, row.cells["deletion"].high) == pytest.approx(
        (low, high), rel=1e-3)


def test_values_do_not_depend_on_the_batch(model):
    items = _items()
    spec = EvaluationSpec(("gradcam",), "features", metrics=("localization", "deletion"),
                          steps=8)

    def batch(chosen):
        return EvaluationBatch(torch.stack([items[i]["image"] for i in chosen]),
                               torch.tensor([items[i]["label"] for i in chosen]),
                               [items[i]["boxes"] for i in chosen],
                               [items[i]["file"] for i in chosen])

    together = evaluate_batch(model, spec, batch(range(6)))
    alone = [row for i in range(6) for row in evaluate_batch(model, spec, batch([i]))]
    for a, b in zip(together, alone, strict=True):
        assert a.name == b.name and a.values.keys() == b.values.keys()
        for key in a.values:
            assert (math.isnan(a.values[key]) and math.isnan(b.values[key])) or \
                a.values[key] == pytest.approx(b.values[key], abs=1e-5), key


def test_a_refused_method_is_a_row_that_says_why():
    torch.manual_seed(0)
    table = evaluate(FlattenNet().eval(), [
        {"image": torch.rand(3, 6, 6), "label": 1, "boxes": torch.tensor([[0., 0., 3., 3.]])}],
        methods=("cam", "gradcam"), metrics=("pointing",), resamples=0)
    assert table["cam"].error is not None and "refused: " in table.to_markdown()
    assert table["gradcam"].error is None and not math.isnan(table.value("gradcam", "energy"))


def test_bad_settings_name_the_value_and_what_is_accepted(model):
    with pytest.raises(ValueError, match="unknown metric 'speed'; the metrics are localization"):
        EvaluationSpec(("gradcam",), metrics=("speed",))
    with pytest.raises(TypeError, match="evaluate reads dict items with 'image' and 'boxes'"):
        evaluate(model, [torch.rand(3, 8, 8)])
    with pytest.raises(ValueError, match="unknown format 'xlsx'; use md, csv or json"):
        evaluate(model, _items(2), metrics=("pointing",), resamples=0).render("xlsx")


def test_markdown_csv_and_json_hold_the_same_values(model):
    table = evaluate(model, _items(), methods=("gradcam", "layercam"), layer="features",
                     metrics=("localization", "maxboxacc"), resamples=50)
    markdown = table.to_markdown()
    assert markdown.count("\n| gradcam |") == 1 and "MaxBoxAcc % (IoU 0.5)" in markdown
    data = json.loads(table.to_json())
    assert [row["method"] for row in data["rows"]] == ["gradcam", "layercam"]
    value = data["rows"][1]["values"]["maxboxacc"]["value"]
    assert value == pytest.approx(table.value("layercam", "maxboxacc"), abs=1e-6)
    lines = table.to_csv().splitlines()
    assert lines[0].startswith("method,images,error,loc@0.20,loc@0.20_low")
    assert len(lines) == 3


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = torch.arange(20, dtype=torch.float64)
    first = statistic_interval(values, lambda v: v.mean(dim=-1), resamples=300, seed=1)
    assert first == statistic_interval(values, lambda v: v.mean(dim=-1), resamples=300, seed=1)
    assert first[0] < 9.5 < first[1]
    assert all(math.isnan(v) for v in statistic_interval(values[:1], lambda v: v.mean(dim=-1)))


def test_maxboxacc_boxes_equal_the_box_protocol_at_every_threshold():
    generator = torch.Generator().manual_seed(0)
    maps = torch.nn.functional.interpolate(torch.rand(4, 1, 6, 6, generator=generator),
                                           size=(24, 24), mode="bilinear")[:, 0]
    maps[0] = 0
    maps[1] = (torch.rand(24, 24, generator=generator) > 0.7).float()  # ties between components
    thresholds = BOX_ACCURACY_THRESHOLDS[::7]
    fast = _threshold_boxes(maps, thresholds)
    slow = torch.stack([largest_component_boxes(maps, t) for t in thresholds], dim=1)
    assert torch.equal(fast, slow)
