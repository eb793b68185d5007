"""overlay, colorize, resize_map, colorbar and draw_boxes."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from camlens.viz import colorbar, colorize, draw_boxes, overlay, resize_map

JET = matplotlib.colormaps["jet"]


def color(cmap_name: str, value: float) -> tuple[int, int, int]:
    return tuple(int(c) for c in matplotlib.colormaps[cmap_name](value, bytes=True)[:3])


def left_half_map(size: int = 16) -> torch.Tensor:
    heat = torch.zeros(size, size)
    heat[:, : size // 2] = 1.0
    return heat


def test_jet_at_full_alpha_is_red_left_and_dark_blue_right():
    black = Image.new("RGB", (16, 16))
    result = np.asarray(overlay(black, left_half_map(), colormap="jet", alpha=1.0))
    left, right = result[:, :8].reshape(-1, 3), result[:, 8:].reshape(-1, 3)
    assert (left == color("jet", 1.0)).all()
    assert (right == color("jet", 0.0)).all()
    red, green, blue = left[0].tolist()
    assert red > 100 and green < 30 and blue < 30  # red-ish
    red, green, blue = right[0].tolist()
    assert blue > 100 and red < 30 and green < 30  # dark blue
    assert blue < 200


def test_alpha_zero_leaves_the_image_unchanged():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    result = overlay(Image.fromarray(pixels), left_half_map(), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(result), pixels)


def test_alpha_blends_linearly():
    gray = Image.new("RGB", (16, 16), (100, 100, 100))
    result = np.asarray(overlay(gray, left_half_map(), alpha=0.25)).astype(float)
    expected = 0.75 * 100 + 0.25 * np.array(color("jet", 1.0), dtype=float)
    np.testing.assert_allclose(result[0, 0], np.rint(expected))


def test_map_is_resized_bilinearly_from_4x4_to_32x32():
    small = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 4)
    values = resize_map(small, (32, 32))
    assert values.shape == (32, 32)
    # align_corners=False with scale 8: output column x reads source column (x + 0.5) / 8 - 0.5.
    np.testing.assert_array_equal(values[:, :12], 1.0)
    np.testing.assert_array_equal(values[:, 20:], 0.0)
    ramp = values[0, 11:21]
    assert (np.diff(ramp) < 0).all()
    np.testing.assert_allclose(values[:, 15], 0.5625)  # source column 1.4375
    black = Image.new("RGB", (32, 32))
    result = np.asarray(overlay(black, small, alpha=1.0))
    assert result.shape == (32, 32, 3)
    assert tuple(result[5, 3]) == color("jet", 1.0)
    assert tuple(result[5, 30]) == color("jet", 0.0)


def test_map_follows_a_non_square_image():
    image = Image.new("RGB", (40, 20))
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[:, :2] = 1.0
    result = overlay(image, heat, alpha=1.0)
    assert result.size == (40, 20)
    assert result.getpixel((0, 19)) == color("jet", 1.0)
    assert result.getpixel((39, 0)) == color("jet", 0.0)


def test_any_matplotlib_colormap_works():
    result = overlay(Image.new("RGB", (8, 8)), torch.ones(8, 8), colormap="viridis", alpha=1.0)
    assert result.getpixel((0, 0)) == color("viridis", 1.0)


def test_colorize_keeps_the_map_size():
    heat = torch.linspace(0, 1, 12).reshape(3, 4)
    picture = colorize(heat, "magma")
    assert picture.size == (4, 3) and picture.mode == "RGB"
    assert picture.getpixel((3, 2)) == color("magma", 1.0)
    assert picture.getpixel((0, 0)) == color("magma", 0.0)


def test_unknown_colormap_names_the_value_and_valid_ones():
    with pytest.raises(ValueError, match="'jt'") as raised:
        overlay(Image.new("RGB", (4, 4)), torch.zeros(4, 4), colormap="jt")
    assert "jet" in str(raised.value) and "viridis" in str(raised.value)


@pytest.mark.parametrize("alpha", [1.5, -0.1])
def test_bad_alpha_is_named(alpha):
    with pytest.raises(ValueError, match=str(alpha)):
        overlay(Image.new("RGB", (4, 4)), torch.zeros(4, 4), alpha=alpha)


def test_bad_map_shape_is_named():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        overlay(Image.new("RGB", (4, 4)), torch.zeros(2, 3, 4))
    # leading axes of length 1 are fine
    assert overlay(Image.new("RGB", (4, 4)), torch.zeros(1, 1, 3, 4)).size == (4, 4)


def test_map_outside_unit_range_is_refused():
    with pytest.raises(ValueError, match="4.5"):
        overlay(Image.new("RGB", (4, 4)), torch.full((4, 4), 4.5))


def test_map_of_wrong_type_is_named():
    with pytest.raises(TypeError, match="list"):
        colorize([[0.0, 1.0]])


@pytest.mark.parametrize("cmap_name", ["jet", "viridis"])
def test_colorbar_is_high_at_the_top_and_low_at_the_bottom(cmap_name):
    bar = colorbar(cmap_name, height=100, width=10, labels=False)
    assert bar.size == (10, 100)
    for x in (0, 9):
        assert bar.getpixel((x, 0)) == color(cmap_name, 1.0)
        assert bar.getpixel((x, 99)) == color(cmap_name, 0.0)


def test_colorbar_labels_add_a_margin_with_text():
    bar = colorbar("jet", height=120, width=20, labels=True)
    assert bar.height == 120 and bar.width > 20
    assert bar.getpixel((0, 0)) == color("jet", 1.0)
    assert bar.getpixel((19, 119)) == color("jet", 0.0)
    margin = np.asarray(bar)[:, 25:]
    dark = margin.sum(axis=-1) < 200
    assert dark[:20].any() and dark[-20:].any()  # the "1" at the top, the "0" at the bottom
    assert not dark[50:70].any()


def test_colorbar_rejects_bad_sizes():
    with pytest.raises(ValueError, match="height"):
        colorbar(height=1)


def test_draw_boxes_changes_exactly_the_border_pixels():
    image = Image.new("RGB", (20, 20))
    x0, y0, x1, y1 = 3, 4, 12, 15  # x1, y1 exclusive
    result = np.asarray(draw_boxes(image, [(x0, y0, x1, y1)], colors=(255, 0, 0), width=2))
    changed = result.any(axis=-1)
    rows, columns = np.mgrid[0:20, 0:20]
    inside = (columns >= x0) & (columns < x1) & (rows >= y0) & (rows < y1)
    interior = (columns >= x0 + 2) & (columns < x1 - 2) & (rows >= y0 + 2) & (rows < y1 - 2)
    np.testing.assert_array_equal(changed, inside & ~interior)
    assert (result[changed] == (255, 0, 0)).all()
    assert np.asarray(image).max() == 0  # the input is not drawn on


def test_draw_boxes_cycles_colors_and_takes_tensors():
    image = Image.new("RGB", (20, 20))
    boxes = torch.tensor([[0, 0, 5, 5], [10, 10, 15, 15]])
    result = draw_boxes(image, boxes, width=1)
    assert result.getpixel((0, 0)) == (0, 255, 0)
    assert result.getpixel((14, 14)) == (255, 0, 0)
    assert result.getpixel((15, 15)) == (0, 0, 0)


def test_empty_box_is_named():
    with pytest.raises(ValueError, match=r"\(5, 5, 5, 9\)"):
        draw_boxes(Image.new("RGB", (10, 10)), [5, 5, 5, 9])


def test_boxes_carry_their_labels():
    image = np.zeros((60, 80, 3), dtype=np.uint8) + 90
    plain = np.asarray(draw_boxes(image, [[20, 30, 70, 55]]))
    labelled = np.asarray(draw_boxes(image, [[20, 30, 70, 55]], labels=["cat 0.93"]))
    above = (slice(0, 30), slice(20, 80))
    assert (plain[above] == 90).all()  # nothing above the box without a label
    assert (labelled[above] != 90).any()  # the label's black tag and text
    np.testing.assert_array_equal(plain[31:], labelled[31:])  # the box itself is the same


def test_a_colormap_by_name_draws_as_a_fresh_one_and_users_copies_stay_their_own():
    """Overlays share one built table per colormap name; what they draw equals a fresh copy's,
    and a colormap a user gets from get_colormap is still their own to change."""
    import matplotlib

    from camlens.viz import get_colormap, overlay

    picture = Image.new("RGB", (32, 32), (40, 80, 120))
    map_ = torch.linspace(0, 1, 64).reshape(8, 8)
    for name in ("jet", "viridis", "gray"):
        fresh = matplotlib.colormaps[name]
        assert np.array_equal(np.asarray(overlay(picture, map_, name)),
                              np.asarray(overlay(picture, map_, fresh)))
    mine = get_colormap("jet")
    mine.set_under("white")
    assert mine is not get_colormap("jet")
    assert np.array_equal(np.asarray(overlay(picture, map_, "jet")),
                          np.asarray(overlay(picture, map_, matplotlib.colormaps["jet"])))


@pytest.mark.parametrize("name", ["jet", "viridis", "gray", "turbo", "coolwarm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_byte_table_gives_matplotlibs_colours_exactly(name, dtype):
    """The shared colormaps colour from their byte table: equal to matplotlib's own call at
    every table boundary (k / N, a hair either side), at 0 and 1 and on random values; values
    outside [0, 1] and user colormaps go through matplotlib's call."""
    import matplotlib

    from camlens.viz.overlay import _colors, _registered_colormap

    shared, fresh = _registered_colormap(name), matplotlib.colormaps[name]
    steps = np.arange(shared.N + 1, dtype=dtype) / dtype(shared.N)
    hair = np.finfo(dtype).eps
    cases = [np.random.default_rng(0).random((32, 32)).astype(dtype), steps[None],
             np.clip(steps + hair, 0, 1)[None], np.clip(steps - hair, 0, 1)[None],
             np.array([[0.0, 1.0, -0.5, 1.5]], dtype=dtype)]
    for values in cases:
        expected = np.ascontiguousarray(fresh(values, bytes=True)[..., :3])
        for cmap in (shared, fresh):
            assert np.array_equal(_colors(values, cmap), expected)
    assert not hasattr(fresh, "_camlens_bytes")  # the user's object is left alone


