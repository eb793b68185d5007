"""Where the inputs of a data-set run come from: folders, lists of paths, Parquet.

Every source becomes a list of :class:`InputItem` (a key the index names the input by, and a
local path or the encoded bytes), small enough to enumerate 100,000 inputs up front so progress
and ``resume`` know the total; decoding happens later, in the pipeline's workers
(:func:`decode_item`), with the limits of :func:`camlens.io.images.read_image`.

- a folder: its image files, walked and sorted (:func:`camlens.io.images.find_images`);
- a file named directly: itself (a bad one is reported when read);
- ``LIST.txt`` / ``LIST.lst``: one path per line (relative to the list's folder; blank lines and
  ``#`` comments skipped);
- ``TABLE.parquet``: a string column ``path`` (or ``file``), or a binary column ``image`` holding
  encoded images (PNG, JPEG...), with an optional ``key`` column naming them (default
  ``TABLE.parquet#ROW``). Only a file on this machine's file system is read (no URLs).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LIST_SUFFIXES", "InputItem", "SourceError", "decode_item", "read_inputs"]

LIST_SUFFIXES = frozenset({".txt", ".lst"})


class SourceError(ValueError):
    """An input source cannot be read; the message names it and what is accepted."""


@dataclass(frozen=True)
class InputItem:
    """One input: ``key`` names it in the index and outputs; ``path`` or ``data`` holds it."""

    key: str
    path: str | None = None
    data: bytes | None = None


def read_inputs(sources: Sequence[str | Path]) -> list[InputItem]:
    """The inputs of ``sources`` (folders, files, lists, Parquet tables), in order."""
    from camlens.io.images import find_images

    items: list[InputItem] = []
    for source in sources:
        path = Path(source)
        if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            items.extend(_list_items(path))
        elif path.is_file() and path.suffix.lower() == ".parquet":
            items.extend(_parquet_items(path))
        else:
            items.extend(InputItem(str(found), str(found)) for found in find_images([path]))
    return items


def _list_items(path: Path) -> list[InputItem]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if "://" in text:
            raise SourceError(f"{path}: {text!r} is a URL; a list names local files only "
                              "(copy the data here, or read it with --engine ray on a cluster "
                              "that mounts it)")
        entry = Path(text)
        entry = entry if entry.is_absolute() else path.parent / entry
        items.append(InputItem(str(entry), str(entry)))
    return items


def _parquet_items(path: Path) -> list[InputItem]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(f"{path}: reading Parquet needs pyarrow (pip install "
                          "'camlens[scale]')") from None
    columns = pq.read_schema(path).names
    for name in ("path", "file"):
        if name in columns:
            table = pq.read_table(path, columns=[name])
            return [InputItem(str(value), str(value)) for value in table.column(name).to_pylist()]
    if "image" in columns:
        keys = (pq.read_table(path, columns=["key"]).column("key").to_pylist()
                if "key" in columns else None)
        table = pq.read_table(path, columns=["image"])
        return [InputItem(str(keys[row]) if keys else f"{path}#{row}", None, data)
                for row, data in enumerate(table.column("image").to_pylist())]
    raise SourceError(f"{path} has the columns {columns}; camlens reads a string column 'path' "
                      "(or 'file') or a binary column 'image' (with an optional 'key')")


def decode_item(item: InputItem, max_pixels: int, max_aspect: float):
    """``item`` as an RGB PIL image, or :class:`camlens.io.images.ImageFileError` naming it.
    Encoded bytes go through the same checks as a file (size limits, EXIF, modes)."""
    from camlens.io.images import ImageFileError, read_image

    if item.data is None:
        return read_image(Path(item.path or item.key), max_pixels, max_aspect=max_aspect)
    handle, name = tempfile.mkstemp(prefix="camlens-input-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(item.data)
        try:
            return read_image(Path(name), max_pixels, max_aspect=max_aspect)
        except ImageFileError as error:
            raise ImageFileError(str(error).replace(name, item.key)) from None
    finally:
        os.unlink(name)
