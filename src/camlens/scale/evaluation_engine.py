"""``camlens evaluate`` on the engines: the per-image work of :mod:`camlens.evaluation`
(:func:`~camlens.evaluation.evaluate_batch`) mapped over the batches here (``engine="local"``)
or by an actor pool of model replicas on Ray Data (``engine="ray"``), and the per-image rows
reduced into the same table (:func:`~camlens.evaluation.reduce_rows`).

On Ray every image is one row of a Ray Dataset (its tensor as float32 bytes with its shape, its
label, boxes and name, and its position in the data set); each actor holds one copy of the model
(sent once, through the object store), cuts the rows it is given into batches of one input size
and answers one row per image and method. The driver puts the rows back in data-set order, so
the table, intervals included, equals the local engine's: a value depends on its image only, not
on the batch it came in (:mod:`camlens.evaluation.work`). Ray Data retries a batch whose actor
died; a retried image answered twice counts once.

The images are gathered in the driver before they are sent (an evaluation is thousands of
images, not millions; the streaming explanation of a whole data set is
:func:`camlens.scale.explain_dataset`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from camlens.evaluation import EvaluationBatch, EvaluationSpec, ImageRow, evaluate_batch

__all__ = ["ENGINES", "RayEvaluator", "evaluate_rows"]

ENGINES = ("local", "ray")


def evaluate_rows(model: nn.Module, spec: EvaluationSpec, batches: Iterable[EvaluationBatch],
                  *, engine: str = "local", actors: int = 2, address: str | None = None,
                  batch_size: int = 16, progress: Callable[[int], None] | None = None
                  ) -> list[ImageRow]:
    """The :class:`~camlens.evaluation.ImageRow` of every image of ``batches`` and method of
    ``spec``, in data-set order within each method, by ``engine`` (see the module docstring).
    ``progress(n)`` is told of every n images done."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ValueError(f"actors must be a positive int, got {actors!r}")
    if engine == "local":
        rows: list[ImageRow] = []
        for batch in batches:
            rows.extend(evaluate_batch(model, spec, batch))
            if progress is not None:
                progress(len(batch))
        return rows
    return _on_ray(model, spec, batches, actors, address, batch_size, progress)


def _records(batches: Iterable[EvaluationBatch]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for batch in batches:
        for index in range(len(batch)):
            image = batch.images[index].detach().float().cpu().contiguous()
            records.append({"position": len(records), "image": image.numpy().tobytes(),
                            "shape": json.dumps(list(image.shape)),
                            "label": int(batch.labels[index]),
                            "boxes": json.dumps(torch.as_tensor(batch.boxes[index]).reshape(
                                -1, 4).tolist()),
                            "name": str(batch.names[index])})
    return records


class RayEvaluator:
    """One model replica of the actor pool: evaluates the images it is given."""

    def __init__(self, model_ref, spec: EvaluationSpec, threads: int = 1) -> None:
        import ray

        torch.set_num_threads(max(1, threads))
        self.model = ray.get(model_ref) if isinstance(model_ref, ray.ObjectRef) else model_ref
        self.spec = spec

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        columns: dict[str, list] = {name: [] for name in (
            "position", "name", "method", "label", "prediction", "values", "hits", "error")}
        count = len(batch["position"])
        start = 0
        while start < count:  # runs of one input size make one library batch each
            shape = batch["shape"][start]
            stop = start
            while stop < count and batch["shape"][stop] == shape:
                stop += 1
            size = json.loads(shape)
            images = torch.stack([torch.from_numpy(np.frombuffer(
                bytes(batch["image"][i]), dtype=np.float32).reshape(size).copy())
                for i in range(start, stop)])
            part = EvaluationBatch(
                images, torch.tensor([int(batch["label"][i]) for i in range(start, stop)]),
                [torch.tensor(json.loads(batch["boxes"][i]), dtype=torch.float32).reshape(-1, 4)
                 for i in range(start, stop)],
                [str(batch["name"][i]) for i in range(start, stop)])
            positions = [int(batch["position"][i]) for i in range(start, stop)]
            for number, row in enumerate(evaluate_batch(self.model, self.spec, part)):
                # rows come method by method, inputs in order
                columns["position"].append(positions[number % len(positions)])
                columns["name"].append(row.name)
                columns["method"].append(row.method)
                columns["label"].append(row.label)
                columns["prediction"].append(row.prediction)
                columns["values"].append(json.dumps(row.values))
                columns["hits"].append(json.dumps(None if row.box_hits is None
                                                  else row.box_hits.tolist()))
                columns["error"].append(row.error or "")
            start = stop
        return columns


def _on_ray(model: nn.Module, spec: EvaluationSpec, batches: Iterable[EvaluationBatch],
            actors: int, address: str | None, batch_size: int,
            progress: Callable[[int], None] | None) -> list[ImageRow]:
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray Data: pip install 'camlens[scale]'") from None
    records = _records(batches)
    if not records:
        return []
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    cpus = ray.cluster_resources().get("CPU", 1) / actors
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    dataset = ray.data.from_items(records, override_num_blocks=max(
        -(-len(records) // batch_size), min(len(records), 2 * actors)))
    answered = dataset.map_batches(
        RayEvaluator, fn_constructor_kwargs={"model_ref": ray.put(model), "spec": spec,
                                             "threads": max(1, int(cpus))},
        batch_size=batch_size, batch_format="numpy", concurrency=actors, num_cpus=cpus)
    found: dict[tuple[str, int], ImageRow] = {}
    for batch in answered.iter_batches(batch_size=None, batch_format="numpy"):
        done = set()
        for i in range(len(batch["position"])):
            key = (str(batch["method"][i]), int(batch["position"][i]))
            if key in found:
                continue  # a retried batch answered twice: the first answer stands
            hits = json.loads(batch["hits"][i])
            found[key] = ImageRow(str(batch["name"][i]), key[0], int(batch["label"][i]),
                                  int(batch["prediction"][i]), json.loads(batch["values"][i]),
                                  None if hits is None else torch.tensor(hits, dtype=torch.bool),
                                  str(batch["error"][i]) or None)
            done.add(key[1])
        if progress is not None:
            progress(len(done))
    missing = len(records) * len(spec.methods) - len(found)
    if missing:
        raise RuntimeError(f"the Ray engine answered {len(found)} of "
                           f"{len(records) * len(spec.methods)} image rows; {missing} missing")
    return [found[(method, position)] for method in spec.methods
            for position in range(len(records))]
