"""Gradient-free methods that weigh channels by what the model does without them.

Both read the scores of many perturbed copies of one input at a time; a callable target must
therefore score each row of the output on its own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from camlens.capture import Layout, capture_layer, checked_activation
from camlens.explanation import Explanation, normalize, upsample
from camlens.methods.base import CAMMethod, Forward, LayerMapMethod, nearly_equal
from camlens.methods.gradient import channel_products, weighted_channel_sum
from camlens.replay import PrefixRecord, record_prefix, replay_prefix
from camlens.targets import ResolvedTarget, Target, adapt_output, class_logits, resolve_target

__all__ = ["AblationCAM", "ScoreCAM"]


def _check_batch_size(batch_size: int | None, allow_none: bool) -> None:
    if batch_size is None and allow_none:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _chunks(count: int, size: int | None) -> list[torch.Tensor]:
    """Index ranges ``[0, count)`` in pieces of at most ``size`` (one piece when None)."""
    size = count if size is None else size
    return [torch.arange(start, min(start + size, count)) for start in range(0, count, size)]


class ScoreCAM(LayerMapMethod):
    """Score-CAM (Wang et al., CVPR Workshops 2020).

    Each channel, upsampled and min-max normalised, masks the input:
    ``H^k = s(Up(A^k))``; its weight is the increase of confidence it alone brings,
    ``C(A^k) = f(X * H^k) - f(X_b)`` with the all-zero baseline ``X_b``; the map is
    ``L = ReLU(sum_k C(A^k) A^k)``. ``f`` is the softmax probability of the class (the paper's
    Section 3.2; its Algorithm 1 instead takes a softmax over channels of logit differences), or
    the callable target's score. At most ``batch_size`` masked copies are in memory at once.

    ``skip_below=t`` (a fast variant): a channel whose largest activation on an input is at most
    ``t`` times that input's largest activation over all channels gets weight 0 without its
    masked forward; its normalised mask would be the image scaled by a near-empty map. The
    skipped count is in ``exp.notes``; ``benchmarks/scorecam_skip.py`` measures the speed-up
    and the change of the maps on digits-gap.

    Example:
        >>> exp = ScoreCAM(model, layer="layer4", batch_size=64)(images)  # doctest: +SKIP
    """

    name = "scorecam"
    paper = "Wang et al., Score-CAM, CVPR Workshops 2020"

    def __init__(self, model, layer=None, *, batch_size: int = 32, skip_below: float = 0.0,
                 **options) -> None:
        super().__init__(model, layer, **options)
        _check_batch_size(batch_size, allow_none=False)
        if not 0.0 <= skip_below < 1.0:
            raise ValueError(f"skip_below must be in [0, 1), got {skip_below!r}")
        self.batch_size = batch_size
        self.skip_below = float(skip_below)

    has_channel_terms = True
    can_differentiate = False  # its masked forwards run without autograd

    def layer_map(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return weighted_channel_sum(self.channel_weights(forward, inputs), forward.canonical())

    def layer_terms(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return channel_products(self.channel_weights(forward, inputs), forward.canonical())

    def channel_weights(self, forward: Forward, inputs: tuple[torch.Tensor, ...]
                        ) -> torch.Tensor:
        """The score increase of each channel's mask, ``(B, K, C)``."""
        activations = forward.canonical()
        index = self.options.input_index
        image = inputs[index]
        spatial_ndim = activations.ndim - 2
        input_size = tuple(image.shape[-spatial_ndim:])
        mask_shape = (1,) * (image.ndim - 1 - spatial_ndim) + input_size
        num_channels = activations.shape[1]
        channel_weights = activations.new_zeros(
            activations.shape[0], forward.scores.shape[1], num_channels
        )
        with torch.no_grad():
            blank = _with(inputs, index, torch.zeros_like(image))
            baseline = self.confidence(forward.target, blank, slice(None))
            peaks = activations.flatten(2).amax(dim=2)  # (B, C)
            skipped = 0
            for row in range(image.shape[0]):
                kept = torch.arange(num_channels, device=activations.device)
                if self.skip_below > 0:
                    kept = torch.nonzero(
                        peaks[row] > self.skip_below * peaks[row].max()).flatten()
                    skipped += num_channels - len(kept)
                for chunk in _chunks(len(kept), self.batch_size):
                    channels = kept[chunk.to(kept.device)]
                    resized = upsample(activations[row, channels], input_size)
                    masks = normalize(resized, spatial_ndim)
                    masked = image[row : row + 1] * masks.reshape(-1, *mask_shape)
                    rows = tuple(tensor[row : row + 1].expand(len(masked), *tensor.shape[1:])
                                 for tensor in inputs)
                    scores = self.confidence(forward.target, _with(rows, index, masked),
                                             slice(row, row + 1))
                    channel_weights[row, :, channels] = (scores - baseline[row]).T
        if self.skip_below > 0:
            forward.notes.append(
                f"scorecam skipped {skipped} of {num_channels * image.shape[0]} channel masks "
                f"(peak at most {self.skip_below:g} of the input's largest activation)")
        return channel_weights

    def confidence(self, target: ResolvedTarget, batch: tuple[torch.Tensor, ...], rows: slice
                   ) -> torch.Tensor:
        """Softmax probability of the target classes (rows' classes), or the callable's score."""
        output = adapt_output(self.model(*batch), self.options.output_fn)
        if target.classes is None:
            return target.scores(output)
        probabilities = class_logits(output).softmax(dim=1)
        classes = target.classes[rows].expand(probabilities.shape[0], -1)
        return probabilities.gather(1, classes)


