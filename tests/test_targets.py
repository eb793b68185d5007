"""Every form of target, and every form of model output."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import camlens
from camlens.explanation import normalize


def test_default_target_is_the_top1_class(gap_net, images):
    exp = camlens.explain(gap_net, images, layer="features")
    with torch.no_grad():
        logits = gap_net(images)
    torch.testing.assert_close(exp.targets, logits.argmax(dim=1))
    torch.testing.assert_close(exp.scores, logits.max(dim=1).values)
    assert exp.maps.shape == (2, 6, 6) and exp.raw.shape == (2, 6, 6)


@pytest.mark.parametrize("target", [3, [3, 3], torch.tensor([3, 3]), torch.tensor(3)])
def test_one_class_for_every_input(gap_net, images, target):
    exp = camlens.explain(gap_net, images, layer="features", target=target)
    assert exp.targets.tolist() == [3, 3] and exp.maps.shape == (2, 6, 6)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "cam", "scorecam",
                                    "ablationcam", "guided-gradcam", "guided-backprop"])
def test_k_targets_per_input_equal_k_single_calls(gap_net, images, method):
    classes = torch.tensor([[4, 0, 2], [1, 3, 0]])
    many = camlens.explain(gap_net, images, method=method, layer="features", target=classes)
    assert many.maps.shape == (2, 3, 6, 6) and many.scores.shape == (2, 3)
    for k in range(3):
        single = camlens.explain(gap_net, images, method=method, layer="features",
                                 target=classes[:, k])
        torch.testing.assert_close(many.maps[:, k], single.maps, msg=f"{method} k={k}")
        torch.testing.assert_close(many.scores[:, k], single.scores)


def test_class_discriminative_maps_differ(gap_net, images):
    exp = camlens.explain(gap_net, images, layer="features", target=[[0, 1], [0, 1]])
    assert not torch.allclose(exp.maps[:, 0], exp.maps[:, 1])


def test_topk_orders_classes_by_score(gap_net, images):
    exp = camlens.explain(gap_net, images, layer="features", target=camlens.TopK(3))
    with torch.no_grad():
        top = gap_net(images).topk(3, dim=1)
    torch.testing.assert_close(exp.targets, top.indices)
    torch.testing.assert_close(exp.scores, top.values)


def test_all_classes(gap_net, images):
    exp = camlens.explain(gap_net, images, layer="features", target="all")
    assert exp.targets.tolist() == [[0, 1, 2, 3, 4]] * 2
    assert exp.maps.shape == (2, 5, 6, 6)


def test_callable_target_one_score_per_input(gap_net, images):
    exp = camlens.explain(gap_net, images, layer="features",
                          target=lambda out: out[:, 1] - out[:, 2])
    assert exp.targets is None and exp.maps.shape == (2, 6, 6)
    with torch.no_grad():
        logits = gap_net(images)
    torch.testing.assert_close(exp.scores, logits[:, 1] - logits[:, 2])
    # Grad-CAM's alpha is linear in the score: alpha(y1 - y2) = alpha(y1) - alpha(y2).
    from camlens.methods.gradient import weighted_channel_sum

    activations = gap_net.features(images)
    (g1,) = torch.autograd.grad(gap_net.fc(activations.mean(dim=(2, 3)))[:, 1].sum(), activations)
    (g2,) = torch.autograd.grad(gap_net.fc(activations.mean(dim=(2, 3)))[:, 2].sum(), activations)
    alpha = (g1 - g2).mean(dim=(2, 3)).unsqueeze(1)
    expected = weighted_channel_sum(alpha, activations.detach()).squeeze(1).clamp(min=0)
    torch.testing.assert_close(exp.raw, expected)


def test_callable_target_k_scores(gap_net, images):
    exp = camlens.explain(gap_net, images, layer="features", target=lambda out: out[:, :2])
    index = camlens.explain(gap_net, images, layer="features", target=[[0, 1], [0, 1]])
    torch.testing.assert_close(exp.maps, index.maps)


class Wrapped(nn.Module):
    def __init__(self, net, kind):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        logits = self.net(x)
        if self.kind == "tuple":
            return logits, logits.sum()
        if self.kind == "list":
            return [logits]
        if self.kind == "dict":
            return {"logits": logits, "hidden": x}
        return SimpleNamespace(logits=logits, loss=None)


@pytest.mark.parametrize("kind", ["tuple", "list", "dict", "object"])
def test_output_adapters(gap_net, images, kind):
    exp = camlens.explain(Wrapped(gap_net, kind), images, layer="net.features", target=2)
    plain = camlens.explain(gap_net, images, layer="features", target=2)
    torch.testing.assert_close(exp.maps, plain.maps)


def test_output_fn_overrides(gap_net, images):
    exp = camlens.explain(gap_net, images, layer="features", target=0,
                          output_fn=lambda out: -out)
    plain = camlens.explain(gap_net, images, layer="features", target=0)
    torch.testing.assert_close(exp.scores, -plain.scores)


def test_method_objects_are_reusable(gap_net, images):
    cam = camlens.GradCAM(gap_net, layer="features")
    first, second = cam(images, target=1), cam(images[:1], target=[1])
    torch.testing.assert_close(first.maps[:1], second.maps)
    assert "features" in repr(cam)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=4, max_size=4),
       st.integers(1, 4), st.integers(1, 4))
def test_normalised_maps_have_peak_one_or_are_zero(values, height, width):
    raw = torch.tensor(values * (height * width)).reshape(4, height, width)[:1]
    maps = normalize(raw, 2)
    assert torch.isfinite(maps).all()
    assert maps.max() in (0.0, 1.0)
    assert maps.min() == 0.0


def test_batched_backward_equals_one_pass_per_target(gap_net, images, monkeypatch):
    import camlens.methods.base as base

    classes = torch.tensor([[4, 0, 2], [1, 3, 0]])
    original = base.batched_score_gradients
    batched_results = []

    def watched(scores, activation):
        batched_results.append(original(scores, activation))
        return batched_results[-1]

    monkeypatch.setattr(base, "batched_score_gradients", watched)
    batched = camlens.explain(gap_net, images, method="hirescam", layer="features",
                              target=classes)
    assert len(batched_results) == 1 and batched_results[0] is not None  # one vmapped pass
    calls = []

    def refuse(scores, activation):
        calls.append(scores.shape)
        return None

    monkeypatch.setattr(base, "batched_score_gradients", refuse)
    looped = camlens.explain(gap_net, images, method="hirescam", layer="features",
                             target=classes)
    assert calls == [torch.Size([2, 3])]
    torch.testing.assert_close(batched.raw, looped.raw)


@pytest.mark.parametrize("method", ["gradcam", "cam", "scorecam"])
def test_classes_predicted_under_inference_mode(gap_net, images, method):
    """A target tensor made under torch.inference_mode (``model(x).argmax(1)`` in an inference
    loop) is plain class indices: explained as the same classes given outside it."""
    with torch.inference_mode():
        predicted = gap_net(images).argmax(dim=1)
    reference = camlens.explain(gap_net, images, method=method, target=predicted.tolist())
    exp = camlens.explain(gap_net, images, method=method, target=predicted)
    torch.testing.assert_close(exp.maps, reference.maps)
    assert exp.targets.tolist() == predicted.tolist()
