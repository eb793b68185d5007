"""Small models with known structure, shared by the tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class GapNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> global average pooling -> linear: the CAM architecture."""

    def __init__(self, channels: int = 6, classes: int = 5, inplace: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(8, channels, 3, padding=1),
            nn.ReLU(inplace=inplace),
        )
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3))
        return self.fc(self.dropout(pooled))


class FlattenNet(nn.Module):
    """conv -> ReLU -> flatten -> linear: Grad-CAM works, CAM must refuse."""

    def __init__(self, channels: int = 4, size: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(channels * size * size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class LinearHead(nn.Module):
    """An identity 'layer' that exposes the input as the activation, then a linear head on the
    flattened activation: the gradient d y^c / d A equals the head's weights, so every formula can
    be computed by hand."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.layer = nn.Identity()
        classes = weight.shape[0]
        self.head = nn.Linear(weight[0].numel(), classes)
        with torch.no_grad():
            self.head.weight.copy_(weight.reshape(classes, -1))
            self.head.bias.copy_(torch.zeros(classes) if bias is None else bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x).flatten(1))


@pytest.fixture
def gap_net() -> GapNet:
    torch.manual_seed(0)
    return GapNet().eval()


@pytest.fixture
def flatten_net() -> FlattenNet:
    torch.manual_seed(0)
    return FlattenNet().eval()


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 6, 6)
