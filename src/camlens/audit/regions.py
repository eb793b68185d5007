"""Named regions of an input: where to read them in an item, and their boolean masks.

A region spec says how to get one region of one item:

- a key (``str`` for dict items, ``int`` for tuple items): the item holds the region there;
- a callable ``spec(item) -> region`` for anything else.

A region is a box ``(4,)`` ``(x0, y0, x1, y1)`` in input pixels (``x1``, ``y1`` exclusive, as in
:mod:`camlens.metrics.localization`), several boxes ``(N, 4)`` (their union), a boolean mask
``(H, W)`` at the input's resolution, or ``None`` when the item has no such region. A region with
no pixel counts as absent too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from camlens.metrics.localization import box_masks

__all__ = ["RegionSpec", "check_region_specs", "mask_box", "read_region", "region_mask"]

RegionSpec = str | int | Callable[[Any], Any]


def check_region_specs(regions: Mapping[str, RegionSpec]) -> dict[str, RegionSpec]:
    """``regions`` as a dict of name -> spec, checked: a non-empty mapping of str names to keys
    or callables."""
    if not isinstance(regions, Mapping) or not regions:
        raise TypeError(
            "regions must be a non-empty mapping of name -> item key or callable(item), for "
            f"example {{'object': 'box'}}; got {regions!r}"
        )
    checked = {}
    for name, spec in regions.items():
        if not isinstance(name, str):
            raise TypeError(f"region names must be strings, got {name!r}")
        if isinstance(spec, bool) or not (isinstance(spec, (str, int)) or callable(spec)):
            raise TypeError(
                f"region {name!r}: expected an item key (str or int) or a callable item -> box "
                f"or mask, got {spec!r}"
            )
        checked[name] = spec
    return checked


def read_region(item: Any, name: str, spec: RegionSpec, what: str = "region") -> Any:
    """The raw region value ``spec`` names in ``item`` (``what``: how errors call it)."""
    if callable(spec):
        return spec(item)
    try:
        return item[spec]
    except (KeyError, IndexError, TypeError):
        available = list(item) if isinstance(item, Mapping) else f"positions 0..{len(item) - 1}" \
            if hasattr(item, "__len__") else type(item).__name__
        raise KeyError(
            f"{what} {name!r}: the item has no {spec!r}; it has {available}"
        ) from None


def region_mask(value: Any, size: tuple[int, int], name: str) -> torch.Tensor | None:
    """A boolean ``(H, W)`` mask from a region value (see the module docstring), or None when
    the region is absent (None, no box, or no pixel inside the input)."""
    if value is None:
        return None
    tensor = torch.as_tensor(value)
    if tensor.dtype == torch.bool:
        if tensor.ndim == 3 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tuple(tensor.shape) != tuple(size):
            raise ValueError(
                f"region {name!r}: a mask must have the input's size {tuple(size)}, got shape "
                f"{tuple(tensor.shape)}"
            )
        mask = tensor
    elif tensor.ndim in (1, 2) and tensor.shape[-1] == 4 and not tensor.is_complex():
        boxes = tensor.reshape(-1, 4).float()
        if boxes.shape[0] == 0:
            return None
        mask = box_masks(boxes, size).any(dim=0)
    else:
        raise ValueError(
            f"region {name!r}: expected a box (4,) (x0, y0, x1, y1), boxes (N, 4) or a bool "
            f"mask {tuple(size)}, got {tensor.dtype} of shape {tuple(tensor.shape)}"
        )
    return mask if bool(mask.any()) else None


def mask_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """The tight box ``(x0, y0, x1, y1)`` (exclusive ends) around a non-empty mask ``(H, W)``."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
