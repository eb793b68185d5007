"""The Ray engine: the same work (:func:`camlens.scale.work.explain_batch`) on Ray Data, for
more than one machine.

How work is split. The driver (the process that runs ``camlens explain --engine ray`` or
:func:`camlens.scale.explain_dataset`) lists the inputs, leaves out what the index says is
done, and makes a Ray Dataset of their keys and paths (or encoded bytes). ``map_batches`` sends
blocks of ``batch_size`` inputs to an actor pool of ``actors`` model replicas (one GPU each
where the driver's device is a GPU) sharing the cluster's CPUs equally (torch's threads and the
decoding threads of each replica); an actor decodes its inputs, explains the
batch and answers with one row per input and target (the raw map as bytes with its shape, the
score, the notes; or the input's error). The driver streams those rows back
(``iter_batches``), and writes the shards and the index itself: one writer, so no row is written
twice and the index is the truth for ``resume``.

What is sent to each worker. The model (with its preprocessing) is put in Ray's object store
once (``ray.put``) and each actor reads it once when it starts: the weights travel once per
actor, never per batch. Batches carry only keys and paths: the files must be readable where the
actors run (a shared file system or object store mount), or be given as bytes in a Parquet
``image`` column.

When a worker dies. Ray Data restarts an actor that dies and runs its unfinished batch again
(``max_restarts=-1`` and ``max_task_retries=-1``, Ray Data's defaults for actor pools). A batch's
rows reach the driver only when the batch has finished, and the driver writes each input once
(a key seen again is dropped), so a crash loses no result and writes none twice
(tests/scale/test_ray.py kills an actor mid-run).

Pointing it at a cluster: ``address`` (``--ray-address``) is what ``ray.init`` takes, e.g.
``ray://head:10001`` or ``auto``; without it a local Ray is started for the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import torch

from camlens.scale.sources import InputItem
from camlens.scale.work import ImageResult, MapRow, WorkSpec, decode_input, explain_batch
from camlens.scale.writers import Written, accepted

__all__ = ["RayExplainer", "rows_to_results", "run_on_ray"]


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray Data: pip install 'camlens[scale]'") from None
    return ray


class RayExplainer:
    """One model replica in the actor pool: decodes and explains the batches it is given."""

    def __init__(self, loaded, spec: WorkSpec, device: str, threads: int = 1) -> None:
        ray = _ray()
        torch.set_num_threads(threads)
        if isinstance(loaded, ray.ObjectRef):
            loaded = ray.get(loaded)
        self.loaded, self.spec = loaded, spec
        self.device = torch.device(device)
        loaded.model.to(self.device)
        self.decoding = ThreadPoolExecutor(max(1, threads), thread_name_prefix="camlens-decode")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        items = [InputItem(str(key), str(path) or None, bytes(data) or None)
                 for key, path, data in zip(batch["key"], batch["path"], batch["data"],
                                            strict=True)]
        decoded = list(self.decoding.map(partial(decode_input, self.loaded, self.spec), items))
        columns: dict[str, list] = {name: [] for name in (
            "key", "error", "method", "layer", "target", "target_name", "score", "raw",
            "shape", "notes", "console")}
        for result in explain_batch(self.loaded, self.spec, self.device, decoded):
            rows: list[MapRow | None] = [*result.rows] or [None]
            for row in rows:
                columns["key"].append(result.key)
                columns["error"].append(result.error or "")
                columns["console"].append(json.dumps(result.console_notes))
                columns["method"].append(row.method if row else "")
                columns["layer"].append(row.layer if row else "")
                columns["target"].append(-1 if row is None or row.target is None
                                         else int(row.target))
                columns["target_name"].append(row.target_name if row else "")
                columns["score"].append(row.score if row else float("nan"))
                raw = row.raw.astype(np.float32) if row else np.zeros(0, np.float32)
                columns["raw"].append(raw.tobytes())
                columns["shape"].append(json.dumps(list(raw.shape)))
                columns["notes"].append(json.dumps(row.notes if row else []))
        return columns


def rows_to_results(batch: dict[str, Sequence]) -> list[ImageResult]:
    """The rows an actor answered, back as one :class:`ImageResult` per input (in order)."""
    results: dict[str, ImageResult] = {}
    for position, key in enumerate(batch["key"]):
        key = str(key)
        result = results.get(key)
        if result is None:
            result = results[key] = ImageResult(
                key, error=str(batch["error"][position]) or None,
                console_notes=json.loads(batch["console"][position]))
        if result.error is not None:
            continue
        shape = json.loads(batch["shape"][position])
        raw = np.frombuffer(bytes(batch["raw"][position]), dtype=np.float32).reshape(shape)
        target = int(batch["target"][position])
        result.rows.append(MapRow(str(batch["method"][position]), str(batch["layer"][position]),
                                  None if target < 0 else target,
                                  str(batch["target_name"][position]),
                                  float(batch["score"][position]), raw.copy(),
                                  json.loads(batch["notes"][position])))
    return list(results.values())


def run_on_ray(
    items: Sequence[InputItem],
    loaded,
    spec: WorkSpec,
    writer,
    on_written: Callable[[Written], None],
    *,
    batch_size: int,
    actors: int = 2,
    address: str | None = None,
    device: torch.device | str = "cpu",
    on_result: Callable[[ImageResult], None] | None = None,
) -> None:
    """Explain ``items`` on an actor pool of ``actors`` replicas and write them with
    ``writer`` from this process (see the module docstring); ``on_written`` and ``on_result``
    as in :func:`camlens.scale.pipeline.run_pipeline`."""
    if spec.pictures:
        raise ValueError("overlays are drawn by the local engine; with --engine ray use "
                         "--format parquet or npz")
    if not items:
        for done in writer.close():
            on_written(done)
        return
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # camlens shows its own progress
    gpu = torch.device(device).type == "cuda"
    # replicas share the cluster's CPUs: torch's threads on a CPU replica, the decoding threads
    # of every replica (a GPU replica's decoding is what feeds its GPU)
    # (a fraction when there are more replicas than CPUs, so every replica can start)
    cpus = ray.cluster_resources().get("CPU", 1) / actors
    loaded.model.to("cpu")  # the replicas place it on their own device
    model_ref = ray.put(loaded)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    dataset = ray.data.from_items([{"key": item.key, "path": item.path or "",
                                    "data": item.data or b""} for item in items],
                                  override_num_blocks=max(-(-len(items) // batch_size),
                                                          min(len(items), 2 * actors)))
    explained = dataset.map_batches(
        RayExplainer, fn_constructor_kwargs={"loaded": model_ref, "spec": spec,
                                             "device": "cuda" if gpu else "cpu",
                                             "threads": max(1, int(cpus))},
        batch_size=batch_size, batch_format="numpy", concurrency=actors,
        num_cpus=cpus, **({"num_gpus": 1} if gpu else {}))
    seen: set[str] = set()
    try:
        for batch in explained.iter_batches(batch_size=None, batch_format="numpy"):
            for result in rows_to_results(batch):
                if result.key in seen:
                    continue  # a retried batch answered twice: the first answer stands
                seen.add(result.key)
                if accepted(result, on_written, on_result):
                    for done in writer.write(result):
                        on_written(done)
    finally:
        for done in writer.close():
            on_written(done)
