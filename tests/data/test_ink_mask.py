"""The digit's ink in ClutteredDigits: the generator's record of the pasted digit."""

from __future__ import annotations

import torch

from camlens.data import ClutteredDigits
from camlens.data.digits import INK_LEVEL
from camlens.metrics import box_masks


def test_the_ink_is_what_the_box_is_drawn_around_and_is_bright_in_the_image():
    data = ClutteredDigits(20, "test", seed=3)
    for index in range(len(data)):
        item, ink = data[index], data.ink_mask(index)
        assert ink.shape == item["image"].shape[1:] and ink.dtype == torch.bool
        rows, columns = torch.nonzero(ink.any(dim=1)).flatten(), torch.nonzero(
            ink.any(dim=0)).flatten()
        extent = [columns[0] + 0, rows[0] + 0, columns[-1] + 1, rows[-1] + 1]
        assert [int(v) for v in extent] == item["box"].int().tolist()
        image = item["image"][0]
        assert (image[ink] > INK_LEVEL).all()
        # background noise stays below the level and clutter stays out of the box, so inside the
        # box the image's bright pixels are exactly the ink
        inside = box_masks(item["box"], image.shape)
        assert torch.equal((image > INK_LEVEL) & inside, ink)
        assert ink.sum() < inside.sum()


def test_asking_for_the_ink_leaves_the_items_as_they_were():
    data = ClutteredDigits(3, "train", seed=0)
    before = data[2]["image"].clone()
    data.ink_mask(2)
    assert torch.equal(data[2]["image"], before)
