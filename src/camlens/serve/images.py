"""``POST /api/explain``: pictures explained with one or more methods, batched across requests.

Work for the same model, method, named layer, target and input shape that arrives together goes
to the library in one call (:class:`camlens.serve.batching.MicroBatcher`); each request gets its
own rows of the result. A batched map equals the map of a call on that image alone up to float32
rounding (convolutions sum in another order for another batch size). What cannot be batched
runs alone: the automatic layer (its note describes the batch), callable targets (boxes,
regions), and a batch in which a map came out zero everywhere is rerun one request at a time, so
each request's notes are its own.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from camlens.explanation import Explanation
from camlens.serve.catalog import ServedModel
from camlens.serve.encoding import map_values, png_bytes, png_data_url, raw_values
from camlens.serve.uploads import BadRequest

__all__ = ["ImageJob", "Payload", "explain_payloads", "image_records", "maps_archive",
           "overlay_png", "target_factory"]

#: A target for a batch of n inputs, from what one request asked for.
TargetFactory = Callable[[int], Any]


def target_factory(target: Any) -> tuple[TargetFactory, bool]:
    """(target for n inputs, whether requests with it may be batched). A list of classes is
    asked for every input; a callable target (a box, a region) is not batched."""
    from camlens.targets import TopK

    if target is None or isinstance(target, (int, TopK)):
        return (lambda n: target), True
    if isinstance(target, list):
        classes = torch.tensor(target, dtype=torch.long)
        return (lambda n: classes[None].expand(n, -1).clone()), True
    return (lambda n: target), False


@dataclass(frozen=True)
class Payload:
    """One request's share of a library call: its inputs ``(n, C, H, W)`` and what to run.
    ``model_inputs``: every positional input of the model when it takes more than the picture
    (a CLIP-style model's tokenized prompts, the picture and their mask), with ``options``
    (``input_index``: which of them is explained)."""

    served: ServedModel
    method: str
    layer: str | None
    target: TargetFactory
    inputs: torch.Tensor
    model_inputs: tuple[torch.Tensor, ...] | None = None
    options: tuple[tuple[str, Any], ...] = ()


@dataclass
class ImageJob:
    """What one explain request asks, read from its form: every method at every layer (None:
    the automatic choice)."""

    served: ServedModel
    methods: list[str]
    layers: list[str | None]
    target_text: str
    target: Any
    alpha: float = 0.5
    colormap: str = "jet"
    heatmap: bool = False
    #: Whether each picture's record carries the input as the model saw it (a PNG).
    input: bool = True
    #: Whether each map carries its overlay on the input (a PNG).
    overlay: bool = True

    @property
    def columns(self) -> list[tuple[str, str | None]]:
        """(method, layer) of each map column, layers within methods."""
        return [(method, layer) for method in self.methods for layer in self.layers]

    def batch_key(self, method: str, layer: str | None, inputs: torch.Tensor
                  ) -> Hashable | None:
        """The micro-batcher's key for ``method`` at ``layer`` on ``inputs``, None when not
        batchable."""
        _, batchable = target_factory(self.target)
        if not batchable or layer is None:
            return None
        return (self.served.name, method, layer, self.target_text, tuple(inputs.shape[1:]),
                str(inputs.dtype))

    @property
    def needs_preparing(self) -> bool:
        """Whether the target is prepared per image (``detections``: the boxes the detector
        finds in each picture; ``box:``: the box to draw)."""
        from camlens.score_targets import BoxTarget
        from camlens.targets import TopK

        return not (self.target is None or isinstance(self.target, (int, TopK, list))) and (
            isinstance(self.target, BoxTarget) or not callable(self.target))

    def payload(self, method: str, layer: str | None, inputs: torch.Tensor,
                prepared: Any = None) -> Payload:
        """One library call's share for ``inputs``; ``prepared`` (a per-image target made by
        ``prepare_target``: boxes of ``detections``, tokenized prompts) replaces the job's
        target, and brings the model's other inputs when it has them."""
        if prepared is None:
            return Payload(self.served, method, layer, target_factory(self.target)[0], inputs)
        model_inputs = tuple(prepared.inputs) if len(prepared.inputs) > 1 else None
        return Payload(self.served, method, layer, target_factory(prepared.target)[0], inputs,
                       model_inputs, tuple(sorted(prepared.options.items())))


