"""Sanity checks: do the maps change when the model's parameters are randomised?

Model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): re-initialise the model's layers and compare the maps of the randomised model with
the original ones. A method whose maps stay similar does not depend on what the model learned
(the paper finds Gradients and Grad-CAM pass, Guided Backprop and Guided Grad-CAM fail).

- cascading: re-initialise layers one after another from the output end toward the input,
  keeping the earlier ones random, and compare after each step;
- independent: re-initialise one layer at a time, the others kept trained.

Similarity is the Spearman rank correlation between an original and a randomised map, averaged
over the batch (and targets); :func:`spearman` also ranks absolute values (``absolute=True``) and
:func:`camlens.metrics.ssim.ssim` gives the paper's SSIM. :func:`randomization_steps` yields the
randomised models themselves, for comparisons of any maps. The user's model is never touched: a
deep copy is randomised.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from camlens.api import explain
from camlens.capture import named_module
from camlens.model_state import input_tensors, preserved_model_state
from camlens.targets import Target

__all__ = ["average_ranks", "cascading_randomization", "independent_randomization",
           "randomization_steps", "reinitialize", "spearman"]


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``(N, L)`` float64, 1 to L, of each row of ``values (N, L)``; tied values share the
    mean of the ranks they span (as ``scipy.stats.rankdata(method="average")``)."""
    length = values.shape[-1]
    sorted_values, order = values.sort(dim=-1, stable=True)
    positions = torch.arange(length, device=values.device).expand_as(order)
    starts = torch.ones_like(sorted_values, dtype=torch.bool)
    starts[..., 1:] = sorted_values[..., 1:] != sorted_values[..., :-1]
    ends = torch.ones_like(starts)
    ends[..., :-1] = starts[..., 1:]
    first = torch.where(starts, positions, 0).cummax(dim=-1).values
    last = torch.where(ends, positions, length - 1).flip(-1).cummin(dim=-1).values.flip(-1)
    sorted_ranks = (first + last).double() / 2 + 1
    return torch.empty_like(sorted_ranks).scatter_(-1, order, sorted_ranks)


