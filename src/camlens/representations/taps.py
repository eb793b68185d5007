"""Read several layers' outputs with their graph back to the input, for one call.

:mod:`camlens.capture` makes a layer's output a leaf (gradients stop there): right for maps,
wrong here, where the gradient must reach the picture. A tap keeps the output as it is and hands
the rest of the network a clone (so an in-place operation downstream, ``out += identity``, cannot
change what was read). Hooks act for their own call only (:mod:`camlens._calls`) and are removed
in ``finally``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from camlens._calls import CallToken, current, is_current
from camlens.capture import first_tensor, named_module
from camlens.layouts import Layout, detect_layout

__all__ = ["LayerTap", "canonical_layouts", "resolve_layers", "tapped_layers"]


@dataclass
class LayerTap:
    """The last output of one layer in the current forward, graph kept."""

    name: str
    module: nn.Module
    output: torch.Tensor | None = None
    calls: int = 0
    token: CallToken | None = field(default_factory=current)

    def hook(self, module: nn.Module, args: tuple, output: object) -> object:
        if not is_current(self.token):
            return None
        tensor = first_tensor(output)
        if tensor is None:
            raise TypeError(f"layer {self.name!r} returned {type(output).__name__}, not a tensor "
                            "or a tuple starting with one; choose another layer")
        self.calls += 1
        self.output = tensor
        passed_on = tensor.clone()
        if isinstance(output, torch.Tensor):
            return passed_on
        assert isinstance(output, (tuple, list))
        rest = list(output[1:])
        return [passed_on, *rest] if isinstance(output, list) else (passed_on, *rest)

    def reset(self) -> None:
        self.output, self.calls = None, 0

    def canonical(self, layout: Layout | None) -> torch.Tensor:
        """The output channels first ``(B, C, *grid)`` by ``layout`` (as read by
        :func:`canonical_layouts`); as it is without one (a ``(B, D)`` output)."""
        output = self.read()
        return output if layout is None else layout.to_canonical(output)

    def read(self) -> torch.Tensor:
        """The output; a ValueError when the layer did not run, a warning when it ran twice."""
        if self.output is None:
            raise ValueError(f"layer {self.name!r} was not called during the forward pass; "
                             "choose a layer the model uses")
        if self.calls > 1:
            warnings.warn(f"layer {self.name!r} ran {self.calls} times in one forward pass; "
                          "its last output is used", stacklevel=3)
        return self.output


def resolve_layers(model: nn.Module, layers: Sequence[str | nn.Module]) -> list[str]:
    """The dotted names of ``layers`` (unknown names: a ValueError with the closest names)."""
    return [named_module(model, layer)[0] for layer in layers]


@contextmanager
def tapped_layers(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, LayerTap]]:
    """Taps on ``layers`` (dotted names, each once) for the body of the block; call inside
    :func:`camlens._calls.active_call` so the hooks ignore other calls' forwards."""
    taps: dict[str, LayerTap] = {}
    handles = []
    try:
        for layer in dict.fromkeys(layers):
            name, module = named_module(model, layer)
            tap = taps[name] = LayerTap(name, module)
            handles.append(module.register_forward_hook(tap.hook))
        yield taps
    finally:
        for handle in handles:
            handle.remove()


def canonical_layouts(taps: dict[str, LayerTap], input_shape: tuple[int, ...]
                      ) -> tuple[dict[str, Layout | None], list[str]]:
    """How each tapped output lies over an input of ``input_shape`` (:mod:`camlens.layouts`:
    a Swin stage's ``(B, h, w, C)`` or a ViT's tokens ``(B, N, C)`` are put channels first, so
    a channel objective means a channel, not a token), with the notes of readings the shapes
    alone could not settle. Outputs without a spatial axis ``(B, D)`` keep their layout."""
    layouts: dict[str, Layout | None] = {}
    notes = []
    for name, tap in taps.items():
        output = tap.read()
        if output.ndim < 3:
            layouts[name] = None
            continue
        layout = detect_layout(output.shape, input_shape, layer_name=name, module=tap.module)
        layouts[name] = layout
        if layout.kind != "channels_first":
            kind = layout.kind.replace("_", " ")
            notes.append(f"layer {name!r} {tuple(output.shape)} read as {kind}"
                         + (f" ({layout.prefix_tokens} leading tokens dropped, grid "
                            f"{layout.grid})" if layout.kind == "tokens" else "")
                         + "; its channels are the last axis")
        if layout.note:
            notes.append(layout.note)
    return layouts, notes