def _explain(payload: Payload, inputs: torch.Tensor) -> Explanation:
    from camlens.methods import get_method

    served = payload.served
    method = get_method(payload.method)(served.loaded.model, payload.layer,
                                        **dict(payload.options))
    if payload.model_inputs is not None:
        tensors = tuple(tensor.to(served.device) for tensor in payload.model_inputs)
        return method(tensors, target=payload.target(inputs.shape[0])).to("cpu")
    return method(inputs.to(served.device), target=payload.target(inputs.shape[0])).to("cpu")


def _rows(explanation: Explanation, start: int, stop: int) -> Explanation:
    """The inputs ``start:stop`` of ``explanation``."""
    part = lambda tensor: None if tensor is None else tensor[start:stop]  # noqa: E731
    return dataclasses.replace(
        explanation, raw=explanation.raw[start:stop], scores=explanation.scores[start:stop],
        targets=part(explanation.targets), attributions=part(explanation.attributions),
        notes=list(explanation.notes), per_layer={}, _maps=part(explanation._maps))


def _has_empty_map(explanation: Explanation) -> bool:
    raw = explanation.raw
    per_map = raw.reshape(raw.shape[0] * (raw.shape[1] if raw.ndim == 4 else 1), -1)
    return bool((per_map.amax(dim=1) <= 0).any())


def explain_payloads(key: Hashable | None, payloads: Sequence[Payload]
                     ) -> list[Explanation | Exception]:
    """One library call for all ``payloads`` (same model, method, layer and target), split back
    into one Explanation per payload; each alone when a map is empty or the joined call fails
    (see the module), so every payload gets its own answer or its own error."""
    if len(payloads) > 1:
        try:
            joined = _explain(payloads[0], torch.cat([payload.inputs for payload in payloads]))
        except (ValueError, TypeError, IndexError, RuntimeError):
            joined = None
        if joined is not None and not _has_empty_map(joined) and not joined.notes:
            results: list[Explanation | Exception] = []
            start = 0
            for payload in payloads:
                stop = start + payload.inputs.shape[0]
                results.append(_rows(joined, start, stop))
                start = stop
            return results
    answers: list[Explanation | Exception] = []
    for payload in payloads:
        try:
            answers.append(_explain(payload, payload.inputs))
        except (ValueError, TypeError, IndexError, RuntimeError) as error:
            answers.append(error)
    return answers


def _class_name(index: int | None, class_names: Sequence[str] | None) -> str:
    if index is None:
        return "custom target"
    return class_names[index] if class_names is not None and index < len(class_names) else str(
        index)


