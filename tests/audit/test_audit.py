"""camlens.audit on hand-built cases whose maps, shares and predictions are known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from toy_models import GapNet

import camlens
from camlens.audit import audit, counterfactual, region_shares


class InputMap(nn.Module):
    """The input itself is the explained layer (``features``), then global average pooling and
    a linear layer with weights +1 (class 0) and -1 (class 1). Grad-CAM of class 0 is then
    ``ReLU(x / Z)``: the map is proportional to the input; class 1's map is all zero."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.classifier = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def picture(bright: float = 3.0, dim: float = 1.0, rest: float = 0.5) -> torch.Tensor:
    """An 8x8 input: ``bright`` in the 2x2 box A (0, 0, 2, 2), ``dim`` in the 2x2 box B
    (4, 4, 6, 6), ``rest`` elsewhere."""
    image = torch.full((1, 8, 8), rest)
    image[:, 0:2, 0:2] = bright
    image[:, 4:6, 4:6] = dim
    return image


BOX_A = torch.tensor([0.0, 0.0, 2.0, 2.0])
BOX_B = torch.tensor([4.0, 4.0, 6.0, 6.0])


def items(count: int = 5) -> list[dict]:
    return [{"image": picture(bright=1.0 + k), "label": 0, "a": BOX_A, "b": BOX_B}
            for k in range(count)]


def test_shares_are_the_input_mass_in_each_box():
    data = [{"image": picture(), "label": 0, "a": BOX_A, "b": BOX_B}]
    result = audit(InputMap(), data, {"a": "a", "b": "b"}, layer="features")
    total = 3.0 * 4 + 1.0 * 4 + 0.5 * 56
    assert result.shares[0].tolist() == pytest.approx([12.0 / total, 4.0 / total], rel=1e-5)
    assert result.areas[0].tolist() == pytest.approx([4 / 64, 4 / 64])
    assert result.predictions.tolist() == [0] and result.labels.tolist() == [0]
    summary = result.summary()
    assert summary["accuracy"] == 1.0
    assert summary["regions"]["a"]["lift"] == pytest.approx((12.0 / total) / (4 / 64), rel=1e-4)


def test_disjoint_regions_covering_the_input_sum_to_one():
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[0:2, 0:2] = outside[4:6, 4:6] = False
    regions = {"a": "a", "b": "b", "rest": lambda item: outside}
    result = audit(InputMap(), items(4), regions, layer="features")
    assert result.shares.sum(dim=1).tolist() == pytest.approx([1.0] * 4, abs=1e-5)
    assert result.areas.sum(dim=1).tolist() == pytest.approx([1.0] * 4)


def test_a_uniform_map_scores_the_area_share():
    data = [{"image": torch.ones(1, 8, 8), "box": torch.tensor([1.0, 2.0, 4.0, 7.0])}]
    result = audit(InputMap(), data, {"box": "box"}, layer="features")
    assert float(result.shares[0, 0]) == pytest.approx(15 / 64, rel=1e-5)
    assert float(result.areas[0, 0]) == pytest.approx(15 / 64)
    assert result.lift("box") == pytest.approx(1.0, rel=1e-4)


def test_region_shares_of_known_maps_boxes_and_masks():
    mass = torch.zeros(2, 4, 4)
    mass[0, 0, 0] = 3.0
    mass[0, 3, 3] = 1.0
    masks = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    masks[:, 0, 0, 0] = True  # the top-left pixel
    masks[:, 1, 2:, 2:] = True  # the bottom-right quarter
    present = torch.tensor([[True, True], [True, False]])
    shares, areas, empty = region_shares(mass, masks, present)
    assert shares[0].tolist() == [0.75, 0.25]
    assert areas[0].tolist() == [1 / 16, 4 / 16]
    assert empty.tolist() == [False, True]
    assert torch.isnan(shares[1]).all()  # an all-zero map has no mass to place
    assert math.isnan(float(areas[1, 1]))  # an absent region has no area


def test_label_target_explains_the_true_class_and_empty_maps_are_left_out():
    data = [{"image": picture(), "label": 1, "a": BOX_A, "b": BOX_B},
            {"image": picture(), "label": 0, "a": BOX_A, "b": BOX_B}]
    result = audit(InputMap(), data, {"a": "a"}, layer="features", target="label")
    assert result.predictions.tolist() == [0, 0]
    assert result.empty.tolist() == [True, False]  # class 1's map is ReLU(-x / Z) = 0
    assert math.isnan(float(result.shares[0, 0]))
    assert result.summary()["regions"]["a"]["count"] == 1
    assert result.summary()["accuracy"] == 0.5
    assert any("all-zero" in note for note in result.notes)
    with pytest.raises(ValueError, match="target"):
        audit(InputMap(), data, {"a": "a"}, target="truth")


