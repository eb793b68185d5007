"""Read the user's annotations: boxes and regions from COCO JSON, Pascal VOC XML, CSV, PNG masks.

Every reader gives an :class:`Annotations`: per image file (its path relative to the images
folder, ``/``-separated), its objects (:class:`AnnotatedObject`: a category, a box, polygons or a
COCO RLE), and ``problems``: one line per image or annotation that could not be used, naming the
file, the entry and what is accepted. A bad entry costs only its image (listed in ``bad``, left
out of the run), never the whole file.

Coordinates are pixels of the image file, ``(x0, y0, x1, y1)`` with ``x1`` and ``y1`` exclusive
(the convention of :mod:`camlens.metrics.localization`):

- COCO (Lin et al., ECCV 2014; cocodataset.org/#format-data): ``bbox`` is ``[x, y, width,
  height]``; ``segmentation`` is a list of polygons ``[x0, y0, x1, y1, ...]`` (rasterised with
  Pillow) or an RLE ``{"size": [h, w], "counts": ...}``, uncompressed (a list) or compressed (a
  string, decoded here: :func:`decode_rle`, no pycocotools needed);
- Pascal VOC (Everingham et al., IJCV 2010): one XML per image; ``bndbox`` ``xmin..xmax`` and
  ``ymin..ymax`` are 1-based and inclusive, so ``x0 = xmin - 1``, ``x1 = xmax``;
- CSV: a header row with ``file`` (or ``filename``, ``image``, ``path``), a category column
  (``category``, ``label``, ``class`` or ``name``; optional) and a box as ``x0,y0,x1,y1``,
  ``xmin,ymin,xmax,ymax`` or ``x,y,width,height``; one row per box;
- PNG masks (:func:`mask_files`): one single-channel PNG per image (same relative path and stem
  under a masks folder), each pixel the id of its region (0: none); ids are named by a JSON file
  ``{"1": "dog", "2": "watermark"}`` or used as numbers.

Named regions (:func:`parse_region`): ``NAME=category:CAT`` (the objects of a category or
supercategory; their segmentation where they have one, else their boxes), ``NAME=box:CAT`` (their
boxes only), ``NAME=mask:ID`` (a mask id or its name), with ``*`` for every object.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

__all__ = ["AnnotatedObject", "AnnotationError", "Annotations", "ImageAnnotation",
           "REGION_KINDS", "RegionRule", "decode_rle", "encode_rle", "mask_files",
           "parse_region", "polygon_mask", "read_annotations", "read_box_csv", "read_coco",
           "read_mask_ids", "read_voc", "region_pixels"]

#: The kinds of region a ``NAME=KIND:VALUE`` spec can name.
REGION_KINDS = ("category", "box", "mask")


class AnnotationError(ValueError):
    """An annotation file (or a region spec) cannot be used at all; the message names it and says
    what is accepted. Problems of single images are not errors: see ``Annotations.problems``."""


@dataclass(frozen=True)
class AnnotatedObject:
    """One annotated object of an image: its category, box and, when given, its outline."""

    category: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels, ends exclusive
    supercategory: str | None = None
    polygons: tuple[tuple[float, ...], ...] = ()  # COCO polygons x0, y0, x1, y1, ...
    rle: Mapping[str, Any] | None = None  # COCO RLE {"size": [h, w], "counts": ...}

    @property
    def has_outline(self) -> bool:
        return bool(self.polygons) or self.rle is not None


@dataclass
class ImageAnnotation:
    """What the annotations say about one image file."""

    file: str  # relative to the images folder, "/"-separated
    width: int | None = None
    height: int | None = None
    objects: list[AnnotatedObject] = field(default_factory=list)


@dataclass
class Annotations:
    """The annotations of a data set: ``images`` by relative file, the ``problems`` met (one line
    each) and the ``bad`` files (a problem made them unusable: left out)."""

    source: str
    images: dict[str, ImageAnnotation] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    bad: set[str] = field(default_factory=set)
    categories: dict[str, str | None] = field(default_factory=dict)  # name -> supercategory

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, file: str) -> ImageAnnotation:
        return self.images[normalize_file(file)]

    def get(self, file: str) -> ImageAnnotation | None:
        return self.images.get(normalize_file(file))

    def problem(self, file: str | None, message: str) -> None:
        """Record a problem; ``file`` is left out of the run."""
        self.problems.append(f"{self.source}: {message}")
        if file is not None:
            self.bad.add(normalize_file(file))


def normalize_file(file: str) -> str:
    """A file name as the annotations key it: relative, ``/``-separated, without ``./``."""
    return str(PurePosixPath(str(file).replace("\\", "/"))).lstrip("/")


# --- COCO ----------------------------------------------------------------------------------------


def read_coco(path: str | Path) -> Annotations:
    """The boxes and outlines of a COCO JSON file (see the module docstring); crowd annotations
    (``iscrowd: 1``) count like the others."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations", []), list):
        raise AnnotationError(f"{path}: not a COCO file; expected an object with lists 'images' "
                              "and 'annotations' (and 'categories')")
    result = Annotations(str(path))
    categories: dict[Any, tuple[str, str | None]] = {}
    for entry in data.get("categories", []) or []:
        if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
            result.problem(None, f"category {entry!r} has no 'id' and 'name'; ignored")
            continue
        categories[entry["id"]] = (str(entry["name"]), _optional_str(entry.get("supercategory")))
        result.categories[str(entry["name"])] = _optional_str(entry.get("supercategory"))
    files: dict[Any, str] = {}
    for number, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(
                entry.get("file_name"), str):
            result.problem(None, f"image entry {number} {_short(entry)} has no 'id' and "
                           "'file_name'; ignored")
            continue
        file = normalize_file(entry["file_name"])
        if not _safe_relative(file):
            result.problem(None, f"image entry {number}: file_name {entry['file_name']!r} "
                           "leaves the images folder; ignored")
            continue
        files[entry["id"]] = file
        result.images[file] = ImageAnnotation(file, _int_or_none(entry.get("width")),
                                              _int_or_none(entry.get("height")))
    for number, entry in enumerate(data.get("annotations", [])):
        if not isinstance(entry, dict):
            result.problem(None, f"annotation {number} is {type(entry).__name__}, not an object")
            continue
        identifier = entry.get("id", number)
        found = files.get(entry.get("image_id"))
        if found is None:
            result.problem(None, f"annotation {identifier}: image_id {entry.get('image_id')!r} "
                           "is not in 'images'; ignored")
            continue
        file = found
        if entry.get("category_id") not in categories:
            result.problem(file, f"annotation {identifier} ({file}): category_id "
                           f"{entry.get('category_id')!r} is not in 'categories' "
                           f"({sorted(categories, key=str)})")
            continue
        name, supercategory = categories[entry["category_id"]]
        try:
            box = _coco_box(entry.get("bbox"))
            polygons, rle = _coco_segmentation(entry.get("segmentation"))
        except ValueError as error:
            result.problem(file, f"annotation {identifier} ({file}): {error}")
            continue
        if box is None:
            if rle is not None:
                box = _mask_box(decode_rle(rle))
            elif polygons:
                xs = [v for polygon in polygons for v in polygon[0::2]]
                ys = [v for polygon in polygons for v in polygon[1::2]]
                box = (min(xs), min(ys), max(xs), max(ys))
            if box is None:
                result.problem(file, f"annotation {identifier} ({file}): no 'bbox' and no "
                               "segmentation; expected bbox [x, y, width, height]")
                continue
        result.images[file].objects.append(AnnotatedObject(name, box, supercategory, polygons,
                                                           rle))
    return result


