"""The call flow every method shares, and the base of the gradient-weighted family.

One call: check the inputs, put the model in eval mode (restored after), resolve the target layer,
run one forward with a per-call hook on that layer, read the target scores, and, for the gradient
methods, take ``torch.autograd.grad`` from the scores to the layer's output only. Before the
target layer the forward runs without autograd recording (as inference would); the hook switches
recording on at the layer, so the backward pass covers the layers after it and nothing else.
"""

from __future__ import annotations

import copy
import itertools
import logging
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from camlens._calls import active_call
from camlens.capture import CaptureOptions, Layout, capture_layer, checked_activation
from camlens.capture import named_module as resolve_named_module
from camlens.explanation import FUSION_RULES, Explanation, ExplanationWarning, fuse_layers
from camlens.layer_choice import LayerChoiceError, choose_layer
from camlens.layouts import spatial_size
from camlens.methods.smoothing import Smoothing, smoothed
from camlens.model_state import check_inputs, input_tensors, preserved_model_state
from camlens.targets import ResolvedTarget, Target, adapt_output, resolve_target

__all__ = ["CAMMethod", "Forward", "GradientCAM", "LayerMapMethod", "eigen_projection",
           "layer_gradients", "score_gradients"]

logger = logging.getLogger("camlens")


@dataclass
class Forward:
    """What one hooked forward pass produced."""

    output: Any  # the adapted model output (a tensor, or what output_fn returned)
    activation: torch.Tensor  # the target layer's raw output (a grad-tracking leaf if asked)
    layout: Layout | None  # None for maps at the input (FullGrad)
    target: ResolvedTarget
    scores: torch.Tensor  # (B, K)
    layer_name: str = ""
    watched: Any = None  # what the method's watch() recorded during the forward
    gradients: torch.Tensor | None = None  # d scores / d activation, when computed for several
    notes: list[str] = field(default_factory=list)  # what the method's rule adds to the notes

    def canonical(self, tensor: torch.Tensor | None = None) -> torch.Tensor:
        """``tensor`` (default: the activation) in the ``(B, C, *spatial)`` layout; extra leading
        axes, e.g. ``(B, K, ...)`` gradients, are kept."""
        tensor = self.activation if tensor is None else tensor
        leading = tensor.shape[: tensor.ndim - self.activation.ndim + 1]
        flat = tensor.reshape(-1, *tensor.shape[len(leading) :])
        if self.layout is None:
            raise ValueError("this forward captured no layer to put in a layout")
        canonical = self.layout.to_canonical(flat)
        return canonical.reshape(*leading, *canonical.shape[1:])


