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
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens._calls import CallToken, current, is_current

__all__ = ["CaptureOptions", "LayerCapture", "Layout", "capture_layer", "checked_activation",
           "choose_layer", "detect_layout", "first_tensor", "has_spatial_axis",
           "infer_token_grid", "named_module"]

#: How many leading (class, distillation, register) tokens a token layout may carry.
MAX_PREFIX_TOKENS = 16


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


def has_spatial_axis(shape: torch.Size, input_ndim: int) -> bool:
    """Whether a layer output of ``shape`` has positions to put a map on."""
    if len(shape) == 3 and input_ndim == 4:  # tokens (B, N, C) of an image model
        return shape[1] > 1
    return len(shape) >= 3 and math.prod(shape[2:]) > 1


def choose_layer(model: nn.Module, run_forward: Callable[[], object], input_ndim: int) -> str:
    """The last module, in order of completion, whose output has a spatial or token axis."""
    shapes: dict[str, torch.Size] = {}
    order: list[str] = []
    handles = []
    token = current()

    def make_hook(name: str):
        def hook(module, args, output):
            if not is_current(token):
                return
            tensor = first_tensor(output)
            if tensor is not None:
                shapes[name] = tensor.shape
                order.append(name)

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            run_forward()
    finally:
        for handle in handles:
            handle.remove()
    for name in reversed(order):
        if has_spatial_axis(shapes[name], input_ndim):
            return name
    raise ValueError(
        "found no layer with a spatial or token output to explain; pass layer= explicitly"
    )


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
class Layout:
    """How a layer's raw output maps onto the canonical ``(B, C, *spatial)`` layout."""

    kind: str  # "channels_first", "tokens" or "channels_last"
    prefix_tokens: int = 0
    grid: tuple[int, ...] = ()

    def to_canonical(self, raw: torch.Tensor) -> torch.Tensor:
        if self.kind == "channels_first":
            return raw
        if self.kind == "channels_last":
            return raw.movedim(-1, 1)
        patches = raw[:, self.prefix_tokens :, :]
        return patches.transpose(1, 2).reshape(raw.shape[0], raw.shape[2], *self.grid)


def infer_token_grid(
    num_tokens: int, input_size: tuple[int, ...], prefix_tokens: int | None = None
) -> tuple[int, tuple[int, int]]:
    """(prefix tokens, (h, w)): the fewest leading tokens whose removal leaves a patch grid with
    the input's aspect ratio."""
    height, width = input_size[-2], input_size[-1]
    candidates = range(MAX_PREFIX_TOKENS + 1) if prefix_tokens is None else [prefix_tokens]
    for prefix in candidates:
        patches = num_tokens - prefix
        if patches <= 0:
            continue
        rows = max(1, round(math.sqrt(patches * height / width)))
        if patches % rows == 0:
            cols = patches // rows
            if abs(rows / cols - height / width) <= 0.1 * (height / width):
                return prefix, (rows, cols)
    raise ValueError(
        f"cannot fold {num_tokens} tokens onto a patch grid for an input of size "
        f"{height}x{width}; pass token_grid=(h, w) (and prefix_tokens=...)"
    )


def detect_layout(
    raw_shape: torch.Size,
    input_shape: torch.Size,
    *,
    channels_last: bool = False,
    token_grid: tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
    layer_name: str = "",
) -> Layout:
    """The layout of a layer output of ``raw_shape`` for a model input of ``input_shape``."""
    if not has_spatial_axis(raw_shape, len(input_shape)) and token_grid is None:
        raise ValueError(
            f"layer {layer_name!r} outputs shape {tuple(raw_shape)}, which has no spatial or token "
            "axis to put a map on; choose an earlier layer (see `camlens layers`)"
        )
    if channels_last:
        return Layout("channels_last")
    is_tokens = token_grid is not None or (len(raw_shape) == 3 and len(input_shape) == 4)
    if not is_tokens:
        return Layout("channels_first")
    num_tokens = raw_shape[1]
    if token_grid is not None:
        prefix = num_tokens - math.prod(token_grid) if prefix_tokens is None else prefix_tokens
        if prefix < 0 or prefix + math.prod(token_grid) != num_tokens:
            raise ValueError(
                f"token_grid={token_grid} with prefix_tokens={prefix_tokens} does not match the "
                f"{num_tokens} tokens of layer {layer_name!r}"
            )
        return Layout("tokens", prefix, tuple(token_grid))
    prefix, grid = infer_token_grid(num_tokens, tuple(input_shape[2:]), prefix_tokens)
    return Layout("tokens", prefix, grid)


@dataclass(frozen=True)
class CaptureOptions:
    """How one method reads its target layer and the model's output; every method takes them.

    Attributes:
        output_fn: turns the model output into what the targets read (default: see
            :func:`camlens.targets.adapt_output`).
        channels_last: the layer outputs ``(B, h, w, C)`` (Swin).
        token_grid: the patch grid ``(h, w)`` of a token sequence ``(B, N, C)`` (inferred from
            the input's aspect ratio when None).
        prefix_tokens: how many leading class/register tokens to drop (inferred when None).
        input_size: the spatial size ``maps`` are upsampled to (default: the input's).
    """

    output_fn: Callable[[Any], Any] | None = None
    channels_last: bool = False
    token_grid: tuple[int, int] | None = None
    prefix_tokens: int | None = None
    input_size: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(self.input_size))
        if self.token_grid is not None:
            object.__setattr__(self, "token_grid", tuple(self.token_grid))

    def layout(self, raw_shape: torch.Size, input_shape: torch.Size, layer_name: str) -> Layout:
        """The :class:`Layout` of a layer output of ``raw_shape`` for an input of
        ``input_shape`` under these options (:func:`detect_layout`)."""
        return detect_layout(raw_shape, input_shape, channels_last=self.channels_last,
                             token_grid=self.token_grid, prefix_tokens=self.prefix_tokens,
                             layer_name=layer_name)

    def as_keywords(self) -> dict[str, Any]:
        """The options as the keyword arguments a method takes."""
        return {"output_fn": self.output_fn, "channels_last": self.channels_last,
                "token_grid": self.token_grid, "prefix_tokens": self.prefix_tokens,
                "input_size": self.input_size}
