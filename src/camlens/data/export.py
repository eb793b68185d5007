"""Write the shipped digit data sets as a user's annotated folder: PNG images and COCO JSON.

So the folder commands (``camlens audit --images``, ``camlens evaluate``) can be tried offline
in a minute, on data whose answer is known:

- :func:`export_biased_digits`: test images of :class:`~camlens.data.BiasedDigits` (the mark at a
  random border spot) in class sub-folders, ``annotations.json`` (COCO: each digit's box and its
  ink as a compressed RLE, category ``"0"``..``"9"`` of supercategory ``digit``; the mark's box
  and square polygon, category ``mark`` of supercategory ``cue``), ``masks/`` (PNG region ids:
  1 the digit's ink, 2 the mark) with ``mask_ids.json``, and the counterfactual variants as
  folders of the same files: ``no-mark/`` (the mark removed), ``flipped/`` (at another class's
  spot), ``aligned/`` (at the label's spot), with ``labels.csv``, ``labels-no-mark.csv``, ...
  (``file,label,cue``: the cue is the class whose spot holds the mark, empty without one);
- :func:`export_cluttered_digits`: test images of :class:`~camlens.data.ClutteredDigits` in class
  sub-folders and ``boxes.json`` (COCO boxes of the digits).

Images are 8-bit grey PNGs (``round(255 * value)``), so the model sees the generated values to
within 1/510.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from camlens.data.annotations import encode_rle
from camlens.data.digits import CLASS_NAMES, BiasedDigits, ClutteredDigits

__all__ = ["EXPORTS", "export_biased_digits", "export_cluttered_digits", "to_png"]

#: The variants written next to ``images/`` by :func:`export_biased_digits`: folder -> mark.
BIASED_VARIANTS = {"no-mark": "none", "flipped": "flipped", "aligned": "aligned"}


def to_png(image: Any, path: Path) -> None:
    """Write a ``(1, H, W)`` tensor in [0, 1] as an 8-bit grey PNG."""
    from PIL import Image

    values = np.asarray(image.detach().cpu().numpy()[0], dtype=np.float64)
    Image.fromarray((values.clip(0, 1) * 255).round().astype(np.uint8)).save(path)


def _file(index: int, label: int) -> str:
    return f"{CLASS_NAMES[label]}/{index:05d}.png"


def _cue_row(file: str, label: int, item: dict[str, Any]) -> str:
    cue = int(item["mark_class"])
    return f"{file},{CLASS_NAMES[label]},{CLASS_NAMES[cue] if cue >= 0 else ''}\n"


def _categories(extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    digits = [{"id": label + 1, "name": name, "supercategory": "digit"}
              for label, name in enumerate(CLASS_NAMES)]
    return digits + extra


def _coco_box(box: Any) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def _empty_folder(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; export into a new folder")
    folder.mkdir(parents=True, exist_ok=True)


def export_biased_digits(folder: str | Path, size: int = 200, seed: int = 0,
                         progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write the biased-digits test folder (see the module docstring); returns what was written:
    ``{"images": n, "folder": ..., "annotations": ..., "variants": {...}}``."""
    from PIL import Image

    folder = Path(folder)
    _empty_folder(folder)
    data = BiasedDigits(size, "test", seed, mark="random")
    variants = {name: BiasedDigits(size, "test", seed, mark=mark)
                for name, mark in BIASED_VARIANTS.items()}
    images, annotations = [], []
    cues: dict[str, list[str]] = {name: [] for name in ("images", *variants)}
    (folder / "masks").mkdir()
    for index in range(size):
        item = data[index]
        label = int(item["label"])
        file = _file(index, label)
        for sub in ("images", "masks", *variants):
            (folder / sub / CLASS_NAMES[label]).mkdir(parents=True, exist_ok=True)
        to_png(item["image"], folder / "images" / file)
        cues["images"].append(_cue_row(file, label, item))
        for name, variant in variants.items():
            variant_item = variant[index]
            to_png(variant_item["image"], folder / name / file)
            cues[name].append(_cue_row(file, label, variant_item))
        height, width = item["image"].shape[-2:]
        images.append({"id": index + 1, "file_name": file, "width": int(width),
                       "height": int(height), "label": CLASS_NAMES[label]})
        x0, y0, x1, y1 = (int(v) for v in item["box"])
        ink = np.zeros((height, width), dtype=bool)
        ink[y0:y1, x0:x1] = item["image"][0, y0:y1, x0:x1].numpy() > 0.1
        annotations.append({"id": 2 * index + 1, "image_id": index + 1, "category_id": label + 1,
                            "bbox": _coco_box(item["box"]), "area": int(ink.sum()),
                            "segmentation": encode_rle(ink), "iscrowd": 0})
        mx0, my0, mx1, my1 = (float(v) for v in item["mark_box"])
        annotations.append({"id": 2 * index + 2, "image_id": index + 1, "category_id": 11,
                            "bbox": _coco_box(item["mark_box"]),
                            "area": (mx1 - mx0) * (my1 - my0),
                            "segmentation": [[mx0, my0, mx1, my0, mx1, my1, mx0, my1]],
                            "iscrowd": 0})
        ids = np.zeros((height, width), dtype=np.uint8)
        ids[ink] = 1
        ids[int(my0):int(my1), int(mx0):int(mx1)] = 2
        Image.fromarray(ids).save(folder / "masks" / file)
        if progress is not None:
            progress(1)
    coco = {"info": {"description": f"camlens biased-digits test split, {size} images, seed "
                     f"{seed}, mark at a random border spot (camlens data export)"},
            "images": images, "annotations": annotations,
            "categories": _categories([{"id": 11, "name": "mark", "supercategory": "cue"}])}
    (folder / "annotations.json").write_text(json.dumps(coco))
    (folder / "mask_ids.json").write_text(json.dumps({"1": "digit", "2": "mark"}, indent=1))
    for name, rows in cues.items():
        target = folder / ("labels.csv" if name == "images" else f"labels-{name}.csv")
        target.write_text("file,label,cue\n" + "".join(rows))
    return {"images": size, "folder": str(folder), "annotations": str(folder / "annotations.json"),
            "variants": {name: str(folder / name) for name in variants}}


