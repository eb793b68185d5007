"""The pointing game (Zhang et al.) and the energy-based pointing game (Score-CAM)."""

from __future__ import annotations

import pytest
import torch

from camlens.metrics import energy_pointing_game, pointing_accuracy, pointing_game


def peaked(height: int, width: int, y: int, x: int) -> torch.Tensor:
    heat = torch.rand(height, width, generator=torch.Generator().manual_seed(y * width + x)) * 0.5
    heat[y, x] = 1.0
    return heat


def one_pixel(height: int, width: int, y: int, x: int) -> torch.Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y, x] = True
    return mask


def test_the_maximum_inside_the_region_is_a_hit_even_without_tolerance():
    heat = peaked(10, 10, 2, 7)
    assert pointing_game(heat, one_pixel(10, 10, 2, 7), tolerance=0).item()
    assert not pointing_game(heat, one_pixel(10, 10, 2, 8), tolerance=0).item()


@pytest.mark.parametrize(
    ("tolerance", "hit"), [(0, False), (4, False), (5, False), (5.01, True), (15, True)]
)
def test_tolerance_is_a_euclidean_distance(tolerance, hit):
    heat = peaked(12, 12, 2, 2)
    region = one_pixel(12, 12, 5, 6)  # 3 down and 4 right: distance 5
    assert pointing_game(heat, region, tolerance=tolerance).item() is hit


def test_boxes_work_like_their_masks():
    heat = peaked(10, 10, 2, 7)
    box = torch.tensor([6, 5, 8, 7])  # columns 6-7, rows 5-6: the nearest pixel is 3 rows down
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[5:7, 6:8] = True
    for tolerance, hit in ((3, False), (3.5, True)):
        assert pointing_game(heat, box, tolerance=tolerance).item() is hit
        assert pointing_game(heat, mask, tolerance=tolerance).item() is hit


def test_a_batch_of_maps_and_regions():
    maps = torch.stack([peaked(8, 8, 0, 0), peaked(8, 8, 7, 7), peaked(8, 8, 4, 4)])
    boxes = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [3, 3, 5, 5]])
    assert pointing_game(maps, boxes, tolerance=1).tolist() == [True, False, True]
    assert pointing_game(maps.reshape(3, 1, 8, 8), boxes.reshape(3, 1, 4), 1).shape == (3, 1)


def test_a_flat_map_points_at_its_first_pixel():
    flat = torch.ones(6, 6)
    assert pointing_game(flat, one_pixel(6, 6, 0, 0), tolerance=0).item()
    assert not pointing_game(flat, one_pixel(6, 6, 5, 5), tolerance=1).item()


def test_an_empty_region_is_a_miss():
    assert not pointing_game(peaked(6, 6, 3, 3), torch.zeros(6, 6, dtype=torch.bool)).item()


def test_regions_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        pointing_game(torch.rand(2, 6, 6), torch.zeros(2, 5, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="boxes"):
        pointing_game(torch.rand(2, 6, 6), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(torch.rand(6, 6), torch.zeros(4), tolerance=-1)


def test_pointing_accuracy_averages_over_classes():
    hits = torch.tensor([True, True, False, True])
    assert pointing_accuracy(hits) == pytest.approx(0.75)
    # class 0: 2 of 3, class 4: 1 of 1 -> (2/3 + 1) / 2
    assert pointing_accuracy(hits, torch.tensor([0, 0, 0, 4])) == pytest.approx(5 / 6)


# --- energy-based pointing game -----------------------------------------------------------------


def test_a_uniform_map_scores_the_box_area_over_the_image_area():
    maps = torch.full((2, 8, 10), 0.3)
    boxes = torch.tensor([[1, 2, 4, 6], [0, 0, 10, 8]])
    energy = energy_pointing_game(maps, boxes)
    torch.testing.assert_close(energy, torch.tensor([12 / 80, 1.0]))


def test_energy_is_the_share_of_mass_inside():
    heat = torch.zeros(4, 4)
    heat[0, 0] = 3.0  # inside the box
    heat[3, 3] = 1.0  # outside
    box = torch.tensor([0, 0, 2, 2])
    assert energy_pointing_game(heat, box).item() == pytest.approx(0.75)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[3, 3] = True
    assert energy_pointing_game(heat, mask).item() == pytest.approx(0.25)


def test_an_all_zero_map_has_no_energy_anywhere():
    assert energy_pointing_game(torch.zeros(5, 5), torch.tensor([0, 0, 5, 5])).item() == 0.0


def test_negative_maps_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        energy_pointing_game(-torch.ones(3, 3), torch.tensor([0, 0, 1, 1]))
