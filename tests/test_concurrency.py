"""Two threads on one model, and a call re-entered from a forward hook, give the serial results
and leave the model as found. The bad interleavings are forced with events, not hoped for."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from toy_models import GapNet

import camlens


class Gate(nn.Module):
    """Identity that, on the thread told to, pauses until another thread has run its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.pause_thread: int | None = None
        self.paused = threading.Event()
        self.resume = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if threading.get_ident() == self.pause_thread:
            self.pause_thread = None
            self.paused.set()
            assert self.resume.wait(timeout=30)
        return x


class GatedNet(nn.Module):
    """GapNet with a gate after the target layer and one before it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = GapNet()
        self.before = Gate()
        self.after = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.after(self.inner.features(self.before(x)))
        return self.inner.fc(features.mean(dim=(2, 3)))


def state_of(model: nn.Module) -> dict:
    return {"training": [m.training for m in model.modules()],
            "buffers": {k: v.clone() for k, v in model.state_dict().items()},
            "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
                         for m in model.modules()),
            "forwards": [name for name, m in model.named_modules() if "forward" in m.__dict__]}


def interleave(model: GatedNet, gate: Gate, first, second):
    """Run ``first`` on a thread until it reaches ``gate``, run ``second`` on this thread to the
    end, then let ``first`` finish. Returns (first's result, second's result)."""
    results: dict[str, object] = {}

    def run_first():
        gate.pause_thread = threading.get_ident()
        results["first"] = first()

    thread = threading.Thread(target=run_first)
    thread.start()
    assert gate.paused.wait(timeout=30)
    try:
        results["second"] = second()
    finally:
        gate.resume.set()
        thread.join(timeout=60)
    gate.paused.clear()
    gate.resume.clear()
    return results["first"], results["second"]


METHODS = ["gradcam", "cam", "eigencam", "layercam", "ablationcam", "scorecam",
           "guided-gradcam"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("where", ["before", "after"])
def test_another_threads_call_in_the_middle_changes_nothing(method, where):
    model = GatedNet().eval()
    one, two = torch.randn(2, 3, 6, 6), torch.randn(3, 3, 6, 6)
    layer = "inner.features"
    serial_one = camlens.explain(model, one, method=method, layer=layer, target=1)
    serial_two = camlens.explain(model, two, method=method, layer=layer, target=2)
    gate = model.before if where == "before" else model.after
    first, second = interleave(
        model, gate,
        lambda: camlens.explain(model, one, method=method, layer=layer, target=1),
        lambda: camlens.explain(model, two, method=method, layer=layer, target=2))
    torch.testing.assert_close(first.raw, serial_one.raw)
    torch.testing.assert_close(second.raw, serial_two.raw)


@pytest.mark.parametrize("method", ["gradcam", "ablationcam"])
def test_a_plain_forward_on_another_thread_is_left_alone(method):
    model = GatedNet().eval()
    one, other = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 6, 6)
    serial = camlens.explain(model, one, method=method, layer="inner.features", target=1)
    with torch.no_grad():
        expected_output = model(other)
    first, output = interleave(
        model, model.after,
        lambda: camlens.explain(model, one, method=method, layer="inner.features", target=1),
        lambda: model(other).detach())
    torch.testing.assert_close(first.raw, serial.raw)
    torch.testing.assert_close(output, expected_output)


def test_a_train_mode_model_shared_by_two_calls_is_left_as_found():
    model = GatedNet().train()
    before = state_of(model)
    one, two = torch.randn(2, 3, 6, 6), torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        serial = [camlens.explain(model, x, layer="inner.features", target=0).raw
                  for x in (one, two)]
    first, second = interleave(
        model, model.before,
        lambda: camlens.explain(model, one, layer="inner.features", target=0),
        lambda: camlens.explain(model, two, layer="inner.features", target=0))
    torch.testing.assert_close(first.raw, serial[0])
    torch.testing.assert_close(second.raw, serial[1])
    after = state_of(model)
    assert after["training"] == before["training"]  # train mode back, on every module
    for key, value in before["buffers"].items():
        assert torch.equal(after["buffers"][key], value), key  # BatchNorm statistics unchanged
    assert after["hooks"] == 0 and after["forwards"] == []


def test_a_call_reentered_from_a_forward_hook_gets_its_own_map():
    torch.manual_seed(0)
    model = GapNet().eval()
    outer_images, inner_images = torch.randn(2, 3, 6, 6), torch.randn(1, 3, 6, 6)
    expected_outer = camlens.explain(model, outer_images, layer="features", target=1)
    expected_inner = camlens.explain(model, inner_images, layer="features", target=3)
    inner_results, entered = [], []

    def explain_inside(module, args, output):
        if not entered:  # once: the inner call's own forward comes through here too
            entered.append(True)
            inner_results.append(camlens.explain(model, inner_images, layer="features",
                                                 target=3))

    handle = model.fc.register_forward_hook(explain_inside)
    try:
        outer = camlens.explain(model, outer_images, layer="features", target=1)
    finally:
        handle.remove()
    torch.testing.assert_close(outer.raw, expected_outer.raw)
    assert float(outer.raw.sum()) > 0
    torch.testing.assert_close(inner_results[0].raw, expected_inner.raw)


def test_calls_on_different_models_run_at_the_same_time():
    """No lock shared between models: a call on model A that waits inside its forward does not
    hold up a call on model B."""
    model_a, model_b = GatedNet().eval(), GatedNet().eval()
    images = torch.randn(2, 3, 6, 6)
    expected_b = camlens.explain(model_b, images, layer="inner.features").raw
    _, on_b = interleave(model_a, model_a.after,
                         lambda: camlens.explain(model_a, images, layer="inner.features"),
                         lambda: camlens.explain(model_b, images, layer="inner.features"))
    torch.testing.assert_close(on_b.raw, expected_b)
