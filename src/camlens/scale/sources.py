"""Where the inputs of a data-set run come from: folders, lists of paths, Parquet.

Every source becomes a list of :class:`InputItem` (a key the index names the input by, and a
local path, a URI or the encoded bytes), small enough to enumerate 100,000 inputs up front so
progress and ``resume`` know the total; decoding happens later, in the pipeline's workers
(:func:`decode_item`), with the limits of :func:`camlens.io.images.read_image`.

- a folder: its image files, walked and sorted (:func:`camlens.io.images.find_images`); a
  remote folder (``s3://bucket/photos/``, given as a string): its objects with an image suffix,
  listed and sorted the same way;
- a file named directly: itself (a bad one is reported when read); a remote object too;
- ``LIST.txt`` / ``LIST.lst``: one path or URI per line (a path relative to the list's folder;
  blank lines and ``#`` comments skipped);
- ``TABLE.parquet``: a string column ``path`` (or ``file``) of paths or URIs, or a binary column
  ``image`` holding encoded images (PNG, JPEG...), with an optional ``key`` column naming them
  (default ``TABLE.parquet#ROW``).

URIs: ``file://`` names a local file; ``s3://``, ``gs://``, ``hdfs://`` and ``abfs://`` objects
are read through pyarrow's file systems (:mod:`pyarrow.fs`, credentials from the environment as
pyarrow reads them; ``pip install 'camlens[scale]'``), on whichever machine decodes them (a Ray
worker reads its own batch). Web URLs are refused: a data set is not fetched from web servers.
A remote object is read into memory, at most :data:`MAX_REMOTE_BYTES`, then decoded with the
limits of a local file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["LIST_SUFFIXES", "MAX_REMOTE_BYTES", "REMOTE_SCHEMES", "InputItem", "SourceError",
           "decode_item", "local_paths", "read_inputs", "read_remote", "uri_scheme"]

LIST_SUFFIXES = frozenset({".txt", ".lst"})

#: URI schemes read through :mod:`pyarrow.fs` (``file://`` URIs become local paths instead).
REMOTE_SCHEMES = frozenset({"s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})

#: The largest remote object read, in bytes (an image file; its pixels are then limited as a
#: local file's are).
MAX_REMOTE_BYTES = 256 << 20


class SourceError(ValueError):
    """An input source cannot be read; the message names it and what is accepted."""


@dataclass(frozen=True)
class InputItem:
    """One input: ``key`` names it in the index and outputs; ``path`` or ``data`` holds it."""

    key: str
    path: str | None = None
    data: bytes | None = None


def read_inputs(sources: Sequence[str | Path]) -> list[InputItem]:
    """The inputs of ``sources`` (folders, files, lists, Parquet tables; a string may be a URI
    of a file, a remote object or a remote folder), in order."""
    from camlens.io.images import find_images

    items: list[InputItem] = []
    for source in sources:
        if isinstance(source, str) and uri_scheme(source) is not None:  # a Path loses the //
            items.extend(_uri_items(source))
            continue
        path = Path(source)
        if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            items.extend(_list_items(path))
        elif path.is_file() and path.suffix.lower() == ".parquet":
            items.extend(_parquet_items(path))
        else:
            items.extend(InputItem(str(found), str(found)) for found in find_images([path]))
    return items


def local_paths(items: Sequence[InputItem]) -> list[str]:
    """The paths of ``items`` on this machine's file system (not remote URIs, not bytes): the
    files an output must never overwrite."""
    return [item.path for item in items if item.path and uri_scheme(item.path) is None]


def uri_scheme(text: str) -> str | None:
    """The scheme of a URI (``"s3"`` of ``s3://bucket/a.jpg``, lower case), None for a path."""
    head, separator, _ = text.partition("://")
    if not separator or not head or not head[0].isalpha() or not all(
            ch.isalnum() or ch in "+-." for ch in head):
        return None
    return head.lower()


def _entry(text: str, source: str | Path, folder: Path | None) -> InputItem:
    """The input named by ``text`` in ``source`` (a list or table): a path (relative to
    ``folder`` when given), a ``file://`` URI (its local path) or a remote URI."""
    scheme = uri_scheme(text)
    if scheme is None:
        entry = Path(text)
        entry = entry if folder is None or entry.is_absolute() else folder / entry
        return InputItem(str(entry), str(entry))
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"{source}: {text!r} names a file on host {parts.netloc!r}; a "
                              "file:// URI names a file on this machine (file:///path)")
        local = unquote(parts.path)
        return InputItem(local, local)
    if scheme in REMOTE_SCHEMES:
        return InputItem(text, text)
    raise SourceError(f"{source}: {text!r} is a {scheme}:// URI; camlens reads local paths, "
                      f"file:// and {', '.join(f'{name}://' for name in sorted(REMOTE_SCHEMES))} "
                      "URIs (object stores and HDFS, through pyarrow); download web data first")


