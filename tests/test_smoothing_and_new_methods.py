"""Issue 13's options and methods against hand-computed cases: eigen smoothing, counterfactual
maps, test-time augmentation and noise smoothing, Eigen-Grad-CAM, Finer-CAM, Shapley-CAM and
FullGrad."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import camlens
from camlens.methods.base import eigen_projection
from camlens.methods.finer import finer_scores


class PixelModel(nn.Module):
    """x -> 1x1 conv (weight 1, bias b) -> global average pooling -> linear (weights v): the
    Grad-CAM map at ``conv`` is the input itself over Z (for v = 1, b = 0)."""

    def __init__(self, bias: float = 0.0, classes: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.head = nn.Linear(1, classes, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(bias)
            self.head.weight.copy_(torch.arange(1, classes + 1, dtype=torch.float32)[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


def small_cnn(seed: int = 0, classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, classes)).eval()


def test_eigen_projection_by_hand():
    # Channel 1 is twice channel 0 over three positions: rank one after centring, along
    # (1, 2) / sqrt(5); centred rows (-1, -2), (0, 0), (1, 2) project to -sqrt5, 0, sqrt5. The
    # sign agrees with the plain sum (3, 6, 9), which grows along the positions.
    terms = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]).reshape(1, 1, 2, 3)
    projected = eigen_projection(terms)
    torch.testing.assert_close(projected, torch.tensor([[[-math.sqrt(5), 0.0, math.sqrt(5)]]]))
    torch.testing.assert_close(eigen_projection(-terms), -projected)  # follows the sum's sign


def test_eigen_smooth_on_a_rank_one_map_keeps_its_shape():
    model = PixelModel()
    image = torch.rand(2, 1, 6, 6) + 0.5
    plain = camlens.explain(model, image, "gradcam", layer="conv")
    smooth = camlens.explain(model, image, "gradcam", layer="conv", eigen_smooth=True)
    # One channel: the first component is the centred map itself.
    centred = plain.raw - plain.raw.mean(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(smooth.raw, torch.relu(centred), atol=1e-6, rtol=1e-5)


def test_eigen_gradcam_is_the_first_component_of_gradient_times_activation():
    model = small_cnn()
    images = torch.randn(2, 3, 8, 8)
    eigen = camlens.explain(model, images, "eigengradcam", layer="3", target=2)
    smoothed = camlens.explain(model, images, "hirescam", layer="3", target=2, eigen_smooth=True)
    torch.testing.assert_close(eigen.raw, smoothed.raw)


def test_counterfactual_maps_negate_the_evidence():
    model = PixelModel()
    image = torch.randn(1, 1, 5, 5)  # positive and negative evidence
    plain = camlens.explain(model, image, "gradcam", layer="conv")
    counter = camlens.explain(model, image, "gradcam", layer="conv", counterfactual=True)
    z = 25.0
    torch.testing.assert_close(plain.raw[0], torch.relu(image[0, 0]) / z)
    torch.testing.assert_close(counter.raw[0], torch.relu(-image[0, 0]) / z)
    assert torch.equal(counter.scores, plain.scores)


def test_options_that_do_not_apply_are_refused():
    model = small_cnn()
    with pytest.raises(ValueError, match="eigen_smooth needs .* eigencam has none"):
        camlens.EigenCAM(model, layer="3", eigen_smooth=True)
    with pytest.raises(ValueError, match="counterfactual negates .* cam uses none"):
        camlens.CAM(model, layer="3", counterfactual=True)
    with pytest.raises(ValueError, match=r"smooth_noise must be in \(0, 1\]"):
        camlens.GradCAM(model, layer="3", smooth_samples=2, smooth_noise=3.0)
    with pytest.raises(ValueError, match="smooth_samples must be an int >= 0"):
        camlens.GradCAM(model, layer="3", smooth_samples=-1)
    with pytest.raises(ValueError, match="a callable target .* smooth_samples"):
        camlens.explain(model, torch.randn(1, 3, 8, 8), layer="3",
                        target=lambda out: out[:, 0], aug_smooth=True)
    sequence = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                             nn.Flatten(), nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match=r"aug_smooth mirrors images \(B, C, H, W\)"):
        camlens.explain(sequence, torch.randn(1, 2, 10), layer="0", aug_smooth=True)


def test_augmentation_maps_are_mirrored_back_before_the_mean():
    # The map of PixelModel is x / Z: the mirror's map mirrored back is the map again, and the
    # intensity factors 0.9, 1, 1.1 average to 1. Without the mirroring back the result would
    # be (x + mirror(x)) / 2Z, which this asymmetric input tells apart.
    model = PixelModel()
    image = torch.rand(1, 1, 4, 6) + 1.0
    image[..., 0] += 3.0
    plain = camlens.explain(model, image, "gradcam", layer="conv")
    smooth = camlens.explain(model, image, "gradcam", layer="conv", aug_smooth=True)
    torch.testing.assert_close(smooth.raw, plain.raw)
    assert smooth.notes[-1].startswith("averaged over 6 augmentations")
    assert not torch.allclose(smooth.raw, (plain.raw + plain.raw.flip(-1)) / 2)


def test_noise_smoothing_is_seeded_and_averages_the_noise_out():
    model = PixelModel()
    image = torch.rand(1, 1, 8, 8) + 2.0  # far from zero: the ReLU never cuts the noisy maps
    plain = camlens.explain(model, image, "gradcam", layer="conv")
    first = camlens.explain(model, image, "gradcam", layer="conv", smooth_samples=200,
                            smooth_noise=0.1)
    again = camlens.explain(model, image, "gradcam", layer="conv", smooth_samples=200,
                            smooth_noise=0.1)
    other = camlens.explain(model, image, "gradcam", layer="conv", smooth_samples=200,
                            smooth_noise=0.1, smooth_seed=1)
    assert torch.equal(first.raw, again.raw) and not torch.equal(first.raw, other.raw)
    span = float(image.max() - image.min())
    # Each position's mean of 200 noisy copies: within 4 standard errors of the plain map.
    tolerance = 4 * 0.1 * span / math.sqrt(200) / 64
    assert float((first.raw - plain.raw).abs().max()) < tolerance


def test_finer_scores_by_hand():
    logits = torch.tensor([[3.0, 2.5, 1.0, 0.0]])
    probabilities = torch.softmax(logits, dim=1)[0]
    # Class 0's two closest classes: 1 (distance 0.5) and 2 (distance 2).
    p1, p2 = probabilities[1], probabilities[2]
    expected = (p1 * (3.0 - 2.5) + p2 * (3.0 - 1.0)) / (p1 + p2)
    got = finer_scores(logits, torch.tensor([[0]]), alpha=1.0, comparisons=2)
    torch.testing.assert_close(got, expected.reshape(1, 1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(finer_scores(logits, torch.tensor([[0]]), alpha=0.0),
                               torch.tensor([[3.0]]))


def test_finer_cam_keeps_the_class_and_explains_the_difference():
    model = small_cnn()
    images = torch.randn(3, 3, 8, 8)
    finer = camlens.explain(model, images, "finercam", layer="3")
    plain = camlens.explain(model, images, "gradcam", layer="3")
    assert torch.equal(finer.targets, plain.targets)  # the top-1 classes, as always
    with torch.no_grad():
        logits = model(images)
    expected = finer_scores(logits, plain.targets[:, None]).squeeze(1)
    torch.testing.assert_close(finer.scores, expected)
    same = camlens.explain(model, images, "finercam", layer="3", alpha=0.0)
    torch.testing.assert_close(same.raw, plain.raw)  # alpha 0: Grad-CAM of the logit
    with pytest.raises(ValueError, match="Finer-CAM compares classes"):
        camlens.explain(model, images, "finercam", layer="3", target=lambda out: out[:, 0])


def test_shapley_cam_weights_by_hand():
    model = small_cnn(seed=1)
    images = torch.randn(2, 3, 8, 8)
    exp = camlens.explain(model, images, "shapleycam", layer="3", target=1)
    # The same weights by another route: torch.autograd.functional.hvp of the ReST score with
    # respect to the layer's output, on the part of the network after the layer.
    head = model[4:]
    with torch.no_grad():
        activations = model[:4](images)

    def rest(a: torch.Tensor) -> torch.Tensor:
        logits = head(a)
        return (logits + torch.log_softmax(logits, dim=1))[:, 1].sum()

    _, hvp = torch.autograd.functional.hvp(rest, activations, activations)
    gradient = torch.autograd.functional.jacobian(rest, activations)
    weights = (gradient - 0.5 * hvp).mean(dim=(2, 3))
    expected = torch.relu(torch.einsum("bc,bchw->bhw", weights, activations))
    torch.testing.assert_close(exp.raw, expected, atol=1e-5, rtol=1e-4)
    logit = camlens.explain(model, images, "shapleycam", layer="3", target=1, score="logit")
    gradcam = camlens.explain(model, images, "gradcam", layer="3", target=1)
    torch.testing.assert_close(logit.raw, gradcam.raw)  # ReLU head after the layer: H A = 0


def test_fullgrad_by_hand():
    # f = v mean(w x + b): the input term is |v w x / Z|, rescaled to [0, 1] over the image;
    # the bias term v b / Z is the same at every position, so it rescales to zero.
    model = PixelModel(bias=0.7, classes=2)
    image = torch.randn(1, 1, 4, 4)
    exp = camlens.explain(model, image, "fullgrad", target=1)
    magnitude = image[0, 0].abs()
    expected = (magnitude - magnitude.min()) / (magnitude.max() - magnitude.min())
    torch.testing.assert_close(exp.raw[0], expected, atol=1e-6, rtol=1e-5)
    assert exp.layer == "input" and exp.notes == ["fullgrad: the input and 1 bias layers"]
    named = camlens.explain(model, image, "fullgrad", layer="conv", target=1)
    assert "layer='conv' was not used" in named.notes[1]  # never silently ignored
    no_bias = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.Linear(8, 2)).eval()
    with pytest.raises(ValueError, match="FullGrad needs layers with biases"):
        camlens.explain(no_bias, torch.randn(1, 1, 4, 4), "fullgrad")


@pytest.mark.parametrize("method", ["eigengradcam", "finercam", "shapleycam", "fullgrad"])
def test_new_methods_leave_the_model_untouched(method):
    model = small_cnn()
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    camlens.explain(model, torch.randn(2, 3, 8, 8), method, layer="3", target=camlens.TopK(2))
    assert model.training
    assert all(not module._forward_hooks for module in model.modules())
    assert all(parameter.grad is None for parameter in model.parameters())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_scorecam_skips_dead_channels_without_changing_the_map():
    model = small_cnn()
    with torch.no_grad():  # channels 0 and 1 of the second convolution never fire
        model[3].weight[:2] = 0.0
        model[3].bias[:2] = -1.0
    images = torch.randn(2, 3, 8, 8)
    plain = camlens.explain(model, images, "scorecam", layer="4", target=1)
    fast = camlens.explain(model, images, "scorecam", layer="4", target=1, skip_below=0.01)
    torch.testing.assert_close(fast.raw, plain.raw)
    assert "scorecam skipped 4 of 16 channel masks" in " ".join(fast.notes)
    with pytest.raises(ValueError, match=r"skip_below must be in \[0, 1\)"):
        camlens.ScoreCAM(model, layer="4", skip_below=1.5)


def test_smoothing_keeps_the_automatically_chosen_layer_for_every_copy():
    model = small_cnn()
    images = torch.randn(2, 3, 8, 8)
    automatic = camlens.explain(model, images, "gradcam", target=1, aug_smooth=True)
    named = camlens.explain(model, images, "gradcam", layer=automatic.layer, target=1,
                            aug_smooth=True)
    torch.testing.assert_close(automatic.raw, named.raw)
    assert any(note.startswith("layer=None") for note in automatic.notes)


def test_guided_backprop_says_so_when_given_a_layer():
    model = small_cnn()
    named = camlens.explain(model, torch.randn(1, 3, 8, 8), "guided-backprop", layer="3")
    assert named.notes == ["layer='3' was not used: guided backpropagation maps the input"]
    assert camlens.explain(model, torch.randn(1, 3, 8, 8), "guided-backprop").notes == []