def image_records(job: ImageJob, names: list[str], sizes: list[tuple[int, int]],
                  pictures: list, explanations: list[list[Explanation]], value_grid: int,
                  prepared: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Per picture (``explanations[picture][column]``, each of one input, columns as
    :attr:`ImageJob.columns`): its name, sizes, the input as the model saw it, and per method and
    layer the maps (one per target) with class, score, overlay PNG, hover values and the raw
    map. ``prepared``: per picture its prepared target (``names`` and ``boxes`` of each map,
    e.g. a detection's class and score and its box in the input's pixels) or None."""
    from camlens.viz import colorize, overlay

    class_names = job.served.class_names
    records = []
    prepared = prepared or [None] * len(names)
    for name, size, picture, per_method, ready in zip(names, sizes, pictures, explanations,
                                                      prepared, strict=True):
        target_names = None if ready is None else ready.names
        target_boxes = None if ready is None else ready.boxes
        rows = []
        for (method, _), explanation in zip(job.columns, per_method, strict=True):
            raw, maps = explanation.raw[0], explanation.maps[0]
            per_target = maps.ndim == 3
            maps = maps if per_target else maps[None]
            raws = raw if per_target else raw[None]
            targets = ([None] * maps.shape[0] if explanation.targets is None
                       else explanation.targets[0].reshape(-1).tolist())
            scores = explanation.scores[0].reshape(-1).tolist()
            cells = []
            for position, (map_, raw_map, index, score) in enumerate(
                    zip(maps, raws, targets, scores, strict=True)):
                shown = (target_names[position] if target_names is not None
                         else _class_name(index, class_names))
                cell = {"class": index, "class_name": shown,
                        "score": round(float(score), 6),
                        "overlay": png_data_url(overlay(picture, map_, job.colormap, job.alpha))
                        if job.overlay else None,
                        **map_values(map_, value_grid), "raw": raw_values(raw_map)}
                if target_boxes is not None and position < len(target_boxes):
                    cell["box"] = [round(float(v), 2) for v in target_boxes[position]]
                if job.heatmap:
                    cell["heatmap"] = png_data_url(colorize(map_, job.colormap))
                cells.append(cell)
            rows.append({"method": method, "layer": explanation.layer,
                         "raw_shape": list(raw.shape), "notes": list(explanation.notes),
                         "maps": cells})
        records.append({"name": name, "size": list(size),
                        "input_size": list(per_method[0].input_size),
                        "input": png_data_url(picture) if job.input else None,
                        "explanations": rows})
    return records


def overlay_png(job: ImageJob, picture, explanation: Explanation, prepared: Any = None
                ) -> tuple[bytes, dict[str, str]]:
    """``format=png``: the overlay of a one-image, one-column request as PNG bytes, and the
    answer's headers: ``x-camlens-class`` (the class index, empty for a custom score),
    ``x-camlens-class-name`` and ``x-camlens-layer`` (percent-encoded UTF-8: names come from
    the model) and ``x-camlens-score``. More than one map (several targets) is a
    :class:`BadRequest`: that answer is ``format=json``."""
    from urllib.parse import quote

    from camlens.viz import overlay

    maps = explanation.maps[0]
    if maps.ndim == 3 and maps.shape[0] != 1:
        raise BadRequest(f"format=png is one overlay, but the target {job.target_text!r} gives "
                         f"{maps.shape[0]} maps; use format=json")
    map_ = maps.reshape(maps.shape[-2:])
    index = (None if explanation.targets is None
             else int(explanation.targets[0].reshape(-1)[0]))
    names = None if prepared is None else prepared.names
    name = names[0] if names else _class_name(index, job.served.class_names)
    score = float(explanation.scores[0].reshape(-1)[0])
    headers = {"x-camlens-class": "" if index is None else str(index),
               "x-camlens-class-name": quote(name, safe=""),
               "x-camlens-layer": quote(explanation.layer, safe=""),
               "x-camlens-score": f"{score:.6g}"}
    return png_bytes(overlay(picture, map_, job.colormap, job.alpha)), headers


def maps_archive(job: ImageJob, explanations: list[list[Explanation]]) -> tuple[bytes, str]:
    """The raw maps (float32, no pickles) and a file name: a ``.npy`` for one picture, one
    method and one layer, else an ``.npz`` with one array per picture, method and layer
    (``image0_gradcam``, or ``image0_gradcam_features.3`` with several layers, ``_auto`` for the
    automatic choice)."""
    import numpy as np

    buffer = io.BytesIO()
    if len(explanations) == 1 and len(job.columns) == 1:
        np.save(buffer, explanations[0][0].raw[0].numpy().astype(np.float32), allow_pickle=False)
        return buffer.getvalue(), "maps.npy"
    several = len(job.layers) > 1
    arrays = {f"image{position}_{method}" + (f"_{layer or 'auto'}" if several else ""):
              explanation.raw[0].numpy().astype(np.float32)
              for position, per_method in enumerate(explanations)
              for (method, layer), explanation in zip(job.columns, per_method, strict=True)}
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub: names as **kwds
    return buffer.getvalue(), "maps.npz"
