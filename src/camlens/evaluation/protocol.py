"""The evaluation protocol: which metric, on which map, at which settings, per image.

The columns of ``camlens reproduce localization`` and ``camlens evaluate`` (one value per image;
the table reduces them, :mod:`camlens.evaluation.table`):

- ``loc@0.20``, ``loc@0.15``: top-1 localization error % (CAM, Zhou et al. CVPR 2016, at 20% of
  the map's maximum; Grad-CAM, Selvaraju et al. ICCV 2017, at 15%): the box of the largest
  connected component of the predicted class's map; a hit when the prediction is the label and
  IoU >= 0.5 with a ground-truth box. Per image: 1 for a miss, 0 for a hit (the error is 100 x
  their mean);
- ``maxboxacc``: MaxBoxAcc % (Choe et al., CVPR 2020): the true class's map boxed at every
  threshold 0, 0.01, ..., 0.99, IoU >= 0.5 with a ground-truth box, the best threshold's hit rate
  (per image: the hits at every threshold; the maximum is taken over the mean);
- ``pointing``: pointing game % (Zhang et al., ECCV 2016): the true class's map's maximum within
  ``tolerance`` pixels of a ground-truth box;
- ``energy``: energy-based pointing game % (Wang et al., Score-CAM, CVPR-W 2020): the share of
  the true class's (min-max normalised) map inside the ground-truth boxes;
- ``deletion``, ``insertion``: RISE AUC (Petsiuk et al., BMVC 2018), the predicted class's map,
  ``steps`` steps, zeros / a Gaussian blur as substrate;
- ``drop``, ``increase``: Grad-CAM++ average drop % and increase in confidence % (Chattopadhyay
  et al., WACV 2018);
- ``road_morf``, ``road_lerf``: ROAD (Rong et al., ICML 2022): the predicted class's
  probability after noisy linear imputation of the most / least relevant ``fractions`` of the
  pixels, averaged over the fractions.

Maps are ``Explanation.maps`` (upsampled to the input, min-max normalised).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens.metrics.faithfulness import average_drop_increase, deletion_insertion
from camlens.metrics.localization import (
    BOX_ACCURACY_THRESHOLDS,
    box_accuracy_hits,
    box_masks,
    largest_component_boxes,
    localization_hits,
)
from camlens.metrics.pointing import energy_pointing_game, pointing_game
from camlens.metrics.road_metric import road_scores

__all__ = ["COLUMNS", "Column", "EvaluationSpec", "FAITHFULNESS_STEPS", "LOCALIZATION_THRESHOLDS",
           "METRICS", "ROAD_FRACTIONS", "ROAD_NOISE", "faithfulness_values",
           "localization_values", "maxbox_values", "road_values"]

#: The CAM paper's and Grad-CAM's thresholds of the top-1 localization protocol.
LOCALIZATION_THRESHOLDS = (0.20, 0.15)
#: Steps of the deletion / insertion curves.
FAITHFULNESS_STEPS = 32
#: ROAD: the fractions of pixels removed, and the imputation's noise.
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
ROAD_NOISE = 0.01


@dataclass(frozen=True)
class Column:
    """One column of the table: its key, title, number format, whether lower is better, and the
    metric group that computes it."""

    key: str
    title: str
    fmt: str
    lower_better: bool
    metric: str


COLUMNS = (
    Column("loc@0.20", "top-1 loc. error % (20%)", "{:.1f}", True, "localization"),
    Column("loc@0.15", "top-1 loc. error % (15%)", "{:.1f}", True, "localization"),
    Column("maxboxacc", "MaxBoxAcc % (IoU 0.5)", "{:.1f}", False, "maxboxacc"),
    Column("pointing", "pointing acc. %", "{:.1f}", False, "pointing"),
    Column("energy", "energy pointing %", "{:.1f}", False, "pointing"),
    Column("deletion", "deletion AUC (lower better)", "{:.3f}", True, "deletion"),
    Column("insertion", "insertion AUC (higher better)", "{:.3f}", False, "insertion"),
    Column("drop", "avg drop % (lower better)", "{:.1f}", True, "drop"),
    Column("increase", "increase in conf. %", "{:.1f}", False, "drop"),
    Column("road_morf", "ROAD MoRF (lower better)", "{:.3f}", True, "road"),
    Column("road_lerf", "ROAD LeRF (higher better)", "{:.3f}", False, "road"),
)
#: The metric groups a run can compute (``EvaluationSpec.metrics``, ``--skip``).
METRICS = ("localization", "maxboxacc", "pointing", "deletion", "insertion", "drop", "road")


@dataclass
class EvaluationSpec:
    """Everything the per-image work needs besides the model (plain data, for any engine).

    ``methods``: method names; ``layer``: the layer (None: the model's own, else automatic);
    ``options``: method options (``output_fn``, ...); ``metrics``: the groups of :data:`METRICS`
    to compute; ``tolerance``: the pointing game's, in input pixels (Zhang et al.: 15 on
    224-pixel inputs); ``steps``: deletion / insertion; ``road_fractions``, ``road_noise``;
    ``box_thresholds``: MaxBoxAcc's; ``iou``: the IoU a box needs; ``batch_size``: perturbed
    inputs per forward; ``seed``: the tie order of deletion / insertion and ROAD's noise (the
    same for every image, so a value does not depend on the batch it came in)."""

    methods: tuple[str, ...] = ("gradcam",)
    layer: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = METRICS
    tolerance: float = 15.0
    steps: int = FAITHFULNESS_STEPS
    road_fractions: tuple[float, ...] = ROAD_FRACTIONS
    road_noise: float = ROAD_NOISE
    box_thresholds: tuple[float, ...] = BOX_ACCURACY_THRESHOLDS
    localization_thresholds: tuple[float, ...] = LOCALIZATION_THRESHOLDS
    iou: float = 0.5
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; the metrics are {', '.join(METRICS)}")
        if not self.methods:
            raise ValueError("methods must name at least one method, e.g. ('gradcam',)")

    @property
    def columns(self) -> tuple[Column, ...]:
        return tuple(c for c in COLUMNS if c.metric in self.metrics)


def _region_masks(boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Boxes ``(B, 4)`` as they are, or the union of boxes ``(B, M, 4)`` as masks ``(B, H, W)``."""
    if boxes.ndim == 2:
        return boxes
    return box_masks(boxes, size).any(dim=1)


