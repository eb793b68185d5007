"""What is explained: the model output's adapter and the target scores.

A target turns the model output into the scores that are explained, shape ``(B,)`` for one
target per input or ``(B, K)`` for K targets per input:

- ``None``: the top-1 predicted class of each input;
- an ``int``: that class for every input;
- a sequence of ints or a 1-D tensor: one class per input; a 2-D ``(B, K)`` tensor or nested
  sequence: K classes per input;
- :class:`TopK`: the k highest-scoring classes of each input; ``"all"``: every class;
- a callable ``score_fn(output) -> (B,) or (B, K)`` for anything else (a region of a segmentation,
  an embedding similarity, a caption's log-probability).

Class scores are the model's raw outputs (pre-softmax logits), as in Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from camlens.model_state import preserved_model_state

__all__ = ["ResolvedTarget", "ScoreFn", "Target", "TopK", "adapt_output", "class_logits",
           "one_class_per_input", "predicted_classes", "resolve_target"]

ScoreFn = Callable[[Any], torch.Tensor]
Target = Union[None, int, Sequence, torch.Tensor, np.ndarray, "TopK", str, ScoreFn]


@dataclass(frozen=True)
class TopK:
    """Explain the ``k`` highest-scoring classes of each input (maps of shape (B, k, H, W))."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"TopK needs a positive int k, got {self.k!r}")


def adapt_output(output: Any, output_fn: Callable[[Any], Any] | None = None) -> Any:
    """The model output the targets read: a tensor itself; a tuple/list's first element; a
    dict's ``logits`` or, for torchvision's segmentation models, ``out``; a transformers-style
    output's ``logits``, or a CLIP model's ``logits_per_image`` (image x prompt scores). A list
    of per-image dicts (torchvision detections) is passed as it is, for a callable target such
    as :class:`~camlens.score_targets.BoxTarget`. ``output_fn`` overrides all of these."""
    if output_fn is not None:
        return output_fn(output)
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and all(
            isinstance(item, Mapping) for item in output):
        return output  # one dict per image: detections
    if isinstance(output, (tuple, list)) and output:
        return adapt_output(output[0])
    if isinstance(output, Mapping):
        for key in ("logits", "out", "logits_per_image"):
            if key in output:
                return output[key]
        raise TypeError(
            f"the model returned a dict with keys {sorted(output)}, none of them 'logits' or "
            "'out'; pass output_fn=lambda out: out['<key>'] to say which one to explain"
        )
    for name in ("logits", "logits_per_image"):  # classifiers; CLIP: one score per text prompt
        logits = getattr(output, name, None)
        if isinstance(logits, torch.Tensor):
            return logits
    raise TypeError(
        f"cannot read scores from a model output of type {type(output).__name__}; pass "
        "output_fn= to turn it into a tensor"
    )


