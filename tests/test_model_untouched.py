"""The user's model is left exactly as it was found: hooks, modes, buffers, flags, gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from toy_models import GapNet

import camlens

ALL_METHODS = camlens.available_methods()
LAYERED = {"layer": "features"}


def hook_counts(model: nn.Module) -> dict[str, int]:
    counts = {}
    for name, module in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks"):
            counts[f"{name}.{kind}"] = len(getattr(module, kind))
    return counts


def global_hook_count() -> int:
    from torch.nn.modules import module as module_mod

    return sum(len(getattr(module_mod, name)) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ))


def snapshot(model: nn.Module) -> dict:
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grads": {k: p.grad for k, p in model.named_parameters()},
        "grad_values": {k: None if p.grad is None else p.grad.clone()
                        for k, p in model.named_parameters()},
        "hooks": hook_counts(model),
        "global_hooks": global_hook_count(),
        "grad_mode": torch.is_grad_enabled(),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == before["hooks"]
    assert after["global_hooks"] == before["global_hooks"]
    assert after["grad_mode"] == before["grad_mode"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    for key, grad in before["grads"].items():
        assert after["grads"][key] is grad, key  # same object, None stays None
        if grad is not None:
            assert torch.equal(grad, before["grad_values"][key])


@pytest.fixture
def messy_model() -> GapNet:
    """A model in train mode with one submodule in eval, one frozen parameter and a .grad set."""
    torch.manual_seed(0)
    model = GapNet().train()
    model.features[1].eval()
    model.features[0].bias.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    return model


@pytest.mark.parametrize("method", ALL_METHODS)
def test_success_leaves_model_unchanged(messy_model, images, method):
    before = snapshot(messy_model)
    exp = camlens.explain(messy_model, images, method=method, **LAYERED)
    assert_unchanged(messy_model, before)
    for tensor in (exp.raw, exp.scores, exp.maps):
        assert tensor.grad_fn is None and not tensor.requires_grad


@pytest.mark.parametrize("method", ALL_METHODS)
def test_invalid_target_leaves_model_unchanged(messy_model, images, method):
    before = snapshot(messy_model)
    with pytest.raises(IndexError, match="99"):
        camlens.explain(messy_model, images, method=method, target=99, **LAYERED)
    assert_unchanged(messy_model, before)


class Exploding(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom from the user's model")


@pytest.mark.parametrize("method", ALL_METHODS)
def test_model_that_raises_leaves_model_unchanged(messy_model, images, method):
    messy_model.fc = nn.Sequential(Exploding())
    before = snapshot(messy_model)
    with pytest.raises(RuntimeError, match="boom"):
        camlens.explain(messy_model, images, method=method, **LAYERED)
    assert_unchanged(messy_model, before)


def test_batchnorm_statistics_do_not_move_in_train_mode(images):
    torch.manual_seed(0)
    model = GapNet().train()
    running_mean = model.features[1].running_mean.clone()
    first = camlens.explain(model, images, layer="features", target=0)
    second = camlens.explain(model, images, layer="features", target=0)
    assert torch.equal(model.features[1].running_mean, running_mean)
    torch.testing.assert_close(first.maps, second.maps)  # dropout off: deterministic
    assert model.training


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "guided-gradcam"])
def test_frozen_model_still_gets_gradients(gap_net, images, method):
    for parameter in gap_net.parameters():
        parameter.requires_grad_(False)
    exp = camlens.explain(gap_net, images, method=method, layer="features", target=1)
    assert exp.maps.amax() == 1.0
    assert all(not p.requires_grad and p.grad is None for p in gap_net.parameters())


def test_outer_no_grad_gives_the_same_maps(gap_net, images):
    plain = camlens.explain(gap_net, images, layer="features")
    with torch.no_grad():
        inside = camlens.explain(gap_net, images, layer="features")
        assert not torch.is_grad_enabled()  # the caller's no_grad() is still in force
    assert torch.is_grad_enabled()
    torch.testing.assert_close(plain.maps, inside.maps)


def test_no_grad_mode_is_restored(gap_net, images):
    with torch.no_grad():
        camlens.explain(gap_net, images, layer="features")
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_inplace_relu_after_the_layer_does_not_change_the_captured_activation(images):
    torch.manual_seed(0)
    model = GapNet(inplace=True).eval()
    exp = camlens.explain(model, images, method="gradcam", layer="features.3", target=0)
    # Reference by hand: the conv's output before the in-place ReLU, and its gradient.
    x = model.features[:3](images)
    activation = model.features[3](x).detach().requires_grad_(True)
    score = model.fc(torch.relu(activation).mean(dim=(2, 3)))[:, 0].sum()
    (gradient,) = torch.autograd.grad(score, activation)
    alpha = gradient.mean(dim=(2, 3))
    expected = torch.relu((alpha[:, :, None, None] * activation).sum(dim=1))
    assert (activation < 0).any()  # the ReLU would have changed it
    torch.testing.assert_close(exp.raw, expected.detach())


def test_module_used_twice_explains_its_last_use(images):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.block = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            hidden = self.block(torch.relu(self.stem(x)))
            hidden = self.block(torch.relu(hidden))
            return self.fc(torch.relu(hidden).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Twice().eval()
    with pytest.warns(UserWarning, match="ran 2 times.*last use"):
        exp = camlens.explain(model, images, layer="block", target=1)
    first = model.block(torch.relu(model.stem(images)))
    last = model.block(torch.relu(first)).detach().requires_grad_(True)
    score = model.fc(torch.relu(last).mean(dim=(2, 3)))[:, 1].sum()
    (gradient,) = torch.autograd.grad(score, last)
    expected = torch.relu((gradient.mean(dim=(2, 3))[:, :, None, None] * last).sum(dim=1))
    torch.testing.assert_close(exp.raw, expected.detach())


def test_no_warning_for_a_layer_used_once(gap_net, images):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        camlens.explain(gap_net, images, layer="features")


def test_no_graph_survives_the_call(gap_net, images):
    import gc
    import weakref

    refs = []
    original = torch.Tensor.requires_grad_

    def spy(self, flag=True):
        refs.append(weakref.ref(self))
        return original(self, flag)

    torch.Tensor.requires_grad_ = spy
    try:
        exp = camlens.explain(gap_net, images, layer="features")
    finally:
        torch.Tensor.requires_grad_ = original
    gc.collect()
    assert refs, "the engine should have made a grad-tracking capture"
    assert all(ref() is None for ref in refs)  # the captured activation and its graph are gone
    assert exp.raw.grad_fn is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device():
    torch.manual_seed(0)
    model = GapNet().eval().cuda()
    images = torch.randn(2, 3, 6, 6)
    for method in ALL_METHODS:
        on_gpu = camlens.explain(model, images.cuda(), method=method, layer="features")
        assert on_gpu.maps.device.type == "cuda" and on_gpu.raw.device.type == "cuda", method
        on_cpu = camlens.explain(model.cpu(), images, method=method, layer="features")
        torch.testing.assert_close(on_gpu.maps.cpu(), on_cpu.maps, atol=1e-4, rtol=1e-4)
        model.cuda()


def test_unique_parameters_match_model_parameters_with_tied_weights():
    from camlens.model_state import unique_parameters

    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 2))
    model[3].weight = shared.weight  # tied across modules, not only a repeated module
    found = unique_parameters(list(model.modules()))
    expected = list(model.parameters())
    assert len(found) == len(expected) == 3
    assert all(a is b for a, b in zip(found, expected, strict=True))
