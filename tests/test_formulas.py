"""Every method's formula, pinned on tiny examples computed by hand (plain loops, no einsum).

The model is an identity 'layer' followed by a linear head on the flattened activation, so the
activation A is the input and the gradient d y^c / d A is the head's weight W[c]."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from toy_models import LinearHead

import camlens

C, H, W = 3, 2, 3


@pytest.fixture
def weight() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(2, C, H, W)


@pytest.fixture
def activations() -> torch.Tensor:
    torch.manual_seed(4)
    return torch.randn(2, C, H, W).abs() + 0.1


def positions():
    return list(itertools.product(range(H), range(W)))


def relu(value: float) -> float:
    return max(value, 0.0)


def hand_map(channel_weights, activations_b) -> torch.Tensor:
    out = torch.zeros(H, W)
    for i, j in positions():
        terms = [float(channel_weights[k]) * float(activations_b[k, i, j]) for k in range(C)]
        out[i, j] = relu(sum(terms))
    return out


def explain(method, weight, activations, target=1, **options):
    model = LinearHead(weight).eval()
    return camlens.explain(
        model, activations, method=method, layer="layer", target=target, **options
    )


def test_gradcam_alpha_is_the_spatial_mean_of_the_gradient(weight, activations):
    exp = explain("gradcam", weight, activations)
    for b in range(2):
        alpha = [sum(float(weight[1, k, i, j]) for i, j in positions()) / (H * W) for k in range(C)]
        torch.testing.assert_close(exp.raw[b], hand_map(alpha, activations[b]))


def test_hirescam_multiplies_gradient_and_activation_elementwise(weight, activations):
    exp = explain("hirescam", weight, activations)
    for b in range(2):
        expected = torch.zeros(H, W)
        for i, j in positions():
            expected[i, j] = relu(
                sum(float(weight[1, k, i, j] * activations[b, k, i, j]) for k in range(C))
            )
        torch.testing.assert_close(exp.raw[b], expected)


def test_hirescam_map_sums_to_score_minus_bias_on_a_flatten_head():
    torch.manual_seed(5)
    weight = torch.rand(2, C, H, W)  # positive, so the ReLU removes nothing
    bias = torch.tensor([0.7, -0.3])
    inputs = torch.rand(1, C, H, W)
    model = LinearHead(weight, bias).eval()
    exp = camlens.explain(model, inputs, method="hirescam", layer="layer", target=0)
    torch.testing.assert_close(exp.raw.sum(), exp.scores[0] - bias[0])


def test_xgradcam_weights_gradients_by_normalised_activations(weight, activations):
    exp = explain("xgradcam", weight, activations)
    for b in range(2):
        alpha = []
        for k in range(C):
            total = sum(float(activations[b, k, i, j]) for i, j in positions())
            alpha.append(
                sum(float(activations[b, k, i, j] * weight[1, k, i, j]) for i, j in positions())
                / total
            )
        torch.testing.assert_close(exp.raw[b], hand_map(alpha, activations[b]))


def test_layercam_keeps_positive_gradients_per_position(weight, activations):
    exp = explain("layercam", weight, activations)
    for b in range(2):
        expected = torch.zeros(H, W)
        for i, j in positions():
            expected[i, j] = relu(
                sum(relu(float(weight[1, k, i, j])) * float(activations[b, k, i, j])
                    for k in range(C))
            )
        torch.testing.assert_close(exp.raw[b], expected)


def test_gradcam_plus_plus_coefficients(weight, activations):
    exp = explain("gradcam++", weight, activations)
    for b in range(2):
        alpha = []
        for k in range(C):
            total = sum(float(activations[b, k, i, j]) for i, j in positions())
            weight_k = 0.0
            for i, j in positions():
                g = float(weight[1, k, i, j])
                denominator = 2 * g**2 + total * g**3
                coefficient = g**2 / denominator if denominator != 0 else 0.0
                weight_k += coefficient * relu(g)
            alpha.append(weight_k)
        torch.testing.assert_close(exp.raw[b], hand_map(alpha, activations[b]))


def test_eigencam_projects_on_the_first_right_singular_vector(weight, activations):
    exp = explain("eigencam", weight, activations)
    for b in range(2):
        matrix = activations[b].reshape(C, -1).T.double()  # positions x channels
        _, _, vh = torch.linalg.svd(matrix)
        projection = matrix @ vh[0]
        if projection.sum() < 0:
            projection = -projection
        expected = projection.clamp(min=0).reshape(H, W).float()
        torch.testing.assert_close(exp.raw[b], expected, rtol=1e-4, atol=1e-5)


def test_eigencam_is_class_agnostic(weight, activations):
    first = explain("eigencam", weight, activations, target=0)
    second = explain("eigencam", weight, activations, target=1)
    torch.testing.assert_close(first.raw, second.raw)


def test_scorecam_weights_are_softmax_confidence_gains(weight, activations):
    model = LinearHead(weight).eval()
    exp = camlens.explain(model, activations, method="scorecam", layer="layer", target=1)
    with torch.no_grad():
        baseline = torch.softmax(model(torch.zeros(1, C, H, W)), dim=1)[0, 1].item()
        for b in range(2):
            alpha = []
            for k in range(C):
                channel = activations[b, k]
                mask = (channel - channel.min()) / (channel.max() - channel.min())
                probability = torch.softmax(model(activations[b : b + 1] * mask), dim=1)[0, 1]
                alpha.append(probability.item() - baseline)
            torch.testing.assert_close(exp.raw[b], hand_map(alpha, activations[b]))


def test_ablationcam_weights_are_relative_score_drops(weight, activations):
    model = LinearHead(weight).eval()
    exp = camlens.explain(model, activations, method="ablationcam", layer="layer", target=1)
    with torch.no_grad():
        for b in range(2):
            score = model(activations[b : b + 1])[0, 1].item()
            alpha = []
            for k in range(C):
                ablated = activations[b : b + 1].clone()
                ablated[0, k] = 0
                alpha.append((score - model(ablated)[0, 1].item()) / abs(score))
            torch.testing.assert_close(exp.raw[b], hand_map(alpha, activations[b]))


def test_ablationcam_in_chunks_equals_all_at_once(gap_net, images):
    whole = camlens.AblationCAM(gap_net, "features.3")(images)
    chunked = camlens.AblationCAM(gap_net, "features.3", batch_size=4)(images)
    torch.testing.assert_close(whole.raw, chunked.raw)


def test_ablationcam_falls_back_when_copies_do_not_broadcast(gap_net, images):
    class SkipConcat(nn.Module):
        """Concatenates a tensor from before the layer, so a batch of copies cannot broadcast."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            early = self.net.features[0](x)
            late = self.net.features[1:](early)
            joined = torch.cat([late, early[:, : late.shape[1]]], dim=1)
            return self.net.fc(joined[:, : late.shape[1]].mean(dim=(2, 3)))

    model = SkipConcat(gap_net).eval()
    exp = camlens.explain(model, images, method="ablationcam", layer="net.features.3")
    with torch.no_grad():
        score = model(images[:1])[0, exp.targets[0]].item()
    assert exp.raw.shape == (2, 6, 6)
    assert torch.isfinite(exp.raw).all() and score != 0


