"""Spearman correlation and the model-parameter randomization tests (Adebayo et al.)."""

from __future__ import annotations

import pytest
import torch
from toy_models import GapNet

import camlens
from camlens.metrics import cascading_randomization, independent_randomization, spearman
from camlens.metrics import sanity as sanity_module
from camlens.metrics.sanity import average_ranks

stats = pytest.importorskip("scipy.stats")

GAP_NET_MODULES_OUTPUT_FIRST = ["fc", "features.3", "features.1", "features.0"]


# --- Spearman -----------------------------------------------------------------------------------


def test_spearman_matches_scipy_on_tie_free_maps():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(5, 6, 7, generator=generator)
    b = a + 0.3 * torch.rand(5, 6, 7, generator=generator)
    rho = spearman(a, b)
    assert rho.shape == (5,)
    for index in range(5):
        expected = stats.spearmanr(a[index].flatten(), b[index].flatten()).statistic
        assert rho[index].item() == pytest.approx(expected, abs=1e-10)


def test_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(1)
    a = torch.randint(0, 4, (3, 2, 5, 5), generator=generator).float()  # many ties
    b = torch.randint(0, 3, (3, 2, 5, 5), generator=generator).float()
    rho = spearman(a, b)
    assert rho.shape == (3, 2)
    for i in range(3):
        for k in range(2):
            expected = stats.spearmanr(a[i, k].flatten(), b[i, k].flatten()).statistic
            assert rho[i, k].item() == pytest.approx(expected, abs=1e-10)


def test_average_ranks_match_scipy():
    values = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    expected = [stats.rankdata(row.numpy(), method="average").tolist() for row in values]
    assert average_ranks(values).tolist() == expected


def test_spearman_extremes_and_constant_maps():
    a = torch.rand(4, 4)
    assert spearman(a, a).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    assert spearman(a, torch.zeros(4, 4)).item() == 0.0  # no ordering: defined as 0
    assert spearman(a, a.exp()).item() == pytest.approx(1.0)  # ranks only


def test_spearman_refuses_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        spearman(torch.rand(2, 3, 3), torch.rand(2, 3, 4))


# --- randomization ------------------------------------------------------------------------------


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {key: value.clone() for key, value in model.state_dict().items()},
        "training": [module.training for module in model.modules()],
        "grads": [parameter.grad for parameter in model.parameters()],
    }


def assert_same(model: torch.nn.Module, before: dict) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, before["state"][key]), key
    assert [module.training for module in model.modules()] == before["training"]
    assert [parameter.grad for parameter in model.parameters()] == before["grads"]


@pytest.fixture
def trained_like_net() -> GapNet:
    """A GapNet with non-default BatchNorm parameters and statistics, left in train mode."""
    torch.manual_seed(0)
    net = GapNet()
    with torch.no_grad():
        net.features[1].weight.uniform_(0.5, 1.5)
        net.features[1].bias.uniform_(-0.2, 0.2)
        net.features[1].running_mean.uniform_(-0.1, 0.1)
    return net.train()


def test_cascading_randomization_covers_every_parameterised_module(trained_like_net, images):
    before = snapshot(trained_like_net)
    rng_before = torch.random.get_rng_state()
    results = cascading_randomization(trained_like_net, images, layer="features")
    assert [name for name, _ in results] == GAP_NET_MODULES_OUTPUT_FIRST
    for _, rho in results:
        assert -1.0 <= rho <= 1.0
    assert results[0][1] < 0.999  # a new classifier changes Grad-CAM's maps
    assert_same(trained_like_net, before)
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_randomization_repeats_with_the_same_seed(trained_like_net, images):
    first = cascading_randomization(trained_like_net, images, layer="features", seed=3)
    second = cascading_randomization(trained_like_net, images, layer="features", seed=3)
    other = cascading_randomization(trained_like_net, images, layer="features", seed=4)
    assert first == second
    assert first != other


def test_independent_randomization_restores_each_module(trained_like_net, images):
    before = snapshot(trained_like_net)
    kwargs = {"layer": "features"}
    independent = independent_randomization(trained_like_net, images, **kwargs)
    cascading = cascading_randomization(trained_like_net, images, **kwargs)
    assert [name for name, _ in independent] == GAP_NET_MODULES_OUTPUT_FIRST
    assert independent[0] == cascading[0]  # the first step is the same in both
    # step 1 (seed 0 + 1) alone equals a run of that module alone with seed 1: fc was restored
    both = independent_randomization(
        trained_like_net, images, layers=["fc", "features.0"], seed=0, **kwargs
    )
    alone = independent_randomization(
        trained_like_net, images, layers=["features.0"], seed=1, **kwargs
    )
    assert both[1] == alone[0]
    assert_same(trained_like_net, before)


def test_randomized_maps_use_the_original_targets(trained_like_net, images, monkeypatch):
    calls = []
    real_explain = sanity_module.explain

    def recording_explain(model, inputs, **kwargs):
        explanation = real_explain(model, inputs, **kwargs)
        calls.append(explanation.targets)
        return explanation

    monkeypatch.setattr(sanity_module, "explain", recording_explain)
    results = cascading_randomization(
        trained_like_net, images, layer="features", target=camlens.TopK(2)
    )
    assert len(calls) == 1 + len(results)
    assert calls[0].shape == (2, 2)
    for targets in calls[1:]:
        assert torch.equal(targets, calls[0])


def test_named_layers_are_randomised_in_the_given_order(trained_like_net, images):
    results = cascading_randomization(
        trained_like_net, images, layer="features", layers=["features.0", "fc"]
    )
    assert [name for name, _ in results] == ["features.0", "fc"]
    with pytest.raises(ValueError, match="fcc"):
        cascading_randomization(trained_like_net, images, layer="features", layers=["fcc"])


def test_a_module_without_reset_parameters_is_redrawn(images):
    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = torch.nn.Parameter(torch.linspace(0.5, 2.0, 6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain[None, :, None, None]

    torch.manual_seed(0)
    net = GapNet()
    net.features.append(Scale())
    before = net.features[5].gain.detach().clone()
    results = cascading_randomization(net, images, layer="features.4", layers=["features.5"])
    assert [name for name, _ in results] == ["features.5"]
    assert results[0][1] < 0.999  # new gains after the layer change Grad-CAM's channel weights
    assert torch.equal(net.features[5].gain, before)
    scale = Scale()
    sanity_module.reinitialize(scale)
    assert not torch.equal(scale.gain.detach(), before)


def test_randomization_steps_yield_the_randomised_copy(trained_like_net, images):
    from camlens.metrics import randomization_steps

    before = snapshot(trained_like_net)
    original = {key: value.clone() for key, value in trained_like_net.state_dict().items()}
    changed_so_far: list[set[str]] = []
    for name, randomized in randomization_steps(trained_like_net, images, seed=2):
        state = randomized.state_dict()
        changed_so_far.append({key.rsplit(".", 1)[0] for key, value in state.items()
                               if not torch.equal(value, original[key])})
        assert name in changed_so_far[-1]
    assert [sorted(found) for found in changed_so_far][-1] == sorted(GAP_NET_MODULES_OUTPUT_FIRST)
    # independent: only the current module differs from the trained model
    for name, randomized in randomization_steps(trained_like_net, images, cascading=False):
        state = randomized.state_dict()
        differ = {key.rsplit(".", 1)[0] for key, value in state.items()
                  if not torch.equal(value, original[key])}
        assert differ == {name}
    assert_same(trained_like_net, before)
