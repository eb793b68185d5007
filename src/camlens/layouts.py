"""How a layer's output lies over the explained input's grid, read from the shapes.

The canonical layout of an activation is channels first, ``(B, C, *spatial)``. A layer output is
read as one of:

- ``channels_first`` ``(B, C, *grid)``: convolutions, pooling, attention weights ``(B, 1, T)``;
- ``channels_last`` ``(B, *grid, C)``: Swin's stages ``(B, h, w, C)``, a recurrent layer's
  ``(B, T, H)`` (``batch_first``), a linear layer over a sequence ``(B, T, C)``;
- ``tokens`` ``(B, N, C)`` of an image model: leading class/register tokens dropped, the rest
  folded onto the patch grid.

Automatic detection (when the user does not say ``channels_last`` or ``token_grid``): the grid
must *fit the explained input*: as many axes as the input has spatial axes, none longer than the
input's, and, for images, about the same stride along every axis (``H / h ~ W / w``, so a
``(B, 7, 7, 768)`` output of a 224x224 image is channels last, and ``(B, 768, 7, 7)`` channels
first). A 3-D output of a sequence model cannot be told from its shape alone; the module that
produced it decides: recurrent layers with ``batch_first``, linear and layer-norm layers work on
the last axis (channels last); anything else is channels first. When both readings of an image
layer fit (e.g. ``(B, 6, 6, 6)`` for a 6x6 input), the module decides the same way and the
layout carries a note saying so (``channels_last=`` settles it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MAX_PREFIX_TOKENS", "Layout", "LayoutError", "detect_layout", "grid_fits",
           "infer_token_grid", "spatial_size"]

#: How many leading (class, distillation, register) tokens a token layout may carry.
MAX_PREFIX_TOKENS = 16

#: Modules that work on the last axis of a ``(B, T, C)`` sequence: their output is channels last.
_LAST_AXIS_MODULES = (nn.Linear, nn.LayerNorm, nn.RNNBase, nn.MultiheadAttention,
                      nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Embedding)


class LayoutError(ValueError):
    """A layer's output cannot be laid over the explained input's grid; the message says why."""


@dataclass(frozen=True)
class Layout:
    """How a layer's raw output maps onto the canonical ``(B, C, *spatial)`` layout."""

    kind: str  # "channels_first", "tokens" or "channels_last"
    prefix_tokens: int = 0
    grid: tuple[int, ...] = ()
    note: str = ""  # what could not be read from the shapes alone

    def to_canonical(self, raw: torch.Tensor) -> torch.Tensor:
        if self.kind == "channels_first":
            return raw
        if self.kind == "channels_last":
            return raw.movedim(-1, 1)
        patches = raw[:, self.prefix_tokens :, :]
        return patches.transpose(1, 2).reshape(raw.shape[0], raw.shape[2], *self.grid)


