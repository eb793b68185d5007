"""The threshold conventions of the box protocols and the per-class mean of the pointing game."""

from __future__ import annotations

import pytest
import torch

from camlens.metrics import (
    MAP_CONVENTIONS,
    class_mean_accuracy,
    largest_component_boxes,
    localization_hits,
    pointing_accuracy,
    scale_maps,
)


def test_relu_max_and_min_max_on_a_hand_built_map():
    raw = torch.tensor([[-2.0, 0.0], [1.0, 2.0]])
    torch.testing.assert_close(scale_maps(raw, "relu-max"), torch.tensor([[0.0, 0.0], [0.5, 1.0]]))
    torch.testing.assert_close(scale_maps(raw, "min-max"), torch.tensor([[0.0, 0.5], [0.75, 1.0]]))


def test_the_conventions_agree_when_the_minimum_is_zero():
    raw = torch.rand(3, 5, 5)
    raw[:, 0, 0] = 0.0
    torch.testing.assert_close(scale_maps(raw, "relu-max"), scale_maps(raw, "min-max"))


def test_maps_without_positive_values_or_range_become_zeros():
    assert scale_maps(-torch.rand(4, 4) - 0.1, "relu-max").eq(0).all()
    assert scale_maps(torch.full((4, 4), 3.0), "min-max").eq(0).all()
    # an all-zero map gets the full-image box, as the protocol's rule gives
    box = largest_component_boxes(scale_maps(-torch.ones(1, 4, 4), "relu-max"), 0.2)
    assert box.tolist() == [[0.0, 0.0, 4.0, 4.0]]


def halo_map() -> torch.Tensor:
    """-1 background, a -0.5 halo over rows/columns 0-5, the object (value 1) at rows/columns
    2-3."""
    raw = torch.full((8, 8), -1.0)
    raw[0:6, 0:6] = -0.5
    raw[2:4, 2:4] = 1.0
    return raw


def test_min_max_lowers_the_threshold_below_zero_and_the_box_grows():
    raw = halo_map()[None]
    # relu-max at 20%: M >= 0.2 keeps the object; min-max: (M + 1) / 2 >= 0.2, M >= -0.6, the halo
    relu_box = largest_component_boxes(scale_maps(raw, "relu-max"), 0.2)
    minmax_box = largest_component_boxes(scale_maps(raw, "min-max"), 0.2)
    assert relu_box.tolist() == [[2.0, 2.0, 4.0, 4.0]]
    assert minmax_box.tolist() == [[0.0, 0.0, 6.0, 6.0]]
    truth = torch.tensor([[2.0, 2.0, 4.0, 4.0]])
    assert localization_hits(relu_box, truth, torch.tensor([3]), torch.tensor([3])).item()
    assert not localization_hits(minmax_box, truth, torch.tensor([3]), torch.tensor([3])).item()
    # at 80% min-max keeps M >= 0.6: the object again
    assert largest_component_boxes(scale_maps(raw, "min-max"), 0.8).tolist() == [
        [2.0, 2.0, 4.0, 4.0]]


def test_unknown_conventions_are_refused():
    assert MAP_CONVENTIONS == ("relu-max", "min-max")
    with pytest.raises(ValueError, match="convention"):
        scale_maps(torch.rand(4, 4), "relu")
    with pytest.raises(ValueError, match="H, W"):
        scale_maps(torch.rand(4), "min-max")


def test_class_mean_is_the_mean_of_per_class_hit_rates():
    hits = torch.tensor([True, True, False, True])
    classes = torch.tensor([0, 0, 0, 4])
    # class 0: 2 of 3, class 4: 1 of 1 -> (2/3 + 1) / 2, against 3/4 pooled
    assert float(class_mean_accuracy(hits, classes)) == pytest.approx(5 / 6)
    assert float(class_mean_accuracy(hits, classes)) == pytest.approx(
        pointing_accuracy(hits, classes))


def test_class_mean_is_batched_and_skips_absent_classes_per_row():
    hits = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 0]])
    classes = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    # row 0: (1/2 + 1) / 2; row 1: one class, 3 of 4
    torch.testing.assert_close(class_mean_accuracy(hits, classes, 10),
                               torch.tensor([0.75, 0.75], dtype=torch.float64))


def test_class_mean_refuses_bad_inputs():
    with pytest.raises(ValueError, match="share a shape"):
        class_mean_accuracy(torch.ones(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-negative"):
        class_mean_accuracy(torch.ones(2), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="num_classes"):
        class_mean_accuracy(torch.ones(2), torch.tensor([0, 5]), 3)
