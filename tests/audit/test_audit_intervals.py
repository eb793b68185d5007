"""95% intervals of the audit's per-image figures: accuracy (Wilson), each region's mean share
and lift (seeded bootstrap over the inputs), the counterfactual variants' accuracy and
cue-following rate (Wilson); in the summary, the JSON, the HTML report and the printed lines."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from test_audit import BOX_A, InputMap, items, picture, random_items
from toy_models import GapNet

from camlens.audit import audit, counterfactual
from camlens.audit.core import assemble, audit_batch
from camlens.audit.items import ItemReader, stream
from camlens.audit.report import render_html
from camlens.audit.result import RESAMPLES, SEED
from camlens.cli.audit import _summary_lines
from camlens.methods import get_method
from camlens.metrics.intervals import bootstrap_interval, wilson_interval

OLD_SUMMARY_KEYS = {"count", "accuracy", "empty_maps", "regions"}
OLD_REGION_KEYS = {"count", "mean_share", "median_share", "mean_area", "lift"}
OLD_VARIANT_KEYS = {"name", "count", "accuracy", "cue_following", "cue_count", "change"}


def cued_items(count: int = 12, seed: int = 0) -> list[dict]:
    """Random 12x12 inputs with a box each, a label in 0..4 and a cue (-1: none)."""
    data = random_items(count, seed)
    for index, item in enumerate(data):
        item["cue"] = -1 if index % 4 == 3 else (index * 3) % 5
    return data


@pytest.fixture(scope="module")
def result():
    torch.manual_seed(0)
    model = GapNet().eval()
    data = cued_items(12)
    return audit(model, data, {"box": "box"}, batch_size=5, cue_key="cue",
                 counterfactuals={"normal": data, "again": cued_items(12, seed=1)})


def summaries(result) -> list[dict]:
    """The overall summary, each class's and each cue group's."""
    return [result.summary(), *result.per_class().values(), *result.by_cue().values()]


def inside(point: float, interval: list[float]) -> bool:
    low, high = interval
    return low <= point <= high


def ratio_of_means(resampled: torch.Tensor) -> torch.Tensor:
    return resampled[..., 0].mean(dim=1) / resampled[..., 1].mean(dim=1)


def test_every_summary_has_intervals_that_contain_the_point(result):
    for summary in summaries(result):
        assert inside(summary["accuracy"], summary["accuracy_interval"])
        stats = summary["regions"]["box"]
        if stats["count"]:
            assert inside(stats["mean_share"], stats["mean_share_interval"])
            assert inside(stats["lift"], stats["lift_interval"])
            assert stats["mean_share_interval"][0] < stats["mean_share_interval"][1] \
                or stats["count"] == 1
    for variant in result.counterfactual.variants:
        assert inside(variant.accuracy, variant.accuracy_interval)
        assert inside(variant.cue_following, variant.cue_following_interval)


def test_the_intervals_are_the_metrics_intervals_of_the_per_input_records(result):
    """Known answer: Wilson on the counted inputs, the bootstrap (RESAMPLES, SEED) on the valid
    shares and on the (share, area) pairs for the lift."""
    summary = result.summary()
    right, labelled = int(result.correct.sum()), int((result.labels >= 0).sum())
    assert summary["accuracy_interval"] == pytest.approx(
        list(wilson_interval(right, labelled)), abs=1e-6)
    shares, areas = result.shares[:, 0], result.areas[:, 0]
    valid = ~torch.isnan(shares)
    stats = summary["regions"]["box"]
    assert stats["mean_share_interval"] == pytest.approx(
        list(bootstrap_interval(shares[valid], RESAMPLES, SEED)), abs=1e-6)
    pairs = torch.stack([shares[valid], areas[valid]], dim=1)
    assert stats["lift_interval"] == pytest.approx(
        list(bootstrap_interval(pairs, RESAMPLES, SEED, statistic=ratio_of_means)), abs=1e-6)
    # from the JSON records (rounded to 6 digits) the same to within the rounding
    records = result.records
    shares_ = [r["share"]["box"] for r in records if r["share"]["box"] is not None]
    assert stats["mean_share_interval"] == pytest.approx(
        list(bootstrap_interval(shares_, RESAMPLES, SEED)), abs=1e-5)
    # a class's interval is over that class's inputs only
    first = result.labels == 0
    assert result.per_class()["0"]["accuracy_interval"] == pytest.approx(
        list(wilson_interval(int(result.correct[first].sum()), int(first.sum()))), abs=1e-6)
    assert result.per_class()["0"]["regions"]["box"]["mean_share_interval"] == pytest.approx(
        list(bootstrap_interval(shares[first & valid], RESAMPLES, SEED)), abs=1e-6)


def test_the_cue_groups_intervals_are_over_their_own_inputs(result):
    follows = (result.cues >= 0) & (result.predictions == result.cues)
    other = (result.cues >= 0) & ~follows
    groups = result.by_cue()
    for rows, name in ((follows, "prediction = the cue's class"),
                       (other, "prediction = another class")):
        stats = groups[name]
        if not rows.any():
            assert stats["accuracy_interval"] is None
            continue
        assert stats["accuracy_interval"] == pytest.approx(list(wilson_interval(
            int(result.correct[rows].sum()), int(rows.sum()))), abs=1e-6)
        assert stats["regions"]["box"]["mean_share_interval"] == pytest.approx(
            list(bootstrap_interval(result.shares[rows, 0], RESAMPLES, SEED)), abs=1e-6)


def test_with_one_area_share_the_lift_interval_is_the_share_interval_over_it():
    """Every box A covers 4/64 of the input: the lift's bootstrap is the share's times 16."""
    result = audit(InputMap(), items(6), {"a": "a"}, layer="features")
    stats = result.summary()["regions"]["a"]
    assert stats["lift_interval"] == pytest.approx(
        [16 * bound for bound in stats["mean_share_interval"]], rel=1e-5)


def test_the_existing_keys_and_values_are_unchanged(result):
    summary = result.summary()
    assert set(summary) >= OLD_SUMMARY_KEYS
    assert set(summary) - OLD_SUMMARY_KEYS == {"accuracy_interval"}
    stats = summary["regions"]["box"]
    assert set(stats) - OLD_REGION_KEYS == {"mean_share_interval", "lift_interval"}
    shares, areas = result.shares[:, 0], result.areas[:, 0]
    valid = ~torch.isnan(shares)
    assert summary["accuracy"] == round(float(result.correct.float().mean()), 6)
    assert stats["mean_share"] == round(float(shares[valid].mean()), 6)
    assert stats["lift"] == round(float(shares[valid].mean()) / float(areas[valid].mean()), 6)
    for variant in result.counterfactual.to_dict()["variants"]:
        assert set(variant) - OLD_VARIANT_KEYS == {"accuracy_interval",
                                                   "cue_following_interval"}
    assert "Wilson" in result.to_dict()["intervals"]


def test_the_intervals_reproduce(result):
    assert json.dumps(result.to_dict(top=2)) == json.dumps(result.to_dict(top=2))


def test_counterfactual_intervals_are_wilson_over_the_counted_inputs():
    # InputMap predicts 0 for positive inputs and 1 for negative ones
    normal = [{"image": torch.ones(1, 4, 4), "label": 0, "cue": 0} for _ in range(4)]
    mixed = [{"image": sign * torch.ones(1, 4, 4), "label": 0, "cue": 1 if k < 2 else -1}
             for k, sign in enumerate([1, -1, -1, 1, 1])]
    removed = [{"image": torch.ones(1, 4, 4), "label": 0, "cue": -1} for _ in range(2)]
    checks = counterfactual(InputMap(), {"normal": normal, "mixed": mixed, "removed": removed},
                            cue_key="cue", batch_size=2)
    assert checks["normal"].accuracy_interval == pytest.approx(list(wilson_interval(4, 4)),
                                                               abs=1e-6)
    # mixed: predictions 0, 1, 1, 0, 0; right 3 of 5; cues on the first two, followed once
    assert checks["mixed"].accuracy == pytest.approx(0.6) and checks["mixed"].cue_following == 0.5
    assert checks["mixed"].accuracy_interval == pytest.approx(list(wilson_interval(3, 5)),
                                                              abs=1e-6)
    assert checks["mixed"].cue_following_interval == pytest.approx(
        list(wilson_interval(1, 2)), abs=1e-6)
    assert checks["removed"].cue_following_interval is None
    variants = checks.to_dict()["variants"]
    assert variants[1]["cue_following_interval"] == checks["mixed"].cue_following_interval
    unlabelled = counterfactual(InputMap(), {"x": [torch.ones(1, 4, 4)]}, label_key=None)
    assert unlabelled["x"].accuracy is None and unlabelled["x"].accuracy_interval is None


def test_an_empty_or_unlabelled_audit_has_no_intervals_and_strict_json():
    empty = audit(InputMap(), [], {"a": "a"}, layer="features").summary()
    assert empty["accuracy_interval"] is None
    assert empty["regions"]["a"]["mean_share_interval"] is None
    assert empty["regions"]["a"]["lift_interval"] is None
    unlabelled = audit(InputMap(), [{"image": picture(), "a": BOX_A}], {"a": "a"},
                       layer="features", label_key=None)
    summary = unlabelled.summary()
    assert summary["accuracy"] is None and summary["accuracy_interval"] is None
    share = summary["regions"]["a"]["mean_share"]
    assert summary["regions"]["a"]["mean_share_interval"] == pytest.approx([share, share])

    def refuse(constant):
        raise ValueError(constant)

    json.loads(unlabelled.to_json(), parse_constant=refuse)


def test_the_report_shows_each_figure_with_its_interval(result):
    page = render_html(result)
    summary = result.summary()
    low, high = summary["accuracy_interval"]
    assert f"accuracy {100 * summary['accuracy']:.1f}% [{100 * low:.1f}, {100 * high:.1f}]" \
        in page
    stats = summary["regions"]["box"]
    share_low, share_high = stats["mean_share_interval"]
    assert (f"{100 * stats['mean_share']:.1f}% [{100 * share_low:.1f}, "
            f"{100 * share_high:.1f}]") in page
    lift_low, lift_high = stats["lift_interval"]
    assert f"{stats['lift']:.2f} [{lift_low:.2f}, {lift_high:.2f}]" in page
    variant = result.counterfactual["again"]
    low, high = variant.cue_following_interval
    assert f"{100 * variant.cue_following:.1f}% [{100 * low:.1f}, {100 * high:.1f}]" in page
    assert "95% intervals" in page


def test_small_shares_keep_their_digits_in_the_interval():
    from camlens.audit.report import number_with_interval, share_with_interval

    assert share_with_interval(0.009, [0.00809, 0.00992]) == "0.900% [0.809, 0.992]"
    assert share_with_interval(0.567, [0.553, 0.581]) == "56.7% [55.3, 58.1]"
    assert share_with_interval(None, None) == "–"
    assert number_with_interval(2.3, [2.07, 2.54]) == "2.30 [2.07, 2.54]"
    assert number_with_interval(2.3, None) == "2.30"


def test_the_printed_lines_carry_the_intervals(result):
    lines = "\n".join(_summary_lines(result, "toy", SimpleNamespace(description="toy data")))
    summary = result.summary()
    low, high = summary["accuracy_interval"]
    assert f"accuracy {100 * summary['accuracy']:.1f}% [{100 * low:.1f}, {100 * high:.1f}]" \
        in lines
    lift_low, lift_high = summary["regions"]["box"]["lift_interval"]
    assert f"[{lift_low:.2f}, {lift_high:.2f}]" in lines
    for variant in result.counterfactual.variants:
        low, high = variant.accuracy_interval
        assert f"{100 * variant.accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}]" in lines
    for stats in result.by_cue().values():
        if stats["count"]:
            share_low, _ = stats["regions"]["box"]["mean_share_interval"]
            assert f"[{100 * share_low:.1f}, " in lines


def test_parts_assembled_in_any_order_give_the_same_summary():
    """The engines reduce per-batch parts with assemble (the Ray engine in the order the actors
    answer): the intervals depend on the records only, not on the order of the parts."""
    torch.manual_seed(0)
    model = GapNet().eval()
    data = cued_items(11)
    reference = audit(model, data, {"box": "box"}, batch_size=3, cue_key="cue", keep=2)
    explainer = get_method("gradcam")(model, None)
    reader = ItemReader("image", "label", {"box": "box"}, "cue", None)
    parts, offset = [], 0
    for batch in stream(data, reader, 3, 0, False, "auditing"):
        parts.append(audit_batch(explainer, batch, None, ("box",), 2, offset))
        offset += len(batch)
    shuffled = assemble(parts[::-1], ("box",), explainer.name, "predicted", 2, None,
                        with_cues=True, with_names=False)
    for key in ("overall", "per_class", "by_cue"):
        assert json.dumps(shuffled.to_dict()[key]) == json.dumps(reference.to_dict()[key]), key


def test_the_ray_engines_parts_round_trip_to_the_same_summary():
    """The Ray engine ships each part as safetensors bytes; the round trip keeps every figure
    and interval of the summary (the Ray run itself: tests/scale/test_ray_audit.py)."""
    pytest.importorskip("safetensors")
    from camlens.scale.audit_engine import _part_from_bytes, _part_to_bytes

    torch.manual_seed(0)
    model = GapNet().eval()
    data = cued_items(9)
    explainer = get_method("gradcam")(model, None)
    reader = ItemReader("image", "label", {"box": "box"}, "cue", None)
    parts, shipped, offset = [], [], 0
    for batch in stream(data, reader, 4, 0, False, "auditing"):
        part = audit_batch(explainer, batch, None, ("box",), 2, offset)
        parts.append(part)
        shipped.append(_part_from_bytes(offset, *_part_to_bytes(part)))
        offset += len(batch)
    local = assemble(parts, ("box",), explainer.name, "predicted", 2, None, with_cues=True,
                     with_names=False)
    remote = assemble(shipped, ("box",), explainer.name, "predicted", 2, None, with_cues=True,
                      with_names=False)
    for key in ("overall", "per_class", "by_cue"):
        assert json.dumps(remote.to_dict()[key]) == json.dumps(local.to_dict()[key]), key
