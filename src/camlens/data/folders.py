"""The user's images as a data set: a folder (flat or with class sub-folders), labels from the
sub-folders or a CSV / JSON list, regions from annotations, streamed with decoding in threads.

- :func:`image_folder`: the images under a folder, sorted, and a label per image when the folder
  has the torchvision ``ImageFolder`` layout (``root/CLASS/xxx.png``: every image one level down);
- :func:`read_label_list`: ``file,label`` from a CSV (header ``file,label``) or a JSON list of
  ``{"file": ..., "label": ...}`` or object ``{file: label}``;
- :func:`class_indices`: label names -> the model's class indices (by its class names, as
  numbers, else the sorted order of ``ImageFolder``, said in a note);
- :class:`AnnotatedImages`: an iterable data set of dict items ``{"image": (C, H, W), "label":
  int, "file": str, <region>: bool mask (H, W) or None, "boxes": (N, 4)}`` at the model input's
  size: each image is read with :func:`camlens.io.images.read_image` (size limits, EXIF),
  preprocessed by the model's own ``preprocess``, and its regions follow the preprocessing's
  geometry (:mod:`camlens.data.geometry`). An image that cannot be read, or whose annotations are
  broken or missing, is recorded in ``problems`` (one line naming the file and why) and left out;
  the others go on. At most ``2 * threads`` images are decoded ahead, so a folder of any size
  streams through in constant memory.
"""

from __future__ import annotations

import csv
import json
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from camlens.data.annotations import (
    AnnotationError,
    Annotations,
    RegionRule,
    mask_files,
    normalize_file,
    read_mask,
    region_pixels,
)
from camlens.data.geometry import GeometryError, InputGeometry, probe_geometry

__all__ = ["FILE_COLUMNS", "AnnotatedImages", "ImageEntry", "class_indices", "image_folder",
           "read_cue_list", "read_label_list", "select", "unlisted"]

#: The header names a label list's file column may have.
FILE_COLUMNS = ("file", "filename", "file_name", "image", "path")


@dataclass(frozen=True)
class ImageEntry:
    """One image of a data set: its path relative to the images folder and its label name."""

    file: str
    label: str | None = None


def image_folder(root: str | Path) -> list[ImageEntry]:
    """The image files under ``root`` (walked, sorted); labelled by their sub-folder when every
    image sits exactly one level down (torchvision's ``ImageFolder`` layout)."""
    from camlens.io.images import find_images

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; --images takes a folder of images")
    files = [path.relative_to(root) for path in find_images([root])]
    if not files:
        raise FileNotFoundError(f"{root}: no image files ({', '.join(_suffixes())})")
    by_class = all(len(path.parts) == 2 for path in files)
    return [ImageEntry(path.as_posix(), path.parts[0] if by_class else None) for path in files]


def _suffixes() -> list[str]:
    from camlens.io.images import IMAGE_SUFFIXES

    return sorted(IMAGE_SUFFIXES)


