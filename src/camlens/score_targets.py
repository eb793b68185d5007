"""Targets for the models people use beyond classifiers: a detected box, a segmentation region,
an embedding's similarity. Each is a callable ``target(output) -> (B,)`` scores, so every method
explains it (``camlens.explain(model, images, target=BoxTarget(...))``).

- :class:`BoxTarget`: the score of the predicted box that best matches a given box (IoU at least
  ``iou_threshold``, and the given class if any), per input. Reads torchvision detection outputs
  (a list of ``{"boxes", "scores", "labels"}`` per image: Faster R-CNN, RetinaNet, FCOS, SSD) and
  YOLO-style dense outputs ``(B, N, 4 + classes)`` (``cx, cy, w, h`` then class scores; with
  ``objectness=True``, ``(B, N, 5 + classes)`` whose fifth column multiplies the class score).
  An input with no matching box scores 0 (its map is then flagged as empty).
- :class:`RegionTarget`: Seg-Grad-CAM (Vinogradova et al., AAAI 2020):
  ``y = sum_{(i,j) in M} y^c_{ij}``, the class's logits summed over a region or mask ``M``.
- :class:`SimilarityTarget`: cosine similarity of the output embedding ``(B, D)`` to a
  reference ``(D,)`` or one per input ``(B, D)``, or several references ``(K, D)`` for ``(B, K)``
  scores (one map per reference, e.g. one per text prompt of a CLIP-style model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["BoxTarget", "BoxesTarget", "RegionTarget", "SimilarityTarget", "box_iou",
           "dense_detections", "non_maximum_suppression"]


def box_iou(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """IoU of each of ``boxes (N, 4)`` with ``box (4,)``, both ``(x0, y0, x1, y1)``."""
    top_left = torch.maximum(boxes[:, :2], box[:2])
    bottom_right = torch.minimum(boxes[:, 2:], box[2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
    box_area = (box[2:] - box[:2]).clamp(min=0).prod()
    return inter / (area + box_area - inter).clamp(min=1e-12)


def non_maximum_suppression(boxes: torch.Tensor, scores: torch.Tensor,
                            iou_threshold: float = 0.5) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first: a box is
    dropped when it overlaps a kept one with IoU above ``iou_threshold``."""
    order = scores.argsort(descending=True)
    kept: list[int] = []
    for index in order.tolist():
        if not kept or float(box_iou(boxes[kept], boxes[index]).max()) <= iou_threshold:
            kept.append(index)
    return torch.tensor(kept, dtype=torch.long, device=boxes.device)


def dense_detections(output: torch.Tensor, score_threshold: float = 0.5,
                     iou_threshold: float = 0.5, objectness: bool = False,
                     max_boxes: int = 100) -> list[dict[str, torch.Tensor]]:
    """A YOLO-style dense output ``(B, N, 4 + classes)`` (``cx, cy, w, h``, then class scores;
    with ``objectness``, ``(B, N, 5 + classes)``) as torchvision-style detections per image:
    ``{"boxes" (M, 4) as x0, y0, x1, y1, "scores" (M,), "labels" (M,)}``, the cells whose best
    class scores at least ``score_threshold``, after non-maximum suppression per class."""
    first = 5 if objectness else 4
    if output.ndim != 3 or output.shape[2] <= first:
        raise ValueError(f"a dense detection output must be (B, N, {first} + classes), got "
                         f"{tuple(output.shape)}")
    output = output.detach()
    centre, size = output[..., :2], output[..., 2:4]
    corners = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    classes = output[..., first:] * (output[..., 4:5] if objectness else 1.0)
    best, labels = classes.max(dim=-1)
    found = []
    for row in range(output.shape[0]):
        keep = best[row] >= score_threshold
        boxes, scores, kinds = corners[row][keep], best[row][keep], labels[row][keep]
        kept = []
        for kind in kinds.unique().tolist():
            same = torch.nonzero(kinds == kind).flatten()
            kept.append(same[non_maximum_suppression(boxes[same], scores[same],
                                                     iou_threshold)])
        chosen = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
        chosen = chosen[scores[chosen].argsort(descending=True)][:max_boxes]
        found.append({"boxes": boxes[chosen], "scores": scores[chosen], "labels": kinds[chosen]})
    return found