def spatial_size(explained: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    """The spatial axes of an explained input: ``(H, W)`` of ``(B, C, H, W)``, ``(T,)`` of
    ``(B, C, T)`` and of a waveform ``(B, T)``."""
    return tuple(explained[2:]) if len(explained) >= 3 else tuple(explained[1:])


def grid_fits(grid: tuple[int, ...], spatial: tuple[int, ...]) -> bool:
    """Whether ``grid`` can be the explained input's ``spatial`` grid at some stride: same number
    of axes, more than one position, no axis longer than the input's, and (for 2-D and 3-D) the
    same stride along every axis up to rounding (one cell, or 15%)."""
    if len(grid) != len(spatial) or math.prod(grid) <= 1:
        return False
    if any(cells < 1 or cells > size for cells, size in zip(grid, spatial, strict=True)):
        return False
    stride = spatial[0] / grid[0]
    for cells, size, first_cells, first_size in zip(grid[1:], spatial[1:], grid, spatial,
                                                   strict=False):
        if size == first_size and cells != first_cells:
            return False  # one stride and padding over equal sides gives equal sides
        expected = size / stride
        if abs(cells - expected) > max(1.0, 0.15 * expected):
            return False
    return True


def _patch_grid_fits(grid: tuple[int, int], spatial: tuple[int, ...]) -> bool:
    """Whether one whole patch size cuts ``spatial`` exactly into ``grid``: a ViT's 14x14 of a
    224 input (16-pixel patches), a Swin stage's 7x7 (32). (An input that is not a multiple of
    the patch size needs ``token_grid=``.)"""
    height, width = spatial[-2], spatial[-1]
    rows, cols = grid
    return height % rows == 0 and width % cols == 0 and height // rows == width // cols


def infer_token_grid(
    num_tokens: int, input_size: tuple[int, ...], prefix_tokens: int | None = None
) -> tuple[int, tuple[int, int]]:
    """(prefix tokens, (h, w)): the fewest leading tokens whose removal leaves a patch grid with
    the input's aspect ratio that a whole patch size cuts the input into exactly (so a count
    that is not a patch grid, e.g. a detector's boxes, is not read as one); at most 16 leading
    tokens (a class token, a distillation token, registers), and no more than half the patches."""
    height, width = input_size[-2], input_size[-1]
    candidates = range(MAX_PREFIX_TOKENS + 1) if prefix_tokens is None else [prefix_tokens]
    for prefix in candidates:
        patches = num_tokens - prefix
        if patches <= 0 or (prefix_tokens is None and prefix > patches // 2):
            continue
        rows = max(1, round(math.sqrt(patches * height / width)))
        if patches % rows == 0:
            cols = patches // rows
            if abs(rows / cols - height / width) <= 0.1 * (height / width) and (
                    prefix_tokens is not None or _patch_grid_fits((rows, cols), input_size)):
                return prefix, (rows, cols)
    raise LayoutError(
        f"cannot fold {num_tokens} tokens onto a patch grid for an input of size "
        f"{height}x{width}; pass token_grid=(h, w) (and prefix_tokens=...)"
    )


def detect_layout(
    raw_shape: torch.Size | tuple[int, ...],
    explained_shape: torch.Size | tuple[int, ...],
    *,
    channels_last: bool | None = None,
    token_grid: tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
    layer_name: str = "",
    module: nn.Module | None = None,
    strict: bool = False,
) -> Layout:
    """The layout of a layer output of ``raw_shape`` over an explained input of
    ``explained_shape`` (see the module docstring). ``channels_last`` True/False and
    ``token_grid`` are the user's word and are only checked for consistency; None detects.

    ``strict`` (the automatic layer choice): refuse a grid that does not fit the input, instead
    of reading it channels first as the user asked for that layer.
    """
    raw_shape, explained_shape = tuple(raw_shape), tuple(explained_shape)
    spatial = spatial_size(explained_shape)
    where = f"layer {layer_name!r} outputs shape {raw_shape}"
    if len(raw_shape) < 3 and token_grid is None:
        raise LayoutError(f"{where}, which has no spatial or token axis to put a map on; choose "
                          "an earlier layer (see `camlens layers`)")
    if token_grid is not None:
        return _token_layout(raw_shape, token_grid, prefix_tokens, layer_name)
    image_tokens = len(raw_shape) == 3 and len(spatial) == 2
    if channels_last is None and image_tokens:
        if raw_shape[1] <= 1:
            raise LayoutError(f"{where}: one token, no grid to put a map on")
        if raw_shape[2] <= 1:
            raise LayoutError(f"{where}: tokens of one channel are not embeddings (a pooled "
                              "(B, C, 1) output?); pass token_grid= if they are")
        prefix, patches = infer_token_grid(raw_shape[1], spatial, prefix_tokens)
        return Layout("tokens", prefix, patches)
    first, last = raw_shape[2:], raw_shape[1:-1]
    if channels_last is not None:
        kind = "channels_last" if channels_last else "channels_first"
        grid = last if channels_last else first
        if math.prod(grid) <= 1:
            raise LayoutError(f"{where}: read {kind.replace('_', ' ')} it has no positions")
        return Layout(kind, 0, grid)
    if len(spatial) == 1 and len(raw_shape) == 3:  # a sequence: the module tells the axes
        if isinstance(module, nn.RNNBase) and not module.batch_first:
            raise LayoutError(f"{where}: a recurrent layer without batch_first puts time first "
                              "and the batch second; camlens needs the batch axis first")
        kind, grid = (("channels_last", last) if isinstance(module, _LAST_AXIS_MODULES)
                      else ("channels_first", first))
        if math.prod(grid) <= 1:
            raise LayoutError(f"{where}: read {kind.replace('_', ' ')}, one position over time")
        return Layout(kind, 0, grid)
    first_fits, last_fits = grid_fits(first, spatial), grid_fits(last, spatial)
    if len(spatial) == 2 and first_fits and last_fits:
        last_axis = isinstance(module, _LAST_AXIS_MODULES)
        read = "(B, h, w, C)" if last_axis else "(B, C, h, w)"
        note = (f"layer {layer_name!r} {raw_shape}: both (B, C, h, w) and (B, h, w, C) fit an "
                f"input of {spatial}; read as {read} from its module "
                f"({type(module).__name__}); pass channels_last= if that is wrong")
        return Layout("channels_last" if last_axis else "channels_first", 0,
                      last if last_axis else first, note)
    if last_fits and not first_fits:
        return Layout("channels_last", 0, last)
    if first_fits or not strict:
        if math.prod(first) <= 1:
            raise LayoutError(f"{where}, which has no spatial or token axis to put a map on; "
                              "choose an earlier layer (see `camlens layers`)")
        return Layout("channels_first", 0, first)
    raise LayoutError(f"{where}, whose grid does not fit the explained input's {spatial}")


def _token_layout(raw_shape: tuple[int, ...], token_grid: tuple[int, int],
                  prefix_tokens: int | None, layer_name: str) -> Layout:
    num_tokens = raw_shape[1]
    prefix = num_tokens - math.prod(token_grid) if prefix_tokens is None else prefix_tokens
    if prefix < 0 or prefix + math.prod(token_grid) != num_tokens:
        raise LayoutError(
            f"token_grid={token_grid} with prefix_tokens={prefix_tokens} does not match the "
            f"{num_tokens} tokens of layer {layer_name!r}"
        )
    return Layout("tokens", prefix, tuple(token_grid))
