"""Leave the user's model exactly as it was found.

Every explanation runs inside :func:`preserved_model_state`: the model is put in eval mode (so
BatchNorm running statistics and dropout do not change), and on the way out, also when something
raises, each module's train/eval flag, each parameter's ``requires_grad`` flag and ``.grad``, and
the autograd mode are put back. Calls that overlap on one model (threads of a server, a call
re-entered from a forward hook) share one record: the last call out restores it. Hooks are the
caller's job and are removed in their own ``finally`` blocks (see :mod:`camlens.capture`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["check_inputs", "input_tensors", "model_device", "preserved_model_state",
           "unique_parameters"]


class _SavedState:
    """A model's flags and gradients as found by the first of the calls that share it."""

    def __init__(self, model: nn.Module) -> None:
        modules = list(model.modules())
        self.training_flags = {module: module.training for module in modules}
        self.parameters = unique_parameters(modules)
        self.requires_grad_flags = [parameter.requires_grad for parameter in self.parameters]
        self.gradients = [parameter.grad for parameter in self.parameters]
        self.users = 0
        if any(self.training_flags.values()):  # most models come in eval mode: no writes
            model.eval()

    def restore(self) -> None:
        for module, training in self.training_flags.items():
            if module.training != training:
                module.training = training
        for parameter, requires_grad, gradient in zip(
            self.parameters, self.requires_grad_flags, self.gradients, strict=True
        ):
            if parameter.requires_grad != requires_grad:
                parameter.requires_grad_(requires_grad)
            if parameter.grad is not gradient:
                parameter.grad = gradient


#: Models some call is explaining now, with the state the first call found. Calls on one model
#: from several threads (or re-entered) share it: the first one in records and sets eval mode,
#: the last one out restores. The lock is held only for that bookkeeping, never for a forward.
_ACTIVE: dict[nn.Module, _SavedState] = {}
_ACTIVE_LOCK = threading.Lock()


@contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[None]:
    """Run the body with ``model`` in eval mode and restore modes, flags and gradients after,
    also when calls on the same model overlap (threads, re-entry): then the state found by the
    first call is restored when the last one ends."""
    with _ACTIVE_LOCK:
        saved = _ACTIVE.get(model)
        if saved is None:
            saved = _ACTIVE[model] = _SavedState(model)
        saved.users += 1
    grad_mode = torch.is_grad_enabled()  # per thread, like the rest of autograd's modes
    try:
        yield
    finally:
        torch.set_grad_enabled(grad_mode)
        with _ACTIVE_LOCK:
            saved.users -= 1
            if saved.users == 0:
                del _ACTIVE[model]
                saved.restore()


def unique_parameters(modules: list[nn.Module]) -> list[nn.Parameter]:
    """The parameters of ``modules``, each once: what ``model.parameters()`` gives, from one
    walk of the module tree (``parameters()`` walks it again and hashes every tensor, which
    shows on a GPU where a whole explanation takes a few milliseconds)."""
    seen: set[int] = set()
    parameters = []
    for module in modules:
        for parameter in module._parameters.values():
            if parameter is not None and id(parameter) not in seen:
                seen.add(id(parameter))
                parameters.append(parameter)
    return parameters


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer, or None for a stateless model."""
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return None


def input_tensors(inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The model's positional inputs as a tuple; the first one is the explained input."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)) and inputs and all(
        isinstance(item, torch.Tensor) for item in inputs
    ):
        return tuple(inputs)
    hint = "; for a numpy array: torch.from_numpy(x)" if hasattr(inputs, "__array__") else ""
    raise TypeError(
        f"inputs must be a tensor or a non-empty tuple/list of tensors, got "
        f"{type(inputs).__name__}{hint}"
    )


def check_inputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """Raise a clear error for inputs the engine cannot explain."""
    if torch.is_inference_mode_enabled():
        raise ValueError(
            "camlens needs autograd, but the call is inside torch.inference_mode(); "
            "call it outside that block (an outer torch.no_grad() is fine)"
        )
    primary = inputs[0]
    if primary.ndim < 2:
        raise ValueError(
            "inputs must have a batch axis first, e.g. (B, C, H, W); "
            f"got shape {tuple(primary.shape)}"
        )
    if primary.shape[0] == 0:
        raise ValueError("inputs hold an empty batch (shape[0] == 0); pass at least one input")
    device = model_device(model)
    for position, tensor in enumerate(inputs):
        if tensor.is_inference():
            raise ValueError(
                f"input {position} is an inference-mode tensor (made under "
                "torch.inference_mode()), "
                "which autograd cannot use; make it outside inference_mode or pass tensor.clone() "
                "created under torch.no_grad()"
            )
        if device is not None and tensor.device != device:
            raise ValueError(
                f"input {position} is on device {tensor.device} but the model is on {device}; "
                f"move one of them, e.g. inputs.to('{device}')"
            )
