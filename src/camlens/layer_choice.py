"""Choose the layer to explain when the user does not: detected, not guessed from names.

The chosen layer is the last one, in order of completion, whose output

1. has the inputs' batch axis first (a detector's ``(300, 256, 7, 7)`` region features for 2
   images are not per-input maps);
2. lies over the explained input's grid (:func:`camlens.layouts.detect_layout` with
   ``strict=True``: an image's ``(B, C, h, w)`` at one stride, Swin's ``(B, h, w, C)``, a
   ViT's tokens, a recurrent layer's ``(B, T, H)``), and
3. *reaches the explained score at every position*: the gradient of the scores with respect to
   the output is non-zero somewhere over the channels at each position. A ViT's final norm,
   where only the class token reaches the head, fails this (its patch maps would be all zero),
   as does a segmentation head's output for a score over a region (only the region's
   positions).

Finding it costs one forward pass with autograd recorded through the whole network and one
backward pass: every module's output is kept (a clone goes on downstream, so in-place
operations cannot touch it) and ``torch.autograd.grad`` gives all their gradients at once. Pass
``layer=`` to skip it. When no layer passes, :class:`LayerChoiceError` lists the candidates with
their shapes and why each was refused.

A score that only a few positions can reach (one detected box: its receptive field) fails 3 at
every layer. Then the rule is relaxed, stated in the note: the last layer over the grid whose
every position reaches *some* value of the model's output (the gradient of their sum), and
at least one position the explained score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from camlens._calls import current, is_current
from camlens.capture import first_tensor
from camlens.layouts import Layout, LayoutError, detect_layout

__all__ = ["LayerChoice", "LayerChoiceError", "LayerSurvey", "choose_layer", "survey_layers"]


class LayerChoiceError(ValueError):
    """No layer of the model can be explained automatically; the message lists why."""


@dataclass(frozen=True)
class LayerChoice:
    """The chosen layer, its layout, and a note on what was decided."""

    name: str
    module: nn.Module
    layout: Layout
    note: str


@dataclass
class _Seen:
    name: str
    module: nn.Module
    tensor: torch.Tensor


@dataclass(frozen=True)
class LayerSurvey:
    """One module's output as the automatic choice sees it (``camlens layers`` prints these)."""

    name: str
    shape: tuple[int, ...]
    layout: Layout | None  # None: refused before the gradient (see ``reason``)
    reason: str = ""
    reached: int | None = None  # positions the score's gradient reaches
    positions: int | None = None


def _record(model: nn.Module, inputs: Sequence[torch.Tensor],
            scores_of: Callable[[object], torch.Tensor]
            ) -> tuple[list[_Seen], object, torch.Tensor]:
    """One forward with autograd through the network, keeping every module's output."""
    token = current()
    seen: list[_Seen] = []
    names = {module: name for name, module in model.named_modules() if name}

    def hook(module: nn.Module, args: tuple, output: object) -> object:
        if not is_current(token):
            return None
        tensor = first_tensor(output)
        if tensor is None or not tensor.is_floating_point() or tensor.ndim < 3:
            return None
        kept = tensor if tensor.requires_grad else tensor.detach().requires_grad_(True)
        seen.append(_Seen(names[module], module, kept))
        passed_on = kept.clone()
        if isinstance(output, torch.Tensor):
            return passed_on
        rest = list(output[1:])  # type: ignore[index]
        return [passed_on, *rest] if isinstance(output, list) else (passed_on, *rest)

    handles = [module.register_forward_hook(hook) for module in names]
    try:
        with torch.enable_grad():
            output = model(*inputs)
            scores = scores_of(output)
    finally:
        for handle in handles:
            handle.remove()
    return seen, output, scores


def _candidates(seen: list[_Seen], explained: torch.Tensor, channels_last: bool | None,
                prefix_tokens: int | None
                ) -> tuple[list[tuple[_Seen, Layout]], dict[int, str]]:
    """The recorded outputs that lie over the explained input's grid with the batch first, and
    why each other one was refused (by its position in ``seen``)."""
    batch = explained.shape[0]
    candidates: list[tuple[_Seen, Layout]] = []
    refused: dict[int, str] = {}
    for position, item in enumerate(seen):
        shape = tuple(item.tensor.shape)
        if shape[0] != batch:
            refused[position] = f"batch axis of {shape[0]}, not {batch}"
            continue
        try:
            layout = detect_layout(shape, explained.shape, channels_last=channels_last,
                                   prefix_tokens=prefix_tokens, layer_name=item.name,
                                   module=item.module, strict=True)
        except LayoutError as error:
            refused[position] = str(error).split(f"{shape}", 1)[-1].lstrip(":, ")
            continue
        candidates.append((item, layout))
    return candidates, refused


def survey_layers(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    explained: torch.Tensor,
    scores_of: Callable[[object], torch.Tensor],
    *,
    channels_last: bool | None = None,
    prefix_tokens: int | None = None,
) -> list[LayerSurvey]:
    """Every module output of 3 or more axes, in order of completion: its layout over the
    explained input's grid (or why it has none) and how many of its positions reach the
    score. The model is not left changed (the caller holds its state)."""
    seen, _, scores = _record(model, inputs, scores_of)
    candidates, refused = _candidates(seen, explained, channels_last, prefix_tokens)
    gradients = _gradients(scores, [item.tensor for item, _ in candidates]) or [
        None] * len(candidates)
    found = {id(item): (layout, _reached(layout, gradient))
             for (item, layout), gradient in zip(candidates, gradients, strict=True)}
    rows = []
    for position, item in enumerate(seen):
        shape = tuple(item.tensor.shape)
        if id(item) not in found:
            rows.append(LayerSurvey(item.name, shape, None, refused.get(position, "")))
            continue
        layout, reached = found[id(item)]
        rows.append(LayerSurvey(item.name, shape, layout, "",
                                None if reached is None else int(reached.sum()),
                                None if reached is None else reached.numel()))
    return rows