def read_label_list(path: str | Path) -> dict[str, str]:
    """File -> label name from a CSV (a header with ``file`` (or ``filename``, ``image``,
    ``path``) and ``label`` (or ``class``, ``category``)) or a JSON list of ``{"file", "label"}``
    objects or an object ``{file: label}``."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such file; --labels takes a CSV or JSON of file, label")
    labels: dict[str, str] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise AnnotationError(f"{path}: not valid JSON ({error})") from None
        if isinstance(data, dict):
            pairs = list(data.items())
        elif isinstance(data, list) and all(isinstance(e, dict) and "file" in e and "label" in e
                                            for e in data):
            pairs = [(e["file"], e["label"]) for e in data]
        else:
            raise AnnotationError(f"{path}: expected an object {{file: label}} or a list of "
                                  '{"file": ..., "label": ...}')
        for file, label in pairs:
            labels[normalize_file(str(file))] = str(label)
        return labels
    columns, rows = _csv_rows(path)
    file_column = _first(columns, FILE_COLUMNS)
    label_column = _first(columns, ("label", "class", "category"))
    if file_column is None or label_column is None:
        raise AnnotationError(f"{path}: the header {columns} needs a file column (file, "
                              "filename, image or path) and a label column (label, class "
                              "or category)")
    for row in rows:
        file = (row.get(file_column) or "").strip()
        if file:
            labels[normalize_file(file)] = (row.get(label_column) or "").strip()
    return labels


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV's lower-cased header and its rows keyed by it (a byte-order mark is dropped)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        return columns, list(reader)


def _first(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    return next((column for column in wanted if column in columns), None)


def read_cue_list(path: str | Path) -> dict[str, str] | None:
    """File -> the class a suspected cue in the image points at (empty: no cue), from the
    ``cue`` column of a label list (CSV, or the ``"cue"`` of a JSON list's entries); None when
    the list has no such column."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not any(isinstance(e, dict) and "cue" in e
                                                 for e in data):
            return None
        return {normalize_file(str(e["file"])): "" if e.get("cue") is None else str(e["cue"])
                for e in data if isinstance(e, dict) and "file" in e}
    columns, rows = _csv_rows(path)
    file_column = _first(columns, FILE_COLUMNS)
    if file_column is None or "cue" not in columns:
        return None
    return {normalize_file(row[file_column].strip()): (row.get("cue") or "").strip()
            for row in rows if (row.get(file_column) or "").strip()}


def class_indices(names: Sequence[str], class_names: Sequence[str] | None
                  ) -> tuple[dict[str, int], str | None]:
    """(label name -> class index, a note or None). By the model's ``class_names`` when every
    label is one of them; else as numbers when every label is an integer; else the sorted order
    of the names (torchvision's ``ImageFolder`` rule), said in the note."""
    distinct = sorted(set(names))
    if class_names is not None and all(name in class_names for name in distinct):
        positions = {name: index for index, name in enumerate(class_names)}
        return {name: positions[name] for name in distinct}, None
    if all(name.lstrip("-").isdigit() for name in distinct):
        return {name: int(name) for name in distinct}, None
    note = (f"labels {distinct[:5]}{'...' if len(distinct) > 5 else ''} are not the model's class "
            "names: class indices follow their sorted order (torchvision's ImageFolder rule)")
    return {name: index for index, name in enumerate(distinct)}, note


def select(entries: Sequence[ImageEntry], limit: int | None, seed: int = 0) -> list[ImageEntry]:
    """``limit`` entries drawn at random (``random.Random(seed).sample``, then in their folder
    order), or all of them."""
    if limit is None or limit >= len(entries):
        return list(entries)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    chosen = sorted(random.Random(seed).sample(range(len(entries)), limit))
    return [entries[index] for index in chosen]


@dataclass
class _Prepared:
    """One image after reading: its item, or why it was left out."""

    file: str
    item: dict[str, Any] | None = None
    problem: str | None = None


