"""Maps as colours: heat-map overlays on images, colour bars and boxes for localization."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Colormap
from PIL import Image, ImageDraw, ImageFont

from camlens.viz.images import ImageLike, count_images, select_image, to_pil

if TYPE_CHECKING:
    from camlens.explanation import Explanation

__all__ = ["BOX_COLORS", "COMMON_COLORMAPS", "Color", "MAP_TOLERANCE", "MapLike", "colorbar",
           "colorize", "draw_boxes", "draw_outline", "explanation_overlays", "get_colormap",
           "image_maps", "overlay", "overlay_pixels", "resize_map"]

MapLike = torch.Tensor | np.ndarray
Color = str | tuple[int, int, int]

# Map values this far outside [0, 1] are interpolation rounding, not another scale.
MAP_TOLERANCE = 1e-4
# Pictures' pixels blended in one pass by overlay_pixels (about 50 MB of float64 at most).
BLEND_PIXELS = 1 << 21
# Offered when a colormap name is unknown.
COMMON_COLORMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "plasma", "gray", "coolwarm")
# Box colours used in turn when none are given: green, red, cyan, yellow, magenta.
BOX_COLORS: tuple[Color, ...] = (
    (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 255, 0), (255, 0, 255),
)


def get_colormap(colormap: str | Colormap) -> Colormap:
    """The matplotlib colormap called ``colormap`` (a Colormap object passes through)."""
    if isinstance(colormap, Colormap):
        return colormap
    if isinstance(colormap, str) and colormap in matplotlib.colormaps:
        return matplotlib.colormaps[colormap]
    names = list(matplotlib.colormaps)
    close = difflib.get_close_matches(str(colormap), names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"unknown colormap {colormap!r}; {hint}any matplotlib colormap works, for example "
        f"{', '.join(COMMON_COLORMAPS)}"
    )


def _drawing_colormap(colormap: str | Colormap) -> Colormap:
    """The colormap to colour with: a registered name's is built once and shared (matplotlib's
    registry hands out a fresh copy per lookup, whose colour table is rebuilt on first use:
    half the time of a small overlay); a Colormap object is used as it is."""
    if isinstance(colormap, str) and colormap in matplotlib.colormaps:
        return _registered_colormap(colormap)
    return get_colormap(colormap)


@functools.lru_cache(maxsize=64)
def _registered_colormap(name: str) -> Colormap:
    cmap = matplotlib.colormaps[name]  # a copy of its own: the user's objects are not touched
    cmap(0.0)  # builds the colour table now: later calls only read it (safe across threads)
    # row i of the byte table is cmap(i, bytes=True) (an integer indexes the table)
    cmap._camlens_bytes = np.ascontiguousarray(  # type: ignore[attr-defined]
        cmap(np.arange(cmap.N), bytes=True)[:, :3])
    return cmap


def resize_map(map: MapLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """``map`` as a float32 ``(H, W)`` array in [0, 1], resized bilinearly to ``size`` =
    ``(height, width)`` when given (``align_corners=False``, as ``Explanation.maps``;
    antialiased when shrinking).

    ``map`` is a tensor or array ``(h, w)``, leading axes of length 1 allowed, values in [0, 1]
    (``Explanation.maps``; ``Explanation.raw`` needs normalising first)."""
    return _resized(_map_tensor(map)[None], size)[0]


def _resized(values: torch.Tensor, size: tuple[int, int] | None) -> np.ndarray:
    """Checked maps ``(B, h, w)`` resized to ``size`` as :func:`resize_map` resizes one (each
    map is interpolated on its own: the batch axis only stacks them)."""
    if size is not None and tuple(values.shape[-2:]) != tuple(size):
        height, width = size
        shrinking = height < values.shape[-2] or width < values.shape[-1]
        values = F.interpolate(
            values[:, None], size=(height, width), mode="bilinear", align_corners=False,
            antialias=shrinking,
        )[:, 0]
    return values.clamp(0.0, 1.0).numpy()


def colorize(map: MapLike, colormap: str | Colormap = "jet") -> Image.Image:
    """``map`` (values in [0, 1]) coloured by ``colormap``, as an RGB image of the map's size."""
    cmap = _drawing_colormap(colormap)
    return Image.fromarray(_colors(resize_map(map), cmap))