def test_overlay_pixels_equals_overlay_one_by_one():
    from camlens.viz.overlay import overlay_pixels

    generator = torch.Generator().manual_seed(3)
    pixels = (torch.rand(4, 20, 28, 3, generator=generator) * 255).byte().numpy()
    maps = torch.rand(4, 5, 7, generator=generator)
    maps[1] = 0.0  # a flat map
    for colormap, alpha in (("jet", 0.5), ("viridis", 0.3), (matplotlib.colormaps["magma"], 1.0)):
        together = overlay_pixels(pixels, maps, colormap, alpha)
        assert together.shape == (4, 20, 28, 3) and together.dtype == np.uint8
        for index in range(4):
            alone = np.asarray(overlay(pixels[index], maps[index], colormap, alpha))
            assert np.array_equal(together[index], alone)
    shrunk = overlay_pixels(pixels[:, :4, :4], maps)  # a map larger than the picture
    assert np.array_equal(shrunk[2], np.asarray(overlay(pixels[2, :4, :4], maps[2])))


def test_overlay_pixels_refuses_what_overlay_refuses():
    from camlens.viz.overlay import overlay_pixels

    pixels = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"map values span \[0, 2\]"):
        overlay_pixels(pixels, torch.tensor([0.0, 2.0]).repeat(2, 2, 1))
    with pytest.raises(ValueError, match="NaN"):
        overlay_pixels(pixels, torch.full((2, 3, 3), float("nan")))
    with pytest.raises(ValueError, match=r"2 picture\(s\) but 3 map\(s\)"):
        overlay_pixels(pixels, torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"maps must be \(B, h, w\)"):
        overlay_pixels(pixels, torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"uint8 array \(B, H, W, 3\)"):
        overlay_pixels(pixels.astype(np.float32), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        overlay_pixels(pixels, torch.zeros(2, 4, 4), alpha=2)


def test_explanation_overlays_of_a_batch_equal_overlay_per_input():
    from camlens.explanation import Explanation
    from camlens.viz import explanation_overlays

    generator = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 16, 16, generator=generator)
    raw = torch.rand(3, 2, 4, 4, generator=generator)
    exp = Explanation(raw=raw, scores=torch.zeros(3, 2), targets=torch.zeros(3, 2).long(),
                      method="gradcam", layer="x", input_size=(16, 16))
    drawn = explanation_overlays(exp, images)
    assert len(drawn) == 3 and all(len(per_input) == 2 for per_input in drawn)
    for index in range(3):
        for target in range(2):
            expected = overlay(images[index], exp.maps[index, target])
            assert np.array_equal(np.asarray(drawn[index][target]), np.asarray(expected))


def test_explanation_overlays_of_pictures_of_several_sizes_go_one_at_a_time():
    from camlens.explanation import Explanation
    from camlens.viz import explanation_overlays

    generator = torch.Generator().manual_seed(5)
    pictures = [Image.new("RGB", (16, 16), (10, 200, 30)), Image.new("RGB", (12, 20), "white")]
    raw = torch.rand(2, 4, 4, generator=generator)
    exp = Explanation(raw=raw, scores=torch.zeros(2, 1), targets=torch.zeros(2, 1).long(),
                      method="gradcam", layer="x", input_size=(16, 16))
    drawn = explanation_overlays(exp, pictures)
    assert [image.size for image in drawn] == [(16, 16), (12, 20)]
    for picture, image, map_ in zip(pictures, drawn, exp.maps, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(overlay(picture, map_)))