@dataclass
class ResolvedTarget:
    """The explained classes (``None`` for a callable) and how to read their scores."""

    classes: torch.Tensor | None  # (B, K) long
    score_fn: ScoreFn | None
    one_per_input: bool

    def scores(self, output: Any, rows: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Scores ``(N, K)`` of ``output``; ``rows`` picks which inputs' classes to read (the
        perturbation methods score many copies of one input)."""
        if self.score_fn is not None:
            scores = self.score_fn(output)
            return scores.unsqueeze(1) if scores.ndim == 1 else scores
        assert self.classes is not None  # a target without a score_fn has classes
        classes = self.classes if rows is None else self.classes[rows]
        logits = class_logits(output)
        if classes.shape[0] != logits.shape[0]:
            classes = classes.expand(logits.shape[0], -1)
        return logits.gather(1, classes)

    def squeezed(self, tensor: torch.Tensor) -> torch.Tensor:
        """Drop the K axis (axis 1) when there is one target per input."""
        return tensor.squeeze(1) if self.one_per_input else tensor


def class_logits(output: Any) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"a class-index target needs a model output of shape (B, num_classes), got {shape}; "
            "pass a callable target score_fn(output) -> (B,) for other outputs"
        )
    return output


def resolve_target(
    target: Target, output: Any, batch_size: int
) -> tuple[ResolvedTarget, torch.Tensor]:
    """The user's ``target`` resolved for this batch's ``output``, and its scores ``(B, K)``."""
    if callable(target) and not isinstance(target, (torch.Tensor, TopK)):
        scores = target(output)
        if not isinstance(scores, torch.Tensor) or scores.ndim not in (1, 2) or (
            scores.shape[0] != batch_size
        ):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(
                f"a callable target must return a tensor of shape ({batch_size},) or "
                f"({batch_size}, K) for this batch, got {got}"
            )
        resolved = ResolvedTarget(None, target, one_per_input=scores.ndim == 1)
        return resolved, scores.unsqueeze(1) if scores.ndim == 1 else scores
    logits = class_logits(output)
    num_classes = logits.shape[1]
    device = logits.device
    if target is None:
        classes, one = logits.argmax(dim=1, keepdim=True), True
    elif isinstance(target, TopK):
        if target.k > num_classes:
            raise ValueError(f"TopK({target.k}) asks for more than the {num_classes} classes")
        classes, one = logits.topk(target.k, dim=1).indices, False
    elif isinstance(target, str):
        if target != "all":
            raise ValueError(
                f"unknown target {target!r}; a string target must be 'all' (class names are "
                "resolved by the command line)"
            )
        classes = torch.arange(num_classes, device=device).expand(batch_size, -1)
        one = False
    elif isinstance(target, bool):
        raise TypeError(f"target must be a class index, not a bool ({target!r})")
    elif isinstance(target, Integral):  # an int, or numpy's (labels of a numpy data set)
        check_class_range(int(target), num_classes)
        classes, one = torch.full((batch_size, 1), int(target), device=device), True
    elif isinstance(target, (torch.Tensor, np.ndarray, Sequence)):
        classes, one = tensor_target(target, batch_size, device)
        # Only classes the user gave need checking (a host sync on a GPU); argmax, topk and
        # arange are in range by construction.
        out_of_range = (classes < 0) | (classes >= num_classes)
        if out_of_range.any():
            check_class_range(int(classes[out_of_range][0]), num_classes)
    else:
        raise TypeError(
            f"target must be None, an int, a sequence, tensor or numpy array of ints, TopK(k), "
            f"'all' or a callable; got {type(target).__name__}"
        )
    resolved = ResolvedTarget(classes.long(), None, one_per_input=one)
    return resolved, resolved.scores(logits)


def check_class_range(value: int, num_classes: int) -> None:
    if not 0 <= value < num_classes:
        raise IndexError(
            f"target class {value} is out of range for a model with {num_classes} outputs "
            f"(valid: 0 to {num_classes - 1})"
        )


def tensor_target(
    target: torch.Tensor | np.ndarray | Sequence, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, bool]:
    """(B, K) classes from a 1-D (one per input) or 2-D (K per input) target."""
    try:
        classes = torch.as_tensor(target, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"target {target!r} is not a sequence of class indices: {error}") from None
    if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
        raise TypeError(f"target classes must be integers, got dtype {classes.dtype}")
    if classes.is_inference():  # model(x).argmax(1) in an inference loop: indices, no graph
        classes = classes.clone()  # outside inference mode: a normal tensor autograd can index by
    if classes.ndim == 0:
        return classes.reshape(1, 1).expand(batch_size, 1), True
    if classes.ndim > 2 or classes.shape[0] != batch_size:
        raise ValueError(
            f"target of shape {tuple(classes.shape)} does not fit a batch of {batch_size}: give "
            f"one class per input ({batch_size},) or K per input ({batch_size}, K)"
        )
    if classes.ndim == 1:
        return classes.unsqueeze(1), True
    return classes, False


def predicted_classes(model: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...],
                      output_fn: Callable[[Any], Any] | None = None,
                      batch_size: int | None = None) -> torch.Tensor:
    """The model's top-1 class ``(B,)`` for each input, from a forward pass in eval mode without
    autograd; the model's mode, flags and gradients are restored after
    (:func:`~camlens.model_state.preserved_model_state`).

    Args:
        model: a classifier whose (adapted) output is ``(B, num_classes)``.
        inputs: a batch, or a tuple of the model's positional inputs.
        output_fn: turns the model output into the logits (see :func:`adapt_output`).
        batch_size: at most this many inputs per forward pass (all at once when None).

    Example:
        >>> predicted_classes(model, images)  # doctest: +SKIP
        tensor([3, 7])
    """
    tensors = inputs if isinstance(inputs, tuple) else (inputs,)
    size = tensors[0].shape[0]
    step = size if batch_size is None else batch_size
    classes = []
    with preserved_model_state(model), torch.no_grad():
        for start in range(0, size, max(step, 1)):
            chunk = tuple(tensor[start : start + step] for tensor in tensors)
            classes.append(class_logits(adapt_output(model(*chunk), output_fn)).argmax(dim=1))
    return torch.cat(classes)


def one_class_per_input(target: Target, output: Any, batch_size: int, what: str
                        ) -> torch.Tensor:
    """Class indices ``(B,)`` for ``target`` read like :func:`resolve_target` (None: predicted,
    an int, one class per input, ``TopK(1)``); forms with several classes per input or a
    callable are refused, naming ``what`` needs one class per input."""
    if callable(target) and not isinstance(target, (torch.Tensor, TopK)):
        raise TypeError(f"{what} needs a class per input; a callable target is not accepted here")
    resolved, _ = resolve_target(target, output, batch_size)
    classes = resolved.classes
    assert classes is not None  # only a callable target (refused above) resolves to no classes
    if classes.shape[1] != 1:
        raise ValueError(f"{what} needs one class per input; target {target!r} gives "
                         f"{classes.shape[1]} per input")
    return classes[:, 0]