def test_cam_uses_the_linear_weights(gap_net, images):
    exp = camlens.explain(gap_net, images, method="cam", layer="features", target=2)
    with torch.no_grad():
        features = gap_net.features(images)
    expected = torch.einsum("k,bkij->bij", gap_net.fc.weight[2], features).clamp(min=0)
    torch.testing.assert_close(exp.raw, expected)


def test_guided_backprop_passes_only_positive_gradients():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
            self.value = torch.tensor([[2.0, 1.0], [-1.0, 4.0]])
            self.act = nn.ReLU()

        def forward(self, x):
            hidden = self.act(x * self.scale)
            return (hidden * self.value).sum(dim=(1, 2, 3)).unsqueeze(1)

    x = torch.tensor([[[[1.0, -1.0], [2.0, -3.0]]]])
    exp = camlens.explain(Tiny(), x, method="guided-backprop", target=0)
    scale, value = Tiny().scale, Tiny().value
    expected = scale * (x[0, 0] * scale > 0) * value.clamp(min=0)
    torch.testing.assert_close(exp.attributions[0, 0], expected)
    torch.testing.assert_close(exp.raw[0], expected.abs())


def test_guided_backprop_handles_functional_and_inplace_relus():
    class Functional(nn.Module):
        def forward(self, x):
            hidden = torch.relu_(torch.nn.functional.relu(x) * -1.0 + 1.0)
            return hidden.sum(dim=(1, 2, 3)).unsqueeze(1)

    x = torch.tensor([[[[0.5, 2.0, -1.0]]]])
    exp = camlens.explain(Functional(), x, method="guided-backprop", target=0)
    # Plain gradient: -1 where x > 0 and 1 - x > 0; guided: the negative -1 is blocked at the
    # inner ReLU, so nothing flows back.
    assert torch.count_nonzero(exp.attributions) == 0


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(gap_net, images):
    guided = camlens.explain(gap_net, images, method="guided-backprop", target=1)
    gradcam = camlens.explain(gap_net, images, method="gradcam", layer="features", target=1)
    combined = camlens.explain(gap_net, images, method="guided-gradcam", layer="features", target=1)
    torch.testing.assert_close(combined.raw, guided.raw * gradcam.maps)


class AttentionPool(nn.Module):
    """h (B, T, D) -> alpha = softmax_t(h w) over H heads (B, H, T) -> e = mean_h alpha_h h ->
    linear: attention pooling whose weights pass through ``weights``."""

    def __init__(self, dim: int = 5, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.score = nn.Linear(dim, heads)
        self.weights = nn.Identity()
        self.head = nn.Linear(dim, classes)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        alpha = self.weights(self.score(states).softmax(dim=1).transpose(1, 2))  # (B, H, T)
        pooled = (alpha @ states).mean(dim=1)  # (B, D)
        return self.head(pooled)


def test_attention_methods_by_hand():
    torch.manual_seed(3)
    model = AttentionPool().eval()
    states = torch.randn(2, 7, 5)
    alpha = model.score(states).softmax(dim=1).transpose(1, 2).detach()
    weights = camlens.explain(model, states, method="attention", layer="weights", target=1,
                              input_size=(7,))  # the input is (B, T, D): maps over T
    torch.testing.assert_close(weights.raw, alpha.mean(dim=1))
    assert weights.maps.shape == (2, 7)

    leaf = alpha.clone().requires_grad_(True)
    score = model.head((leaf @ states).mean(dim=1))[:, 1].sum()
    (gradient,) = torch.autograd.grad(score, leaf)
    expected = torch.relu((leaf * gradient).sum(dim=1)).detach()
    product = camlens.explain(model, states, method="attention-gradient", layer="weights",
                              target=1)
    torch.testing.assert_close(product.raw, expected)
    assert "attention" in camlens.available_methods()
    assert "attention-gradient" in camlens.available_methods()
