"""The work on a batch of inputs, the same for every engine: decode one input
(:func:`decode_input`), explain a batch (:func:`explain_batch`).

:func:`explain_batch` is the one function the engines map: the local pipeline
(:mod:`camlens.scale.pipeline`) calls it on the main thread for each batch, a Ray actor
(:mod:`camlens.scale.ray_engine`) for each block it is given. It stacks the batch, runs every
method once on it and splits the result into one :class:`ImageResult` per input, so batching does
not change a map or a score (a model in eval mode treats each input alone; tests/scale checks the
batched maps equal one-at-a-time ones).

What is per image stays per image:

- a failed input (unreadable, or one whose explanation raises) is an :class:`ImageResult` with
  its ``error``; a batch that raises is redone one input at a time, so one bad input costs the
  others nothing;
- notes are the input's own: an engine note on "3 of 16 maps are zero everywhere" becomes, for
  each of the inputs concerned, "1 of 1 maps ..." (and is dropped for the others);
- a target that needs the input itself (a detector's detections, text prompts: ``per_image``)
  is explained one input at a time.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from camlens.explanation import Explanation, ExplanationWarning
from camlens.scale.lanes import captured_warnings
from camlens.scale.sources import InputItem, decode_item

__all__ = ["Asked", "Decoded", "ImageResult", "MapRow", "WorkSpec", "class_label",
           "decode_input", "default_batch_size", "display_image", "explain_batch",
           "plain_target"]

#: What an explanation may raise for one input (the input is reported and skipped).
EXPLAIN_ERRORS = (ValueError, TypeError, IndexError, RuntimeError)

_EMPTY_NOTE = re.compile(r"^(\d+) of (\d+) (\S+) maps at layer (.+?) are zero everywhere: (.*)$",
                         re.DOTALL)


@dataclass
class Asked:
    """What one call is asked for: the model's ``inputs``, the ``target``, extra method
    ``options`` (``input_index``), and per target a ``names`` entry and a box to draw when the
    target names its own (prompts, detections)."""

    target: Any
    inputs: tuple
    options: dict
    names: list[str] | None = None
    boxes: list[list[float]] | None = None


def plain_target(loaded, target, tensor: torch.Tensor, device) -> Asked:
    """The default preparation: ``target`` as it is, on ``tensor`` moved to ``device``."""
    return Asked(target, (tensor.to(device),), {})


@dataclass
class WorkSpec:
    """Everything the work needs besides the model (plain data, sent once to each Ray actor).

    ``methods``: method names; ``layer``: a name, a list (one map each and their fusion) or None
    (the model's own, else automatic); ``target``: an engine target (None = the predicted class,
    an index, ``TopK``, ``"all"``, a callable score) or what ``prepare`` reads; ``options``:
    method options (``channels_last``, ``token_grid``, ``fuse``); ``prepare(loaded, target,
    tensor, device)`` -> :class:`Asked` (or an object with its fields); ``per_image``: the
    target needs each input alone; ``pictures``: keep the input and the upsampled maps for
    overlays; ``max_pixels`` / ``max_aspect``: the decoding limits."""

    methods: tuple[str, ...] = ("gradcam",)
    layer: str | list[str] | None = None
    target: Any = None
    options: dict = field(default_factory=dict)
    prepare: Callable | None = None
    per_image: bool = False
    pictures: bool = False
    max_pixels: int = 40_000_000
    max_aspect: float = 20.0


@dataclass
class Decoded:
    """One input after decoding: its preprocessed ``tensor`` ``(1, ...)``, or its ``error``."""

    item: InputItem
    tensor: torch.Tensor | None = None
    error: str | None = None

    @property
    def pixels(self) -> torch.Tensor:
        """The tensor of an input decoded without error (a programming error otherwise)."""
        if self.tensor is None:
            raise RuntimeError(f"{self.item.key} has no tensor: {self.error}")
        return self.tensor


@dataclass
class MapRow:
    """One map of one input: method, layer, target (class index or None), its name, the score
    and the raw map (the layer's grid, after the ReLU, not normalised)."""

    method: str
    layer: str
    target: int | None
    target_name: str
    score: float
    raw: np.ndarray
    notes: list[str]


@dataclass
class ImageResult:
    """The outcome for one input: its ``rows``, or its ``error``. With ``WorkSpec.pictures``
    also what overlays need: the input ``tensor``, the one-input ``explanations``, the
    targets' ``names`` and ``boxes``, and a segmentation class's predicted ``outline``."""

    key: str
    error: str | None = None
    rows: list[MapRow] = field(default_factory=list)
    console_notes: list[str] = field(default_factory=list)
    tensor: torch.Tensor | None = None
    explanations: list[Explanation] = field(default_factory=list)
    names: list[str] | None = None
    boxes: list[list[float]] | None = None
    outline: np.ndarray | None = None

    @property
    def pixels(self) -> torch.Tensor:
        """The input's tensor, kept for pictures (a programming error otherwise)."""
        if self.tensor is None:
            raise RuntimeError(f"{self.key}: no input tensor kept (WorkSpec.pictures is off)")
        return self.tensor


def class_label(index: int, class_names) -> str:
    """A class index as its name (the index itself when the model has no name for it)."""
    return class_names[index] if class_names is not None and index < len(class_names) else str(
        index)


def display_image(loaded, tensor: torch.Tensor):
    """The model's input ``(1, C, H, W)`` as a picture (normalisation undone), so maps line up
    with it."""
    from PIL import Image

    return Image.fromarray(display_pixels(loaded, tensor[:1])[0])


def display_pixels(loaded, tensors: torch.Tensor) -> np.ndarray:
    """The pictures of a batch of model inputs ``(B, C, H, W)``: ``(B, H, W, 3)`` uint8,
    normalisation undone and clamped to [0, 1], converted as :func:`camlens.viz.to_pil` does."""
    from camlens.viz import denormalize
    from camlens.viz.images import to_pixels

    if loaded.mean is not None and loaded.std is not None:
        tensors = denormalize(tensors, loaded.mean, loaded.std)
    return to_pixels(tensors.clamp(0, 1))


def decode_input(loaded, spec: WorkSpec, item: InputItem) -> Decoded:
    """Read, decode and preprocess ``item`` (in a worker: no model work); a bad file is a
    :class:`Decoded` with its error."""
    from camlens.io.images import ImageFileError

    try:
        image = decode_item(item, spec.max_pixels, spec.max_aspect)
        return Decoded(item, loaded.preprocess(image))
    except ImageFileError as error:
        return Decoded(item, error=str(error))


def default_batch_size(loaded, device: torch.device | str) -> int:
    """A batch that keeps the model busy without swelling memory: about 16 inputs of 224x224
    on a CPU (more for smaller inputs, at most 64), four times that on a GPU (at most 256)."""
    from PIL import Image

    example = loaded.preprocess(Image.new("RGB", (256, 256)))
    pixels = int(np.prod(example.shape[2:])) if example.ndim > 2 else 224 * 224
    size = 16 * 224 * 224 / max(pixels, 1)
    size = 2 ** max(0, round(np.log2(max(size, 1))))
    gpu = torch.device(device).type in ("cuda", "mps")
    return int(min(size * (4 if gpu else 1), 256 if gpu else 64))


def explain_batch(loaded, spec: WorkSpec, device, batch: Sequence[Decoded]
                  ) -> list[ImageResult]:
    """Explain the decoded inputs of ``batch`` with every method of ``spec``: one
    :class:`ImageResult` per input, in order (see the module docstring)."""
    results: dict[int, ImageResult] = {}
    good = []
    for position, decoded in enumerate(batch):
        if decoded.tensor is None:
            results[position] = ImageResult(decoded.item.key, error=decoded.error)
        else:
            good.append(position)
    groups: list[list[int]] = []
    if spec.per_image:
        groups = [[position] for position in good]
    else:  # inputs of one shape explain together (a model's preprocessing may vary sizes)
        by_shape: dict[tuple, list[int]] = {}
        for position in good:
            by_shape.setdefault(tuple(batch[position].pixels.shape[1:]), []).append(position)
        groups = list(by_shape.values())
    for group in groups:
        for position, result in zip(group, _explain_group(loaded, spec, device,
                                                          [batch[p] for p in group]),
                                    strict=True):
            results[position] = result
    return [results[position] for position in range(len(batch))]


def _explain_group(loaded, spec: WorkSpec, device, group: list[Decoded]) -> list[ImageResult]:
    """One call per method on the stacked group; a group that raises is redone one by one."""
    from camlens.methods import get_method

    prepare = spec.prepare or plain_target
    stacked = torch.cat([decoded.pixels for decoded in group])
    try:
        with captured_warnings() as caught:
            asked = prepare(loaded, spec.target, stacked, device)
            explanations = [_on_cpu(
                get_method(name)(loaded.model, spec.layer, **spec.options, **asked.options)(
                    asked.inputs, target=asked.target), spec.pictures)
                for name in spec.methods]
            outlines = _outlines(loaded, spec, stacked, device)
    except EXPLAIN_ERRORS as error:
        if len(group) > 1:
            return [result for decoded in group
                    for result in _explain_group(loaded, spec, device, [decoded])]
        return [ImageResult(group[0].item.key, error=f"{group[0].item.key}: {error}")]
    messages = []
    for warning in caught:  # the engine's notes, per input below; others go on as warnings
        if issubclass(warning.category, ExplanationWarning):
            messages.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    # each explanation's raw maps, scores and targets read out once for the group: a torch
    # call per input would hand the interpreter's lock back and forth with the writing threads
    tables = [_Table(exp, len(group)) for exp in explanations]
    results = []
    # each input's own explanation, where it differs from the call's in what is used: its
    # maps for pictures, its notes (without notes and pictures the rows need the call's alone)
    own = spec.pictures or any(exp.notes or exp.per_layer for exp in explanations)
    for position, decoded in enumerate(group):
        alone = ([_one_input(exp, position, len(group)) for exp in explanations] if own else
                 explanations)
        result = ImageResult(decoded.item.key, names=asked.names, boxes=asked.boxes,
                             console_notes=_own_notes(messages, alone, len(group)))
        result.rows = [row for method, exp, table in zip(spec.methods, alone, tables,
                                                         strict=True)
                       for row in _rows(loaded, spec, method, exp, asked, table, position)]
        if spec.pictures:
            result.tensor = decoded.pixels.cpu()
            result.explanations = alone
            result.outline = None if outlines is None else outlines[position]
        results.append(result)
    return results


def _on_cpu(exp: Explanation, pictures: bool) -> Explanation:
    """``exp`` on the CPU; for pictures its maps first upsampled and normalised for the whole
    group where it was computed (on a GPU, 64 maps there take a fraction of what the CPU takes
    beside the decoding processes)."""
    if pictures:
        exp.maps  # noqa: B018 - computes and keeps them
    return exp.to("cpu")


def _one_input(exp: Explanation, position: int, count: int) -> Explanation:
    """Input ``position`` of ``exp`` (a call on ``count`` inputs), with its own notes: views of
    the call's tensors (the batch is written together, so its storage is kept no longer)."""
    if count == 1:
        return exp

    def cut(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[position:position + 1]

    def cut_some(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else cut(tensor)

    per_layer = {name: _one_input(layer_exp, position, count)
                 for name, layer_exp in exp.per_layer.items()}
    single = Explanation(raw=cut(exp.raw), scores=cut(exp.scores),
                         targets=cut_some(exp.targets), method=exp.method, layer=exp.layer,
                         input_size=exp.input_size, attributions=cut_some(exp.attributions),
                         notes=[], per_layer=per_layer, _maps=cut_some(exp._maps))
    single.notes = [note for note in (_note_for(note, single, count) for note in exp.notes)
                    if note is not None]
    return single


class _Table:
    """A call's raw maps, scores and targets as numpy arrays and lists, one entry per input."""

    def __init__(self, exp: Explanation, count: int) -> None:
        self.raw = exp.raw.float().numpy()
        self.scores = exp.scores.reshape(count, -1).tolist()
        self.targets = (None if exp.targets is None else
                        exp.targets.reshape(count, -1).tolist())


def _note_for(note: str, single: Explanation, count: int) -> str | None:
    """``note`` as it reads for one input: an empty-map count is recounted on its own maps
    (None when none of its maps is empty); other notes hold for every input, with the shapes
    they quote given for one input (``(16, 128, 7, 7)`` -> ``(1, 128, 7, 7)``)."""
    match = _EMPTY_NOTE.match(note)
    if match is None:
        return re.sub(rf"\({count},(?=\)| \d)", "(1,", note)
    layer = match.group(4).strip("'\"")
    exp = single.per_layer.get(layer, single)
    raw = exp.raw
    spatial = len(exp.input_size)
    flat = raw.reshape(raw.shape[0], -1, *raw.shape[raw.ndim - spatial:]).flatten(2)
    empty = int((flat.amax(dim=2) <= 0).sum())
    if empty == 0:
        return None
    return (f"{empty} of {flat.shape[1]} {match.group(3)} maps at layer {match.group(4)} are "
            f"zero everywhere: {match.group(5)}")


def _own_notes(messages: list[str], alone: list[Explanation], count: int) -> list[str]:
    """The warnings of a call as the lines of one input (a one-input call: as they were): an
    empty-map count becomes the input's own count, other notes hold for every input."""
    if count == 1:
        return messages
    own = [note for exp in alone for note in exp.notes if _EMPTY_NOTE.match(note)]
    kept = [re.sub(rf"\({count},(?=\)| \d)", "(1,", message) for message in messages
            if _EMPTY_NOTE.match(message) is None]
    return list(dict.fromkeys([*kept, *own]))


def _outlines(loaded, spec: WorkSpec, stacked: torch.Tensor, device) -> list | None:
    """For a segmentation class target and pictures: each input's predicted region of that
    class (the argmax of the model's output at the input's size); else None."""
    import torch.nn.functional as F

    from camlens.model_state import preserved_model_state
    from camlens.score_targets import RegionTarget
    from camlens.targets import adapt_output

    if not (spec.pictures and isinstance(spec.target, RegionTarget)):
        return None
    with preserved_model_state(loaded.model), torch.no_grad():
        loaded.model.eval()
        logits = adapt_output(loaded.model(stacked.to(device)))
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        return [None] * len(stacked)
    resized = F.interpolate(logits.float().cpu(), size=tuple(stacked.shape[-2:]),
                            mode="bilinear", align_corners=False)
    return [(mask.argmax(dim=0) == spec.target.label).numpy() for mask in resized]


def _target_name(loaded, target) -> str:
    """How a callable target is named in file names and the index."""
    from camlens.score_targets import BoxTarget, RegionTarget

    if isinstance(target, BoxTarget):
        return "box" if target.label is None else (
            f"box_{class_label(target.label, loaded.class_names)}")
    if isinstance(target, RegionTarget):
        return f"region_{class_label(target.label, loaded.class_names)}"
    return "custom"


def _rows(loaded, spec: WorkSpec, method: str, exp: Explanation, asked, table: _Table,
          position: int) -> list[MapRow]:
    """One row per map of input ``position``; ``exp`` is its explanation, ``table`` the
    call's values."""
    spatial = len(exp.input_size)
    raw = table.raw[position] if table.raw.ndim == spatial + 2 else table.raw[position][None]
    targets = table.targets[position] if table.targets is not None else [None]
    targets = targets * (len(raw) // len(targets))
    scores = table.scores[position]
    rows = []
    for number, (map_, class_index, score) in enumerate(zip(raw, targets, scores, strict=True)):
        if asked.names is not None:
            name = asked.names[number]
        elif class_index is not None:
            name = class_label(class_index, loaded.class_names)
        else:
            name = _target_name(loaded, spec.target)
        rows.append(MapRow(exp.method if method is None else method, exp.layer, class_index,
                           name, float(score), map_, list(exp.notes)))
    return rows