@dataclass
class BoxTarget:
    """Explain a detected box: per input, the score of the predicted box with the highest IoU
    with ``box`` (at least ``iou_threshold``) and, if given, of class ``label``.

    Args:
        box: ``(x0, y0, x1, y1)`` in input pixels, one for every input, or ``(B, 4)``.
        label: the class to match (None: any class).
        iou_threshold: the least IoU a predicted box needs to count.
        objectness: dense outputs carry an objectness column before the class scores.

    Example:
        >>> exp = camlens.explain(detector, images, layer="backbone.body.layer3",
        ...                       target=BoxTarget((20, 30, 80, 90), label=3))  # doctest: +SKIP
    """

    box: Sequence[float] | torch.Tensor
    label: int | None = None
    iou_threshold: float = 0.5
    objectness: bool = False

    def __post_init__(self) -> None:
        boxes = torch.as_tensor(self.box, dtype=torch.float32)
        if boxes.shape[-1:] != (4,) or boxes.ndim > 2:
            raise ValueError(f"box must be (x0, y0, x1, y1) or (B, 4), got shape "
                             f"{tuple(boxes.shape)}")
        if bool(((boxes[..., 2:] - boxes[..., :2]) <= 0).any()):
            raise ValueError(f"box {self.box} has x1 <= x0 or y1 <= y0")
        if not 0 < self.iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        self._boxes = boxes

    def box_for(self, row: int, device: torch.device) -> torch.Tensor:
        return (self._boxes if self._boxes.ndim == 1 else self._boxes[row]).to(device)

    def __call__(self, output: Any) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return self._dense(output)
        if isinstance(output, (list, tuple)) and output and all(
                isinstance(item, Mapping) and "boxes" in item and "scores" in item
                for item in output):
            return torch.stack([self._one(row, item["boxes"], item["scores"],
                                          item.get("labels")) for row, item in
                                enumerate(output)])
        raise TypeError(f"BoxTarget reads a list of {{'boxes', 'scores', 'labels'}} per image "
                        "(torchvision detectors) or a (B, N, 4 + classes) tensor (YOLO-style); "
                        f"got {type(output).__name__}")

    def _dense(self, output: torch.Tensor) -> torch.Tensor:
        first = 5 if self.objectness else 4
        if output.ndim != 3 or output.shape[2] <= first:
            raise ValueError(f"a dense detection output must be (B, N, {first} + classes), got "
                             f"{tuple(output.shape)}")
        centre, size = output[..., :2], output[..., 2:4]
        corners = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
        classes = output[..., first:]
        if self.objectness:
            classes = classes * output[..., 4:5]
        scores, labels = classes.max(dim=-1)
        if self.label is not None:
            scores, labels = classes[..., self.label], torch.full_like(labels, self.label)
        return torch.stack([self._one(row, corners[row], scores[row], labels[row])
                            for row in range(output.shape[0])])

    def _one(self, row: int, boxes: torch.Tensor, scores: torch.Tensor,
             labels: torch.Tensor | None) -> torch.Tensor:
        if len(boxes) == 0:
            return scores.sum() * 0  # no detection: zero, still on the graph
        overlap = box_iou(boxes.detach().float(), self.box_for(row, boxes.device))
        fits = overlap >= self.iou_threshold
        if self.label is not None and labels is not None:
            fits = fits & (labels == self.label)
        if not bool(fits.any()):
            return scores.sum() * 0
        best = torch.where(fits, overlap, torch.full_like(overlap, -1.0)).argmax()
        return scores[best]