def _coco_box(value: Any) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(
            _finite(v) for v in value):
        raise ValueError(f"bbox {_short(value)} is not [x, y, width, height] (4 finite numbers)")
    x, y, width, height = (float(v) for v in value)
    if width < 0 or height < 0:
        raise ValueError(f"bbox {value} has a negative width or height; expected [x, y, width, "
                         "height]")
    return (x, y, x + width, y + height)


def _coco_segmentation(value: Any) -> tuple[tuple[tuple[float, ...], ...], dict | None]:
    if value is None or value == []:
        return (), None
    if isinstance(value, dict):
        _check_rle(value)
        return (), value
    if isinstance(value, list):
        polygons = []
        for polygon in value:
            if not isinstance(polygon, (list, tuple)) or len(polygon) < 6 or len(polygon) % 2 or \
                    not all(_finite(v) for v in polygon):
                raise ValueError(f"segmentation polygon {_short(polygon)} is not [x0, y0, x1, y1, "
                                 "...] (an even count of at least 6 finite numbers)")
            polygons.append(tuple(float(v) for v in polygon))
        return tuple(polygons), None
    raise ValueError(f"segmentation {_short(value)} is neither a list of polygons nor an RLE "
                     "{'size': [h, w], 'counts': ...}")


def _check_rle(rle: Mapping[str, Any]) -> None:
    size = rle.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"RLE size {size!r} is not [height, width]")
    if not isinstance(rle.get("counts"), (list, str, bytes)):
        raise ValueError("RLE counts must be a list of run lengths or a compressed string")


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The boolean mask ``(h, w)`` of a COCO run-length encoding.

    Runs alternate between 0 and 1, starting with 0, over the pixels in column-major order (down
    the first column, then the next). ``counts`` is the list of run lengths (uncompressed RLE) or
    the compressed string of the COCO API (``maskApi.c``, ``rleFrString``): each count is written
    in 5-bit groups, ``chr(48 + group)``, bit 5 set while more groups follow, bit 4 of the last
    group the sign; from the third count on, each is stored as its difference to the count two
    before.
    """
    _check_rle(rle)
    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = _string_counts(counts)
    if any(not isinstance(c, int) or c < 0 for c in counts):
        raise ValueError("RLE counts must be non-negative integers")
    if sum(counts) != height * width:
        raise ValueError(f"RLE counts add up to {sum(counts)} pixels, not {height} x {width} = "
                         f"{height * width}")
    values = np.zeros(height * width, dtype=bool)
    position = 0
    for index, count in enumerate(counts):
        if index % 2:
            values[position:position + count] = True
        position += count
    return values.reshape(width, height).T


def _string_counts(text: str) -> list[int]:
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("compressed RLE string ends inside a count")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"compressed RLE string has an invalid character "
                                 f"{text[position]!r}")
            value |= (group & 0x1F) << (5 * shift)
            more = bool(group & 0x20)
            position += 1
            shift += 1
            if not more and group & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode_rle(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    """The COCO RLE of a boolean mask ``(h, w)`` (the inverse of :func:`decode_rle`), with the
    counts compressed into a string (``compressed``) or as a list."""
    mask = np.asarray(mask, dtype=bool)
    flat = mask.T.reshape(-1)
    counts: list[int] = []
    current, run = False, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = bool(value), 1
    counts.append(run)
    size = [int(mask.shape[0]), int(mask.shape[1])]
    if not compressed:
        return {"size": size, "counts": counts}
    characters = []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = not ((value == 0 and not group & 0x10) or (value == -1 and group & 0x10))
            if more:
                group |= 0x20
            characters.append(chr(group + 48))
    return {"size": size, "counts": "".join(characters)}


def polygon_mask(polygons: Iterable[Iterable[float]], size: tuple[int, int]) -> np.ndarray:
    """The boolean mask ``(H, W)`` of the union of polygons ``[x0, y0, x1, y1, ...]`` (image
    pixels): a pixel is inside when its centre ``(x + 0.5, y + 0.5)`` is (even-odd rule), the
    rule of :func:`camlens.metrics.box_masks`, so the square polygon of a box gives the box's
    pixels exactly."""
    height, width = size
    mask = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        points = np.asarray(list(polygon), dtype=np.float64).reshape(-1, 2)
        x_low = max(0, int(np.floor(points[:, 0].min())))
        x_high = min(width, int(np.ceil(points[:, 0].max())) + 1)
        y_low = max(0, int(np.floor(points[:, 1].min())))
        y_high = min(height, int(np.ceil(points[:, 1].max())) + 1)
        if x_low >= x_high or y_low >= y_high:
            continue
        xs = np.arange(x_low, x_high) + 0.5
        ys = np.arange(y_low, y_high)[:, None] + 0.5
        inside = np.zeros((y_high - y_low, x_high - x_low), dtype=bool)
        for (ax, ay), (bx, by) in zip(points, np.roll(points, -1, axis=0), strict=True):
            if ay == by:
                continue
            crosses = (ay > ys) != (by > ys)  # (h, 1): the edge spans the row's centre
            x_cross = ax + (ys - ay) * (bx - ax) / (by - ay)
            inside ^= crosses & (xs[None, :] < x_cross)
        mask[y_low:y_high, x_low:x_high] |= inside
    return mask


# --- Pascal VOC ----------------------------------------------------------------------------------


def read_voc(path: str | Path) -> Annotations:
    """The boxes of Pascal VOC XML files: a folder of ``*.xml`` (walked) or one file (see the
    module docstring). The image is the XML's ``<filename>``, under its ``<folder>`` when the XML
    file itself sits in a sub-folder of ``path`` (else as named). Files with a DOCTYPE or an
    entity declaration are refused (XML entity expansion)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.xml"))
        root = path
        if not files:
            raise AnnotationError(f"{path}: no .xml files; expected Pascal VOC annotations")
    elif path.is_file():
        files, root = [path], path.parent
    else:
        raise AnnotationError(f"{path}: no such file or folder")
    result = Annotations(str(path))
    for xml_file in files:
        relative = xml_file.relative_to(root).as_posix()
        try:
            annotation = _voc_file(xml_file, relative)
        except ValueError as error:
            result.problem(None, f"{relative}: {error}")
            continue
        if annotation.file in result.images:
            result.problem(annotation.file, f"{relative}: {annotation.file} is annotated twice")
            continue
        result.images[annotation.file] = annotation
        for obj in annotation.objects:
            result.categories.setdefault(obj.category, None)
    return result