def _with(inputs: tuple[torch.Tensor, ...], index: int, tensor: torch.Tensor
          ) -> tuple[torch.Tensor, ...]:
    """``inputs`` with input ``index`` replaced by ``tensor`` (the others held fixed)."""
    return (*inputs[:index], tensor, *inputs[index + 1 :])


class AblationCAM(CAMMethod):
    """Ablation-CAM (Desai and Ramaswamy, WACV 2020).

    Channel k's weight is the relative fall of the score when the channel is zeroed,
    ``w_k = (y^c - y^c_k) / |y^c|``, and ``L = ReLU(sum_k w_k A^k)``. (The paper divides by
    ``y^c``; dividing by its magnitude keeps a negative score from flipping the map.)

    The network before the target layer runs once per input: the hook at the layer hands the rest
    of the network a batch of ablated copies of the layer's output (tensors from before the layer
    broadcast over it). Where a model cannot take that (its output does not follow the copies),
    the input itself is copied instead. ``batch_size`` caps the copies per forward (default: all
    channels at once); later chunks replay the recorded outputs of the layers before the target
    (:mod:`camlens.replay`), checking that the unablated copy still gives the original score.

    Example:
        >>> exp = AblationCAM(model, layer="layer4", batch_size=128)(images)  # doctest: +SKIP
    """

    name = "ablationcam"
    paper = "Desai and Ramaswamy, Ablation-CAM, WACV 2020"
    uses_gradients = False

    def __init__(self, model, layer=None, *, batch_size: int | None = None, **options) -> None:
        super().__init__(model, layer, **options)
        _check_batch_size(batch_size, allow_none=True)
        self.batch_size = batch_size

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        layer_name, module, notes = self.target_layer(inputs, target)
        forwards, raw_rows = [], []
        for row in range(self.options.explained(inputs).shape[0]):
            single = tuple(tensor[row : row + 1] for tensor in inputs)
            forward, raw = self.explain_one(single, _row_target(target, row), layer_name, module)
            forwards.append(forward)
            raw_rows.append(raw)
        last = forwards[-1].target
        classes = None if last.classes is None else torch.cat(
            cast("list[torch.Tensor]", [f.target.classes for f in forwards]))
        summary = Forward(
            None,
            self.options.explained(inputs),
            forwards[-1].layout,
            ResolvedTarget(classes, last.score_fn, last.one_per_input),
            torch.cat([f.scores for f in forwards]),
        )
        return self.make_explanation(summary, torch.cat(raw_rows), inputs, layer_name, notes)

    def explain_one(
        self, single: tuple[torch.Tensor, ...], target: Target, layer_name: str, module: nn.Module
    ) -> tuple[Forward, torch.Tensor]:
        """The forward record and the raw maps ``(1, K, *spatial)`` of one input."""
        forward, weights, checks = self.ablation_weights(single, target, layer_name, module,
                                                         replay=self.batch_size is not None)
        # One host transfer per input for all the replayed chunks' checks (a check per chunk
        # would stall a GPU's queue each time); a replay that changed the result runs again
        # in full.
        if checks and not torch.stack(checks).all().item():
            forward, weights, _ = self.ablation_weights(single, target, layer_name, module,
                                                        replay=False)
        return forward, weighted_channel_sum(weights, forward.canonical())

    def ablation_weights(
        self, single: tuple[torch.Tensor, ...], target: Target, layer_name: str,
        module: nn.Module, replay: bool,
    ) -> tuple[Forward, torch.Tensor, list[torch.Tensor]]:
        """(forward record, channel weights ``(1, K, C)``, and for each replayed chunk a 0-d
        bool tensor: did the unablated copy give the original score?)."""
        forward: Forward | None = None
        prefix = PrefixRecord()
        checks: list[torch.Tensor] = []
        position, num_channels = 0, None
        context: AbstractContextManager[PrefixRecord | None]
        while num_channels is None or position < num_channels:
            if forward is None and replay:
                context = record_prefix(self.model, module)
            else:
                context = replay_prefix(prefix) if prefix.usable else nullcontext()
            with context as recorded:
                output, activation, ablation = self.ablated_forward(
                    single, module, layer_name, position
                )
            if isinstance(recorded, PrefixRecord) and not ablation.replicated:
                prefix = recorded
            num_channels, channels = ablation.num_channels, ablation.channels
            # The hook ran (ablated_forward checked the capture), so these are set.
            assert ablation.layout is not None and channels is not None
            if forward is None:
                first = _rows(output, slice(0, 1))
                resolved, scores = resolve_target(target, first, 1)
                forward = Forward(first, activation, ablation.layout, resolved, scores,
                                  layer_name)
                weights = activation.new_zeros(1, scores.shape[1], num_channels)
            original = forward.scores  # (1, K)
            if position > 0 and prefix.usable:
                replayed = forward.target.scores(_rows(output, slice(0, 1)), slice(0, 1))
                checks.append(nearly_equal(replayed, original))
            ablated_scores = forward.target.scores(_rows(output, slice(1, None)),
                                                   slice(0, 1))  # (n, K)
            scale = torch.where(original != 0, original.abs(), torch.ones_like(original))
            weights[0, :, channels] = ((original - ablated_scores) / scale).T
            position += len(channels)
        assert forward is not None  # the loop runs at least once
        return forward, weights, checks

    def ablated_forward(
        self, single: tuple[torch.Tensor, ...], module: nn.Module, layer_name: str, position: int
    ) -> tuple[Any, torch.Tensor, _Ablation]:
        """Run the model once with the layer's output replaced by the original followed by copies
        with one channel each zeroed, for channels ``position`` onward (at most batch_size)."""
        ablation = _Ablation()

        def ablate(activation: torch.Tensor) -> torch.Tensor:
            if ablation.layout is None:
                ablation.layout = self.options.layout(activation.shape,
                                                      self.options.explained(single).shape,
                                                      layer_name)
            axis = 1 if ablation.layout.kind == "channels_first" else activation.ndim - 1
            num_channels = activation.shape[axis]
            stop = num_channels if self.batch_size is None else position + self.batch_size
            channels = torch.arange(position, min(stop, num_channels), device=activation.device)
            ablation.num_channels, ablation.channels = num_channels, channels
            copies = activation[:1].expand(len(channels) + 1, *activation.shape[1:]).clone()
            index: list[slice | torch.Tensor] = [slice(None)] * activation.ndim
            index[0] = torch.arange(1, len(channels) + 1, device=activation.device)
            index[axis] = channels
            copies[tuple(index)] = 0
            return copies

        output_fn = self.options.output_fn
        first_error: RuntimeError | None = None
        with torch.no_grad():
            try:
                with capture_layer(module, track_grad=False, replace=ablate) as capture:
                    output = adapt_output(self.model(*single), output_fn)
                if ablation.channels is None:  # the layer did not run: say so
                    checked_activation(capture, layer_name)
                rows_follow = _batch_rows(output) == len(cast(torch.Tensor, ablation.channels)) + 1
            except RuntimeError as error:
                if ablation.channels is None or _out_of_memory(error):
                    raise  # before the target layer (the model's own error), or out of memory
                first_error, rows_follow = error, False
            if not rows_follow:  # the copies did not go through as a batch: copy the input
                assert ablation.channels is not None  # set when the first try got this far
                copies = len(ablation.channels) + 1
                replicated = tuple(t.expand(copies, *t.shape[1:]) for t in single)
                ablation.replicated = True
                try:
                    with capture_layer(module, track_grad=False, replace=ablate) as capture:
                        output = adapt_output(self.model(*replicated), output_fn)
                except RuntimeError as error:
                    if first_error is not None:  # a model error, not a batching problem
                        raise error from first_error
                    raise
        activation = checked_activation(capture, layer_name)[:1]
        return output, activation, ablation