@dataclass
class AnnotatedImages(IterableDataset):
    """The images of a folder with their labels and regions, as items for :func:`camlens.audit.
    audit` and :func:`camlens.evaluation.evaluate` (see the module docstring).

    - ``root``: the images folder; ``entries``: the images to read (:func:`image_folder`,
      :func:`select`); ``preprocess``: PIL picture -> the model's input ``(1, C, H, W)`` or
      ``(C, H, W)`` (a loaded model's own);
    - ``annotations``: boxes and outlines (:mod:`camlens.data.annotations`); ``regions``: the
      named regions to rasterise into each item; ``boxes``: a category (or ``*``) whose boxes
      go into ``item["boxes"]`` ``(N, 4)`` in input pixels;
    - ``masks``: a folder of PNG masks of region ids, ``mask_names`` their names;
    - ``labels``: file -> label name (default: the entries' own, from class sub-folders);
      ``class_to_index``: label name -> class index (:func:`class_indices`); ``cues``: file ->
      the class a suspected cue points at (:func:`read_cue_list`), in ``item["cue"]`` (-1: no
      cue, or none known);
    - ``require_annotation``: an image the annotations do not list is a problem (left out);
      with False it has no regions;
    - ``threads``: decoding threads (0: on the calling thread).
    """

    root: Path
    entries: Sequence[ImageEntry]
    preprocess: Callable[[Any], torch.Tensor]
    annotations: Annotations | None = None
    regions: Sequence[RegionRule] = ()
    boxes: str | None = None
    masks: Path | None = None
    mask_names: Mapping[str, int] | None = None
    labels: Mapping[str, str] | None = None
    class_to_index: Mapping[str, int] | None = None
    cues: Mapping[str, str] | None = None
    require_annotation: bool = True
    threads: int = 2
    max_pixels: int = 40_000_000
    max_aspect: float = 20.0
    problems: list[str] = field(default_factory=list)
    read: int = 0

    def __post_init__(self) -> None:
        super().__init__()
        self.root = Path(self.root)
        self._geometries: OrderedDict[tuple[tuple[int, int], tuple], InputGeometry] = \
            OrderedDict()
        self._lock = threading.Lock()
        self._mask_paths = (mask_files(self.masks, [e.file for e in self.entries])
                            if self.masks is not None else {})
        if self.annotations is not None:
            for rule in self.regions:  # an unknown category is refused before any image
                if rule.kind != "mask":
                    region_pixels(rule, None, (1, 1), categories=self.annotations.categories)
            if self.boxes not in (None, "*") and self.boxes not in self.annotations.categories \
                    and self.boxes not in {s for s in self.annotations.categories.values() if s}:
                raise AnnotationError(f"no category {self.boxes!r} for the boxes; the "
                                      f"annotations have {sorted(self.annotations.categories)}")
        for rule in self.regions:
            if rule.kind == "mask" and self.masks is None:
                raise AnnotationError(f"region {rule} needs a folder of PNG masks (--masks)")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError("AnnotatedImages reads and decodes in its own threads (threads=); "
                               "give it to a DataLoader with num_workers=0 (each worker process "
                               "would read every image, and its problems would be lost)")
        self.read = 0
        if self.annotations is not None:
            self.problems.extend(p for p in self.annotations.problems if p not in self.problems)
        for prepared in self._prepared():
            if prepared.item is None:
                self.problems.append(prepared.problem or f"{prepared.file}: left out")
                continue
            self.read += 1
            yield prepared.item

    def _prepared(self) -> Iterator[_Prepared]:
        if self.threads <= 0:
            for entry in self.entries:
                yield self.prepare(entry)
            return
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="camlens-read")
        pending: list[Future] = []
        source = iter(self.entries)
        try:
            while True:
                while len(pending) < 2 * self.threads:
                    upcoming = next(source, None)
                    if upcoming is None:
                        break
                    pending.append(pool.submit(self.prepare, upcoming))
                if not pending:
                    return
                yield pending.pop(0).result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def prepare(self, entry: ImageEntry) -> _Prepared:
        """Read, check and preprocess one image and its regions (thread-safe)."""
        from camlens.io.images import ImageFileError, read_image

        file = normalize_file(entry.file)
        annotation = None
        if self.annotations is not None:
            if file in self.annotations.bad:
                return _Prepared(file, problem=f"{file}: left out, its annotations are broken "
                                 "(see above)")
            annotation = self.annotations.get(file)
            if annotation is None and self.require_annotation:
                return _Prepared(file, problem=f"{file}: not in the annotations "
                                 f"{self.annotations.source}; left out")
        label_name = (self.labels.get(file) if self.labels is not None else None) or entry.label
        label = -1
        if label_name is not None and self.class_to_index is not None:
            if label_name not in self.class_to_index:
                return _Prepared(file, problem=f"{file}: label {label_name!r} is not one of "
                                 f"the classes {_listed(self.class_to_index)}")
            label = self.class_to_index[label_name]
        cue = -1
        cue_name = self.cues.get(file) if self.cues is not None else None
        if cue_name:
            if self.class_to_index is None or cue_name not in self.class_to_index:
                return _Prepared(file, problem=f"{file}: cue {cue_name!r} is not one of the "
                                 f"classes {_listed(self.class_to_index or {})}")
            cue = self.class_to_index[cue_name]
        try:
            picture = read_image(self.root / file, self.max_pixels, self.max_aspect, name=file)
            size = (picture.height, picture.width)
            if annotation is not None and annotation.width and annotation.height and (
                    annotation.height, annotation.width) != size:
                return _Prepared(file, problem=f"{file}: the annotations say "
                                 f"{annotation.width}x{annotation.height} but the image is "
                                 f"{size[1]}x{size[0]} (EXIF orientation applied); left out")
            tensor = self.preprocess(picture)
            geometry = self._geometry(size, tensor)
            image = tensor[0] if tensor.ndim == 4 and tensor.shape[0] == 1 else tensor
            item: dict[str, Any] = {"image": image, "label": torch.tensor(label), "file": file,
                                    "cue": torch.tensor(cue)}
            ids = None
            if file in self._mask_paths:
                ids = read_mask(self._mask_paths[file], size)
            elif any(rule.kind == "mask" for rule in self.regions):
                return _Prepared(file, problem=f"{file}: no mask "
                                 f"{Path(file).with_suffix('.png').as_posix()} under "
                                 f"{self.masks}; left out")
            for rule in self.regions:
                pixels = region_pixels(rule, annotation, size, mask_ids=ids,
                                       mask_names=self.mask_names)
                item[rule.name] = None if pixels is None else _present(
                    torch.from_numpy(geometry.mask(pixels)))
            if self.boxes is not None:
                chosen = [obj.box for obj in (annotation.objects if annotation else [])
                          if self.boxes in ("*", obj.category, obj.supercategory)]
                mapped = geometry.boxes(np.array(chosen, dtype=np.float64).reshape(-1, 4))
                item["boxes"] = torch.from_numpy(mapped).float()
            return _Prepared(file, item)
        except ImageFileError as error:
            return _Prepared(file, problem=str(error))
        except (GeometryError, AnnotationError) as error:
            raise type(error)(f"{file}: {error}") from None
        except ValueError as error:
            return _Prepared(file, problem=f"{file}: {error}")

    def _geometry(self, size: tuple[int, int], tensor: torch.Tensor) -> InputGeometry:
        """The geometry of the preprocessing on pictures of ``size`` (probed once per size)."""
        key = (size, tuple(tensor.shape))
        with self._lock:
            known = self._geometries.get(key)
        if known is not None:
            return known
        geometry = probe_geometry(self.preprocess, size)
        with self._lock:
            if len(self._geometries) > 256:
                self._geometries.popitem(last=False)
            self._geometries[key] = geometry
        return geometry


def unlisted(annotations: Annotations, entries: Sequence[ImageEntry], root: Path,
             shown: int = 20) -> list[str]:
    """Lines for the files the annotations list that are not among ``entries`` (the whole
    folder): the first ``shown`` by name, then a count."""
    listed = {normalize_file(e.file) for e in entries}
    missing = [file for file in annotations.images if file not in listed]
    lines = [f"{annotations.source}: {file} is annotated but not among the images of {root}"
             for file in missing[:shown]]
    if len(missing) > shown:
        lines.append(f"{annotations.source}: {len(missing) - shown} more annotated files are not "
                     f"among the images of {root}")
    return lines


def _listed(names: Mapping[str, int], shown: int = 12) -> str:
    ordered = sorted(names, key=lambda name: names[name])
    if len(ordered) <= shown:
        return str(ordered)
    return f"{ordered[:shown]} and {len(ordered) - shown} more"


def _present(mask: torch.Tensor) -> torch.Tensor | None:
    return mask if bool(mask.any()) else None
