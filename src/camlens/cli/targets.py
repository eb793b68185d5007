"""``--target`` text -> what is explained, and what the pictures of each target show.

Forms: ``top1``, ``topK``, a class index or name; ``box:x0,y0,x1,y1[:CLASS]`` (a detector's box);
``detections[:SCORE]`` (every detection scoring at least SCORE, default 0.5: one map per box);
``class:CLASS`` (a segmentation class over the image; its predicted mask is outlined);
``text:PROMPT[|PROMPT...]`` (a CLIP-style model's similarity to each text prompt: one map each).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import click

__all__ = ["Detections", "ImageTarget", "TextPrompts", "class_label", "parse_target",
           "prepare_target"]


@dataclass(frozen=True)
class Detections:
    """``detections[:SCORE]``: every detection of the image scoring at least ``score``."""

    score: float = 0.5


@dataclass(frozen=True)
class TextPrompts:
    """``text:PROMPT|PROMPT``: one map per prompt, for a model that scores images against text
    (CLIP: ``logits_per_image``), with the tokenizer saved next to it."""

    prompts: tuple[str, ...]


def parse_target(text: str, class_names):
    """top1 -> None, topK -> TopK(K), an index, or a class name (closest names if unknown);
    ``box:x0,y0,x1,y1[:CLASS]`` -> :class:`~camlens.score_targets.BoxTarget` (a detected box, in
    the model input's pixels); ``detections[:SCORE]`` -> :class:`Detections`; ``class:CLASS`` ->
    :class:`~camlens.score_targets.RegionTarget` (a segmentation class over the whole image);
    ``text:PROMPT|PROMPT`` -> :class:`TextPrompts`."""
    from camlens.score_targets import BoxTarget, RegionTarget
    from camlens.targets import TopK

    lowered = text.lower()
    if lowered.startswith("box:"):
        corners, _, label = text[4:].partition(":")
        try:
            box = [float(value) for value in corners.split(",")]
            return BoxTarget(box, None if not label else _class_index(label, class_names))
        except ValueError as error:
            raise click.BadParameter(f"{text!r}: {error}; use box:x0,y0,x1,y1 or "
                                     "box:x0,y0,x1,y1:CLASS", param_hint="--target") from None
    if lowered == "detections" or lowered.startswith("detections:"):
        return _detections(text)
    if lowered.startswith("text:"):
        prompts = tuple(prompt.strip() for prompt in text[5:].split("|"))
        if not all(prompts):
            raise click.BadParameter(f"{text!r} has an empty prompt; use text:PROMPT or "
                                     "text:PROMPT|PROMPT", param_hint="--target")
        return TextPrompts(prompts)
    if lowered.startswith("class:"):
        return RegionTarget(_class_index(text[6:], class_names))
    if lowered == "top1":
        return None
    if lowered.startswith("top") and lowered[3:].isdigit() and int(lowered[3:]) >= 1:
        return TopK(int(lowered[3:]))
    if text.isdigit():
        index = int(text)
        if class_names is not None and index >= len(class_names):
            raise click.BadParameter(
                f"class index {index} is out of range: the model has {len(class_names)} classes",
                param_hint="--target")
        return index
    if class_names is not None:
        lookup = {name.lower(): position for position, name in enumerate(class_names)}
        if lowered in lookup:
            return lookup[lowered]
        close = difflib.get_close_matches(text, list(class_names), n=3, cutoff=0.5)
        if close:
            hint = f"closest class names: {', '.join(close)}"
        elif len(class_names) <= 30:
            hint = f"the model's classes: {', '.join(class_names)}"
        else:
            hint = (f"none of the model's {len(class_names)} class names is close (or give a "
                    "class index)")
        raise click.BadParameter(f"unknown class {text!r}; {hint}", param_hint="--target")
    raise click.BadParameter(
        f"{text!r} is not top1, topK or a class index, and this model has no class names",
        param_hint="--target")


def _detections(text: str) -> Detections:
    _, _, score = text.partition(":")
    if not score:
        return Detections()
    try:
        value = float(score)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise click.BadParameter(f"{text!r}: the score must be a number in [0, 1], e.g. "
                                 "detections:0.3", param_hint="--target")
    return Detections(value)


def _class_index(text: str, class_names) -> int:
    """A class given as an index or a name."""
    if text.isdigit():
        return int(text)
    chosen = parse_target(text, class_names)
    if not isinstance(chosen, int):
        raise click.BadParameter(f"{text!r} is not a class", param_hint="--target")
    return chosen


def class_label(index: int, class_names) -> str:
    return class_names[index] if class_names is not None and index < len(class_names) else str(
        index)


@dataclass
class ImageTarget:
    """What one image's explanation is asked for, and what its pictures show per target.

    ``inputs``: the model's positional inputs; ``options``: extra method options
    (``input_index``); ``names``: one name per target when the target names its own (prompts,
    detections); ``boxes``: one box per target to draw (or None)."""

    target: Any
    inputs: tuple
    options: dict
    names: list[str] | None = None
    boxes: list[list[float]] | None = None


def prepare_target(loaded, target, tensor, device) -> ImageTarget:
    """The :class:`ImageTarget` of ``target`` for the preprocessed image ``tensor``: a
    ``detections`` target runs the model once to find the boxes; text prompts are tokenized.
    A ValueError says why the image cannot be explained so (no detection, no tokenizer)."""
    import torch

    from camlens.score_targets import BoxesTarget, BoxTarget

    tensor = tensor.to(device)
    if isinstance(target, TextPrompts):
        if loaded.tokenizer is None:
            raise ValueError(f"{loaded.name} has no tokenizer saved with it, so text prompts "
                             "cannot be read (save the processor or tokenizer into the folder)")
        tokens = loaded.tokenizer(list(target.prompts), padding=True, return_tensors="pt")
        inputs = (tokens["input_ids"].to(device), tensor, tokens["attention_mask"].to(device))
        return ImageTarget("all", inputs, {"input_index": 1}, list(target.prompts))
    if isinstance(target, Detections):
        found = _detections_of(loaded, tensor, target.score)
        chosen = BoxesTarget.from_detections(found, score_threshold=target.score)
        boxes = torch.as_tensor(chosen.boxes, dtype=torch.float32).reshape(-1, 4).tolist()
        labels = list(chosen.labels) if chosen.labels is not None else [None] * len(boxes)
        scores = found["scores"][: len(boxes)].tolist()
        names = [f"{'box' if label is None else class_label(label, loaded.class_names)} "
                 f"{score:.2f}" for label, score in zip(labels, scores, strict=True)]
        return ImageTarget(chosen, (tensor,), {}, names, boxes)
    if isinstance(target, BoxTarget):
        return ImageTarget(target, (tensor,), {}, None,
                           [target.box_for(0, torch.device("cpu")).tolist()])
    return ImageTarget(target, (tensor,), {})


def _detections_of(loaded, tensor, score: float) -> dict:
    """The model's detections for one image, best first: torchvision's list of dicts, or a
    YOLO-style dense output decoded by :func:`camlens.score_targets.dense_detections`."""
    import torch

    from camlens.model_state import preserved_model_state
    from camlens.score_targets import dense_detections

    with preserved_model_state(loaded.model), torch.no_grad():
        loaded.model.eval()
        output = loaded.model(tensor)
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        found = output[0]
    elif isinstance(output, torch.Tensor) and output.ndim == 3:
        found = dense_detections(output, score_threshold=score)[0]
    else:
        raise ValueError("--target detections needs a detector: a list of {'boxes', 'scores', "
                         "'labels'} per image or a (B, N, 4 + classes) output, got "
                         f"{type(output).__name__}")
    order = found["scores"].argsort(descending=True)
    return {key: value[order].cpu() for key, value in found.items()}
