"""Ablation-CAM runs the network before the target layer once per input, chunks or not."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import camlens


class CountingStem(nn.Module):
    """A stem that counts how often it really computes."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.computed = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.computed += 1
        return self.stem(x)


@pytest.fixture
def counted_resnet() -> torchvision.models.ResNet:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    model.layer1 = CountingStem(model.layer1)
    return model


@pytest.mark.parametrize("layer", ["layer4", "layer4.1.conv2"])
def test_chunked_ablation_runs_the_prefix_once_per_input(counted_resnet, layer):
    images = torch.randn(2, 3, 64, 64)
    whole = camlens.AblationCAM(counted_resnet, layer)(images, target=3)
    assert counted_resnet.layer1.computed == 2  # one forward per input
    counted_resnet.layer1.computed = 0
    chunked = camlens.AblationCAM(counted_resnet, layer, batch_size=100)(images, target=3)
    assert counted_resnet.layer1.computed == 2  # 6 chunks per input, the prefix ran once each
    torch.testing.assert_close(chunked.raw, whole.raw, rtol=1e-4, atol=1e-6)
    assert all("forward" not in module.__dict__ for module in counted_resnet.modules())


def test_replay_that_would_change_the_result_is_abandoned():
    class Mutating(nn.Module):
        """Adds in place into a tensor from before the layer: a replay would reuse a changed
        tensor, which the unablated-copy check catches."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.layer = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            early = self.stem(x)
            late = self.layer(early)
            early.add_(1.0)  # mutates the recorded output after the layer ran
            return self.fc((late + early).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Mutating().eval()
    images = torch.randn(1, 3, 5, 5)
    whole = camlens.AblationCAM(model, "layer")(images, target=1)
    chunked = camlens.AblationCAM(model, "layer", batch_size=1)(images, target=1)
    torch.testing.assert_close(chunked.raw, whole.raw)
