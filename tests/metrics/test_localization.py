"""Boxes from maps (largest 8-connected component), IoU, hits and the baselines."""

from __future__ import annotations

import pytest
import torch

from camlens.metrics import (
    box_iou,
    box_masks,
    center_box,
    connected_components,
    full_image_box,
    largest_component_boxes,
    localization_error,
    localization_hits,
)

ndimage = pytest.importorskip("scipy.ndimage")

EIGHT_CONNECTED = [[1, 1, 1], [1, 1, 1], [1, 1, 1]]


# --- largest_component_boxes --------------------------------------------------------------------


def test_two_blobs_give_the_box_of_the_larger_one():
    heat = torch.zeros(5, 5)
    heat[0, 0] = 1.0  # the peak, but a component of one pixel
    heat[3:5, 2:5] = 0.9  # six pixels: rows 3-4, columns 2-4
    box = largest_component_boxes(heat)
    assert box.tolist() == [2.0, 3.0, 5.0, 5.0]


def test_diagonal_neighbours_are_connected():
    heat = torch.zeros(6, 6)
    for i in range(3):
        heat[i, i] = 1.0  # three pixels touching at corners only
    heat[5, 4:6] = 1.0  # two pixels side by side
    # 8-connectivity: the diagonal is one component of 3 > 2; 4-connectivity would pick the pair
    assert largest_component_boxes(heat).tolist() == [0.0, 0.0, 3.0, 3.0]


def test_threshold_is_a_fraction_of_the_maximum():
    heat = torch.zeros(4, 9)
    heat[1:3, 0:2] = 1.0  # 4 pixels
    heat[1:3, 3:6] = 0.5  # 6 pixels
    heat[1:3, 2] = 0.1  # a weak bridge between them
    heat[1:3, 6:9] = 0.3  # 6 pixels right of the second blob, touching it
    # at 20%: the bridge is out, the right blob is 0.5 + 0.3 pixels = 12
    assert largest_component_boxes(heat, threshold=0.2).tolist() == [3.0, 1.0, 9.0, 3.0]
    # at 40%: only the 0.5 blob (6) and the peak blob (4) are left
    assert largest_component_boxes(heat, threshold=0.4).tolist() == [3.0, 1.0, 6.0, 3.0]
    # at 5%: the bridge joins everything
    assert largest_component_boxes(heat, threshold=0.05).tolist() == [0.0, 1.0, 9.0, 3.0]


def test_a_map_without_positive_evidence_gives_the_full_image_box():
    maps = torch.stack([torch.zeros(4, 6), -torch.ones(4, 6), torch.eye(4, 6)])
    boxes = largest_component_boxes(maps)
    assert boxes[0].tolist() == [0.0, 0.0, 6.0, 4.0]
    assert boxes[1].tolist() == [0.0, 0.0, 6.0, 4.0]
    assert boxes[2].tolist() == [0.0, 0.0, 4.0, 4.0]  # the diagonal of ones


def test_leading_axes_are_kept():
    maps = torch.zeros(2, 3, 5, 5)
    maps[1, 2, 1:3, 2:4] = 1.0
    boxes = largest_component_boxes(maps)
    assert boxes.shape == (2, 3, 4)
    assert boxes.dtype == torch.float32
    assert boxes[1, 2].tolist() == [2.0, 1.0, 4.0, 3.0]
    assert boxes[0, 0].tolist() == [0.0, 0.0, 5.0, 5.0]


def test_bad_threshold_and_nan_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        largest_component_boxes(torch.rand(3, 3), threshold=20)
    with pytest.raises(ValueError, match="NaN"):
        largest_component_boxes(torch.full((3, 3), float("nan")))


def same_partition(labels: torch.Tensor, reference) -> bool:
    """The two labelings split the pixels the same way (a bijection between their labels)."""
    pairs = set(zip(labels.flatten().tolist(), reference.flatten().tolist(), strict=True))
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_components_match_scipy_on_random_masks():
    generator = torch.Generator().manual_seed(0)
    for density in (0.3, 0.5, 0.6):
        masks = torch.rand(12, 11, 13, generator=generator) < density
        labels = connected_components(masks)
        for mask, label in zip(masks, labels, strict=True):
            reference, count = ndimage.label(mask.numpy(), structure=EIGHT_CONNECTED)
            assert same_partition(label, reference)
            assert label.unique().numel() == count + (1 if (~mask).any() else 0)
            assert (label[~mask] == 0).all() and (label[mask] > 0).all()


