"""A layer's activations over a data set, collected in batches and pooled as they stream by.

For every batch of inputs one forward pass runs under ``torch.no_grad()`` with a forward hook on
each requested layer (:func:`camlens.capture.capture_layer`, registered for this call only and
removed in ``finally``); each layer's output ``A`` of shape ``(B, C, *spatial)`` (or ``(B, D)``)
is reduced at once to one row per input, so memory holds only the pooled rows, never the maps:

- ``"mean"``: ``f_c = mean_s A[c, s]`` (global average pooling; ``C`` features);
- ``"max"``: ``f_c = max_s A[c, s]`` (``C`` features);
- ``"grid"``: adaptive average pooling to ``grid x grid`` cells, flattened channel-major
  (``C * grid**2`` features; keeps coarse position, which a global mean throws away);
- ``"flatten"``: every value (``C * prod(spatial)`` features; refused above ``max_features``).

Outputs that are already ``(B, D)`` (linear layers, logits) are kept as they are. The model runs
in eval mode inside :func:`camlens.model_state.preserved_model_state`: its modes,
``requires_grad`` flags, ``.grad`` and buffers are as they were afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from camlens._calls import active_call
from camlens.capture import capture_layer, checked_activation, named_module
from camlens.model_state import model_device, preserved_model_state

__all__ = ["INPUT_LAYER", "POOLINGS", "LabelledData", "batches", "layer_activations",
           "pool_activation"]

POOLINGS = ("mean", "max", "grid", "flatten")
#: The pseudo-layer name that stands for the model's input (a baseline for probes).
INPUT_LAYER = "input"

#: Inputs and their labels: a tensor ``(N, ...)`` with labels ``(N,)`` (or None), or a data set
#: whose items are ``{"image": x, "label": y}`` dicts, ``(x, y)`` pairs or bare tensors.
LabelledData = tuple[torch.Tensor, torch.Tensor | None] | torch.Tensor | Dataset


def pool_activation(activation: torch.Tensor, pooling: str = "mean", grid: int = 4
                    ) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, D)`` by ``pooling`` (see the module's docstring)."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    activation = activation.detach().float()
    if activation.ndim <= 2:
        return activation.reshape(activation.shape[0], -1)
    if pooling == "mean":
        return activation.flatten(2).mean(dim=2)
    if pooling == "max":
        return activation.flatten(2).amax(dim=2)
    if pooling == "grid":
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a positive int, got {grid!r}")
        spatial = activation.ndim - 2
        pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
        if spatial not in pool:
            raise ValueError(f"grid pooling takes 1 to 3 spatial axes, got an activation of "
                             f"shape {tuple(activation.shape)}")
        return pool[spatial](activation, (grid,) * spatial).flatten(1)
    return activation.flatten(1)


def batches(data: LabelledData, batch_size: int = 256
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(inputs, labels or None)`` in batches of ``batch_size`` from any :data:`LabelledData`;
    a data set is read item by item, so only one batch is in memory."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(data, torch.Tensor):
        data = (data, None)
    if isinstance(data, tuple):
        inputs, labels = data
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
        if labels is not None and len(labels) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        for start in range(0, len(inputs), batch_size):
            yield (inputs[start:start + batch_size],
                   None if labels is None else labels[start:start + batch_size])
        return
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise TypeError("data must be a tensor, an (inputs, labels) pair or a sized torch "
                        f"Dataset, got {type(data).__name__}")
    for start in range(0, len(data), batch_size):
        items = [_split_item(data[index]) for index in range(start, min(start + batch_size,
                                                                         len(data)))]
        inputs = torch.stack([item[0] for item in items])
        labels = None if items[0][1] is None else torch.stack(
            [torch.as_tensor(item[1]) for item in items])
        yield inputs, labels


def _split_item(item: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(item, dict):
        if "image" not in item:
            raise ValueError(f"data set items are dicts without an 'image' key (keys: "
                             f"{', '.join(map(str, item))})")
        return item["image"], item.get("label")
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else None)
    if isinstance(item, torch.Tensor):
        return item, None
    raise TypeError(f"cannot read a data set item of type {type(item).__name__}; expected a "
                    "dict with 'image', an (input, label) pair or a tensor")


def layer_activations(
    model: nn.Module,
    data: LabelledData,
    layers: str | Sequence[str],
    *,
    pooling: str = "mean",
    grid: int = 4,
    batch_size: int = 256,
    max_features: int = 65536,
    device: str | torch.device | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The pooled activations of each of ``layers`` over ``data``, and the labels.

    Returns ``({layer: features (N, D) float32 on the CPU}, labels (N,) or None)``. One forward
    per batch feeds every layer (the model is run once per input, whatever the number of
    layers). ``layers`` are dotted module names (as ``model.named_modules()``; negative indices
    work) or ``"input"`` for the input itself, pooled the same way. An unknown name raises
    before any forward, with the closest names.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("no layer given; name at least one (see model.named_modules())")
    modules = {name: named_module(model, name)[1] for name in names if name != INPUT_LAYER}
    device = torch.device(device) if device is not None else (model_device(model)
                                                              or torch.device("cpu"))
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    label_batches: list[torch.Tensor] = []
    with preserved_model_state(model), active_call(), torch.no_grad(), ExitStack() as hooks:
        captures = {name: hooks.enter_context(capture_layer(module, track_grad=False))
                    for name, module in modules.items()}
        for inputs, labels in batches(data, batch_size):
            inputs = inputs.to(device)
            for capture in captures.values():
                capture.calls, capture.activation = 0, None
            model(inputs)
            for name in names:
                activation = inputs if name == INPUT_LAYER else checked_activation(
                    captures[name], name)
                if activation.shape[0] != inputs.shape[0]:
                    raise ValueError(
                        f"layer {name!r} output has {activation.shape[0]} rows for a batch of "
                        f"{inputs.shape[0]} inputs (shape {tuple(activation.shape)}); choose a "
                        "layer whose output has the batch axis first")
                features = pool_activation(activation, pooling, grid)
                if features.shape[1] > max_features:
                    raise ValueError(
                        f"layer {name!r} gives {features.shape[1]} features per input with "
                        f"pooling={pooling!r}, more than max_features={max_features}; use "
                        "pooling='mean' or 'grid', or raise max_features")
                collected[name].append(features.cpu())
            if labels is not None:
                label_batches.append(torch.as_tensor(labels).cpu())
    features = {name: torch.cat(rows) for name, rows in collected.items()}
    labels = torch.cat(label_batches).long() if label_batches else None
    if labels is not None and len(labels) != len(next(iter(features.values()))):
        labels = None  # some items had labels and some did not
    return features, labels