def export_cluttered_digits(folder: str | Path, size: int = 200, seed: int = 0,
                            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write the cluttered-digits test folder (see the module docstring)."""
    folder = Path(folder)
    _empty_folder(folder)
    data = ClutteredDigits(size, "test", seed)
    images, annotations = [], []
    for index in range(size):
        item = data[index]
        label = int(item["label"])
        file = _file(index, label)
        (folder / "images" / CLASS_NAMES[label]).mkdir(parents=True, exist_ok=True)
        to_png(item["image"], folder / "images" / file)
        height, width = item["image"].shape[-2:]
        images.append({"id": index + 1, "file_name": file, "width": int(width),
                       "height": int(height), "label": CLASS_NAMES[label]})
        annotations.append({"id": index + 1, "image_id": index + 1, "category_id": label + 1,
                            "bbox": _coco_box(item["box"]), "iscrowd": 0})
        if progress is not None:
            progress(1)
    coco = {"info": {"description": f"camlens cluttered-digits test split, {size} images, seed "
                     f"{seed} (camlens data export)"},
            "images": images, "annotations": annotations, "categories": _categories([])}
    (folder / "boxes.json").write_text(json.dumps(coco))
    return {"images": size, "folder": str(folder), "annotations": str(folder / "boxes.json")}


#: ``camlens data export NAME``: name -> (writer, what it writes).
EXPORTS: dict[str, tuple[Callable[..., dict[str, Any]], str]] = {
    "biased-digits": (export_biased_digits, "images/ (class sub-folders), annotations.json "
                      "(COCO: digit and mark boxes, RLE and polygon), masks/ + mask_ids.json, "
                      "variants no-mark/, flipped/, aligned/, labels*.csv (file,label,cue)"),
    "cluttered-digits": (export_cluttered_digits, "images/ (class sub-folders), boxes.json "
                         "(COCO boxes of the digits)"),
}
