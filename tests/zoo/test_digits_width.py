"""The width of the digits networks: width 1 is exactly the shipped architecture (its weights
load unchanged), other widths scale every layer."""

from __future__ import annotations

import pytest
import torch

from camlens.zoo import get_weights
from camlens.zoo.digits import DigitsFC, DigitsGAP, digits_trunk
from camlens.zoo.registry import read_weights


def _count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("name", ["digits-gap", "digits-fc"])
def test_width_one_is_the_shipped_network_and_its_weights_load(name):
    state = read_weights(get_weights(name).file)
    cls = {"digits-gap": DigitsGAP, "digits-fc": DigitsFC}[name]
    for model in (cls(), cls(width=1.0)):
        own = model.state_dict()
        assert {key: tuple(value.shape) for key, value in own.items()} == {
            key: tuple(value.shape) for key, value in state.items()}
        model.load_state_dict(state)
    assert get_weights(name).load() is not None


def test_width_one_keeps_the_parameter_counts_from_before_the_width_parameter():
    assert _count(DigitsGAP()) == 98_682
    assert _count(DigitsFC()) == 365_082


def test_width_scales_every_layer_and_the_networks_still_run():
    trunk = digits_trunk(0.25)
    channels = [layer.out_channels for layer in trunk if isinstance(layer, torch.nn.Conv2d)]
    assert channels == [4, 8, 16, 32]
    gap, fc = DigitsGAP(width=0.25), DigitsFC(width=0.25)
    assert gap.classifier.in_features == 32
    assert fc.reduce[0].out_channels == 8 and fc.classifier[1].out_features == 32
    x = torch.rand(2, 1, 64, 64)
    assert gap(x).shape == fc(x).shape == (2, 10)
    assert _count(gap) < _count(DigitsGAP(width=0.5)) < _count(DigitsGAP())
    assert [layer.out_channels for layer in digits_trunk(0.01)
            if isinstance(layer, torch.nn.Conv2d)] == [1, 1, 1, 1]


@pytest.mark.parametrize("width", [0, -0.5])
def test_width_must_be_positive(width):
    with pytest.raises(ValueError, match="width"):
        DigitsGAP(width=width)
