"""to_pil and denormalize: every accepted input becomes RGB of the right size and values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.viz import IMAGENET_MEAN, IMAGENET_STD, denormalize, to_pil

HEIGHT, WIDTH = 5, 7  # not square, so a transposed result would show


def rgb_at(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel((x, y))


def test_grayscale_pil_becomes_rgb_with_the_same_gray():
    gray = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    gray[2, 3] = 200
    result = to_pil(Image.fromarray(gray))
    assert result.size == (WIDTH, HEIGHT)
    assert rgb_at(result, 3, 2) == (200, 200, 200)
    assert rgb_at(result, 0, 0) == (0, 0, 0)


def test_grayscale_array_and_tensor_become_rgb():
    gray = np.full((HEIGHT, WIDTH), 0.5, dtype=np.float32)
    assert rgb_at(to_pil(gray), 6, 4) == (128, 128, 128)
    assert rgb_at(to_pil(torch.from_numpy(gray)), 6, 4) == (128, 128, 128)
    assert rgb_at(to_pil(torch.from_numpy(gray)[None]), 6, 4) == (128, 128, 128)


def test_rgba_is_composited_over_black():
    rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[1, 2] = (200, 100, 50, 128)
    rgba[1, 3] = (200, 100, 50, 255)
    rgba[1, 4] = (200, 100, 50, 0)
    for source in (rgba, Image.fromarray(rgba, mode="RGBA")):
        result = to_pil(source)
        assert result.size == (WIDTH, HEIGHT)
        assert rgb_at(result, 2, 1) == (100, 50, 25)  # x * 128 / 255, rounded
        assert rgb_at(result, 3, 1) == (200, 100, 50)
        assert rgb_at(result, 4, 1) == (0, 0, 0)


def test_uint16_is_scaled_from_its_full_range():
    deep = np.zeros((HEIGHT, WIDTH), dtype=np.uint16)
    deep[0, 0] = 65535
    deep[0, 1] = 257 * 100
    deep[0, 2] = 255  # dark in 16 bits: must not read as white
    for source in (deep, Image.fromarray(deep)):
        result = to_pil(source)
        assert result.size == (WIDTH, HEIGHT)
        assert rgb_at(result, 0, 0) == (255, 255, 255)
        assert rgb_at(result, 1, 0) == (100, 100, 100)
        assert rgb_at(result, 2, 0) == (1, 1, 1)


def test_float_tensor_channel_first_in_unit_range():
    tensor = torch.zeros(3, HEIGHT, WIDTH)
    tensor[:, 4, 6] = torch.tensor([1.0, 0.5, 0.2])
    for source in (tensor, tensor[None], tensor.double(), tensor.requires_grad_()):
        result = to_pil(source)
        assert result.size == (WIDTH, HEIGHT)
        assert rgb_at(result, 6, 4) == (255, 128, 51)


def test_float_tensor_in_byte_range_and_uint8_tensor():
    tensor = torch.zeros(3, HEIGHT, WIDTH)
    tensor[:, 1, 1] = torch.tensor([10.0, 20.0, 250.0])
    assert rgb_at(to_pil(tensor), 1, 1) == (10, 20, 250)
    assert rgb_at(to_pil(tensor.to(torch.uint8)), 1, 1) == (10, 20, 250)


def test_rgb_array_channel_last():
    array = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    array[3, 5] = (1, 2, 3)
    result = to_pil(array)
    assert result.size == (WIDTH, HEIGHT)
    assert rgb_at(result, 5, 3) == (1, 2, 3)


def test_palette_image_becomes_rgb():
    palette_image = Image.new("P", (WIDTH, HEIGHT), 0)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette_image.putpixel((2, 2), 1)
    assert rgb_at(to_pil(palette_image), 2, 2) == (255, 0, 0)


def test_wrong_type_is_named():
    with pytest.raises(TypeError, match="list"):
        to_pil([[0, 1], [1, 0]])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (torch.zeros(2, 3, 4, 4), r"\(2, 3, 4, 4\)"),
        (torch.zeros(8, 8, 3), r"permute"),
        (torch.zeros(3, 4), None),  # (H, W) is fine
        (np.zeros((3, 4, 5)), r"\(3, 4, 5\)"),
        (np.zeros((3, 8, 8)), r"transpose"),
        (torch.zeros(1, 2, 3, 4, 5), r"\(1, 2, 3, 4, 5\)"),
    ],
)
def test_bad_shapes_are_named(source, expected):
    if expected is None:
        assert to_pil(source).size == (4, 3)
        return
    with pytest.raises(ValueError, match=expected):
        to_pil(source)


def test_normalised_input_points_to_denormalize():
    with pytest.raises(ValueError, match="denormalize"):
        to_pil(torch.full((3, 4, 4), -1.5))


def test_out_of_range_integers_are_named():
    with pytest.raises(ValueError, match="1000"):
        to_pil(np.full((4, 4), 1000, dtype=np.int32))


def test_denormalize_undoes_imagenet_normalisation():
    torch.manual_seed(0)
    images = torch.rand(2, 3, HEIGHT, WIDTH)
    mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)
    normalised = (images - mean) / std
    torch.testing.assert_close(denormalize(normalised), images)
    torch.testing.assert_close(denormalize(normalised[0]), images[0])
    assert to_pil(denormalize(normalised[0])).size == (WIDTH, HEIGHT)


def test_denormalize_clamps_and_checks_channels():
    assert denormalize(torch.full((1, 2, 2), 10.0), mean=[0.5], std=[0.5]).max() == 1.0
    with pytest.raises(ValueError, match="1 channels"):
        denormalize(torch.zeros(1, 4, 4))


def test_to_pixels_of_a_batch_equals_to_pil_per_image():
    from camlens.viz.images import to_pixels

    generator = torch.Generator().manual_seed(2)
    cases = [torch.rand(3, 3, 5, 6, generator=generator),  # floats in [0, 1]
             torch.rand(2, 1, 4, 4, generator=generator),  # gray
             torch.rand(2, 4, 4, 4, generator=generator),  # RGBA over black
             (torch.rand(2, 3, 4, 4, generator=generator) * 255).byte(),
             torch.stack([torch.rand(3, 4, 4, generator=generator),  # scales differ per image
                          torch.rand(3, 4, 4, generator=generator) * 200 + 2])]
    for batch in cases:
        pixels = to_pixels(batch)
        assert pixels.shape == (batch.shape[0], *batch.shape[2:], 3)
        for index in range(batch.shape[0]):
            assert np.array_equal(pixels[index], np.asarray(to_pil(batch[index])))


def test_to_pixels_refuses_what_to_pil_refuses():
    from camlens.viz.images import to_pixels

    with pytest.raises(ValueError, match="batch"):
        to_pixels(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        to_pixels(torch.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError, match="normalised"):
        to_pixels(torch.full((2, 3, 4, 4), -0.5))
    with pytest.raises(TypeError, match="tensor"):
        to_pixels(np.zeros((2, 3, 4, 4)))