class CAMMethod:
    """Base of all methods: ``method(inputs, target=None) -> Explanation``.

    Args:
        model: the model to explain; it is left exactly as it was found by every call.
        layer: a dotted name from ``model.named_modules()`` (negative indices allowed, e.g.
            ``"blocks.-1.norm1"``), a module, ``None`` to choose one (:mod:`camlens.layer_choice`),
            or a list of them: one map per layer in ``Explanation.per_layer`` and their fusion
            (``fuse``) as the result, from one forward and one backward pass where the method
            allows it.
        fuse: how the maps of several layers are merged, ``"max"`` or ``"mean"``
            (:func:`camlens.explanation.fuse_layers`).
        eigen_smooth: replace the sum of the per-channel terms of the map by their first
            principal component (:func:`eigen_projection`); methods with such terms only.
        counterfactual: negate the score gradients (Grad-CAM, Section 7): the map shows what
            would raise the score if it were removed; gradient methods only.
        aug_smooth, smooth_samples, smooth_noise, smooth_seed: average the maps over mirrored
            and intensity-scaled copies of the input, and/or over ``smooth_samples`` noisy
            copies (:mod:`camlens.methods.smoothing`).
        differentiable: keep the autograd graph, so ``exp.raw`` and ``exp.maps`` can enter a
            training loss and their gradients reach the model's parameters (explanation-guided
            training); the forward then records the whole network, the score gradients are
            taken with ``create_graph=True``, and the maps are those of the model in eval mode.
            Methods with one forward pass only.
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
    #: The paper the method comes from (``camlens methods`` lists it).
    paper: ClassVar[str] = ""
    #: Whether the maps come from score gradients (says why an empty map is empty).
    uses_gradients: ClassVar[bool] = True
    #: Whether the map is a sum over channels of terms ``T^k`` (so ``eigen_smooth`` applies).
    has_channel_terms: ClassVar[bool] = False
    #: The map is always the first principal component of the terms (Eigen-Grad-CAM).
    always_eigen: ClassVar[bool] = False
    #: Whether ``differentiable=True`` applies (maps from one recorded forward pass).
    can_differentiate: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module | Sequence[str | nn.Module] | None = None,
        *,
        output_fn: Callable[[Any], Any] | None = None,
        channels_last: bool | None = None,
        token_grid: tuple[int, int] | None = None,
        prefix_tokens: int | None = None,
        input_size: Sequence[int] | None = None,
        input_index: int = 0,
        fuse: str = "max",
        eigen_smooth: bool = False,
        counterfactual: bool = False,
        aug_smooth: bool = False,
        smooth_samples: int = 0,
        smooth_noise: float = 0.15,
        smooth_seed: int = 0,
        differentiable: bool = False,
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
                                      input_size, input_index)
        if fuse not in FUSION_RULES:
            raise ValueError(f"fuse must be one of {', '.join(FUSION_RULES)}, got {fuse!r}")
        self.fuse = fuse
        if eigen_smooth and not self.has_channel_terms:
            raise ValueError(f"eigen_smooth needs a map that is a sum of per-channel terms; "
                             f"{self.name} has none (it applies to cam, scorecam and the "
                             "gradient family)")
        if counterfactual and not self.uses_gradients:
            raise ValueError(f"counterfactual negates the score gradients; {self.name} uses "
                             "none (it applies to the gradient family)")
        self.eigen_smooth = bool(eigen_smooth)
        self.counterfactual = bool(counterfactual)
        self.smoothing = Smoothing(bool(aug_smooth), smooth_samples, smooth_noise, smooth_seed)
        if differentiable and not self.can_differentiate:
            raise ValueError(f"differentiable=True keeps the graph of one forward pass; "
                             f"{self.name} needs several or none (it applies to cam, eigencam "
                             "and the gradient family)")
        self.differentiable = bool(differentiable)
        #: The layers of a multi-layer call (``layer=[...]``), else None.
        self.layers: list[str | nn.Module] | None = None
        if isinstance(layer, (list, tuple)):
            self.layers = _checked_layer_list(model, layer)
        elif layer is not None:
            resolve_named_module(model, layer)  # type: ignore[arg-type]  # names the bad type

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"

    def __call__(
        self, inputs: torch.Tensor | Sequence[torch.Tensor], target: Target = None
    ) -> Explanation:
        tensors = input_tensors(inputs)
        check_inputs(self.model, tensors)
        try:
            with active_call(), preserved_model_state(self.model):
                if self.smoothing.active:
                    return self.explain_smoothed(tensors, target)
                return self.explain_any(tensors, target)
        except (RuntimeError, ValueError, TypeError) as error:
            if isinstance(error, LayerChoiceError):
                raise
            hint = _diagnosis(self.model, inputs, self.options.explained(tensors), error)
            if hint is None:
                raise
            raise ValueError(f"{hint} (the model said: {str(error).splitlines()[0]})") from error

    # --- steps shared by the methods -----------------------------------------------------------

    def explain_smoothed(self, inputs: tuple[torch.Tensor, ...], target: Target
                         ) -> Explanation:
        """The mean map over the copies of :attr:`smoothing`. A layer chosen automatically for
        the original input is kept for every copy, so all the maps are of one layer."""
        pinned = self

        def once(copy_inputs: tuple[torch.Tensor, ...], copy_target: Target) -> Explanation:
            nonlocal pinned
            explanation = pinned.explain_any(copy_inputs, copy_target)
            if (pinned.layer is None and pinned.layers is None
                    and explanation.layer in dict(self.model.named_modules())):
                pinned = copy.copy(self)
                pinned.layer = explanation.layer
            return explanation

        return smoothed(self.smoothing, inputs, target, self.options.input_index, once)

    def explain_any(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        """:meth:`explain_layers` for ``layer=[...]``, else :meth:`explain`."""
        if self.layers is not None:
            return self.explain_layers(inputs, target)
        return self.explain(inputs, target)

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        """Compute the explanation; the model is already in eval mode."""
        raise NotImplementedError

    def target_scores(self, resolved: ResolvedTarget, scores: torch.Tensor, output: Any
                      ) -> torch.Tensor:
        """The explained scores ``(B, K)`` of the resolved targets: ``scores`` as read from the
        output, unless a method explains another function of the same classes (Finer-CAM's
        differences, Shapley-CAM's ReST)."""
        return scores

    def explain_layers(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        """The maps of every layer of ``self.layers`` and their fusion. This default runs the
        method once per layer; :class:`LayerMapMethod` overrides it with one forward pass."""
        assert self.layers is not None
        per_layer: dict[str, Explanation] = {}
        for layer in self.layers:
            single = copy.copy(self)
            single.layer, single.layers = layer, None
            explanation = single.explain(inputs, target)
            per_layer[explanation.layer] = explanation
        note = (f"{self.name} ran once per layer ({len(per_layer)} runs): its maps do not come "
                "from one forward pass")
        return fuse_layers(per_layer, self.fuse, [note])

    def target_layer(self, inputs: tuple[torch.Tensor, ...], target: Target = None
                     ) -> tuple[str, nn.Module, list[str]]:
        """(name, module, notes) of the layer to explain, choosing one when ``layer`` is None
        (:mod:`camlens.layer_choice`: over the explained input's grid, every position reaching
        the score of ``target``)."""
        if self.layer is not None:
            if not isinstance(self.layer, (str, nn.Module)):
                raise TypeError("target_layer takes one layer; layer=[...] goes through "
                                "explain_layers")
            name, module = resolve_named_module(self.model, self.layer)
            return name, module, []
        explained = self.options.explained(inputs)
        _check_explainable(inputs, self.options.input_index)

        def scores_of(output: Any) -> torch.Tensor:
            adapted = adapt_output(output, self.options.output_fn)
            return resolve_target(target, adapted, explained.shape[0])[1]

        choice = choose_layer(self.model, inputs, explained, scores_of,
                              channels_last=self.options.channels_last,
                              prefix_tokens=self.options.prefix_tokens)
        logger.info(choice.note)
        return choice.name, choice.module, [choice.note]

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
        """One forward with the target layer captured, and the target scores ``(B, K)``.

        Refused with a ValueError naming where: a layer whose first axis is not the batch, NaN
        or infinite values in the explained input, the layer's output or the scores."""
        return self.hooked_forwards(inputs, target, [(layer_name, module)], track_grad=track_grad,
                                    replace=replace)[0]

    def hooked_forwards(
        self,
        inputs: tuple[torch.Tensor, ...],
        target: Target,
        layers: Sequence[tuple[str, nn.Module]],
        *,
        track_grad: bool,
        replace: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> list[Forward]:
        """One forward with every layer of ``layers`` (name, module) captured: a
        :class:`Forward` per layer, sharing the output and the scores. With ``track_grad``
        autograd records from the first captured layer on, so the scores can be differentiated
        to each layer's output in one backward pass (:func:`layer_gradients`)."""
        explained = self.options.explained(inputs)
        track_grad = track_grad or self.differentiable
        with ExitStack() as stack:
            # Differentiable maps record the whole forward (the graph reaches the parameters);
            # otherwise autograd starts at the first captured layer.
            stack.enter_context(torch.enable_grad() if self.differentiable else torch.no_grad())
            captures = [stack.enter_context(capture_layer(module, track_grad=track_grad,
                                                          replace=replace))
                        for _, module in layers]
            model_output = self.model(*inputs)
        activations = [checked_activation(capture, name)
                       for capture, (name, _) in zip(captures, layers, strict=True)]
        layouts = []
        for activation, (name, module) in zip(activations, layers, strict=True):
            check_batch_axis(activation.shape, explained, name)
            layouts.append(self.options.layout(activation.shape, explained.shape, name, module))
        with torch.set_grad_enabled(track_grad):
            output = adapt_output(model_output, self.options.output_fn)
            resolved, scores = resolve_target(target, output, explained.shape[0])
            scores = self.target_scores(resolved, scores, output)
        check_finite({f"input {self.options.input_index}": explained,
                      **{f"the output of layer {name!r}": activation
                         for activation, (name, _) in zip(activations, layers, strict=True)},
                      "the scores": scores})
        return [Forward(output, activation, layout, resolved, scores, name)
                for activation, layout, (name, _) in zip(activations, layouts, layers,
                                                          strict=True)]

    def make_explanation(
        self,
        forward: Forward,
        raw: torch.Tensor,
        inputs: tuple[torch.Tensor, ...],
        layer_name: str,
        notes: list[str],
        attributions: torch.Tensor | None = None,
    ) -> Explanation:
        """Package ``raw`` maps ``(B, K, *spatial)`` (ReLU applied here) as an Explanation; maps
        that are zero everywhere are flagged (:class:`~camlens.explanation.ExplanationWarning`
        and a note saying why)."""
        input_size = self.options.input_size or map_size(self.options.explained(inputs),
                                                         tuple(raw.shape[2:]))
        resolved = forward.target
        classes = resolved.classes
        positive = torch.relu(raw) if self.differentiable else torch.relu(raw).detach()
        layout_notes = [forward.layout.note] if forward.layout is not None and (
            forward.layout.note) else []
        layout_notes += forward.notes
        label = self.name + (" (counterfactual)" if self.counterfactual else "")
        notes = notes + layout_notes + flag_empty_maps(positive, forward.scores, label,
                                                       layer_name, self.uses_gradients,
                                                       self.counterfactual)
        return Explanation(
            raw=resolved.squeezed(positive),
            scores=resolved.squeezed(forward.scores.detach()),
            targets=None if classes is None else resolved.squeezed(classes),
            method=self.name,
            layer=layer_name,
            input_size=tuple(input_size),
            attributions=None if attributions is None else resolved.squeezed(attributions),
            notes=notes,
        )


def check_batch_axis(shape: torch.Size, explained: torch.Tensor, layer_name: str) -> None:
    """A layer output must carry one row per input first: a ValueError otherwise."""
    batch = explained.shape[0]
    if shape[0] == batch:
        return
    hint = ""
    if explained.ndim == 3:
        hint = (f" If {tuple(explained.shape)} is one image without its batch axis, add it: "
                "images[None] or images.unsqueeze(0).")
    raise ValueError(f"layer {layer_name!r} outputs shape {tuple(shape)}, whose first axis "
                     f"({shape[0]}) is not the batch of {batch} input(s): camlens cannot put "
                     f"one map on each input from it (a detector's per-box features?); choose "
                     f"a layer with the batch axis first.{hint}")


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """A ValueError naming the first of ``tensors`` that holds NaN or infinite values (one
    transfer to the host for all of them).

    A tensor's sum is finite whenever all its values are (a NaN or an infinity anywhere makes
    the sum NaN or infinite), and a sum costs a tenth of ``isfinite(t).all()`` on a CPU (no
    boolean copy of the tensor). A sum that is not finite is confirmed element by element, so
    finite values whose sum overflows are not refused."""
    floating = {name: tensor for name, tensor in tensors.items() if tensor.is_floating_point()}
    if not floating:
        return
    sums = torch.stack([tensor.detach().sum().float() for tensor in floating.values()])
    finite = torch.isfinite(sums).tolist()
    for (name, tensor), ok in zip(floating.items(), finite, strict=True):
        if not ok and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} holds NaN or infinite values; camlens cannot explain "
                             "them (check the input and the model's numerics)")


def map_size(explained: torch.Tensor, raw_spatial: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial size maps are upsampled to: the explained input's grid with as many axes as
    the maps. A sequence given as ``(B, T, F)`` whose time axis matches a 1-D map of length T is
    read along T."""
    spatial = spatial_size(explained.shape)
    if len(spatial) == len(raw_spatial):
        if (len(raw_spatial) == 1 and explained.ndim == 3
                and explained.shape[1] == raw_spatial[0] != explained.shape[2]):
            return (int(explained.shape[1]),)
        return spatial
    return tuple(explained.shape[-len(raw_spatial):])


def flag_empty_maps(maps: torch.Tensor, scores: torch.Tensor, method: str,
                    layer_name: str, uses_gradients: bool, counterfactual: bool = False
                    ) -> list[str]:
    """Notes (and an :class:`ExplanationWarning`) for maps ``(B, K, *spatial)`` that are zero
    everywhere after the ReLU: an empty map says nothing, and must not pass for an answer."""
    empty = maps.flatten(2).amax(dim=2) <= 0 if maps.numel() else maps.new_zeros(0)
    count = int(empty.sum()) if empty.numel() else 0
    if count == 0:
        return []
    if not scores.requires_grad and uses_gradients:
        why = ("the explained score does not depend on this layer's output (a detached or "
               "constant target, or a layer the score does not use)")
    elif counterfactual:
        why = ("no position has negative evidence at this layer: removing none of them would "
               "raise the score (a counterfactual map)")
    else:
        why = ("no position has positive evidence after the ReLU at this layer (every position "
               "lowers the score, or the weights after the layer are zero, e.g. a "
               "zero-initialised head)")
    note = (f"{count} of {empty.numel()} {method} maps at layer {layer_name!r} are zero "
            f"everywhere: {why}")
    warnings.warn(note, ExplanationWarning, stacklevel=5)
    return [note]



def _checked_layer_list(model: nn.Module, layers: Sequence[str | nn.Module]
                        ) -> list[str | nn.Module]:
    """``layer=[...]``: at least one layer, each an existing name or module, none twice."""
    if not layers:
        raise ValueError("layer=[] names no layer; pass one or more names, a module, or None")
    seen: dict[str, str | nn.Module] = {}
    for layer in layers:
        if layer is None:
            raise ValueError("layer=[...] takes names or modules; None (choose a layer) works "
                             "only on its own")
        name, _ = resolve_named_module(model, layer)
        if name in seen:
            raise ValueError(f"layer {name!r} is listed twice in layer={list(layers)!r}")
        seen[name] = layer
    return list(layers)


def _check_explainable(inputs: tuple[torch.Tensor, ...], index: int) -> None:
    """In a model with several inputs, the automatic choice does not lay maps over token ids
    when another input is real-valued (CLIP: the text, not the image): it asks which."""
    explained = inputs[index]
    if explained.is_floating_point() or not any(tensor.is_floating_point() for tensor in inputs):
        return
    which = f" (input_index={index}; the model gets {len(inputs)} inputs)"
    raise ValueError(f"the explained input{which} holds {explained.dtype} values of shape "
                     f"{tuple(explained.shape)}, e.g. token ids; camlens lays maps over a "
                     "real-valued input: choose it with input_index= (an image's pixels)")


def _diagnosis(model: nn.Module, given: torch.Tensor | Sequence[torch.Tensor],
               explained: torch.Tensor, error: Exception) -> str | None:
    """What to tell the user when the call failed on inputs the model cannot take (one image
    without its batch axis, pixels of another dtype than the weights, several images given as
    a list), or None when it is none of these."""
    if isinstance(error, TypeError):
        return _images_as_several_inputs(given, error)
    hint = _missing_batch_axis(model, explained)
    if hint is None and isinstance(error, RuntimeError):
        hint = _other_dtype(model, explained)
    return hint


def _other_dtype(model: nn.Module, explained: torch.Tensor) -> str | None:
    """The hint for pixels (floating point or uint8) of another dtype than the model's weights;
    integer inputs (token ids) are left alone."""
    if not (explained.is_floating_point() or explained.dtype == torch.uint8):
        return None
    weights = next((tensor.dtype for tensor in itertools.chain(model.parameters(),
                                                               model.buffers())
                    if tensor.is_floating_point()), None)
    if weights is None or weights == explained.dtype:
        return None
    name = str(weights).removeprefix("torch.")
    pixels = (" (uint8 pixels also need the model's scaling and normalisation: its own "
              "preprocessing)" if explained.dtype == torch.uint8 else "")
    return (f"the input is {str(explained.dtype).removeprefix('torch.')} but the model's "
            f"weights are {name}; convert it first, e.g. x.to(torch.{name}){pixels}")


def _images_as_several_inputs(given: torch.Tensor | Sequence[torch.Tensor],
                              error: TypeError) -> str | None:
    """The hint for a list of same-shaped images, which camlens passes as the model's several
    positional inputs, failing on a model that takes one."""
    if isinstance(given, torch.Tensor) or len(given) < 2 or "positional argument" not in str(
            error) or len({tuple(tensor.shape) for tensor in given}) != 1:
        return None
    return (f"a {type(given).__name__} of {len(given)} tensors is passed as the model's "
            f"{len(given)} inputs, model(x1, x2, ...); to explain {len(given)} images, stack "
            "them into one batch: torch.stack(images), or torch.cat(images) when each has its "
            "batch axis")


def _missing_batch_axis(model: nn.Module, explained: torch.Tensor) -> str | None:
    """What to say when one image or one sequence came without its batch axis: the model has
    layers of N spatial axes and the input has N + 1 axes instead of N + 2."""
    kinds = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d),
             3: (nn.Conv3d, nn.BatchNorm3d)}
    spatial = explained.ndim - 1
    if spatial not in kinds or not any(isinstance(module, kinds[spatial])
                                       for module in model.modules()):
        return None
    return (f"the input has shape {tuple(explained.shape)}: one input without its batch axis? "
            f"The model's layers take {spatial + 2}-D batches; add the axis with x[None] or "
            "x.unsqueeze(0)")


def nearly_equal(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor: ``actual`` equals ``expected`` up to float error (relative 1e-4, and
    1e-5 absolute on the scale of ``expected``). It stays on the tensors' device: the caller
    decides when to bring it to the host, which on a GPU waits for the whole queue."""
    scale = expected.abs().max().clamp(min=1.0)
    return ((actual - expected).abs() <= 1e-5 * scale + 1e-4 * expected.abs()).all()


def score_gradients(scores: torch.Tensor, activation: torch.Tensor,
                    create_graph: bool = False) -> torch.Tensor:
    """d scores[:, k] / d activation for each k: shape ``(B, K, *activation.shape[1:])``
    (:func:`layer_gradients` for one layer)."""
    return layer_gradients(scores, [activation], create_graph)[0]


def layer_gradients(scores: torch.Tensor, activations: Sequence[torch.Tensor],
                    create_graph: bool = False) -> list[torch.Tensor]:
    """d scores[:, k] / d activation for each k and each activation, in one backward pass:
    shapes ``(B, K, *activation.shape[1:])``.

    Inputs of a batch are independent in eval mode, so differentiating the batch sum of
    ``scores[:, k]`` gives every input's own gradient. The K targets go through one batched
    backward pass (``is_grads_batched``, vmap over one-hot output gradients) where every
    operation on the path supports it, else one backward pass per target.
    Scores that do not depend on the activation get zero gradients.
    """
    num_targets = scores.shape[1]
    activations = list(activations)
    zeros = [activation.new_zeros(activation.shape[0], num_targets, *activation.shape[1:])
             for activation in activations]
    if not scores.requires_grad:
        return zeros
    if num_targets > 1 and not create_graph:
        batched = batched_score_gradients(scores, activations)
        if batched is not None:
            return batched
    per_target: list[tuple[torch.Tensor | None, ...]] = []
    for k in range(num_targets):
        with torch.enable_grad():  # the sum must be recorded under an outer no_grad() too
            total = scores[:, k].sum()
        per_target.append(torch.autograd.grad(
            total, activations, retain_graph=create_graph or k < num_targets - 1,
            create_graph=create_graph, allow_unused=True))
    return [torch.stack([_or_zeros(grads[i], activation) for grads in per_target], dim=1)
            for i, activation in enumerate(activations)]


def _or_zeros(gradient: torch.Tensor | None, activation: torch.Tensor) -> torch.Tensor:
    """A gradient, or zeros where the score does not use the activation."""
    return torch.zeros_like(activation) if gradient is None else gradient


def batched_score_gradients(scores: torch.Tensor, activations: Sequence[torch.Tensor]
                            ) -> list[torch.Tensor] | None:
    """All K gradients in one vmapped backward pass, or None where the graph does not allow it
    (the graph is kept, so the caller can fall back to one pass per target)."""
    num_targets = scores.shape[1]
    one_hot = torch.eye(num_targets, dtype=scores.dtype, device=scores.device)
    grad_outputs = one_hot[:, None, :].expand(num_targets, *scores.shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's notes on ops without a batching rule
            gradients = torch.autograd.grad(scores, list(activations), grad_outputs=grad_outputs,
                                            retain_graph=True, is_grads_batched=True,
                                            allow_unused=True)
    except (RuntimeError, NotImplementedError):
        return None
    return [activation.new_zeros(activation.shape[0], num_targets, *activation.shape[1:])
            if gradient is None else gradient.transpose(0, 1)
            for gradient, activation in zip(gradients, activations, strict=True)]


def spatial_axes(tensor: torch.Tensor, first: int) -> tuple[int, ...]:
    """The axes from ``first`` to the end: the spatial axes of a canonical tensor."""
    return tuple(range(first, tensor.ndim))


class LayerMapMethod(CAMMethod):
    """A method whose map is a rule on one hooked forward pass: subclasses override
    :meth:`layer_map` (and, to record more of the forward, :meth:`watch`). With
    ``uses_gradients`` the forward records autograd from the target layer on, so
    :func:`score_gradients` can run."""

    uses_gradients = False
    can_differentiate = True

    def watch(self) -> AbstractContextManager[Any]:
        """A context around the forward pass whose value lands in ``Forward.watched``."""
        return nullcontext()

    def layer_map(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Maps ``(B, K, *spatial)`` before the ReLU."""
        raise NotImplementedError

    def layer_terms(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The per-channel terms ``(B, K, C, *spatial)`` whose sum is :meth:`layer_map`
        (methods with ``has_channel_terms``)."""
        raise NotImplementedError

    def map_of(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """:meth:`layer_map`, or with ``eigen_smooth`` the first principal component of
        :meth:`layer_terms`."""
        if self.eigen_smooth or self.always_eigen:
            return eigen_projection(self.layer_terms(forward, inputs))
        return self.layer_map(forward, inputs)

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        layer_name, module, notes = self.target_layer(inputs, target)
        with self.watch() as watched:
            forward = self.hooked_forward(inputs, target, layer_name, module,
                                          track_grad=self.uses_gradients)
        forward.watched = watched
        raw = self.map_of(forward, inputs)
        return self.make_explanation(forward, raw, inputs, layer_name, notes)

    def explain_layers(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        """Every layer of ``self.layers`` captured in one forward pass and, for the gradient
        family, differentiated in one backward pass; then fused."""
        assert self.layers is not None
        named = [resolve_named_module(self.model, layer) for layer in self.layers]
        with self.watch() as watched:
            forwards = self.hooked_forwards(inputs, target, named,
                                            track_grad=self.uses_gradients)
        if self.uses_gradients:
            gradients = layer_gradients(forwards[0].scores,
                                        [forward.activation for forward in forwards],
                                        create_graph=self.differentiable)
            for forward, gradient in zip(forwards, gradients, strict=True):
                forward.gradients = gradient
        per_layer = {}
        for forward in forwards:
            forward.watched = watched
            raw = self.map_of(forward, inputs)
            per_layer[forward.layer_name] = self.make_explanation(forward, raw, inputs,
                                                                  forward.layer_name, [])
        return fuse_layers(per_layer, self.fuse, [])


class GradientCAM(LayerMapMethod):
    """A method of the gradient-weighted family: a rule that combines the layer's activations
    ``A`` ``(B, C, *spatial)`` with the score gradients ``G`` ``(B, K, C, *spatial)`` into maps
    ``(B, K, *spatial)`` before the ReLU. Subclasses override :meth:`combine` only."""

    uses_gradients = True
    has_channel_terms = True

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, K, *S)`` from activations ``(B, C, *S)`` and gradients ``(B, K, C, *S)``
        (default: the sum of :meth:`channel_terms` over channels)."""
        return self.channel_terms(activations, gradients).sum(dim=2)

    def channel_terms(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """The terms ``T^k`` ``(B, K, C, *S)`` of the map ``sum_k T^k``."""
        raise NotImplementedError

    def gradients_of(self, forward: Forward) -> torch.Tensor:
        """The canonical score gradients ``(B, K, C, *S)``, negated for ``counterfactual``."""
        gradients = forward.gradients
        if gradients is None:
            gradients = score_gradients(forward.scores, forward.activation,
                                        create_graph=self.differentiable)
        canonical = forward.canonical(gradients)
        return -canonical if self.counterfactual else canonical

    def layer_map(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.combine(forward.canonical(), self.gradients_of(forward))

    def layer_terms(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.channel_terms(forward.canonical(), self.gradients_of(forward))


def eigen_projection(terms: torch.Tensor) -> torch.Tensor:
    """The first principal component of per-channel terms ``(B, K, C, *S)``: for each input
    and target, the ``(positions, channels)`` matrix of the terms, centred over the positions,
    projected on its first right singular vector (pytorch-grad-cam's ``eigen_smooth``, after
    Eigen-CAM, Muhammad and Yeasin, IJCNN 2020). A singular vector's sign is arbitrary: it is
    chosen so that the projection agrees (positive inner product) with the plain sum of the
    terms, so the map keeps the evidence *for* the score. Returns ``(B, K, *S)``."""
    spatial = terms.shape[3:]
    dtype = torch.promote_types(terms.dtype, torch.float32)  # no half-precision SVD
    matrix = terms.flatten(3).transpose(2, 3).to(dtype)  # (B, K, P, C)
    centred = matrix - matrix.mean(dim=2, keepdim=True)
    _, _, right_vectors = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ right_vectors[..., 0, :].unsqueeze(-1)).squeeze(-1)  # (B, K, P)
    agreement = (projection * matrix.sum(dim=3)).sum(dim=2, keepdim=True)
    projection = torch.where(agreement < 0, -projection, projection)
    return projection.reshape(*terms.shape[:2], *spatial).to(terms.dtype)