@dataclass
class _Ablation:
    """What the hook of one ablated forward decided: the layer's layout, its channel count,
    which channels this forward zeroes, and whether the input had to be copied instead."""

    layout: Layout | None = None
    num_channels: int = 0
    channels: torch.Tensor | None = None
    replicated: bool = False


def _out_of_memory(error: RuntimeError) -> bool:
    """Whether ``error`` is the allocator running out of memory (CUDA or CPU): retrying with
    copies of the input would need more."""
    message = str(error).lower()
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in message or (
        "can't allocate memory" in message)


def _batch_rows(output: object) -> int | None:
    """How many inputs' results ``output`` holds (a tensor's first axis, or a list of per-image
    results such as detections), or None when that cannot be told."""
    if isinstance(output, torch.Tensor):
        return output.shape[0] if output.ndim > 0 else None
    if isinstance(output, (list, tuple)) and output and all(isinstance(item, dict)
                                                             for item in output):
        return len(output)
    return None


def _rows(output: Any, rows: slice) -> Any:
    """The results of some inputs: a tensor's rows, or items of a per-image list (detections);
    anything else is refused (Ablation-CAM scores copies of one input in one batch)."""
    if isinstance(output, torch.Tensor) or _batch_rows(output) is not None:
        return output[rows]
    raise TypeError(f"ablationcam scores copies of an input in one batch and cannot split a "
                    f"model output of type {type(output).__name__} by input; pass output_fn= "
                    "to turn it into a tensor (B, ...) or a list of per-input results")


def _row_target(target: Target, row: int) -> Target:
    """The part of ``target`` that belongs to input ``row`` of the batch."""
    if isinstance(target, torch.Tensor) and target.ndim > 0:
        return target[row : row + 1] if target.ndim == 2 else target[row].reshape(1)
    if isinstance(target, (list, tuple)):
        return [target[row]]  # one class, or K classes, for this input
    return target
