"""What the commands of :mod:`camlens.cli` share: --model and its loading, --layer, --device and
--verbose."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICE_OPTION", "LAYOUT_OPTIONS", "MODEL_OPTIONS", "VERBOSE_OPTION", "device_option",
           "layer_option", "layout_options", "load_or_exit", "model_options", "writable_folder"]

def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(dict)["verbose"] = True


#: ``--verbose`` on a sub-command means the same as on the group: tracebacks of errors.
VERBOSE_OPTION = click.option("--verbose", "-v", is_flag=True, expose_value=False,
                              callback=_set_verbose, help="Show tracebacks of errors.")

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


def load_or_exit(spec: str, weights: Path | None, arch: str | None, trust: bool):
    """The LoadedModel for ``spec``; a bad spec is a usage error (exit status 2)."""
    from camlens.models import ModelLoadError, load_model

    try:
        return load_model(spec, weights=weights, arch=arch, trust_checkpoint=trust)
    except (ModelLoadError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from None


def layer_option(loaded, layer: str | None) -> str | None:
    """The resolved name of --layer (default: the model's own layer); an unknown name is a usage
    error listing the closest names."""
    from camlens.capture import named_module

    layer = layer or loaded.default_layer
    if layer is None:
        return None
    try:
        return named_module(loaded.model, layer)[0]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--layer") from None


MODEL_OPTIONS = [
    click.option("--model", "-m", "model_spec", required=True,
                 help="A zoo name (digits-gap), torchvision:NAME, timm:NAME, hf:FOLDER (a saved "
                      "transformers model), or a model file."),
    click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
                 help="Local weights (.safetensors, or .pth read with weights_only=True)."),
    click.option("--arch", help="The architecture of a weights file: a zoo name, "
                 "torchvision:NAME or timm:NAME."),
    click.option("--trust-checkpoint", is_flag=True,
                 help="Allow a pickled checkpoint to run code when loaded (only for trusted "
                 "files)."),
]


def _with_options(options: list, command):
    """``command`` decorated with ``options`` (in the order they are listed in --help)."""
    for option in reversed(options):
        command = option(command)
    return command


def model_options(command):
    """--model, --weights, --arch and --trust-checkpoint on a command."""
    return _with_options(MODEL_OPTIONS, command)


def _token_grid(ctx: click.Context, param: click.Parameter, value: str | None
                ) -> tuple[int, int] | None:
    if value is None:
        return None
    height, _, width = value.lower().partition("x")
    if not (height.isdigit() and width.isdigit() and int(height) > 0 and int(width) > 0):
        raise click.BadParameter(f"{value!r} is not HxW, e.g. 14x14", param=param)
    return int(height), int(width)


LAYOUT_OPTIONS = [
    click.option("--channels-last/--channels-first", "channels_last", default=None,
                 help="The layer's output is (B, h, w, C) / (B, C, h, w) (default: detected "
                      "from the shapes)."),
    click.option("--token-grid", callback=_token_grid, metavar="HxW",
                 help="Fold a token output (B, N, C) onto this patch grid (default: from the "
                      "input's aspect ratio)."),
]


def layout_options(command):
    """--channels-last/--channels-first and --token-grid on a command."""
    return _with_options(LAYOUT_OPTIONS, command)


def writable_folder(out: Path) -> None:
    """Create ``out`` and check a file can be written there, or a usage error before any work
    (``--out``)."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".camlens-check-"):
            pass
    except OSError as error:
        raise click.BadParameter(f"cannot write to {out}: {error.strerror or error}",
                                 param_hint="--out") from None