def test_absent_regions_are_skipped_not_counted_as_zero():
    data = items(3)
    data[1]["b"] = None
    data[2]["b"] = torch.zeros(0, 4)  # no box at all
    result = audit(InputMap(), data, {"b": "b"}, layer="features")
    assert torch.isnan(result.shares[1:, 0]).all()
    assert result.summary()["regions"]["b"]["count"] == 1
    assert result.summary()["regions"]["b"]["mean_share"] == pytest.approx(
        float(result.shares[0, 0]), abs=1e-6)


def random_items(count: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    data = []
    for index in range(count):
        x0, y0 = (int(v) for v in torch.randint(0, 8, (2,), generator=generator))
        data.append({"image": torch.rand(3, 12, 12, generator=generator),
                     "label": index % 5,
                     "box": torch.tensor([x0, y0, x0 + 4, y0 + 3], dtype=torch.float32)})
    return data


def test_small_batches_give_the_same_result_as_one_batch():
    torch.manual_seed(0)
    model = GapNet().eval()
    data = random_items(11)
    whole = audit(model, data, {"box": "box"}, batch_size=11)
    streamed = audit(model, data, {"box": "box"}, batch_size=3)
    assert streamed.indices.tolist() == list(range(11))
    assert torch.equal(streamed.predictions, whole.predictions)
    assert torch.allclose(streamed.shares, whole.shares, atol=1e-5)
    assert torch.allclose(streamed.scores, whole.scores, atol=1e-5)
    assert [e.index for e in streamed.examples["box"]] == [e.index for e in whole.examples["box"]]


def test_iterables_tuples_and_callable_regions_give_the_same_result():
    torch.manual_seed(0)
    model = GapNet().eval()
    data = random_items(7)
    reference = audit(model, data, {"box": "box"}, batch_size=4)
    pairs = [(item["image"], item["label"], item["box"]) for item in data]
    from_tuples = audit(model, (pair for pair in pairs), {"box": 2}, batch_size=4)
    from_callable = audit(model, pairs, {"box": lambda item: item[2]}, batch_size=2)
    for other in (from_tuples, from_callable):
        assert torch.equal(other.labels, reference.labels)
        assert torch.allclose(other.shares, reference.shares, atol=1e-5)


def test_the_model_is_left_exactly_as_found():
    torch.manual_seed(0)
    model = GapNet().train()
    model.features[0].weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    flags = {name: module.training for name, module in model.named_modules()}
    audit(model, random_items(6), {"box": "box"}, batch_size=4, target="label",
          counterfactuals={"same": random_items(6)})
    assert {name: module.training for name, module in model.named_modules()} == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # BatchNorm statistics included
    assert model.features[0].weight.requires_grad is False
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
    assert model.features[0].weight.grad is None
    assert all(not module._forward_hooks for module in model.modules())


def test_top_orders_by_share_and_filters_by_correctness():
    data = items(5)
    data[3]["label"] = 1  # a wrong prediction: the model says 0 for every positive input
    result = audit(InputMap(), data, {"a": "a", "b": "b"}, layer="features", keep=3)
    # brighter box A -> more mass on A: input 4 leans most on A, input 0 least
    assert [r["index"] for r in result.top("a", 5)] == [4, 3, 2, 1, 0]
    shares = [r["share"]["a"] for r in result.top("a", 5)]
    assert shares == sorted(shares, reverse=True)
    assert [r["index"] for r in result.top("b", 2)] == [0, 1]  # B keeps less when A is brighter
    assert [r["index"] for r in result.top("a", 5, correct=False)] == [3]
    assert [e.index for e in result.examples["a"]] == [4, 3, 2]
    with pytest.raises(KeyError, match="unknown region"):
        result.top("c")


def test_per_class_summaries():
    data = items(4)
    data[2]["label"] = data[3]["label"] = 1
    result = audit(InputMap(), data, {"a": "a"}, layer="features")
    per_class = result.per_class()
    assert list(per_class) == ["0", "1"]
    assert per_class["0"]["accuracy"] == 1.0 and per_class["1"]["accuracy"] == 0.0
    assert per_class["1"]["regions"]["a"]["mean_share"] == pytest.approx(
        float(result.shares[2:, 0].mean()), abs=1e-6)
    assert result.per_class(by="prediction")["0"]["count"] == 4


def test_bad_regions_name_what_is_accepted():
    with pytest.raises(KeyError, match="no 'box'.*'image'"):
        audit(InputMap(), items(1), {"object": "box"})
    bad_mask = [{"image": torch.ones(1, 8, 8), "mask": torch.ones(4, 4, dtype=torch.bool)}]
    with pytest.raises(ValueError, match="input's size"):
        audit(InputMap(), bad_mask, {"object": "mask"})
    with pytest.raises(TypeError, match="non-empty mapping"):
        audit(InputMap(), items(1), {})


def test_counterfactual_accuracy_and_cue_following():
    # InputMap predicts 0 for positive inputs and 1 for negative ones
    normal = [{"image": torch.ones(1, 4, 4), "label": 0, "cue": 0} for _ in range(4)]
    flipped = [{"image": -torch.ones(1, 4, 4), "label": 0, "cue": 1} for _ in range(3)]
    removed = [{"image": torch.ones(1, 4, 4), "label": 0, "cue": -1} for _ in range(2)]
    checks = counterfactual(InputMap(), {"normal": normal, "flipped": flipped,
                                         "removed": removed}, cue_key="cue", batch_size=2)
    assert [v.name for v in checks.variants] == ["normal", "flipped", "removed"]
    assert checks["normal"].accuracy == 1.0 and checks["flipped"].accuracy == 0.0
    assert checks.change("flipped") == -1.0
    assert checks["flipped"].cue_following == 1.0 and checks["flipped"].count == 3
    assert checks["removed"].cue_following is None and checks["removed"].cue_count == 0


def test_shares_by_whether_the_prediction_follows_the_cue():
    data = items(4)
    for item, cue in zip(data, [0, 1, 1, -1], strict=True):
        item["cue"] = cue
    result = audit(InputMap(), data, {"a": "a"}, layer="features", cue_key="cue")
    assert result.cues.tolist() == [0, 1, 1, -1]
    groups = result.by_cue()
    follows, other = groups["prediction = the cue's class"], groups["prediction = another class"]
    assert (follows["count"], other["count"]) == (1, 2)  # the input without a cue is in neither
    assert follows["regions"]["a"]["mean_share"] == pytest.approx(float(result.shares[0, 0]),
                                                                  abs=1e-6)
    assert audit(InputMap(), data, {"a": "a"}, layer="features").by_cue() is None


def test_camlens_audit_is_the_package_and_still_runs_the_function():
    import camlens.audit as package

    assert camlens.audit is package and package.audit is audit
    assert callable(camlens.audit)  # with a DeprecationWarning (tests/test_structure.py)
    assert "audit" not in camlens.__all__  # the root exports the engine only


def test_progress_bar_counts_the_items(capsys):
    audit(InputMap(), items(5), {"a": "a"}, layer="features", batch_size=2, progress=True)
    assert "auditing" in capsys.readouterr().err


def test_targets_read_like_everywhere_else(gap_net):
    """audit(target=...) takes the forms of camlens.targets that give one map per input."""
    torch.manual_seed(4)
    data = [{"image": torch.randn(3, 6, 6), "label": index % 5,
             "box": torch.tensor([0, 0, 3, 3])} for index in range(6)]
    regions = {"object": "box"}
    predicted = audit(gap_net, data, regions, layer="features")
    assert predicted.target == "predicted"
    same = audit(gap_net, data, regions, layer="features", target=camlens.TopK(1))
    torch.testing.assert_close(same.shares, predicted.shares)
    fixed = audit(gap_net, data, regions, layer="features", target=2)
    assert fixed.target == "class 2"
    by_hand = camlens.explain(gap_net, torch.stack([item["image"] for item in data]),
                              layer="features", target=2)
    torch.testing.assert_close(fixed.scores, by_hand.scores)
    torch.testing.assert_close(fixed.predictions, predicted.predictions)  # still the model's

    def margin(logits):
        return logits[:, 1] - logits[:, 0]

    custom = audit(gap_net, data, regions, layer="features", target=margin)
    assert custom.target == "margin"
    torch.testing.assert_close(custom.scores, margin(gap_net(by_hand_inputs(data))).detach())
    with pytest.raises(ValueError, match="one target per input"):
        audit(gap_net, data, regions, layer="features", target=camlens.TopK(2))
    with pytest.raises(ValueError, match="unknown target 'labels'"):
        audit(gap_net, data, regions, layer="features", target="labels")


def by_hand_inputs(data):
    return torch.stack([item["image"] for item in data])
