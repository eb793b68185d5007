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


class FailsAfterTheLayer(nn.Module):
    """conv -> (raise ``error`` from the head) : the model's own failure after the target layer."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.error = error
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.features(x)
        raise self.error


def test_out_of_memory_is_not_retried_with_copies_of_the_input():
    model = FailsAfterTheLayer(torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"))
    with pytest.raises(torch.cuda.OutOfMemoryError, match="simulated"):
        camlens.explain(model.eval(), torch.randn(1, 3, 6, 6), method="ablationcam",
                        layer="features", target=0)
    assert model.calls == 1  # no fallback that needs more memory
    cpu = FailsAfterTheLayer(RuntimeError("DefaultCPUAllocator: can't allocate memory: you "
                                          "tried to allocate 1234 bytes"))
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        camlens.explain(cpu.eval(), torch.randn(1, 3, 6, 6), method="ablationcam",
                        layer="features", target=0)
    assert cpu.calls == 1


def test_a_model_error_after_the_layer_surfaces_as_the_models_own():
    model = FailsAfterTheLayer(RuntimeError("a bug in the head"))
    with pytest.raises(RuntimeError, match="a bug in the head") as raised:
        camlens.explain(model.eval(), torch.randn(1, 3, 6, 6), method="ablationcam",
                        layer="features", target=0)
    assert model.calls == 2  # the batched try, then the copied input; both fail the same way
    assert isinstance(raised.value.__cause__, RuntimeError)  # the first failure is kept


def test_a_layer_the_forward_never_reaches_is_named():
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3)
            self.unused = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    model = Skips()
    with pytest.raises(ValueError, match="'unused' was not called"):
        camlens.explain(model.eval(), torch.randn(1, 3, 6, 6), method="ablationcam",
                        layer="unused", target=lambda out: out.sum(dim=(1, 2, 3)))
