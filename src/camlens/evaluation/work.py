"""The per-image work of an evaluation: one function any engine maps over batches.

:func:`evaluate_batch` takes a batch of inputs with their labels and ground-truth boxes, explains
it with every method of an :class:`~camlens.evaluation.protocol.EvaluationSpec` (the predicted
class's maps and the true class's), and returns one :class:`ImageRow` per input and method: the
metric values of that image alone (:mod:`camlens.evaluation.protocol`). Every value is the
image's own, whatever batch it came in (the perturbation orders and ROAD's noise are drawn from
the spec's seed, the same for every image), so batches can be cut, spread over workers and their
rows concatenated; :func:`camlens.evaluation.table.reduce_rows` turns the rows into the table.

A method that refuses the model (``cam`` without a global-average-pooled head) gives rows with
its ``error``; the table says "refused" with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from camlens.api import explain
from camlens.evaluation.protocol import (
    EvaluationSpec,
    faithfulness_values,
    localization_values,
    maxbox_values,
    road_values,
)
from camlens.model_state import model_device
from camlens.targets import predicted_classes

__all__ = ["EvaluationBatch", "ImageRow", "evaluate_batch", "pad_boxes"]

#: What a method may raise on a model it cannot explain (the rows say so).
METHOD_ERRORS = (ValueError, TypeError, RuntimeError, IndexError)


@dataclass
class EvaluationBatch:
    """Inputs ``(B, C, H, W)`` as the model takes them, ``labels (B,)`` (-1: none), the
    ground-truth ``boxes`` of each input ``(N_i, 4)`` in input pixels, and their ``names``."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: Sequence[torch.Tensor]
    names: Sequence[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class ImageRow:
    """The values of one method on one image (NaN where a metric does not apply: no box, no
    label), or the method's ``error``."""

    name: str
    method: str
    label: int
    prediction: int
    values: dict[str, float] = field(default_factory=dict)
    box_hits: torch.Tensor | None = None  # (T,) bool: MaxBoxAcc's hits at each threshold
    error: str | None = None


def pad_boxes(boxes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes ``(B, M, 4)`` padded with ``(0, 0, 0, 0)``, which never hits; ``(B,)`` whether an
    input has a box with area)."""
    count = max([len(b) for b in boxes] + [1])
    padded = torch.zeros(len(boxes), count, 4)
    present = torch.zeros(len(boxes), dtype=torch.bool)
    for row, box in enumerate(boxes):
        box = torch.as_tensor(box, dtype=torch.float32).reshape(-1, 4)
        keep = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
        box = box[keep]
        padded[row, :len(box)] = box
        present[row] = len(box) > 0
    return padded, present


def evaluate_batch(model: nn.Module, spec: EvaluationSpec, batch: EvaluationBatch
                   ) -> list[ImageRow]:
    """The :class:`ImageRow` of every input and method of ``batch`` (see the module docstring),
    method by method, inputs in order. The model runs where its parameters are."""
    device = model_device(model)
    images = batch.images if device is None else batch.images.to(device)
    output_fn = spec.options.get("output_fn")
    predicted = predicted_classes(model, images, output_fn).to(images.device)
    labels = batch.labels.to(images.device).long()
    labelled = labels >= 0
    true_targets = torch.where(labelled, labels, predicted)
    boxes, has_box = pad_boxes(batch.boxes)
    boxes, has_box = boxes.to(images.device), has_box.to(images.device)
    rows: list[ImageRow] = []
    for method in spec.methods:
        base = [ImageRow(str(name), method, int(labels[i]), int(predicted[i]))
                for i, name in enumerate(batch.names)]
        try:
            maps_predicted = explain(model, images, method=method, layer=spec.layer,
                                     target=predicted, **spec.options).maps
            maps_true = maps_predicted if bool((true_targets == predicted).all()) else explain(
                model, images, method=method, layer=spec.layer, target=true_targets,
                **spec.options).maps
        except METHOD_ERRORS as error:
            for row in base:
                row.error = str(error).split("\n")[0]
            rows.extend(base)
            continue
        if maps_predicted.ndim != 3:
            for row in base:
                row.error = (f"{method} gave maps of shape {tuple(maps_predicted.shape)}; the "
                             "evaluation needs one image map per input (B, H, W)")
            rows.extend(base)
            continue
        values: dict[str, torch.Tensor] = {}
        if {"localization", "pointing"} & set(spec.metrics):
            found = localization_values(maps_predicted, maps_true, boxes, predicted, labels,
                                        spec.localization_thresholds, spec.tolerance, spec.iou)
            for threshold in spec.localization_thresholds:
                hits = found[f"hit@{threshold:.2f}"].double()
                values[f"loc@{threshold:.2f}"] = torch.where(labelled & has_box, 1.0 - hits,
                                                             math.nan)
            values["pointing"] = torch.where(has_box, found["pointing"].double(), math.nan)
            values["energy"] = torch.where(has_box, found["energy"].double(), math.nan)
        modes = [m for m in ("deletion", "insertion") if m in spec.metrics]
        if modes or "drop" in spec.metrics:
            faithful = faithfulness_values(model, images, maps_predicted, predicted, spec.steps,
                                           spec.batch_size, modes, "drop" in spec.metrics,
                                           output_fn, spec.seed)
            for mode in modes:
                values[mode] = faithful[mode].double()
            if "drop" in spec.metrics:
                values["drop"] = faithful["drop"].double()
                values["increase"] = faithful["increased"].double()
        if "road" in spec.metrics:
            values.update({key: value.double() for key, value in road_values(
                model, images, maps_predicted, predicted, spec.road_fractions, spec.road_noise,
                spec.seed, spec.batch_size, output_fn).items()})
        box_hits = None
        if "maxboxacc" in spec.metrics:
            box_hits = maxbox_values(maps_true, boxes, spec.box_thresholds, spec.iou).cpu()
        for index, row in enumerate(base):
            row.values = {key: float(value[index]) for key, value in values.items()
                          if key in _wanted(spec)}
            if box_hits is not None and bool(has_box[index]):
                row.box_hits = box_hits[index]
        rows.extend(base)
    return rows


def _wanted(spec: EvaluationSpec) -> set[str]:
    return {column.key for column in spec.columns}