def overlay(
    image: ImageLike,
    map: MapLike,
    colormap: str | Colormap = "jet",
    alpha: float = 0.5,
) -> Image.Image:
    """``image`` with ``map`` laid over it in colour: ``(1 - alpha) * image + alpha *
    colormap(map)``, the map resized bilinearly to the image's size.

    ``image``: anything :func:`camlens.viz.to_pil` takes; ``map``: a tensor or array ``(h, w)``
    in [0, 1]; ``alpha``: 0 gives the image unchanged, 1 the coloured map alone."""
    alpha = _check_alpha(alpha)
    cmap = _drawing_colormap(colormap)
    picture = np.asarray(to_pil(image))[None]
    return Image.fromarray(_blend(picture, _map_tensor(map)[None], cmap, alpha)[0])


def overlay_pixels(
    pixels: np.ndarray,
    maps: MapLike,
    colormap: str | Colormap = "jet",
    alpha: float = 0.5,
) -> np.ndarray:
    """Many overlays at once: ``pixels`` ``(B, H, W, 3)`` uint8 pictures (e.g.
    :func:`camlens.viz.images.to_pixels`), ``maps`` ``(B, h, w)`` in [0, 1]; returns ``(B, H,
    W, 3)`` uint8, image ``i`` equal to ``overlay(pixels[i], maps[i], colormap, alpha)``
    (same formula, same checks), computed over the whole batch in one pass."""
    alpha = _check_alpha(alpha)
    cmap = _drawing_colormap(colormap)
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 4 or (
            pixels.shape[-1] != 3):
        raise ValueError("overlay_pixels takes pixels as a uint8 array (B, H, W, 3), got "
                         f"{type(pixels).__name__} {getattr(pixels, 'dtype', '')} of shape "
                         f"{tuple(getattr(pixels, 'shape', ()))}")
    values = _maps_tensor(maps)
    if values.shape[0] != pixels.shape[0]:
        raise ValueError(f"{pixels.shape[0]} picture(s) but {values.shape[0]} map(s)")
    return _blend(pixels, values, cmap, alpha)