def _uri_items(uri: str) -> list[InputItem]:
    """The inputs a URI names on the command line: a ``file://`` path as a local source, a remote
    object itself, a remote folder's image objects (listed recursively, sorted)."""
    entry = _entry(uri, uri, None)
    if entry.path is None or uri_scheme(entry.path) is None:  # file://: as its local path
        return read_inputs([Path(entry.path or uri)])
    from camlens.io.images import IMAGE_SUFFIXES

    with _arrow(uri, SourceError, "list") as fs:
        filesystem, path = file_system_of(uri)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.File:
            return [entry]
        if info.type != fs.FileType.Directory:
            raise SourceError(f"{uri}: no such object or folder")
        found = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    prefix, base = uri.rstrip("/"), path.rstrip("/")
    keys = sorted(prefix + info.path[len(base):] for info in found
                  if info.type == fs.FileType.File
                  and Path(info.path).suffix.lower() in IMAGE_SUFFIXES)
    return [InputItem(key, key) for key in keys]


def _list_items(path: Path) -> list[InputItem]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        items.append(_entry(text, path, path.parent))
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
            return [_entry(str(value), path, None) for value in table.column(name).to_pylist()]
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
    Encoded bytes (a table's, a remote object's) go through the same checks as a file (size
    limits, EXIF, modes), in memory."""
    from camlens.io.images import read_image

    data = item.data
    if data is None and item.path is not None and uri_scheme(item.path) in REMOTE_SCHEMES:
        data = read_remote(item.path)
    if data is None:
        return read_image(Path(item.path or item.key), max_pixels, max_aspect=max_aspect)
    return read_image(data, max_pixels, max_aspect=max_aspect, name=item.key)


@contextmanager
def _arrow(uri: str, error: type[ValueError], verb: str) -> Iterator[Any]:
    """:mod:`pyarrow.fs` for the block. No pyarrow, or pyarrow failing in the block (an
    unreachable store: OSError; a malformed URI: ArrowInvalid), is ``error`` naming ``uri``."""
    try:
        import pyarrow
        from pyarrow import fs
    except ImportError:
        raise error(f"{uri}: reading {uri_scheme(uri)}:// URIs needs pyarrow (pip install "
                    "'camlens[scale]')") from None
    try:
        yield fs
    except (OSError, pyarrow.ArrowException) as failure:
        raise error(f"{uri}: cannot {verb} it ({failure})") from None


def file_system_of(uri: str):
    """(the :mod:`pyarrow.fs` file system of ``uri``, the object's path in it)."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


def read_remote(uri: str, limit: int | None = None) -> bytes:
    """The bytes of the object at ``uri`` (a :data:`REMOTE_SCHEMES` URI) through
    :mod:`pyarrow.fs`, at most ``limit`` (default :data:`MAX_REMOTE_BYTES`); a missing, odd,
    unreadable or larger object is an :class:`camlens.io.images.ImageFileError` naming it (the
    run reports the input and goes on)."""
    from camlens.io.images import ImageFileError

    limit = MAX_REMOTE_BYTES if limit is None else limit
    with _arrow(uri, ImageFileError, "read") as fs:
        filesystem, path = file_system_of(uri)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            raise ImageFileError(f"{uri}: no such object")
        if info.type != fs.FileType.File:
            raise ImageFileError(f"{uri}: not a file ({info.type.name})")
        if info.size is not None and info.size > limit:
            raise ImageFileError(f"{uri}: {info.size} bytes, more than the {limit} an input "
                                 "may have")
        with filesystem.open_input_stream(path) as stream:
            data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImageFileError(f"{uri}: more than the {limit} bytes an input may have")
    return bytes(data)
