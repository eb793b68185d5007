"""Offline data sets built from what installed packages ship (scikit-learn's digits), and the
user's own annotated images: :mod:`~camlens.data.annotations` (COCO, Pascal VOC, CSV, PNG masks),
:mod:`~camlens.data.folders` (image folders, label lists, the streamed :class:`AnnotatedImages`),
:mod:`~camlens.data.geometry` (regions follow the model's preprocessing) and
:mod:`~camlens.data.export` (the digit data sets written as such a folder)."""

from camlens.data.annotations import (
    Annotations,
    parse_region,
    read_annotations,
    read_box_csv,
    read_coco,
    read_voc,
)
from camlens.data.digits import (
    CLASS_NAMES,
    BiasedDigits,
    ClutteredDigits,
    DigitCanvasConfig,
    DigitScenes,
    materialize,
    source_digits,
)
from camlens.data.folders import AnnotatedImages, image_folder, read_label_list

__all__ = [
    "CLASS_NAMES",
    "AnnotatedImages",
    "Annotations",
    "BiasedDigits",
    "ClutteredDigits",
    "DigitCanvasConfig",
    "DigitScenes",
    "image_folder",
    "materialize",
    "parse_region",
    "read_annotations",
    "read_box_csv",
    "read_coco",
    "read_label_list",
    "read_voc",
    "source_digits",
]