def reference_box(heat: torch.Tensor, threshold: float) -> list[float]:
    """scipy's components; the largest, ties to the one whose last raster pixel comes first."""
    mask = (heat >= threshold * heat.max()).numpy()
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    best = None
    for label in range(1, count + 1):
        ys, xs = (labels == label).nonzero()
        key = (-len(ys), (ys * heat.shape[1] + xs).max())
        if best is None or key < best[0]:
            best = (key, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return [float(value) for value in best[1]]


def test_boxes_match_a_scipy_reference_on_random_maps():
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(40, 9, 10, generator=generator) ** 3  # sparse above the 20% line
    boxes = largest_component_boxes(maps, threshold=0.2)
    for heat, box in zip(maps, boxes, strict=True):
        assert box.tolist() == reference_box(heat, 0.2)


def test_a_long_snake_is_one_component():
    mask = torch.zeros(15, 15, dtype=torch.bool)
    for row in range(0, 15, 2):
        mask[row] = True
        if row + 1 < 15:
            mask[row + 1, 14 if (row // 2) % 2 == 0 else 0] = True
    labels = connected_components(mask[None])
    assert labels[0][mask].unique().numel() == 1
    assert largest_component_boxes(mask[None].float()).tolist() == [[0.0, 0.0, 15.0, 15.0]]


# --- IoU, masks, hits ---------------------------------------------------------------------------


def test_box_iou_of_known_boxes():
    a = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 2, 1], [1, 1, 1, 1]])
    b = torch.tensor([[2, 2, 6, 6], [0, 0, 4, 4], [2, 0, 4, 2], [0, 0, 4, 1], [1, 1, 1, 1]])
    iou = box_iou(a, b)
    expected = torch.tensor([4 / 28, 1.0, 0.0, 0.5, 0.0])  # edge-touching boxes do not overlap
    torch.testing.assert_close(iou, expected)


def test_box_iou_broadcasts():
    predictions = torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 4]])
    truths = torch.tensor([[0.0, 0, 4, 4], [0, 0, 2, 2], [10, 10, 12, 12]])
    iou = box_iou(predictions[:, None], truths[None])
    assert iou.shape == (2, 3)
    torch.testing.assert_close(iou, torch.tensor([[0.25, 1.0, 0.0], [1.0, 0.25, 0.0]]))


def test_box_masks_cover_the_box_pixels():
    masks = box_masks(torch.tensor([[1, 2, 4, 3], [0, 0, 5, 4]]), (4, 5))
    assert masks.shape == (2, 4, 5)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[2, 1:4] = True
    assert torch.equal(masks[0], expected)
    assert masks[1].all()


def test_hit_needs_the_right_class_and_half_overlap():
    truth = torch.tensor([[0.0, 0, 4, 1]] * 4)
    predicted = torch.tensor([
        [0.0, 0, 2, 1],  # IoU 0.5 exactly: a hit
        [0.0, 0, 1.9, 1],  # IoU 0.475: a miss
        [0.0, 0, 4, 1],  # IoU 1 but the wrong class
        [0.0, 0, 4, 1],  # IoU 1, right class
    ])
    hits = localization_hits(predicted, truth, torch.tensor([3, 3, 7, 3]), torch.tensor(3))
    assert hits.tolist() == [True, False, False, True]
    error = localization_error(predicted, truth, torch.tensor([3, 3, 7, 3]), torch.tensor(3))
    assert error == pytest.approx(0.5)


def test_top_k_predictions_and_several_objects():
    truth = torch.tensor([
        [[0.0, 0, 4, 4], [0, 0, 0, 0]],  # one object and a padding box
        [[0.0, 0, 4, 4], [6, 6, 8, 8]],  # two objects
    ])
    predicted = torch.tensor([
        [[0.0, 0, 4, 4], [0, 0, 1, 1]],
        [[6.0, 6, 8, 8], [0, 0, 1, 1]],
    ])
    # image 0: the right box comes with the wrong class (2), the right class with a wrong box
    # image 1: the second object is found by the first prediction with the right class
    hits = localization_hits(predicted, truth, torch.tensor([[2, 1], [5, 5]]), torch.tensor([1, 5]))
    assert hits.tolist() == [False, True]
    hits = localization_hits(predicted, truth, torch.tensor([[1, 2], [5, 5]]), torch.tensor([1, 5]))
    assert hits.tolist() == [True, True]
    # per-box classes: the second object of image 1 is class 9, not 5
    per_box = torch.tensor([[1, 1], [5, 9]])
    hits = localization_hits(predicted, truth, torch.tensor([[1, 2], [5, 5]]), per_box)
    assert hits.tolist() == [True, False]


def test_mismatched_classes_are_refused():
    with pytest.raises(ValueError, match="pred_classes"):
        localization_hits(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3), torch.zeros(2))


# --- baselines ----------------------------------------------------------------------------------


def test_full_image_box():
    assert full_image_box((10, 20)).tolist() == [0.0, 0.0, 20.0, 10.0]


def test_center_box_is_centred_and_clipped():
    assert center_box((10, 20), (4, 6)).tolist() == [7.0, 3.0, 13.0, 7.0]
    assert center_box((10, 20), (30, 30)).tolist() == [0.0, 0.0, 20.0, 10.0]
    # a centred object is found by the baseline, an off-centre one is not
    truth = torch.tensor([[7.0, 3, 13, 7], [0, 0, 6, 4]])
    baseline = center_box((10, 20), (4, 6)).expand(2, 4)
    assert localization_hits(baseline, truth, torch.zeros(2), torch.zeros(2)).tolist() == [
        True,
        False,
    ]