@dataclass
class BoxesTarget:
    """Several boxes at once: scores ``(B, K)``, one map per box (K targets per input), each
    read as :class:`BoxTarget` reads one. ``boxes``: ``(K, 4)`` for every input; ``labels``:
    None, or one class per box. :meth:`from_detections` takes a detector's own detections above
    a score ("explain every detection").

    Example:
        >>> with torch.no_grad():
        ...     found = detector(image)[0]                             # doctest: +SKIP
        >>> every = BoxesTarget.from_detections(found, score_threshold=0.5)  # doctest: +SKIP
        >>> exp = camlens.explain(detector, image, layer="backbone.body.layer3",
        ...                       target=every)       # (1, K, h, w)  # doctest: +SKIP
    """

    boxes: Sequence[Sequence[float]] | torch.Tensor
    labels: Sequence[int] | None = None
    iou_threshold: float = 0.5
    objectness: bool = False

    def __post_init__(self) -> None:
        boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        if len(boxes) == 0:
            raise ValueError("BoxesTarget needs at least one box")
        if self.labels is not None and len(self.labels) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(self.labels)} labels")
        self._targets = [BoxTarget(box.tolist(), None if self.labels is None else
                                   int(self.labels[index]), self.iou_threshold, self.objectness)
                         for index, box in enumerate(boxes)]

    @classmethod
    def from_detections(cls, detections: Mapping[str, torch.Tensor], score_threshold: float = 0.5,
                        max_boxes: int = 20, iou_threshold: float = 0.5) -> BoxesTarget:
        """The boxes of one image's detections (``{"boxes", "scores", "labels"}``) scoring at
        least ``score_threshold``, the best ``max_boxes`` of them, each with its class."""
        keep = detections["scores"] >= score_threshold
        order = detections["scores"][keep].argsort(descending=True)[:max_boxes]
        boxes = detections["boxes"][keep][order].detach()
        if len(boxes) == 0:
            scores = detections["scores"]
            best = f"{float(scores.max()):.3f}" if len(scores) else "no detection"
            raise ValueError(f"no detection scores {score_threshold} or more (best: {best})")
        labels = detections.get("labels")
        chosen = None if labels is None else labels[keep][order].tolist()
        return cls(boxes, chosen, iou_threshold)

    def __call__(self, output: Any) -> torch.Tensor:
        return torch.stack([target(output) for target in self._targets], dim=1)


@dataclass
class RegionTarget:
    """Seg-Grad-CAM: class ``label``'s logits summed over ``mask`` (``(H, W)`` or ``(B, H, W)``
    bool or 0/1, at the output's resolution), or over the whole map when ``mask`` is None.
    Reads ``(B, classes, H, W)`` outputs (a dict's ``out``, as torchvision returns, is read by
    the engine).

    Example:
        >>> exp = camlens.explain(deeplab, images, target=RegionTarget(15, person_mask))
        ... # doctest: +SKIP
    """

    label: int
    mask: torch.Tensor | None = None

    def __call__(self, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(f"RegionTarget reads (B, classes, H, W) segmentation logits, got "
                             f"{shape}")
        if not 0 <= self.label < output.shape[1]:
            raise IndexError(f"class {self.label} is out of range for {output.shape[1]} classes")
        logits = output[:, self.label]
        if self.mask is None:
            return logits.sum(dim=(1, 2))
        mask = torch.as_tensor(self.mask, device=output.device)
        if tuple(mask.shape[-2:]) != tuple(logits.shape[-2:]):
            raise ValueError(f"the mask is {tuple(mask.shape[-2:])} but the logits are "
                             f"{tuple(logits.shape[-2:])}; give the mask at the output's size")
        return (logits * mask.to(logits.dtype)).sum(dim=(1, 2))


@dataclass
class SimilarityTarget:
    """Cosine similarity of the output embedding ``(B, D)`` with ``reference``: ``(D,)`` for
    every input, ``(B, D)`` one per input (scores ``(B,)``), or ``(K, D)`` with
    ``per_reference=True`` (scores ``(B, K)``: a map per reference, e.g. per text prompt).

    Example:
        >>> prompts = text_encoder(tokens)                           # (K, D)  # doctest: +SKIP
        >>> exp = camlens.explain(image_encoder, images,
        ...                       target=SimilarityTarget(prompts, per_reference=True))
        ... # doctest: +SKIP
    """

    reference: torch.Tensor
    per_reference: bool = False

    def __call__(self, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(f"SimilarityTarget reads embeddings (B, D), got {shape}")
        reference = self.reference.detach().to(output.device, output.dtype)
        if reference.shape[-1] != output.shape[1]:
            raise ValueError(f"the reference has {reference.shape[-1]} dimensions, the "
                             f"embeddings {output.shape[1]}")
        embeddings = F.normalize(output, dim=1)
        if self.per_reference:
            return embeddings @ F.normalize(reference.reshape(-1, reference.shape[-1]), dim=1).T
        return (embeddings * F.normalize(reference, dim=-1)).sum(dim=1)