def spearman(a: torch.Tensor, b: torch.Tensor, spatial_ndim: int = 2, *,
             absolute: bool = False) -> torch.Tensor:
    """Spearman rank correlation ``(...,)`` between maps ``a`` and ``b`` ``(..., *spatial)``
    over their last ``spatial_ndim`` axes.

    ``rho = pearson(rank(a), rank(b))`` with average ranks for ties (CAM maps have many exact
    zeros after the ReLU), which equals ``scipy.stats.spearmanr``. A constant map has no
    ordering to share, so its correlation with anything is defined as 0 (scipy gives NaN).

    ``absolute=True`` ranks ``|a|`` and ``|b|`` instead: Adebayo et al.'s "Spearman rank
    correlation with absolute value", which ignores the sign of signed attributions (gradients);
    it changes nothing for non-negative maps such as CAMs.
    """
    if absolute:
        a, b = a.abs(), b.abs()
    if a.shape != b.shape:
        raise ValueError(f"maps to compare differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not 1 <= spatial_ndim <= a.ndim:
        raise ValueError(f"spatial_ndim must be 1 to {a.ndim} for maps {tuple(a.shape)}")
    leading = a.shape[: a.ndim - spatial_ndim]
    map_size = math.prod(a.shape[a.ndim - spatial_ndim :])
    ranks_a = average_ranks(a.detach().reshape(-1, map_size))
    ranks_b = average_ranks(b.detach().to(a.device).reshape(ranks_a.shape))
    centred_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    centred_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    covariance = (centred_a * centred_b).sum(dim=1)
    scale = (centred_a.square().sum(dim=1) * centred_b.square().sum(dim=1)).sqrt()
    rho = torch.where(scale > 0, covariance / scale.clamp_min(1e-300), torch.zeros_like(scale))
    return rho.clamp(-1.0, 1.0).reshape(leading)


def cascading_randomization(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    target: Target = None,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    **options: Any,
) -> list[tuple[str, float]]:
    """Cascading model-parameter randomization (Adebayo et al., NeurIPS 2018).

    Explains ``inputs`` with ``camlens.explain(model, inputs, method, layer, target, **options)``,
    then re-initialises a deep copy of ``model`` one parameterised module at a time,
    cumulatively, from the output end toward the input, and after each step explains again with
    the SAME layer and target classes (a callable target is reused as is). Returns
    ``[(module_name, mean Spearman correlation between original and randomised maps), ...]`` in
    the order the modules were randomised.

    - ``layers``: names of the modules to randomise, in that order; default: every module with
      parameters of its own, in reverse order of their first call in a forward pass (modules the
      forward never calls are left out: they cannot change the maps).
    - Re-initialisation: a module's own ``reset_parameters()`` (PyTorch's default initialiser;
      deterministic ones such as BatchNorm's weight = 1, bias = 0, running statistics reset,
      included); a module without one has each own parameter redrawn from a normal with that
      parameter's mean and standard deviation (0.02 when the parameter is constant).
    - ``seed`` seeds step ``i`` with ``seed + i`` inside :func:`torch.random.fork_rng`, so the
      caller's random state is unchanged and results repeat.
    - The copy costs one more model in memory.
    """
    return _model_randomization(
        model, inputs, method, layer, target, seed, layers, options, cascading=True
    )


def independent_randomization(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    target: Target = None,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    **options: Any,
) -> list[tuple[str, float]]:
    """Independent model-parameter randomization (Adebayo et al., NeurIPS 2018): like
    :func:`cascading_randomization`, but each module is re-initialised alone, every other module
    keeping its trained parameters (the previous module is restored before the next step)."""
    return _model_randomization(
        model, inputs, method, layer, target, seed, layers, options, cascading=False
    )


# --- the shared loop -----------------------------------------------------------------------------


def _model_randomization(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    method: str,
    layer: str | nn.Module | None,
    target: Target,
    seed: int,
    layers: Sequence[str] | None,
    options: dict[str, Any],
    *,
    cascading: bool,
) -> list[tuple[str, float]]:
    tensors = input_tensors(inputs)
    original = explain(model, tensors, method=method, layer=layer, target=target, **options)
    # the same layer (by name, so it resolves in the copy) and the same classes as the original
    layer_name = original.layer
    same_target = original.targets if original.targets is not None else target
    spatial_ndim = len(original.input_size)

    results = []
    with torch.random.fork_rng(devices=_cuda_devices(model)):
        for name, randomized in randomization_steps(model, tensors, layers, seed=seed,
                                                    cascading=cascading):
            changed = explain(
                randomized, tensors, method=method, layer=layer_name, target=same_target,
                **options,
            )
            similarity = spearman(original.maps, changed.maps, spatial_ndim)
            results.append((name, similarity.mean().item()))
    return results


def randomization_steps(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    layers: Sequence[str] | None = None,
    *,
    seed: int = 0,
    cascading: bool = True,
) -> Iterator[tuple[str, nn.Module]]:
    """The randomised models of the model-parameter randomization test (Adebayo et al. 2018),
    one step at a time: yields ``(module name, randomised copy of model)``.

    A deep copy of ``model`` is made once; step ``i`` re-initialises module ``layers[i]`` of it
    (:func:`reinitialize`, seeded with ``seed + i`` inside :func:`torch.random.fork_rng`, so the
    caller's random state is untouched). ``cascading``: the earlier steps stay random (from the
    output end down); otherwise the module is restored once the caller asks for the next step
    (independent randomization). ``layers`` default: every module with parameters of its own, in
    reverse order of their first call in a forward pass of ``inputs``. The yielded copy is the
    same object at every step: use it before asking for the next one. ``model`` is never
    touched.
    """
    tensors = input_tensors(inputs)
    randomized = copy.deepcopy(model)
    if layers is None:
        order = list(reversed(_call_order(randomized, tensors)))
    else:
        order = [named_module(randomized, name)[0] for name in layers]
    modules = dict(randomized.named_modules())
    devices = _cuda_devices(randomized)
    for step, name in enumerate(order):
        module = modules[name]
        saved = None if cascading else copy.deepcopy(module.state_dict())
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + step)
            reinitialize(module)
        yield name, randomized
        if saved is not None:
            module.load_state_dict(saved)


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def _call_order(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[str]:
    """Names of the modules with parameters of their own, in the order a forward pass first
    calls them (one eval-mode forward of ``model`` under ``torch.no_grad()``)."""
    owners = {
        module: name
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    }
    called: list[str] = []

    def record(module: nn.Module, args: tuple) -> None:
        name = owners[module]
        if name not in called:
            called.append(name)

    handles = [module.register_forward_pre_hook(record) for module in owners]
    try:
        with preserved_model_state(model), torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return called


@torch.no_grad()
def reinitialize(module: nn.Module) -> None:
    """Draw ``module``'s parameters afresh: its ``reset_parameters()`` when it has one, else a
    normal with each own parameter's mean and standard deviation (0.02 for a constant one)."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    for parameter in module.parameters(recurse=False):
        values = parameter.detach().float()
        spread = values.std().item() if values.numel() > 1 else 0.0
        if not spread > 0:  # also catches NaN
            spread = 0.02
        parameter.normal_(mean=values.mean().item(), std=spread)
