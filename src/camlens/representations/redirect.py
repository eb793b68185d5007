"""Redirected ReLU gradients: let a unit that is off everywhere still get a direction.

A ReLU passes no gradient where its input is negative. Started from a grey picture, a channel
whose pre-activation is negative everywhere gets a gradient of exactly zero and activation
maximization never moves (the score stays 0). lucid (``redirected_relu_grad``, used by its
``render``) and captum.optim (``RedirectedReLU``) redirect the gradient in that case:

``∂L/∂x = g · 1[x > 0]`` when that is non-zero for the picture, else
``g · 1[¬(x < 0 ∧ g > 0)]`` (the incoming gradient ``g``, except where it would push an
already negative input lower under gradient descent),

decided per picture of the batch, so as soon as a unit turns on its gradient is the true one.
The forward pass is unchanged.

:func:`redirected_relus` applies it to every ``nn.ReLU`` module of a model for one call (forward
pre-hooks keep the input before an in-place ReLU overwrites it; forward hooks return the
redirected output; both removed in ``finally`` and acting for their own call only). ReLUs called
as functions (``F.relu``) are not reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from camlens._calls import current, is_current

__all__ = ["RedirectedReLU", "redirected_relus"]


class RedirectedReLU(torch.autograd.Function):
    """``max(x, 0)`` forward; the redirected gradient above backward."""

    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inputs)
        return inputs.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (inputs,) = ctx.saved_tensors
        relu_grad = grad_output * (inputs > 0)
        redirected = grad_output * ~((inputs < 0) & (grad_output > 0))
        alive = relu_grad.reshape(len(relu_grad), -1).abs().sum(dim=1) > 0
        alive = alive.reshape(-1, *([1] * (inputs.ndim - 1)))
        return torch.where(alive, relu_grad, redirected)


@contextmanager
def redirected_relus(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Every ``nn.ReLU`` of ``model`` passes redirected gradients in the body (yields how many);
    call inside :func:`camlens._calls.active_call`."""
    handles = []
    token = current()
    saved: dict[int, torch.Tensor] = {}

    def keep_input(module: nn.Module, args: tuple) -> tuple | None:
        if not is_current(token) or not args or not torch.is_grad_enabled():
            return None
        saved[id(module)] = args[0]
        return (args[0].clone(), *args[1:])  # an in-place ReLU overwrites the clone

    def redirect(module: nn.Module, args: tuple, output: object) -> object:
        inputs = saved.pop(id(module), None)
        if inputs is None or not is_current(token):
            return None
        return RedirectedReLU.apply(inputs)

    try:
        if enabled:
            for module in model.modules():
                if type(module) is nn.ReLU:
                    handles.append(module.register_forward_pre_hook(keep_input))
                    handles.append(module.register_forward_hook(redirect))
        yield len(handles) // 2
    finally:
        for handle in handles:
            handle.remove()