def choose_layer(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    explained: torch.Tensor,
    scores_of: Callable[[object], torch.Tensor],
    *,
    channels_last: bool | None = None,
    prefix_tokens: int | None = None,
) -> LayerChoice:
    """The layer to explain (see the module docstring). ``scores_of`` turns the model's output
    into the explained scores ``(B, K)``; ``explained`` is the input the maps lie over."""
    seen, output, scores = _record(model, inputs, scores_of)
    candidates, refused_at = _candidates(seen, explained, channels_last, prefix_tokens)
    refused = [f"{seen[position].name} {tuple(seen[position].tensor.shape)}: {reason}"
               for position, reason in sorted(refused_at.items())]
    tensors = [item.tensor for item, _ in candidates]
    gradients = _gradients(scores, tensors)
    if gradients is None:
        raise LayerChoiceError(
            "the explained score does not depend on any layer's output (a detached or constant "
            "target?); camlens has nothing to explain")
    reaches = [_reached(layout, gradient) for (_, layout), gradient
               in zip(candidates, gradients, strict=True)]
    for (item, layout), reached in zip(reversed(candidates), reversed(reaches), strict=True):
        if reached is not None and bool(reached.all()):
            return _choice(item, layout, seen, refused, "every position reaches the score")
        shape = tuple(item.tensor.shape)
        refused.append(f"{item.name} {shape}: " + (
            "the score does not depend on it" if reached is None else
            f"only {int(reached.sum())} of {reached.numel()} positions reach the score"))
    # A local score (one box): every position reaching the whole output, some the score.
    whole = _gradients(_sum_of_tensors(output), tensors)
    if whole is not None:
        for (item, layout), reached, structure in zip(reversed(candidates), reversed(reaches),
                                                      reversed(whole), strict=True):
            overall = _reached(layout, structure)
            if reached is not None and bool(reached.any()) and overall is not None and bool(
                    overall.all()):
                return _choice(item, layout, seen, [], (
                    f"the score reaches {int(reached.sum())} of {reached.numel()} of its "
                    "positions (a local score), and every position reaches the model's output"))
    listing = "; ".join(refused[-12:]) or "no module returned a tensor of 3 or more axes"
    raise LayerChoiceError(f"found no layer to explain automatically; pass layer= (see `camlens "
                           f"layers`). Candidates, last first: {listing}")


def _choice(item: _Seen, layout: Layout, seen: list[_Seen], refused: list[str], why: str
            ) -> LayerChoice:
    shape = tuple(item.tensor.shape)
    grid = f", grid {'x'.join(map(str, layout.grid))}" if layout.grid else ""
    note = (f"layer=None: explained {item.name!r} {shape} ({layout.kind.replace('_', ' ')}"
            f"{grid}), the last layer over the input's grid where {why}")
    later = _after(item, seen)
    skipped = [line for line in refused if line.split(" ")[0] in later]
    if skipped:
        note += "; later layers refused: " + "; ".join(skipped[:4])
    return LayerChoice(item.name, item.module, layout, note)


def _reached(layout: Layout, gradient: torch.Tensor | None) -> torch.Tensor | None:
    """Which positions of the canonical grid the gradient reaches (any channel, any input)."""
    if gradient is None:
        return None
    return layout.to_canonical(gradient).abs().sum(dim=(0, 1)) > 0


def _sum_of_tensors(output: object) -> torch.Tensor:
    """The sum of every floating-point tensor in a model's output (tensors, sequences, dicts,
    objects with attributes); a zero when there is none."""
    if isinstance(output, torch.Tensor):
        return output.sum() if output.is_floating_point() else torch.zeros(())
    if isinstance(output, dict):
        parts = list(output.values())
    elif isinstance(output, (list, tuple)):
        parts = list(output)
    elif hasattr(output, "__dict__"):
        parts = list(vars(output).values())
    else:
        return torch.zeros(())
    sums = [_sum_of_tensors(part) for part in parts]
    sums = [value for value in sums if value.requires_grad]
    return torch.stack([value.to(sums[0].device) for value in sums]).sum() if sums else (
        torch.zeros(()))


def _gradients(scores: torch.Tensor, tensors: list[torch.Tensor]
               ) -> list[torch.Tensor | None] | None:
    """d sum(scores) / d each tensor (None where it does not reach), or None when the scores do
    not depend on any of them."""
    if not scores.requires_grad or not tensors:
        return None
    found = torch.autograd.grad(scores.sum(), tensors, allow_unused=True, retain_graph=True)
    return None if all(gradient is None for gradient in found) else list(found)


def _after(item: _Seen, seen: list[_Seen]) -> set[str]:
    """Names of the modules that completed after ``item``."""
    position = next(index for index, other in enumerate(seen) if other is item)
    return {other.name for other in seen[position + 1 :]}