def _voc_file(xml_file: Path, relative: str) -> ImageAnnotation:
    import xml.etree.ElementTree as ElementTree

    text = xml_file.read_bytes()
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:
        raise ValueError("has a DOCTYPE or ENTITY declaration; refused (XML entity expansion)")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise ValueError(f"not well-formed XML ({error})") from None
    name = (root.findtext("filename") or "").strip()
    if not name:
        raise ValueError("no <filename>; expected a Pascal VOC annotation")
    parent = PurePosixPath(relative).parent
    file = normalize_file(str(parent / name)) if str(parent) != "." else normalize_file(name)
    if not _safe_relative(file):
        raise ValueError(f"<filename> {name!r} leaves the images folder")
    width = _int_or_none(root.findtext("size/width"))
    height = _int_or_none(root.findtext("size/height"))
    annotation = ImageAnnotation(file, width, height)
    for number, element in enumerate(root.iter("object")):
        category = (element.findtext("name") or "").strip()
        values = [element.findtext(f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax")]
        try:
            xmin, ymin, xmax, ymax = (float(v) for v in values)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"object {number} ({category or 'no name'}): bndbox {values} is "
                             "not four numbers xmin, ymin, xmax, ymax") from None
        if not category:
            raise ValueError(f"object {number}: no <name>")
        if xmax < xmin or ymax < ymin or not all(map(math.isfinite, (xmin, ymin, xmax, ymax))):
            raise ValueError(f"object {number} ({category}): bndbox ({xmin:g}, {ymin:g}, "
                             f"{xmax:g}, {ymax:g}) has xmax < xmin or ymax < ymin")
        annotation.objects.append(AnnotatedObject(category, (xmin - 1, ymin - 1, xmax, ymax)))
    return annotation


# --- CSV -----------------------------------------------------------------------------------------

_FILE_COLUMNS = ("file", "filename", "file_name", "image", "path")
_CATEGORY_COLUMNS = ("category", "label", "class", "name")
_BOX_COLUMNS = (("x0", "y0", "x1", "y1"), ("xmin", "ymin", "xmax", "ymax"),
                ("x", "y", "width", "height"), ("x", "y", "w", "h"))


def read_box_csv(path: str | Path) -> Annotations:
    """The boxes of a CSV file, one row per box (see the module docstring)."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read ({error.strerror or error})") from None
    result = Annotations(str(path))
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        file_column = next((c for c in _FILE_COLUMNS if c in columns), None)
        box_columns = next((names for names in _BOX_COLUMNS if set(names) <= set(columns)), None)
        if file_column is None or box_columns is None:
            raise AnnotationError(
                f"{path}: the header {columns} lacks a file column ({' / '.join(_FILE_COLUMNS)}) "
                "or a box (x0,y0,x1,y1 / xmin,ymin,xmax,ymax / x,y,width,height)")
        category_column = next((c for c in _CATEGORY_COLUMNS if c in columns), None)
        for line, row in enumerate(reader, start=2):
            file = normalize_file((row.get(file_column) or "").strip())
            if not file or not _safe_relative(file):
                result.problem(None, f"line {line}: file {row.get(file_column)!r} is empty or "
                               "leaves the images folder; ignored")
                continue
            annotation = result.images.setdefault(file, ImageAnnotation(file))
            try:
                values = [float(row[c]) for c in box_columns]
            except (TypeError, ValueError):
                result.problem(file, f"line {line} ({file}): box "
                               f"{[row.get(c) for c in box_columns]} is not four numbers "
                               f"{', '.join(box_columns)}")
                continue
            if box_columns[2] in ("width", "w"):
                values[2] += values[0]
                values[3] += values[1]
            if not all(map(math.isfinite, values)) or values[2] < values[0] or \
                    values[3] < values[1]:
                result.problem(file, f"line {line} ({file}): box {values} has x1 < x0 or "
                               "y1 < y0 (or is not finite)")
                continue
            category = (row.get(category_column) or "").strip() if category_column else ""
            category = category or "object"
            result.categories.setdefault(category, None)
            annotation.objects.append(AnnotatedObject(category, tuple(values)))  # type: ignore[arg-type]
    return result


# --- any of them ---------------------------------------------------------------------------------


def read_annotations(path: str | Path) -> Annotations:
    """COCO (``.json``), Pascal VOC (``.xml`` or a folder of them) or CSV (``.csv``) boxes, by
    the path's form; anything else is an :class:`AnnotationError` listing the accepted forms."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: no such file or folder; expected a COCO .json, a Pascal "
                              "VOC .xml (or a folder of them) or a .csv of boxes")
    if path.is_dir() or path.suffix.lower() == ".xml":
        return read_voc(path)
    if path.suffix.lower() == ".json":
        return read_coco(path)
    if path.suffix.lower() == ".csv":
        return read_box_csv(path)
    raise AnnotationError(f"{path}: unknown annotation format {path.suffix!r}; expected a COCO "
                          ".json, a Pascal VOC .xml (or a folder of them) or a .csv of boxes")


