"""Activation maximization: the optimised input beats the data, units are optimised together,
diversity and seeds behave, the model is left as found, bad requests fail clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_models import GapNet

from camlens import ExplanationWarning
from camlens.representations.maximize import maximize
from camlens.representations.objectives import (
    Channel,
    ClassLogit,
    Direction,
    Neuron,
    diversity_penalty,
    total_variation,
)
from camlens.representations.parameterization import FourierImage, InputSpace, PixelImage
from camlens.representations.transforms import RandomTransforms

SHAPE = (3, 16, 16)


@pytest.fixture
def net() -> GapNet:
    torch.manual_seed(0)
    return GapNet().eval()


def data() -> torch.Tensor:
    return torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(3))


def test_maximised_channel_and_logit_beat_the_best_of_the_data(net):
    objectives = [Channel("features.3", 2), ClassLogit(1)]
    result = maximize(net, objectives, SHAPE, steps=30, lr=0.2, param="pixel", transforms=None)
    with torch.no_grad():
        real = data()
        channel = net.features[:4](real)[:, 2].mean(dim=(1, 2))
        logits = net(real)[:, 1]
    assert result.final_values[0] > channel.max()
    assert result.final_values[1] > logits.max()
    assert result.pixels.min() >= 0 and result.pixels.max() <= 1


@pytest.mark.slow
def test_digits_class_logit_beats_real_test_digits():
    from camlens.data import ClutteredDigits, materialize
    from camlens.zoo import load

    model = load("digits-gap")
    digits = materialize(ClutteredDigits(30, "test", seed=0))
    with torch.no_grad():
        best = model(digits["image"])[:, 3].max()
    result = maximize(model, ClassLogit(3), (1, 64, 64), steps=24, lr=0.1, transforms="default")
    assert result.final_values[0] > best
    assert int(result.output[0].argmax()) == 3


def test_batched_units_each_beat_their_start_and_the_other_pictures(net):
    units = [Channel("features.3", c) for c in range(3)] + [
        Neuron("features.3", 4, 2, 5), Direction("features.0", [1.0] * 4 + [-1.0] * 4)]
    result = maximize(net, units, SHAPE, steps=25, lr=0.2, param="pixel", transforms=None)
    assert result.improved.all()
    assert result.trajectory.shape == (25, len(units))
    channels = result.final_activations["features.3"][:3, :3].mean(dim=(2, 3))
    # picture i raises channel i above what the other channels' pictures give it
    assert torch.equal(channels.argmax(dim=0), torch.arange(3))


def test_diversity_pushes_the_pictures_of_one_unit_apart(net):
    common = dict(steps=25, lr=0.2, param="pixel", transforms=None, images_per_unit=3)
    plain = maximize(net, Channel("features.3", 1), SHAPE, **common)
    diverse = maximize(net, Channel("features.3", 1), SHAPE, diversity=5.0,
                       diversity_layer="features.1", **common)

    def similarity(result):
        with torch.no_grad():
            return float(diversity_penalty(net.features[:2](result.images), [[0, 1, 2]]).mean())

    def spread(result):
        return float(torch.pdist(result.pixels.flatten(1)).mean())

    assert similarity(diverse) < similarity(plain)
    assert spread(diverse) > spread(plain)
    assert diverse.improved.all()


def test_seeded_runs_are_equal_and_seeds_differ(net):
    run = dict(steps=8, lr=0.1, param="fourier", transforms="default", tv=0.1, l2=0.1)
    first = maximize(net, [ClassLogit(0), ClassLogit(2)], SHAPE, seed=5, **run)
    second = maximize(net, [ClassLogit(0), ClassLogit(2)], SHAPE, seed=5, **run)
    other = maximize(net, [ClassLogit(0), ClassLogit(2)], SHAPE, seed=6, **run)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.trajectory, second.trajectory)
    assert not torch.equal(first.images, other.images)


def test_inputs_are_valid_pictures_in_the_models_normalised_space(net):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    result = maximize(net, ClassLogit(0), SHAPE, steps=5, lr=0.5, mean=mean, std=std)
    expected = InputSpace(mean, std).to_model(result.pixels)
    assert torch.allclose(result.images, expected)
    assert result.pixels.min() >= 0 and result.pixels.max() <= 1
    assert result.images.min() < 0  # normalised: below zero where the picture is dark


def test_fourier_decorrelates_colour_only_for_three_channels():
    grey = FourierImage((1, 1, 8, 8))
    colour = FourierImage((1, 3, 8, 8))
    assert "no colour decorrelation" in grey.note and grey.color is None
    assert "decorrelated" in colour.note and colour.color is not None
    with pytest.raises(ValueError, match="3 channels"):
        FourierImage((1, 1, 8, 8), decorrelate=True)
    picture = colour()
    assert picture.shape == (1, 3, 8, 8) and picture.min() >= 0 and picture.max() <= 1
    assert PixelImage((2, 1, 4, 4))().shape == (2, 1, 4, 4)


def test_transforms_are_seeded_and_zero_is_identity():
    pictures = torch.rand(2, 3, 12, 12)
    assert torch.equal(RandomTransforms(0, 0, 0)(pictures), pictures)
    moved = RandomTransforms(3, 0.1, 10, seed=1)(pictures)
    assert torch.equal(moved, RandomTransforms(3, 0.1, 10, seed=1)(pictures))
    assert not torch.allclose(moved, pictures)
    with pytest.raises(ValueError, match="jitter"):
        RandomTransforms(-1)


def test_total_variation_prefers_smooth_pictures():
    smooth = torch.linspace(0, 1, 16).repeat(1, 1, 16, 1)
    noisy = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert total_variation(smooth) < total_variation(noisy)


def test_an_objective_that_cannot_rise_warns():
    flat = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(1))
    nn.init.zeros_(flat[0].weight)
    nn.init.zeros_(flat[0].bias)
    with pytest.warns(ExplanationWarning, match="did not raise"):
        result = maximize(flat, ClassLogit(0), (3, 2, 2), steps=3)
    assert any("did not raise" in note for note in result.notes)


def test_nan_is_reported():
    class Exploding(nn.Module):
        def forward(self, x):
            return (x.sum(dim=(1, 2, 3)) * float("nan"))[:, None]

    with pytest.warns(ExplanationWarning, match="NaN"):
        result = maximize(Exploding(), ClassLogit(0), (1, 4, 4), steps=3)
    assert any("NaN" in note for note in result.notes)


@pytest.mark.parametrize("objective, message", [
    (Channel("featurs.3", 0), "closest names: features.3"),
    (Channel("features.3", 6), r"channel 6 is out of range: layer 'features.3' has 6 channels"),
    (ClassLogit(9), r"class 9 is out of range: the model outputs 5 classes"),
    (Neuron("features.3", 0, 20, 0), r"position \(20, 0\) is out of range.*16 x 16"),
    (Direction("features.3", [1.0, 2.0]), "2 values but layer 'features.3' has 6 channels"),
])
def test_bad_units_name_the_value_and_the_range(net, objective, message):
    with pytest.raises(ValueError, match=message):
        maximize(net, objective, SHAPE, steps=2)


@pytest.mark.parametrize("options, message", [
    ({"param": "wavelet"}, "unknown parameterisation 'wavelet'; accepted: pixel, fourier"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"tv": float("nan")}, "tv must be a finite number >= 0"),
    ({"diversity": 1.0}, "diversity needs images_per_unit >= 2"),
    ({"diversity": 1.0, "images_per_unit": 2}, "needs diversity_layer"),
    ({"transforms": "strong"}, "'default' or None"),
])
def test_bad_settings_fail_clearly(net, options, message):
    with pytest.raises(ValueError, match=message):
        maximize(net, ClassLogit(0), SHAPE, **{"steps": 2, **options})
    with pytest.raises(ValueError, match="input_shape"):
        maximize(net, ClassLogit(0), (16, 16), steps=2)


def test_a_relu_unit_off_everywhere_still_rises_with_redirected_gradients():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(inplace=True))
    with torch.no_grad():
        model[0].weight.normal_(0, 0.3)
        model[0].bias.fill_(-1.0)  # off for the grey start, reachable by other pixels
    with pytest.warns(ExplanationWarning, match="did not raise"):
        stuck = maximize(model, Channel("1", 0), (3, 8, 8), steps=10, lr=0.2, param="pixel",
                         transforms=None, redirect_steps=0)
    assert float(stuck.final_values[0]) == 0.0
    moved = maximize(model, Channel("1", 0), (3, 8, 8), steps=10, lr=0.2, param="pixel",
                     transforms=None)
    assert float(moved.final_values[0]) > 0.0
    assert any("redirected" in note for note in moved.notes)


class ChannelsLast(nn.Module):
    """A conv whose output a Swin-style stage hands on as (B, h, w, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def test_a_channels_last_layer_is_read_by_its_channels_not_its_rows():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), ChannelsLast(), nn.Flatten(),
                          nn.Linear(5 * 16 * 16, 4)).eval()
    result = maximize(model, [Channel("1", 2)], SHAPE, steps=5, lr=0.1, param="pixel",
                      transforms=None)
    stage = result.final_activations["1"]
    assert stage.shape == (1, 16, 16, 5)
    # the score is channel 2's mean over the grid, not the mean of grid row 2
    torch.testing.assert_close(result.final_values, stage[..., 2].mean(dim=(1, 2)))
    assert any("read as channels last" in note for note in result.notes)
    with pytest.raises(ValueError, match="5"):  # 5 channels, although the grid has 16 rows
        maximize(model, [Channel("1", 7)], SHAPE, steps=1, param="pixel", transforms=None)