def _blend(pixels: np.ndarray, values: torch.Tensor, cmap: Colormap, alpha: float
           ) -> np.ndarray:
    """``(1 - alpha) * pixels + alpha * cmap(maps)``, rounded: pixels ``(B, H, W, 3)`` uint8,
    checked maps ``(B, h, w)`` resized to the pictures; at most :data:`BLEND_PIXELS` pictures'
    pixels at a time (the float64 blend takes 24 bytes a pixel)."""
    step = max(1, BLEND_PIXELS // max(1, pixels.shape[1] * pixels.shape[2]))
    if pixels.shape[0] <= step:
        return _blend_all(pixels, values, cmap, alpha)
    blended = np.empty_like(pixels)
    for first in range(0, pixels.shape[0], step):
        blended[first:first + step] = _blend_all(pixels[first:first + step],
                                                 values[first:first + step], cmap, alpha)
    return blended


def _blend_all(pixels: np.ndarray, values: torch.Tensor, cmap: Colormap, alpha: float
               ) -> np.ndarray:
    heat = _colors(_resized(values, pixels.shape[1:3]), cmap)
    blended = (1.0 - alpha) * pixels.astype(np.float64) + alpha * heat
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def colorbar(
    colormap: str | Colormap = "jet",
    height: int = 256,
    width: int = 24,
    labels: bool = True,
) -> Image.Image:
    """A vertical colour bar: 1 at the top row, 0 at the bottom row, ``width`` pixels wide from
    the left edge; with ``labels``, a white margin on the right holds the 0 and 1 ticks."""
    for name, value, least in (("height", height, 2), ("width", width, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"colorbar {name} must be an int >= {least}, got {value!r}")
    cmap = _drawing_colormap(colormap)
    values = np.linspace(1.0, 0.0, height)[:, None].repeat(width, axis=1)
    bar = Image.fromarray(_colors(values, cmap))
    if not labels:
        return bar
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(bar)
    top_box = measure.textbbox((0, 0), "1", font=font)
    bottom_box = measure.textbbox((0, 0), "0", font=font)
    tick = 4
    text_left = width + tick + 2
    canvas = Image.new("RGB", (text_left + max(top_box[2], bottom_box[2]) + 2, height), "white")
    canvas.paste(bar, (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.line([(width, 0), (width + tick - 1, 0)], fill="black")
    draw.line([(width, height - 1), (width + tick - 1, height - 1)], fill="black")
    # Offsets from the text boxes put the glyphs flush with the top and bottom rows.
    draw.text((text_left, -top_box[1]), "1", fill="black", font=font)
    draw.text((text_left, height - bottom_box[3]), "0", fill="black", font=font)
    return canvas


def draw_boxes(
    image: ImageLike,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    colors: Color | Sequence[Color] | None = None,
    width: int = 2,
    labels: Sequence[str] | None = None,
) -> Image.Image:
    """A copy of ``image`` with each box ``(x0, y0, x1, y1)`` outlined (``x1``, ``y1``
    exclusive; the outline is ``width`` pixels thick, drawn inside the box).

    ``boxes``: ``(N, 4)`` or one box ``(4,)``; ``colors``: one colour (a name or an RGB tuple)
    for all, a sequence used in turn, or None for green, red, cyan, yellow, magenta;
    ``labels``: a text per box (a detection's class and score), written in the box's colour on
    black at its top-left corner."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    box_array = _box_array(boxes)
    palette = _palette(colors)
    picture = to_pil(image)
    draw = ImageDraw.Draw(picture)
    for number, (x0, y0, x1, y1) in enumerate(box_array.tolist()):
        # PIL rectangles include their end corner, the boxes here exclude it.
        color = palette[number % len(palette)]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=width)
        if labels is not None and number < len(labels) and labels[number]:
            left, top, right, bottom = draw.textbbox((x0, y0), str(labels[number]))
            height = bottom - top
            corner = (x0, max(y0 - height - 2, 0))
            shifted = draw.textbbox(corner, str(labels[number]))
            draw.rectangle(shifted, fill=(0, 0, 0))
            draw.text(corner, str(labels[number]), fill=color)
    return picture


def draw_outline(
    image: ImageLike,
    mask: torch.Tensor | np.ndarray,
    color: Color = "white",
    width: int = 1,
) -> Image.Image:
    """A copy of ``image`` with the border of ``mask`` (a ``(H, W)`` bool or 0/1 region at the
    image's size, e.g. a segmentation class's pixels) drawn in ``color``: the mask's pixels that
    have a pixel outside the mask within ``width`` steps."""
    from PIL import ImageFilter

    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    picture = to_pil(image)
    region = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if region.shape != (picture.height, picture.width):
        raise ValueError(f"the mask is {region.shape} but the image is "
                         f"{(picture.height, picture.width)} (height, width); resize it first")
    inside = Image.fromarray((region > 0).astype(np.uint8) * 255)
    shrunk = inside.filter(ImageFilter.MinFilter(2 * width + 1))
    border = np.asarray(inside) & ~np.asarray(shrunk)
    colored = Image.new("RGB", picture.size, color)
    picture.paste(colored, mask=Image.fromarray(border))
    return picture


def explanation_overlays(
    explanation: Explanation,
    inputs: ImageLike | Sequence[ImageLike],
    colormap: str | Colormap = "jet",
    alpha: float = 0.5,
) -> list:
    """One overlay per input of ``explanation.maps`` on ``inputs``; a list of K overlays per
    input when the explanation has K targets per input.

    Args:
        explanation: what :func:`camlens.explain` returned, with image maps.
        inputs: a ``(B, C, H, W)`` tensor with values in [0, 1] or 0..255 (see
            :func:`~camlens.viz.images.denormalize`) or a list of B images.
        colormap: a matplotlib colormap name or object.
        alpha: the weight of the map's colours over the picture.

    Returns:
        RGB PIL images, ``[B]`` or ``[B][K]``.

    Example:
        >>> explanation_overlays(camlens.explain(model, images), images)[0].save("0.png")
        ... # doctest: +SKIP
    """
    _check_alpha(alpha)
    get_colormap(colormap)
    maps = image_maps(explanation)
    count = count_images(inputs)
    if count != maps.shape[0]:
        raise ValueError(
            f"the explanation has {maps.shape[0]} input(s) but {count} image(s) were given"
        )
    per_target = maps.ndim == 4
    pictures = [np.asarray(to_pil(select_image(inputs, index))) for index in range(count)]
    if len({picture.shape for picture in pictures}) > 1:  # sizes differ: one at a time
        return [[overlay(picture, m, colormap, alpha) for m in maps[index]] if per_target
                else overlay(picture, maps[index], colormap, alpha)
                for index, picture in enumerate(pictures)]
    targets = maps.shape[1] if per_target else 1
    drawn = overlay_pixels(np.repeat(np.stack(pictures), targets, axis=0),
                           maps.reshape(-1, *maps.shape[-2:]), colormap, alpha)
    images = [Image.fromarray(pixels) for pixels in drawn]
    if not per_target:
        return images
    return [images[index * targets:(index + 1) * targets] for index in range(count)]


def image_maps(explanation: Explanation) -> torch.Tensor:
    """``explanation.maps`` on the CPU, checked to be image maps ``(B, [K,] H, W)``."""
    if len(explanation.input_size) != 2:
        raise ValueError(
            f"image overlays need maps with 2 spatial axes; this {explanation.method} "
            f"explanation has input size {tuple(explanation.input_size)}"
        )
    return explanation.maps.detach().cpu()


def _map_tensor(map: MapLike) -> torch.Tensor:
    """One map as a checked float32 ``(h, w)`` tensor in [0, 1]."""
    values = _as_tensor(map)
    shape = tuple(values.shape)
    if values.ndim < 2 or any(length != 1 for length in shape[:-2]):
        raise ValueError(f"a map must be (h, w) (leading axes of length 1 allowed), got {shape}")
    return _checked_values(values.reshape(shape[-2:]), shape)


def _maps_tensor(maps: MapLike) -> torch.Tensor:
    """A batch of maps as a checked float32 ``(B, h, w)`` tensor in [0, 1]."""
    values = _as_tensor(maps)
    if values.ndim != 3:
        raise ValueError(f"maps must be (B, h, w), got shape {tuple(values.shape)}")
    return _checked_values(values, tuple(values.shape))


def _as_tensor(map: MapLike) -> torch.Tensor:
    if isinstance(map, np.ndarray):
        return torch.from_numpy(np.asarray(map, dtype=np.float32))
    if isinstance(map, torch.Tensor):
        return map.detach().cpu().float()
    raise TypeError(f"a map must be a torch tensor or a numpy array, got {type(map).__name__}")


def _checked_values(values: torch.Tensor, shape: tuple) -> torch.Tensor:
    """``values`` when finite and in [0, 1] (within :data:`MAP_TOLERANCE`), else ValueError."""
    if values.numel() == 0:
        raise ValueError(f"the map is empty, shape {shape}")
    if not torch.isfinite(values).all():
        raise ValueError("the map has NaN or infinite values")
    low, high = values.min().item(), values.max().item()
    if low < -MAP_TOLERANCE or high > 1.0 + MAP_TOLERANCE:
        raise ValueError(
            f"map values span [{low:.3g}, {high:.3g}]; maps must be in [0, 1] "
            "(use Explanation.maps, or min-max normalise first)"
        )
    return values


def _colors(values: np.ndarray, cmap: Colormap) -> np.ndarray:
    """``(H, W)`` values in [0, 1] as ``(H, W, 3)`` uint8 colours: exactly ``cmap(values,
    bytes=True)``'s (a float ``v`` takes row ``min(floor(v * N), N - 1)`` of the colormap's
    table), looked up in the table of a shared registered colormap (:func:`_registered_colormap`)
    directly when every value is in [0, 1]; matplotlib's call
    checks, masks and rebuilds its byte table on every call, which costs several times the
    lookup of a small map."""
    values = np.asarray(values)
    table = getattr(cmap, "_camlens_bytes", None)  # only the shared, registered colormaps
    if table is not None and values.dtype.kind == "f" and values.size and (
            values.min() >= 0.0 and values.max() <= 1.0):
        rows = (values * values.dtype.type(cmap.N)).astype(np.intp)  # same dtype as matplotlib
        np.minimum(rows, cmap.N - 1, out=rows)
        return table[rows]
    return np.ascontiguousarray(cmap(values, bytes=True)[..., :3])


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def _box_array(boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"boxes must be (N, 4) numbers (x0, y0, x1, y1), got {boxes!r}") from error
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None]
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as (x0, y0, x1, y1), got shape {array.shape}")
    array = np.rint(array).astype(np.int64)
    for box in array.tolist():
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"box {tuple(box)} is empty: x1 > x0 and y1 > y0 are needed "
                             "(x1, y1 exclusive)")
    return array


def _palette(colors: Color | Sequence[Color] | None) -> list[Color]:
    if colors is None:
        return list(BOX_COLORS)
    if isinstance(colors, str) or (
        isinstance(colors, tuple) and len(colors) in (3, 4)
        and all(isinstance(c, int) for c in colors)
    ):
        return [colors]
    palette = list(colors)
    if not palette:
        raise ValueError("colors is empty; give a colour, a sequence of colours or None")
    return [tuple(c) if isinstance(c, list) else c for c in palette]
