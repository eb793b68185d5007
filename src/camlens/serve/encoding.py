"""Pictures and maps as what JSON carries: PNG data URLs and compact map values."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["map_values", "png_bytes", "png_data_url", "raw_values"]


def png_bytes(picture) -> bytes:
    """A PIL image as PNG bytes (zlib level 1: about as small, several times faster)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def png_data_url(picture) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(picture)).decode("ascii")


def map_values(map_: torch.Tensor, longest: int) -> dict[str, Any]:
    """A normalised map ``(H, W)`` in [0, 1] for hovering: ``values`` are base64 bytes, one per
    cell row by row (value = byte / 255), at ``value_shape``, no side longer than ``longest``
    (shrunk by area averaging)."""
    values = map_.detach().float().cpu()
    height, width = values.shape[-2:]
    scale = min(1.0, longest / max(height, width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        values = F.interpolate(values[None, None], size=size, mode="area")[0, 0]
    # numpy: the four small torch operations each let go of the GIL, which other requests'
    # threads take; round half to even, as torch.round
    cells = np.rint(np.clip(values.numpy(), 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    return {"values": base64.b64encode(cells.tobytes()).decode("ascii"),
            "value_shape": list(cells.shape)}


def raw_values(raw: torch.Tensor, most: int = 4096) -> list | None:
    """The raw map (the layer's grid, in the score's units) as nested lists of 4 significant
    digits, or None when it has more than ``most`` cells."""
    if raw.numel() > most:
        return None
    return [[float(f"{value:.4g}") for value in row] for row in raw.reshape(
        -1, raw.shape[-1]).tolist()] if raw.ndim >= 2 else [
        float(f"{value:.4g}") for value in raw.tolist()]
