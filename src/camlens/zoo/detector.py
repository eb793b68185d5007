"""digits-detector: find every digit of a scene, with its box and class (a one-stage detector).

The digits-gap trunk (``features``: 128 channels at a quarter of the input's resolution) and one
more block at an eighth (``neck``) feed a 1x1 convolution (``head``) that predicts, for every
cell of the stride-8 grid, as in YOLO (Redmon et al., CVPR 2016) and FCOS (Tian et al., ICCV 2019):

- an objectness logit ``o`` (is a digit's centre in this cell?),
- the centre's offset in the cell ``(sigmoid(t_x), sigmoid(t_y))`` and the size
  ``(16 e^{t_w}, 16 e^{t_h})`` in pixels,
- class logits ``c``.

``forward`` returns the dense output ``(B, N, 4 + 10)`` that YOLO-style code reads: per cell
``cx, cy, w, h`` then the class scores ``sigmoid(o) * softmax(c)``, so
:class:`camlens.BoxTarget` explains a box of it as is, and
:func:`camlens.score_targets.dense_detections` turns it into detections (score threshold and
non-maximum suppression). Trained on :class:`~camlens.data.digits.DigitScenes` (2 to 4 digits on
a 64 x 128 canvas) by ``camlens train digits-detector``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from camlens.zoo.digits import conv_block, digits_trunk
from camlens.zoo.module import ZooModule

__all__ = ["DigitsDetector", "detection_loss"]

#: The box size ``e^0`` stands for, in pixels (about a digit's ink box).
ANCHOR = 16.0


class DigitsDetector(ZooModule):
    """Trunk (stride 4) -> one block (stride 8) -> per-cell objectness, box and classes."""

    stride = 8

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = digits_trunk()
        self.neck = nn.Sequential(nn.MaxPool2d(2), *conv_block(128, 128))
        self.head = nn.Conv2d(128, 5 + num_classes, 1)

    def predictions(self, images: torch.Tensor) -> torch.Tensor:
        """The head's raw output ``(B, 5 + classes, H / 8, W / 8)``: objectness logit, ``t_x,
        t_y, t_w, t_h``, class logits."""
        return self.head(self.neck(self.features(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.predictions(images))

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw predictions -> ``(B, N, 4 + classes)``: ``cx, cy, w, h`` in input pixels, then
        ``sigmoid(objectness) * softmax(class logits)``; cells row by row."""
        batch, _, rows, cols = raw.shape
        grid_y, grid_x = torch.meshgrid(torch.arange(rows, device=raw.device),
                                        torch.arange(cols, device=raw.device), indexing="ij")
        centre_x = (grid_x + torch.sigmoid(raw[:, 1])) * self.stride
        centre_y = (grid_y + torch.sigmoid(raw[:, 2])) * self.stride
        size = ANCHOR * torch.exp(raw[:, 3:5].clamp(max=4.0))
        scores = torch.sigmoid(raw[:, :1]) * torch.softmax(raw[:, 5:], dim=1)
        boxes = torch.stack([centre_x, centre_y, size[:, 0], size[:, 1]], dim=1)
        return torch.cat([boxes, scores], dim=1).flatten(2).transpose(1, 2)


def detection_loss(model: DigitsDetector, images: torch.Tensor, boxes: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
    """Training loss on a batch: ``boxes (B, K, 4)`` as ``x0, y0, x1, y1`` and ``labels (B, K)``,
    padded with -1. The cell holding a box's centre is responsible for it: binary cross-entropy
    of objectness over every cell, and at the responsible cells cross-entropy of the class and
    L1 of the offsets and log sizes."""
    raw = model.predictions(images)
    batch, _, rows, cols = raw.shape
    stride = model.stride
    valid = labels >= 0
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    size = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1.0)
    cell_x = (centre[..., 0] / stride).floor().long().clamp(0, cols - 1)
    cell_y = (centre[..., 1] / stride).floor().long().clamp(0, rows - 1)
    image_index = torch.arange(batch, device=raw.device)[:, None].expand_as(labels)
    b, y, x = image_index[valid], cell_y[valid], cell_x[valid]
    objectness = torch.zeros(batch, rows, cols, device=raw.device)
    objectness[b, y, x] = 1.0
    # Positives are rare (2 to 4 of 128 cells): weigh them as much as all negatives together.
    positive_weight = torch.tensor(float(rows * cols) / 3.0, device=raw.device)
    object_loss = F.binary_cross_entropy_with_logits(raw[:, 0], objectness,
                                                     pos_weight=positive_weight)
    chosen = raw[b, :, y, x]  # (P, 5 + classes)
    offset = centre[valid] / stride - torch.stack([x, y], dim=1).float()
    box_loss = (F.l1_loss(torch.sigmoid(chosen[:, 1:3]), offset)
                + F.l1_loss(chosen[:, 3:5], torch.log(size[valid] / ANCHOR)))
    class_loss = F.cross_entropy(chosen[:, 5:], labels[valid])
    return object_loss + box_loss + class_loss