def localization_values(maps_predicted: torch.Tensor, maps_true: torch.Tensor,
                        boxes: torch.Tensor, predicted: torch.Tensor, labels: torch.Tensor,
                        thresholds: Sequence[float] = LOCALIZATION_THRESHOLDS,
                        tolerance: float = 15.0, iou: float = 0.5
                        ) -> dict[str, torch.Tensor]:
    """Per image ``(B,)``: ``hit@T`` (bool) of the top-1 box protocol at each threshold
    (predicted class's maps), ``pointing`` (bool) and ``energy`` (the share) of the true class's
    maps. ``boxes (B, 4)`` or ``(B, M, 4)`` (padded with ``(0, 0, 0, 0)``)."""
    values: dict[str, torch.Tensor] = {}
    for threshold in thresholds:
        found = largest_component_boxes(maps_predicted, threshold)
        values[f"hit@{threshold:.2f}"] = localization_hits(found, boxes, predicted, labels, iou)
    regions = _region_masks(boxes, maps_true.shape[-2:])
    values["pointing"] = pointing_game(maps_true, regions, tolerance)
    values["energy"] = energy_pointing_game(maps_true, regions)
    return values


def faithfulness_values(model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
                        targets: torch.Tensor, steps: int = FAITHFULNESS_STEPS,
                        batch_size: int = 64, modes: Sequence[str] = ("deletion", "insertion"),
                        drop: bool = True, output_fn: Callable[[Any], Any] | None = None,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """Per image ``(B,)``: the deletion and insertion AUC of ``modes``, and with ``drop`` the
    average drop share ``max(0, Y - O) / Y`` (``drop``) and ``increased`` (bool)."""
    values: dict[str, torch.Tensor] = {}
    for mode in modes:
        curves = deletion_insertion(model, images, maps, targets=targets, steps=steps,
                                    mode=mode, batch_size=batch_size,  # type: ignore[arg-type]
                                    output_fn=output_fn, seed=seed)
        values[mode] = curves.auc
    if drop:
        confidence = average_drop_increase(model, images, maps, targets=targets,
                                           batch_size=batch_size, output_fn=output_fn)
        values["drop"] = confidence["drop"]
        values["increased"] = confidence["increased"]
    return values


def road_values(model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
                targets: torch.Tensor, fractions: Sequence[float] = ROAD_FRACTIONS,
                noise: float = ROAD_NOISE, seed: int = 0, batch_size: int = 64,
                output_fn: Callable[[Any], Any] | None = None) -> dict[str, torch.Tensor]:
    """Per image ``(B,)``: ROAD's MoRF and LeRF means, each image on its own with the noise
    drawn from ``seed`` (so an image's value does not depend on its batch)."""
    morf, lerf = [], []
    for index in range(images.shape[0]):
        scores = road_scores(model, images[index:index + 1], maps[index:index + 1],
                             targets=targets[index:index + 1], fractions=fractions,
                             noise=noise, seed=seed, batch_size=batch_size,
                             output_fn=output_fn)
        morf.append(scores.morf_mean)
        lerf.append(scores.lerf_mean)
    return {"road_morf": torch.cat(morf), "road_lerf": torch.cat(lerf)}


def maxbox_values(maps_true: torch.Tensor, boxes: torch.Tensor,
                  thresholds: Sequence[float] = BOX_ACCURACY_THRESHOLDS,
                  iou: float = 0.5) -> torch.Tensor:
    """Per image ``(B, T)``: the hits of MaxBoxAcc at each threshold."""
    return box_accuracy_hits(maps_true, boxes, thresholds, iou)
