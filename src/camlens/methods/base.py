"""The call flow every method shares, and the base of the gradient-weighted family.

One call: check the inputs, put the model in eval mode (restored after), resolve the target layer,
run one forward with a per-call hook on that layer, read the target scores, and, for the gradient
methods, take ``torch.autograd.grad`` from the scores to the layer's output only. Before the
target layer the forward runs without autograd recording (as inference would); the hook switches
recording on at the layer, so the backward pass covers the layers after it and nothing else.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from camlens._calls import active_call
from camlens.capture import (
    CaptureOptions,
    Layout,
    capture_layer,
    checked_activation,
    choose_layer,
)
from camlens.capture import named_module as resolve_named_module
from camlens.explanation import Explanation
from camlens.model_state import check_inputs, input_tensors, preserved_model_state
from camlens.targets import ResolvedTarget, Target, adapt_output, resolve_target

__all__ = ["CAMMethod", "Forward", "GradientCAM", "LayerMapMethod", "score_gradients"]

logger = logging.getLogger("camlens")


@dataclass
class Forward:
    """What one hooked forward pass produced."""

    output: Any  # the adapted model output (a tensor, or what output_fn returned)
    activation: torch.Tensor  # the target layer's raw output (a grad-tracking leaf if asked)
    layout: Layout
    target: ResolvedTarget
    scores: torch.Tensor  # (B, K)
    layer_name: str = ""
    watched: Any = None  # what the method's watch() recorded during the forward

    def canonical(self, tensor: torch.Tensor | None = None) -> torch.Tensor:
        """``tensor`` (default: the activation) in the ``(B, C, *spatial)`` layout; extra leading
        axes, e.g. ``(B, K, ...)`` gradients, are kept."""
        tensor = self.activation if tensor is None else tensor
        leading = tensor.shape[: tensor.ndim - self.activation.ndim + 1]
        flat = tensor.reshape(-1, *tensor.shape[len(leading) :])
        canonical = self.layout.to_canonical(flat)
        return canonical.reshape(*leading, *canonical.shape[1:])


class CAMMethod:
    """Base of all methods: ``method(inputs, target=None) -> Explanation``.

    Args:
        model: the model to explain; it is left exactly as it was found by every call.
        layer: a dotted name from ``model.named_modules()`` (negative indices allowed, e.g.
            ``"blocks.-1.norm1"``), a module, or ``None`` for the last layer with a spatial
            output.
        output_fn: turns the model output into the tensor the targets read.
        channels_last: the layer outputs ``(B, h, w, C)`` (Swin).
        token_grid, prefix_tokens: how to fold a token sequence ``(B, N, C)`` onto the patch
            grid (inferred from the input's aspect ratio when not given).
        input_size: the spatial size ``maps`` are upsampled to (default: the input's trailing
            axes).

    Calling the method with ``(inputs, target=None)`` returns an
    :class:`~camlens.explanation.Explanation` (targets as in :func:`camlens.explain`).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module | None = None,
        *,
        output_fn: Callable[[Any], Any] | None = None,
        channels_last: bool = False,
        token_grid: tuple[int, int] | None = None,
        prefix_tokens: int | None = None,
        input_size: Sequence[int] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, torch.jit.ScriptModule):
            raise TypeError(
                "model is TorchScript, whose modules take no forward hooks; explain the eager "
                "model instead (its state dict as safetensors, with --arch on the command line)"
            )
        self.model = model
        self.layer = layer
        self.options = CaptureOptions(output_fn, channels_last, token_grid, prefix_tokens,
                                      input_size)
        if layer is not None:
            resolve_named_module(model, layer)  # fail early on a bad name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"

    def __call__(
        self, inputs: torch.Tensor | Sequence[torch.Tensor], target: Target = None
    ) -> Explanation:
        tensors = input_tensors(inputs)
        check_inputs(self.model, tensors)
        with active_call(), preserved_model_state(self.model):
            return self.explain(tensors, target)

    # --- steps shared by the methods -----------------------------------------------------------

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        """Compute the explanation; the model is already in eval mode."""
        raise NotImplementedError

    def target_layer(self, inputs: tuple[torch.Tensor, ...]) -> tuple[str, nn.Module, list[str]]:
        """(name, module, notes) of the layer to explain, choosing one when ``layer`` is None."""
        if self.layer is not None:
            name, module = resolve_named_module(self.model, self.layer)
            return name, module, []
        name = choose_layer(self.model, lambda: self.model(*inputs), inputs[0].ndim)
        note = f"layer=None: explained {name!r}, the last layer with a spatial output"
        logger.info(note)
        return name, dict(self.model.named_modules())[name], [note]

    def hooked_forward(
        self,
        inputs: tuple[torch.Tensor, ...],
        target: Target,
        layer_name: str,
        module: nn.Module,
        *,
        track_grad: bool,
        replace: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Forward:
        """One forward with the target layer captured, and the target scores ``(B, K)``."""
        with torch.no_grad(), capture_layer(module, track_grad=track_grad, replace=replace) as cap:
            model_output = self.model(*inputs)
        activation = checked_activation(cap, layer_name)
        layout = self.options.layout(activation.shape, inputs[0].shape, layer_name)
        with torch.set_grad_enabled(track_grad):
            output = adapt_output(model_output, self.options.output_fn)
            resolved, scores = resolve_target(target, output, inputs[0].shape[0])
        return Forward(output, activation, layout, resolved, scores, layer_name)

    def make_explanation(
        self,
        forward: Forward,
        raw: torch.Tensor,
        inputs: tuple[torch.Tensor, ...],
        layer_name: str,
        notes: list[str],
        attributions: torch.Tensor | None = None,
    ) -> Explanation:
        """Package ``raw`` maps ``(B, K, *spatial)`` (ReLU applied here) as an Explanation."""
        spatial_ndim = raw.ndim - 2
        input_size = tuple(self.options.input_size or inputs[0].shape[-spatial_ndim:])
        resolved = forward.target
        classes = resolved.classes
        return Explanation(
            raw=resolved.squeezed(torch.relu(raw).detach()),
            scores=resolved.squeezed(forward.scores.detach()),
            targets=None if classes is None else resolved.squeezed(classes),
            method=self.name,
            layer=layer_name,
            input_size=input_size,
            attributions=None if attributions is None else resolved.squeezed(attributions),
            notes=notes,
        )


def nearly_equal(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor: ``actual`` equals ``expected`` up to float error (relative 1e-4, and
    1e-5 absolute on the scale of ``expected``). It stays on the tensors' device: the caller
    decides when to bring it to the host, which on a GPU waits for the whole queue."""
    scale = expected.abs().max().clamp(min=1.0)
    return ((actual - expected).abs() <= 1e-5 * scale + 1e-4 * expected.abs()).all()


def score_gradients(scores: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """d scores[:, k] / d activation for each k: shape ``(B, K, *activation.shape[1:])``.

    Inputs of a batch are independent in eval mode, so differentiating the batch sum of
    ``scores[:, k]`` gives every input's own gradient. The K targets go through one batched
    backward pass (``is_grads_batched``, vmap over one-hot output gradients) where every
    operation on the path supports it, else one backward pass per target.
    Scores that do not depend on the activation get zero gradients.
    """
    num_targets = scores.shape[1]
    if not scores.requires_grad:
        return activation.new_zeros(activation.shape[0], num_targets, *activation.shape[1:])
    if num_targets > 1:
        batched = batched_score_gradients(scores, activation)
        if batched is not None:
            return batched
    gradients = []
    for k in range(num_targets):
        with torch.enable_grad():  # the sum must be recorded under an outer no_grad() too
            total = scores[:, k].sum()
        (gradient,) = torch.autograd.grad(
            total, activation, retain_graph=k < num_targets - 1, allow_unused=True
        )
        gradients.append(torch.zeros_like(activation) if gradient is None else gradient)
    return torch.stack(gradients, dim=1)


def batched_score_gradients(scores: torch.Tensor, activation: torch.Tensor
                            ) -> torch.Tensor | None:
    """All K gradients in one vmapped backward pass, or None where the graph does not allow it
    (the graph is kept, so the caller can fall back to one pass per target)."""
    num_targets = scores.shape[1]
    one_hot = torch.eye(num_targets, dtype=scores.dtype, device=scores.device)
    grad_outputs = one_hot[:, None, :].expand(num_targets, *scores.shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's notes on ops without a batching rule
            (gradient,) = torch.autograd.grad(scores, activation, grad_outputs=grad_outputs,
                                              retain_graph=True, is_grads_batched=True,
                                              allow_unused=True)
    except (RuntimeError, NotImplementedError):
        return None
    if gradient is None:
        return activation.new_zeros(activation.shape[0], num_targets, *activation.shape[1:])
    return gradient.transpose(0, 1)


def spatial_axes(tensor: torch.Tensor, first: int) -> tuple[int, ...]:
    """The axes from ``first`` to the end: the spatial axes of a canonical tensor."""
    return tuple(range(first, tensor.ndim))


class LayerMapMethod(CAMMethod):
    """A method whose map is a rule on one hooked forward pass: subclasses override
    :meth:`layer_map` (and, to record more of the forward, :meth:`watch`). With
    ``uses_gradients`` the forward records autograd from the target layer on, so
    :func:`score_gradients` can run."""

    uses_gradients: ClassVar[bool] = False

    def watch(self) -> AbstractContextManager[Any]:
        """A context around the forward pass whose value lands in ``Forward.watched``."""
        return nullcontext()

    def layer_map(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Maps ``(B, K, *spatial)`` before the ReLU."""
        raise NotImplementedError

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        layer_name, module, notes = self.target_layer(inputs)
        with self.watch() as watched:
            forward = self.hooked_forward(inputs, target, layer_name, module,
                                          track_grad=self.uses_gradients)
        forward.watched = watched
        raw = self.layer_map(forward, inputs)
        return self.make_explanation(forward, raw, inputs, layer_name, notes)


class GradientCAM(LayerMapMethod):
    """A method of the gradient-weighted family: a rule that combines the layer's activations
    ``A`` ``(B, C, *spatial)`` with the score gradients ``G`` ``(B, K, C, *spatial)`` into maps
    ``(B, K, *spatial)`` before the ReLU. Subclasses override :meth:`combine` only."""

    uses_gradients = True

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layer_map(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        gradients = score_gradients(forward.scores, forward.activation)
        return self.combine(forward.canonical(), forward.canonical(gradients))
