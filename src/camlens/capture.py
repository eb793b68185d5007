"""Find the target layer, capture its output for one call, and put it in a canonical layout.

The canonical layout of an activation is channels first, ``(B, C, *spatial)``:

- ``(B, C, h, w)`` images, ``(B, C, T)`` audio and time series, ``(B, C, D, h, w)`` video and
  volumes are already canonical;
- token sequences ``(B, N, C)`` from vision transformers (a 3-D output for a 4-D input) drop their
  leading class/register tokens and fold the rest onto the patch grid ``(B, C, h, w)``;
- channels-last outputs ``(B, h, w, C)`` (Swin) are permuted when ``channels_last=True``.

Hooks registered here live for one forward and are removed in ``finally``; they act only for the
call that registered them (:mod:`camlens._calls`), so forwards of other threads and of calls
re-entered from inside the forward pass through untouched.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens._calls import CallToken, current, is_current
from camlens.layouts import Layout, detect_layout, infer_token_grid

__all__ = ["CaptureOptions", "LayerCapture", "Layout", "capture_layer", "checked_activation",
           "detect_layout", "first_tensor", "infer_token_grid", "named_module"]



def named_module(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """(name, module) for ``layer``: a dotted name (negative indices allowed) or a module."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(
            f"layer {type(layer).__name__} is not a submodule of the model; pass one of its "
            "modules or a dotted name from model.named_modules()"
        )
    if not isinstance(layer, str):
        raise TypeError(
            f"layer must be a dotted name, a module or None, got {type(layer).__name__}: {layer!r}"
        )
    # Walk the dotted path (cost: its depth, not the model's size); list every name only for
    # the error message.
    module = model
    resolved: list[str] = []
    for part in layer.split(".") if layer else []:
        children = dict(module.named_children())
        if part not in children and part.lstrip("-").isdigit() and isinstance(
            module, (nn.Sequential, nn.ModuleList)
        ):
            index = int(part)
            if -len(module) <= index < len(module):
                part = str(index % len(module))
        if part not in children:
            names = [name for name, _ in model.named_modules() if name]
            close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
            hint = f"closest names: {', '.join(close)}" if close else (
                "see model.named_modules() or `camlens layers` for the names"
            )
            raise ValueError(f"unknown layer {layer!r}; {hint}")
        module = children[part]
        resolved.append(part)
    return ".".join(resolved), module