# --- PNG masks -----------------------------------------------------------------------------------


def read_mask_ids(path: str | Path) -> dict[str, int]:
    """Region names -> ids from a JSON object ``{"1": "dog", "2": "watermark"}`` (id -> name)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object of mask id -> region name, for "
                              'example {"1": "dog", "2": "watermark"}')
    names: dict[str, int] = {}
    for key, value in data.items():
        try:
            identifier = int(key)
        except ValueError:
            raise AnnotationError(f"{path}: {key!r} is not a mask id (an integer 1..65535)"
                                  ) from None
        if not 0 < identifier < 65536 or not isinstance(value, str):
            raise AnnotationError(f"{path}: entry {key!r}: {value!r}; expected an id 1..65535 "
                                  "and a region name")
        names[value] = identifier
    return names


def mask_files(folder: str | Path, files: Iterable[str]) -> dict[str, Path]:
    """For each image file (relative path), its mask: ``folder/<same path, suffix .png>`` when
    it exists."""
    folder = Path(folder)
    found = {}
    for file in files:
        candidate = folder / PurePosixPath(file).with_suffix(".png")
        if candidate.is_file():
            found[file] = candidate
    return found


def read_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The region ids ``(H, W)`` of a PNG mask (mode L, P, I or I;16; palette indices are ids);
    ``ValueError`` naming the file when it is not one, or not of ``size = (H, W)``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            if picture.mode not in ("1", "L", "P", "I", "I;16", "I;16L", "I;16B"):
                raise ValueError(f"{path}: mask mode {picture.mode}; expected one channel of "
                                 "region ids (L, P, I or I;16)")
            if picture.width * picture.height > 40_000_000:
                raise ValueError(f"{path}: {picture.width}x{picture.height} is over the limit of "
                                 "40,000,000 pixels")
            ids = np.asarray(picture).astype(np.int64)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image Pillow can read") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the mask ({error})") from None
    if size is not None and ids.shape != tuple(size):
        raise ValueError(f"{path}: the mask is {ids.shape[1]}x{ids.shape[0]} but the image "
                         f"{size[1]}x{size[0]}")
    return ids


# --- named regions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionRule:
    """One named region: ``kind`` (category, box or mask) and ``value`` (a category name or
    ``*``; a mask id or name)."""

    name: str
    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}={self.kind}:{self.value}"


def parse_region(text: str) -> RegionRule:
    """``NAME=KIND:VALUE`` (see the module docstring) as a :class:`RegionRule`."""
    name, equals, spec = str(text).partition("=")
    kind, colon, value = spec.partition(":")
    name, kind, value = name.strip(), kind.strip().lower(), value.strip()
    if not equals or not colon or not name or not value or kind not in REGION_KINDS:
        raise AnnotationError(
            f"region {text!r} is not NAME=KIND:VALUE with KIND one of {', '.join(REGION_KINDS)}; "
            "for example object=category:dog, object=box:*, cue=mask:watermark or cue=mask:2")
    return RegionRule(name, kind, value)


def region_pixels(rule: RegionRule, annotation: ImageAnnotation | None,
                  size: tuple[int, int], *, mask_ids: np.ndarray | None = None,
                  mask_names: Mapping[str, int] | None = None,
                  categories: Mapping[str, str | None] | None = None) -> np.ndarray | None:
    """The boolean mask ``(H, W)`` (image pixels, ``size = (H, W)``) of ``rule`` on one image, or
    None when the image has no such region. ``mask_ids``: the image's PNG mask of ids;
    ``mask_names``: region name -> id; ``categories``: the known categories (name ->
    supercategory), to refuse a category no image has."""
    height, width = size
    if rule.kind == "mask":
        if mask_ids is None:
            return None
        if rule.value.isdigit():
            identifier = int(rule.value)
        elif mask_names and rule.value in mask_names:
            identifier = mask_names[rule.value]
        else:
            raise AnnotationError(f"region {rule}: {rule.value!r} is neither a mask id nor a "
                                  f"named id; named ids: {sorted(mask_names or {})}")
        mask = mask_ids == identifier
        return mask if mask.any() else None
    if categories is not None and rule.value != "*" and rule.value not in categories and \
            rule.value not in {s for s in categories.values() if s}:
        raise AnnotationError(f"region {rule}: no category or supercategory {rule.value!r}; the "
                              f"annotations have {sorted(categories)}")
    if annotation is None:
        return None
    chosen = [obj for obj in annotation.objects
              if rule.value in ("*", obj.category) or rule.value == obj.supercategory]
    if not chosen:
        return None
    mask = np.zeros((height, width), dtype=bool)
    for obj in chosen:
        if rule.kind == "category" and obj.rle is not None:
            outline = decode_rle(obj.rle)
            if outline.shape != (height, width):
                raise ValueError(f"{annotation.file}: an RLE of {obj.category} is "
                                 f"{outline.shape[1]}x{outline.shape[0]} but the image "
                                 f"{width}x{height}")
            mask |= outline
        elif rule.kind == "category" and obj.polygons:
            mask |= polygon_mask(obj.polygons, size)
        else:
            mask |= _box_mask(obj.box, size)
    return mask if mask.any() else None


def _box_mask(box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies in the box (as :func:`camlens.metrics.box_masks`)."""
    height, width = size
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    inside_x = (xs >= box[0]) & (xs < box[2])
    inside_y = (ys >= box[1]) & (ys < box[3])
    return inside_y[:, None] & inside_x[None, :]


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


# --- small helpers -------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: cannot read ({error})") from None
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}: not valid JSON ({error})") from None


def _safe_relative(file: str) -> bool:
    parts = PurePosixPath(file).parts
    return bool(parts) and ".." not in parts and not PurePosixPath(file).is_absolute() and \
        ":" not in parts[0]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
