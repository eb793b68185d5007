"""Find and read the user's image files safely: folders walked, size-limited, modes converted."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["DEFAULT_MAX_ASPECT", "DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "ImageFileError",
           "find_images", "read_image"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                            ".ppm", ".pgm"})
#: Refuse images above this many pixels (decompression bombs); 40 megapixels by default.
DEFAULT_MAX_PIXELS = 40_000_000
#: Refuse images whose long side is more than this many times their short side.
DEFAULT_MAX_ASPECT = 20.0


class ImageFileError(ValueError):
    """One input file cannot be used; the message names the file and why."""


def find_images(paths: list[Path]) -> list[Path]:
    """Files named directly (whatever their suffix) and image files found in folders, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)  # missing or odd files are reported when read
    return found


def read_image(source: Path | str | bytes | bytearray | memoryview | BinaryIO,
               max_pixels: int = DEFAULT_MAX_PIXELS, max_aspect: float = DEFAULT_MAX_ASPECT,
               *, name: str | None = None):
    """The picture in ``source`` as a PIL image in mode ``RGB`` (8-bit), as a photo viewer shows
    it, or :class:`ImageFileError` naming the file and why.

    ``source`` is a path, the encoded bytes of a file (an upload, a row of a table) or a binary
    file object (read from its current position); the same limits, conversions and messages
    apply to all three. Messages name ``name`` when given, else the path, the file object's
    ``name`` or ``<bytes>``.

    - Refused before decoding: over ``max_pixels`` pixels (decompression bombs), or a long side
      more than ``max_aspect`` times the short one (a 12000x1 strip resized to a model's input
      would need gigabytes).
    - The EXIF orientation is applied (a phone's portrait photo stands upright).
    - Grayscale, palette and 16-bit images are converted; RGBA is composited over black; float
      images (``F``, e.g. float32 TIFF) in [0, 1] are scaled to 0..255, others clipped to it.

    Example:
        >>> read_image(Path("cat.jpg")).size  # doctest: +SKIP
        (640, 480)
        >>> read_image(upload_bytes, name="cat.jpg").size  # doctest: +SKIP
        (640, 480)
    """
    opened, path = _opened(source, name)
    return _decode(opened, path, max_pixels, max_aspect)


def _opened(source, name: str | None) -> tuple[Any, str]:
    """(what Pillow opens, the name messages use), or :class:`ImageFileError` for a missing,
    odd or empty source."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        shown = name or "<bytes>"
        if len(source) == 0:
            raise ImageFileError(f"{shown}: empty file")
        return io.BytesIO(bytes(source)), shown
    if isinstance(source, (str, Path)):
        path = Path(source)
        shown = name or str(path)
        if not path.exists():
            raise ImageFileError(f"{shown}: no such file")
        if not path.is_file():
            raise ImageFileError(f"{shown}: not a file")
        if path.stat().st_size == 0:
            raise ImageFileError(f"{shown}: empty file")
        return path, shown
    if callable(getattr(source, "read", None)):
        shown = name or str(getattr(source, "name", None) or "<file>")
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageFileError(f"{shown}: the file object gives {type(data).__name__}, not "
                                 "bytes; open it in binary mode ('rb')")
        if len(data) == 0:
            raise ImageFileError(f"{shown}: empty file")
        return io.BytesIO(bytes(data)), shown
    raise TypeError(f"read_image takes a path, bytes or a binary file object, got "
                    f"{type(source).__name__}")


def _decode(opened, path: str, max_pixels: int, max_aspect: float):
    """:func:`read_image`'s checks and conversions on an opened source named ``path``."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(opened) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageFileError(
                    f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of "
                    f"{max_pixels:,} (raise it with --max-pixels if you trust the file)"
                )
            aspect = max(width, height) / max(min(width, height), 1)
            if aspect > max_aspect:
                raise ImageFileError(
                    f"{path}: {width}x{height} has a long side {aspect:,.0f} times its short "
                    f"side, over the limit of {max_aspect:g} (raise it with --max-aspect)"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                scaled = np.asarray(image, dtype=np.float64) / 65535.0 * 255.0
                return Image.fromarray(scaled.clip(0, 255).astype(np.uint8)).convert("RGB")
            if image.mode == "F":
                values = np.asarray(image, dtype=np.float64)
                if not np.isfinite(values).all():
                    raise ImageFileError(f"{path}: the image holds NaN or infinite values")
                if values.max(initial=0.0) <= 1.0:
                    values = values * 255.0
                return Image.fromarray(values.clip(0, 255).round().astype(np.uint8)).convert(
                    "RGB")
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and
                                                       "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
    except ImageFileError:
        raise
    except UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise ImageFileError(f"{path}: refused as a decompression bomb ({error})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageFileError(f"{path}: cannot read the image ({error})") from None
