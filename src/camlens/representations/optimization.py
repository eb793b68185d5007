"""What activation maximization and inversion share: the checked settings, the model held still
while a picture is optimised, one Adam step from input gradients, and the progress report.

The model is left exactly as found: :func:`held_model` runs the body inside
:func:`camlens.model_state.preserved_model_state` (eval mode, so BatchNorm statistics do not move;
modes, ``requires_grad`` flags and ``.grad`` restored in ``finally``) and switches the parameters'
``requires_grad`` off for the body, so the backward pass computes the picture's gradient only
(``torch.autograd.grad`` with respect to the picture's own tensors; no parameter gets a
``.grad``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from camlens._calls import active_call
from camlens.model_state import model_device, preserved_model_state, unique_parameters

__all__ = ["Progress", "adam_step", "check_settings", "held_model", "input_shape_of",
           "progress_reporter", "resolve_device"]

#: ``progress(step, steps, value)`` after each step (``value``: the mean objective or error).
Progress = Callable[[int, int, float], None]


def check_settings(steps: int, lr: float, **weights: float) -> None:
    """ValueErrors naming a bad step count, learning rate or penalty weight."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    for name, value in weights.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def input_shape_of(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` from ``(C, H, W)`` or ``(1, C, H, W)``; a ValueError for anything else."""
    dims = tuple(int(size) for size in shape)
    if len(dims) == 4 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) != 3 or any(size < 1 for size in dims):
        raise ValueError(f"input_shape must be (channels, height, width) of a picture, e.g. "
                         f"(3, 224, 224), got {tuple(shape)}")
    return dims  # type: ignore[return-value]


def resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """``device``, else the model's, else the CPU; the model must be there already."""
    found = model_device(model)
    chosen = torch.device(device) if device is not None else (found or torch.device("cpu"))
    if found is not None and found.type != chosen.type:
        raise ValueError(f"the model is on {found} but device={chosen}; move the model first "
                         f"(model.to('{chosen}')) or pass device='{found}'")
    return chosen


@contextmanager
def held_model(model: nn.Module) -> Iterator[None]:
    """The body runs as one camlens call on ``model`` in eval mode with its parameters'
    ``requires_grad`` off; everything is restored on the way out."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if torch.is_inference_mode_enabled():
        raise ValueError("optimising a picture needs autograd, but the call is inside "
                         "torch.inference_mode(); call it outside that block")
    with active_call(), preserved_model_state(model):
        for parameter in unique_parameters(list(model.modules())):
            if parameter.requires_grad:
                parameter.requires_grad_(False)
        with torch.enable_grad():
            yield


def adam_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor,
              tensors: Sequence[torch.Tensor]) -> None:
    """One optimiser step on ``tensors`` from ``d loss / d tensors`` (autograd.grad: nothing
    else is differentiated)."""
    gradients = torch.autograd.grad(loss, list(tensors))
    for tensor, gradient in zip(tensors, gradients, strict=True):
        tensor.grad = gradient
    optimizer.step()
    for tensor in tensors:
        tensor.grad = None


@contextmanager
def progress_reporter(progress: bool | Progress | None, steps: int, description: str
                      ) -> Iterator[Progress | None]:
    """``progress`` as a callback: True draws a tqdm bar (on stderr), a callable is used as
    it is, None or False reports nothing."""
    if progress is None or progress is False:
        yield None
        return
    if callable(progress):
        yield progress
        return
    from tqdm import tqdm

    bar = tqdm(total=steps, desc=description, unit="step", leave=False)

    def report(step: int, total: int, value: float) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{value:.4g}", refresh=False)

    try:
        yield report
    finally:
        bar.close()
