"""The reference networks for the digit benchmarks.

Both share one convolutional trunk whose last layer, ``features``, outputs 128 channels at a
quarter of the input's resolution (16x16 for a 64x64 canvas):

- :class:`DigitsGAP`: ``features`` -> global average pooling -> one linear layer, the CAM
  architecture (Zhou et al. 2016), so ``method="cam"`` applies;
- :class:`DigitsFC`: ``features`` -> 1x1 conv -> max pooling -> flatten -> two fully connected
  layers, the classic head: CAM does not apply (it raises), Grad-CAM does.

``width`` scales every layer's channels and units (``round(c * width)``, at least 1); the
default, 1, is the shipped networks (their weights load unchanged). Smaller widths are for the
capacity sweep of ``camlens reproduce gap-fc`` (the CAM paper's Table 1 question: does a GAP
head cost accuracy?).
"""

from __future__ import annotations

import torch
from torch import nn

from camlens.zoo.module import ZooModule

__all__ = ["DigitsFC", "DigitsGAP", "digits_trunk", "scaled"]

#: The trunk's channels at width 1.
TRUNK_CHANNELS = (16, 32, 64, 128)


def scaled(channels: int, width: float) -> int:
    """``channels`` at ``width``: ``round(channels * width)``, at least 1."""
    if not width > 0:
        raise ValueError(f"width must be positive, got {width!r}")
    return max(1, round(channels * width))


def conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def digits_trunk(width: float = 1.0) -> nn.Sequential:
    """1 x H x W -> 128 x H/4 x W/4 (receptive field of a ``features`` cell: 26 pixels); at
    ``width`` every layer has ``scaled(c, width)`` channels."""
    c1, c2, c3, c4 = (scaled(channels, width) for channels in TRUNK_CHANNELS)
    return nn.Sequential(
        *conv_block(1, c1),
        nn.MaxPool2d(2),
        *conv_block(c1, c2),
        nn.MaxPool2d(2),
        *conv_block(c2, c3),
        *conv_block(c3, c4),
    )


class DigitsGAP(ZooModule):
    """Trunk -> global average pooling -> linear (CAM-compatible)."""

    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        self.features = digits_trunk(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(scaled(TRUNK_CHANNELS[-1], width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class DigitsFC(ZooModule):
    """Trunk -> 1x1 conv -> max pooling -> flatten -> fully connected layers (not CAM-compatible).

    The flattened head fixes the input size: 64x64 canvases (16x16 feature maps)."""

    def __init__(self, num_classes: int = 10, canvas: int = 64, width: float = 1.0) -> None:
        super().__init__()
        self.features = digits_trunk(width)
        reduced, hidden = scaled(32, width), scaled(128, width)
        self.reduce = nn.Sequential(nn.Conv2d(scaled(TRUNK_CHANNELS[-1], width), reduced, 1),
                                    nn.ReLU(inplace=True), nn.MaxPool2d(2))
        side = canvas // 8
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(reduced * side * side, hidden), nn.ReLU(inplace=True),
            nn.Dropout(0.3), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.reduce(self.features(x)))
