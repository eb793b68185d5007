"""Layer outputs of every shape: images, audio (1-D), volumes (3-D), tokens, channels-last."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

import camlens
from camlens.capture import infer_token_grid
from camlens.explanation import normalize, upsample

GRADIENT_METHODS = ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam",
                    "ablationcam", "scorecam"]


def conv_net(dims: int) -> nn.Module:
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[dims]
    pool = {1: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool3d}[dims]
    torch.manual_seed(0)
    return nn.Sequential(
        conv(1, 4, 3, padding=1), nn.ReLU(), conv(4, 4, 3, stride=2, padding=1), nn.ReLU(),
        pool(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()


@pytest.mark.parametrize("method", GRADIENT_METHODS + ["cam"])
def test_one_dimensional_maps_for_audio(method):
    model = conv_net(1)
    signal = torch.randn(2, 1, 40)
    exp = camlens.explain(model, signal, method=method, layer="3")
    assert exp.raw.shape == (2, 20) and exp.maps.shape == (2, 40)
    assert exp.maps.amax() == 1.0


def test_one_dimensional_upsampling_is_linear():
    raw = torch.tensor([[0.0, 2.0]])
    torch.testing.assert_close(upsample(raw, (4,)), torch.tensor([[0.0, 0.5, 1.5, 2.0]]))


@pytest.mark.parametrize("method", ["gradcam", "cam", "hirescam"])
def test_three_dimensional_maps_for_volumes(method):
    model = conv_net(3)
    volume = torch.randn(2, 1, 6, 8, 8)
    exp = camlens.explain(model, volume, method=method, layer="3")
    assert exp.raw.shape == (2, 3, 4, 4) and exp.maps.shape == (2, 6, 8, 8)


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                             num_classes=4).eval()


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam", "eigencam", "ablationcam"])
def test_vision_transformer_tokens_fold_onto_the_patch_grid(vit, method):
    images = torch.randn(2, 3, 64, 64)
    exp = camlens.explain(vit, images, method=method, layer="blocks.-1.norm1")
    assert exp.layer == "blocks.11.norm1"
    assert exp.raw.shape == (2, 4, 4) and exp.maps.shape == (2, 64, 64)
    assert exp.maps.amax() == 1.0


def test_token_fold_matches_a_manual_reshape(vit):
    images = torch.randn(1, 3, 64, 64)
    exp = camlens.explain(vit, images, method="eigencam", layer="blocks.5")
    grid = camlens.explain(vit, images, method="eigencam", layer="blocks.5", token_grid=(4, 4),
                           prefix_tokens=1)
    torch.testing.assert_close(exp.raw, grid.raw)


def test_register_tokens_are_dropped():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                              num_classes=3, reg_tokens=4).eval()
    exp = camlens.explain(model, torch.randn(1, 3, 64, 64), layer="blocks.-1.norm1")
    assert exp.raw.shape == (1, 4, 4)


@pytest.mark.parametrize(("tokens", "size", "expected"), [
    (197, (224, 224), (1, (14, 14))),
    (50, (224, 224), (1, (7, 7))),
    (201, (224, 224), (5, (14, 14))),
    (196, (224, 224), (0, (14, 14))),
    (1 + 12 * 24, (192, 384), (1, (12, 24))),
])
def test_token_grid_inference(tokens, size, expected):
    assert infer_token_grid(tokens, size) == expected


def test_token_grid_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="token_grid"):
        infer_token_grid(7919, (224, 224))


def test_channels_last_output_equals_the_channels_first_map(gap_net, images):
    class ChannelsLast(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.to_last = nn.Identity()

        def forward(self, x):
            last = self.to_last(self.net.features(x).permute(0, 2, 3, 1))
            return self.net.fc(last.mean(dim=(1, 2)))

    wrapped = ChannelsLast(gap_net).eval()
    last = camlens.explain(wrapped, images, layer="to_last", channels_last=True, target=1)
    first = camlens.explain(gap_net, images, layer="features", target=1)
    torch.testing.assert_close(last.maps, first.maps)


def test_automatic_layer_choice_says_what_it_chose():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    exp = camlens.explain(model, torch.randn(1, 3, 64, 64))
    assert exp.layer == "layer4"
    assert any("layer4" in note for note in exp.notes)


def test_layer_given_as_module(gap_net, images):
    by_module = camlens.explain(gap_net, images, layer=gap_net.features[3])
    by_name = camlens.explain(gap_net, images, layer="features.3")
    assert by_module.layer == "features.3"
    torch.testing.assert_close(by_module.maps, by_name.maps)


def test_tuple_and_list_outputs_of_the_layer():
    class LSTMLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            features, _ = self.pair(x)
            return self.fc(features.mean(dim=2))

        def pair(self, x):
            return self.wrapped(x)

    class Pair(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            out = self.conv(x)
            return out, out.sum()

    torch.manual_seed(0)
    model = LSTMLike()
    model.wrapped = Pair(model.conv)
    exp = camlens.explain(model.eval(), torch.randn(2, 1, 10), layer="wrapped")
    assert exp.maps.shape == (2, 10)


def test_explained_input_can_be_one_of_several(gap_net, images):
    class TwoInputs(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, bias):
            return self.net(x) + bias

    model = TwoInputs(gap_net).eval()
    exp = camlens.explain(model, (images, torch.zeros(2, 5)), layer="net.features", target=1)
    plain = camlens.explain(gap_net, images, layer="features", target=1)
    torch.testing.assert_close(exp.maps, plain.maps)


def test_input_size_option_sets_the_map_size(gap_net, images):
    exp = camlens.explain(gap_net, images, layer="features", input_size=(12, 18))
    assert exp.maps.shape == (2, 12, 18)


def test_normalize_properties():
    torch.manual_seed(0)
    maps = torch.rand(50, 5, 7) * torch.rand(50, 1, 1) * 10
    maps[3] = 0
    maps[4] = 2.5
    normalised = normalize(maps, 2)
    peaks = normalised.amax(dim=(1, 2))
    assert ((peaks == 1.0) | (peaks == 0.0)).all()
    assert peaks[3] == 0 and peaks[4] == 0 and (peaks[5:] == 1).all()
    assert (normalised.amin(dim=(1, 2)) == 0).all()
    assert torch.isfinite(normalised).all()
