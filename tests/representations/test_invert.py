"""Input reconstruction: the representation error falls, early layers keep the picture, the model
is left exactly as found by every optimisation, bad requests fail clearly."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from torch import nn
from toy_models import GapNet

from camlens.representations.invert import invert, relative_error
from camlens.representations.maximize import maximize
from camlens.representations.objectives import Channel, ClassLogit


@pytest.fixture
def net() -> GapNet:
    torch.manual_seed(0)
    return GapNet().eval()


def picture() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))


def test_representation_error_falls_during_the_optimisation(net):
    result = invert(net, picture(), ["features.2", "fc"], steps=25, lr=0.2, tv=0.0)
    for layer in result.layers.values():
        assert layer.trajectory.shape == (25, 2)
        assert (layer.trajectory[-1] < 0.5 * layer.trajectory[0]).all()
        assert (layer.representation_error < layer.start_error).all()
    early = result.layers["features.2"]
    # the first block keeps most of the picture: closer to it than mid-grey is
    grey = (result.original_pixels - 0.5).flatten(1).pow(2).mean(dim=1).sqrt()
    assert (early.pixel_rmse < grey).all()
    assert torch.allclose(relative_error(picture(), picture()), torch.zeros(2))


@pytest.mark.slow
def test_digit_reconstructed_from_the_first_block_looks_like_the_digit():
    from camlens.data import ClutteredDigits, materialize
    from camlens.zoo import load

    model = load("digits-gap")
    digit = materialize(ClutteredDigits(1, "test", seed=0))["image"]
    result = invert(model, digit, "features.2", steps=40, lr=0.1)
    layer = result.layers["features.2"]
    grey = float((digit - 0.5).pow(2).mean().sqrt())
    assert float(layer.pixel_rmse[0]) < 0.5 * grey
    assert float(layer.representation_error[0]) < 0.2 * float(layer.start_error[0])


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def runs(model: nn.Module):
    yield lambda: maximize(model, [Channel("features.3", 0), ClassLogit(1)], (3, 16, 16),
                           steps=3, tv=0.1, l2=0.1, images_per_unit=2, diversity=1.0,
                           diversity_layer="features.0")
    yield lambda: invert(model, picture(), ["features.1", "fc"], steps=3)
    yield lambda: maximize(model, ClassLogit(7), (3, 16, 16), steps=3)  # raises: 5 classes
    yield lambda: invert(model, picture(), "nope", steps=3)  # raises: unknown layer


def test_every_optimisation_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = GapNet().train()  # BatchNorm would update its statistics in train mode
    model.fc.eval()
    model.features[0].weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.features[2].register_forward_hook(lambda *args: None)
    for run in runs(model):
        training = {name: m.training for name, m in model.named_modules()}
        flags = {name: p.requires_grad for name, p in model.named_parameters()}
        state = {key: value.clone() for key, value in model.state_dict().items()}
        hooks = hook_count(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(ValueError):
                run()
        assert {name: m.training for name, m in model.named_modules()} == training
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
        assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
        assert hook_count(model) == hooks
        assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
        assert all(p.grad is None for name, p in model.named_parameters() if name != "fc.weight")
        assert torch.is_grad_enabled()


def test_bad_requests_fail_clearly(net):
    with pytest.raises(ValueError, match="unknown layer 'featres.2'; closest names: features.2"):
        invert(net, picture(), "featres.2", steps=2)
    with pytest.raises(ValueError, match="given twice"):
        invert(net, picture(), ["features.2", "features.2"], steps=2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) tensor"):
        invert(net, picture()[0], "features.2", steps=2)
    dead = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    nn.init.zeros_(dead[0].weight)
    nn.init.constant_(dead[0].bias, -1.0)
    with pytest.raises(ValueError, match="input\\(s\\) \\[0, 1\\] at layer '1' is all zeros"):
        invert(dead, picture(), "1", steps=2)
    with pytest.raises(ValueError, match="steps must be"):
        invert(net, picture(), "features.2", steps=0)
