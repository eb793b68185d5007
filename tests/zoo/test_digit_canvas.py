"""digit_canvas computes its formula exactly: the reference below is the same steps in torch
(the implementation before it moved to numpy for speed), compared bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from camlens.zoo import digit_canvas


def reference(image, size=(64, 64)) -> torch.Tensor:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("F"))
    tensor = (image.detach().float() if isinstance(image, torch.Tensor)
              else torch.as_tensor(np.array(image, dtype=np.float32)))
    if tensor.ndim == 3:
        tensor = tensor.mean(dim=0 if tensor.shape[0] in (1, 3, 4) else -1)
    if tensor.max() > 1.0:
        tensor = tensor / (65535.0 if tensor.max() > 255.0 else 255.0)
    border = torch.cat([tensor[0], tensor[-1], tensor[:, 0], tensor[:, -1]])
    if border.median() > 0.5:  # the lower middle value for an even count
        tensor = 1.0 - tensor
    resized = F.interpolate(tensor[None, None], size=size, mode="bilinear", align_corners=False)
    return resized.clamp(0, 1)


def pictures():
    rng = np.random.default_rng(0)
    for shape in [(64, 64), (8, 8), (100, 37), (64, 64, 3), (3, 20, 30), (30, 20, 4)]:
        for scale in (1.0, 255.0, 65535.0):
            values = (rng.random(shape) * scale).astype(np.float32)
            yield values
            yield scale - values  # dark ink on a light background
    yield Image.fromarray((rng.random((50, 60)) * 255).astype(np.uint8))
    yield torch.rand(64, 64, generator=torch.Generator().manual_seed(1)) * 255


@pytest.mark.parametrize("size", [(64, 64), (64, 128)])
def test_digit_canvas_is_its_formula_bit_for_bit(size):
    for picture in pictures():
        assert torch.equal(digit_canvas(picture, size), reference(picture, size))


def test_a_border_with_two_middle_values_takes_the_lower_as_torch_median_does():
    picture = np.zeros((4, 4), np.float32)  # 16 border cells: 8 at 0.4, 8 at 0.9
    picture[0], picture[-1] = 0.9, 0.4
    picture[1:3, 0], picture[1:3, -1] = 0.9, 0.4
    # torch.median gives 0.4 (no inversion); an average of the middle two (0.65) would invert
    assert torch.equal(digit_canvas(picture, (4, 4)), reference(picture, (4, 4)))
    assert digit_canvas(picture, (4, 4))[0, 0, 0, 0] == pytest.approx(0.9)
