"""The offline digit data sets: deterministic, disjoint splits, honest boxes, controlled bias."""

from __future__ import annotations

import pytest
import torch

from camlens.data import BiasedDigits, ClutteredDigits, DigitScenes, materialize, source_digits
from camlens.data.digits import MARK_SPOTS


def inside(box: torch.Tensor, size: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = box.tolist()
    return 0 <= x0 < x1 <= size[1] and 0 <= y0 < y1 <= size[0]


def test_source_split_is_disjoint_and_complete():
    train_images, train_labels = source_digits("train")
    test_images, test_labels = source_digits("test")
    assert len(train_labels) + len(test_labels) == 1797
    assert abs(len(test_labels) / 1797 - 0.3) < 0.01
    train_rows = {tuple(image.flatten().tolist()) for image in train_images}
    shared = sum(tuple(image.flatten().tolist()) in train_rows for image in test_images)
    assert shared <= 5  # scikit-learn's digits hold a few exact duplicates, no more
    assert set(test_labels.tolist()) == set(range(10))


def test_bad_split_is_refused():
    with pytest.raises(ValueError, match="'validation'"):
        ClutteredDigits(10, "validation")


@pytest.mark.parametrize("size", [0, -1, 2.5])
def test_bad_size_is_refused(size):
    with pytest.raises(ValueError, match="size"):
        ClutteredDigits(size)


def test_items_are_deterministic_and_seeds_differ():
    first, again = ClutteredDigits(5, seed=3), ClutteredDigits(5, seed=3)
    other = ClutteredDigits(5, seed=4)
    assert torch.equal(first[2]["image"], again[2]["image"])
    assert not torch.equal(first[2]["image"], other[2]["image"])
    assert not torch.equal(first[1]["image"], first[2]["image"])
    with pytest.raises(IndexError):
        first[5]


def test_cluttered_digit_box_holds_the_digit_and_clutter_stays_outside():
    data = materialize(ClutteredDigits(40, "test"))
    assert data["image"].shape == (40, 1, 64, 64)
    assert data["image"].min() >= 0 and data["image"].max() <= 1
    assert set(data["label"].tolist()) <= set(range(10))
    for image, box in zip(data["image"][:, 0], data["box"], strict=True):
        assert inside(box, (64, 64))
        x0, y0, x1, y1 = box.int().tolist()
        inside_ink = image[y0:y1, x0:x1]
        assert inside_ink.amax() > 0.5  # the digit is there
        width, height = x1 - x0, y1 - y0
        assert 8 <= width <= 30 and 14 <= height <= 30
        outside = image.clone()
        outside[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = 0
        assert outside.amax() > 0.3  # clutter is present ...
    assert (data["image"] > 0.3).float().mean() < 0.35  # ... but the canvas is mostly dark


def test_scenes_read_left_to_right_without_overlap():
    scenes = DigitScenes(30, "test")
    for index in range(len(scenes)):
        item = scenes[index]
        count = int(item["count"])
        assert 2 <= count <= 4
        assert item["image"].shape == (1, 64, 128)
        boxes = item["boxes"][:count]
        centres = (boxes[:, 0] + boxes[:, 2]) / 2
        assert torch.all(centres[1:] >= centres[:-1])
        assert torch.equal(item["caption"], item["labels"])
        assert (item["labels"][count:] == -1).all()
        for i in range(count):
            assert inside(boxes[i], (64, 128))
            for j in range(i + 1, count):
                a, b = boxes[i].tolist(), boxes[j].tolist()
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def mark_share(dataset) -> float:
    data = materialize(dataset, keys=("label", "mark_class"))
    return (data["label"] == data["mark_class"]).float().mean().item()


def test_biased_training_marks_follow_the_label():
    assert mark_share(BiasedDigits(300, "train", bias=0.95)) > 0.9
    assert mark_share(BiasedDigits(300, "train", bias=0.0)) < 0.2


def test_biased_test_marks_are_independent_flipped_or_absent():
    assert mark_share(BiasedDigits(300, "test")) < 0.2
    assert mark_share(BiasedDigits(100, "test", mark="aligned")) == 1.0
    assert mark_share(BiasedDigits(100, "test", mark="flipped")) == 0.0
    item = BiasedDigits(3, "test", mark="none")[0]
    assert int(item["mark_class"]) == -1


def test_mark_is_drawn_in_its_box_and_the_digit_avoids_it():
    dataset = BiasedDigits(30, "test", mark="random")
    for index in range(len(dataset)):
        item = dataset[index]
        x0, y0, x1, y1 = item["mark_box"].int().tolist()
        assert (x0, y0) == MARK_SPOTS[int(item["mark_class"])][::-1]
        assert (item["image"][0, y0:y1, x0:x1] == 1.0).all()
        dx0, dy0, dx1, dy1 = item["box"].tolist()
        assert dx1 <= x0 or x1 <= dx0 or dy1 <= y0 or y1 <= dy0


def test_bad_bias_arguments():
    with pytest.raises(ValueError, match="mark"):
        BiasedDigits(5, "test", mark="sideways")
    with pytest.raises(ValueError, match="bias"):
        BiasedDigits(5, "train", bias=1.5)
