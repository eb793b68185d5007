"""Plain helpers of the serve tests (a module of its own name: ``conftest`` would be whichever
folder's conftest pytest imported last)."""

from __future__ import annotations

import io
import socket

__all__ = ["free_port", "png_bytes"]


def png_bytes(tensor) -> bytes:
    """A (1, H, W) or (3, H, W) tensor in [0, 1] as PNG bytes."""
    from camlens.viz import to_pil

    buffer = io.BytesIO()
    to_pil(tensor).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
