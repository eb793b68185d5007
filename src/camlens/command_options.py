"""Command-line options shared by the commands of :mod:`camlens.cli` and its sub-packages."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import torch

DEVICE_OPTION = click.option(
    "--device", default="auto", show_default=True,
    help="Where the model runs: cpu, cuda, cuda:N, mps, or auto (cuda when available, else cpu).")


def device_option(text: str) -> torch.device:
    """The torch.device of --device; an unknown or unavailable device is a usage error."""
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"unknown device {text!r}; use cpu, cuda, cuda:N, mps or auto",
                                 param_hint="--device") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}.get(device.type, False)
    if device.type == "cuda" and available and (device.index or 0) >= torch.cuda.device_count():
        available = False
    if not available:
        raise click.BadParameter(f"device {text!r} is not available on this machine; use "
                                 "--device cpu (or auto)", param_hint="--device")
    return device
