"""The reference networks for the digit benchmarks.

Both share one convolutional trunk whose last layer, ``features``, outputs 128 channels at a
quarter of the input's resolution (16x16 for a 64x64 canvas):

- :class:`DigitsGAP`: ``features`` -> global average pooling -> one linear layer, the CAM
  architecture (Zhou et al. 2016), so ``method="cam"`` applies;
- :class:`DigitsFC`: ``features`` -> 1x1 conv -> max pooling -> flatten -> two fully connected
  layers, the classic head: CAM does not apply (it raises), Grad-CAM does.
"""

from __future__ import annotations

import torch
from torch import nn

from camlens.zoo.module import ZooModule

__all__ = ["DigitsFC", "DigitsGAP", "digits_trunk"]

def conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def digits_trunk() -> nn.Sequential:
    """1 x H x W -> 128 x H/4 x W/4 (receptive field of a ``features`` cell: 26 pixels)."""
    return nn.Sequential(
        *conv_block(1, 16),
        nn.MaxPool2d(2),
        *conv_block(16, 32),
        nn.MaxPool2d(2),
        *conv_block(32, 64),
        *conv_block(64, 128),
    )


class DigitsGAP(ZooModule):
    """Trunk -> global average pooling -> linear (CAM-compatible)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = digits_trunk()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class DigitsFC(ZooModule):
    """Trunk -> 1x1 conv -> max pooling -> flatten -> fully connected layers (not CAM-compatible).

    The flattened head fixes the input size: 64x64 canvases (16x16 feature maps)."""

    def __init__(self, num_classes: int = 10, canvas: int = 64) -> None:
        super().__init__()
        self.features = digits_trunk()
        self.reduce = nn.Sequential(nn.Conv2d(128, 32, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        side = canvas // 8
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * side * side, 128), nn.ReLU(inplace=True),
            nn.Dropout(0.3), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.reduce(self.features(x)))