def first_tensor(output: object) -> torch.Tensor | None:
    """The tensor a module produced: itself, or the first element of a tuple/list."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


@dataclass
class LayerCapture:
    """The target layer's output of the last call, as a leaf the scores can be differentiated to.

    ``track_grad``: make the captured output a leaf that requires grad and switch autograd on from
    this layer onward, so the backward pass runs from the scores to this layer and no further.
    ``replace``: a function of the captured output whose result the rest of the network receives
    instead (used by Ablation-CAM).
    """

    module: nn.Module
    track_grad: bool = True
    replace: Callable[[torch.Tensor], torch.Tensor] | None = None
    activation: torch.Tensor | None = None
    calls: int = 0
    handles: list = field(default_factory=list)
    token: CallToken | None = field(default_factory=current)

    def hook(self, module: nn.Module, args: tuple, output: object) -> object:
        if not is_current(self.token):  # another thread's forward, or an inner call's
            return None
        tensor = first_tensor(output)
        if tensor is None:
            raise TypeError(
                f"the target layer returned {type(output).__name__}, not a tensor or a tuple "
                "starting with one; choose another layer"
            )
        self.calls += 1
        if self.track_grad and tensor.requires_grad and torch.is_grad_enabled():
            # Recording was switched on by an earlier captured layer of this call (several
            # layers at once): keep the graph, so gradients flow through this layer to that one.
            activation = tensor
        else:
            activation = tensor.detach()
            if self.track_grad:
                activation.requires_grad_(True)
                torch.set_grad_enabled(True)
        self.activation = activation
        # The clone keeps in-place operations downstream (ReLU(inplace=True)) off the capture.
        passed_on = self.replace(activation) if self.replace else activation.clone()
        if isinstance(output, torch.Tensor):
            return passed_on
        assert isinstance(output, (tuple, list))  # first_tensor found its first element
        rest = list(output[1:])
        return [passed_on, *rest] if isinstance(output, list) else (passed_on, *rest)


@contextmanager
def capture_layer(
    module: nn.Module,
    *,
    track_grad: bool = True,
    replace: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[LayerCapture]:
    """Hook ``module`` for the body of the block; the hook is removed in ``finally``."""
    capture = LayerCapture(module, track_grad=track_grad, replace=replace)
    handle = module.register_forward_hook(capture.hook)
    try:
        yield capture
    finally:
        handle.remove()


def checked_activation(capture: LayerCapture, layer_name: str) -> torch.Tensor:
    """The captured output; warns when the layer ran more than once (its last use is explained)."""
    if capture.activation is None:
        raise ValueError(
            f"layer {layer_name!r} was not called during the forward pass; choose a layer the "
            "model uses"
        )
    if capture.calls > 1:
        warnings.warn(
            f"layer {layer_name!r} ran {capture.calls} times in one forward pass; camlens "
            "explains its last use",
            stacklevel=3,
        )
    return capture.activation


@dataclass(frozen=True)
class CaptureOptions:
    """How one method reads its target layer and the model's output; every method takes them.

    Attributes:
        output_fn: turns the model output into what the targets read (default: see
            :func:`camlens.targets.adapt_output`).
        channels_last: the layer outputs ``(B, h, w, C)`` (True) or ``(B, C, h, w)`` (False);
            None detects it from the shapes (:mod:`camlens.layouts`).
        token_grid: the patch grid ``(h, w)`` of a token sequence ``(B, N, C)`` (inferred from
            the explained input's aspect ratio when None).
        prefix_tokens: how many leading class/register tokens to drop (inferred when None).
        input_size: the spatial size ``maps`` are upsampled to (default: the explained
            input's).
        input_index: which of the model's positional inputs is explained (the maps lie over
            its grid; the others are held fixed).
    """

    output_fn: Callable[[Any], Any] | None = None
    channels_last: bool | None = None
    token_grid: tuple[int, int] | None = None
    prefix_tokens: int | None = None
    input_size: Sequence[int] | None = None
    input_index: int = 0

    def __post_init__(self) -> None:
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(self.input_size))
        if self.token_grid is not None:
            object.__setattr__(self, "token_grid", tuple(self.token_grid))
        if isinstance(self.input_index, bool) or not isinstance(self.input_index, int) or (
                self.input_index < 0):
            raise ValueError(f"input_index must be an int >= 0, got {self.input_index!r}")

    def explained(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The input the maps lie over."""
        if self.input_index >= len(inputs):
            raise ValueError(f"input_index={self.input_index}, but the model gets "
                             f"{len(inputs)} input(s)")
        return inputs[self.input_index]

    def layout(self, raw_shape: torch.Size, explained_shape: torch.Size, layer_name: str,
               module: nn.Module | None = None) -> Layout:
        """The :class:`~camlens.layouts.Layout` of a layer output of ``raw_shape`` over an
        explained input of ``explained_shape`` under these options."""
        return detect_layout(raw_shape, explained_shape, channels_last=self.channels_last,
                             token_grid=self.token_grid, prefix_tokens=self.prefix_tokens,
                             layer_name=layer_name, module=module)

    def as_keywords(self) -> dict[str, Any]:
        """The options as the keyword arguments a method takes."""
        return {"output_fn": self.output_fn, "channels_last": self.channels_last,
                "token_grid": self.token_grid, "prefix_tokens": self.prefix_tokens,
                "input_size": self.input_size, "input_index": self.input_index}


_REPLACED = {
    "choose_layer": "camlens.layer_choice.choose_layer (the automatic layer is detected now: "
                    "the input's grid and the score's gradient at every position)",
    "has_spatial_axis": "camlens.layouts.detect_layout (a LayoutError when a layer's output "
                        "has no grid over the input)",
}


def __getattr__(name: str) -> Any:
    if name in _REPLACED:
        raise AttributeError(f"camlens.capture.{name} was replaced by {_REPLACED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
