"""``camlens.scale.audit``: a bias audit on the engines. The per-batch work of
:mod:`camlens.audit` (:func:`~camlens.audit.core.audit_batch`: explain, measure the region
shares, pick the batch's candidates for the report) runs here (``engine="local"``, which is
:func:`camlens.audit.audit`) or on an actor pool of model replicas on Ray Data
(``engine="ray"``); the parts are reduced into the same :class:`~camlens.audit.result.AuditResult`
(:func:`~camlens.audit.core.assemble`), so the summary and the report are the local path's.

On Ray the driver reads and collates the items (regions, labels, cues) into batches; each batch
travels as safetensors bytes (no pickle) with its offset, each actor holds one copy of the model
(sent once through the object store) and answers the batch's columns and kept candidates the same
way; a batch answered twice (a retried task) counts once. Counterfactual variants, an accuracy
per variant, run on the driver.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from camlens.audit.core import AuditPart, assemble, audit_batch, counterfactual
from camlens.audit.items import Batch, ItemReader, stream
from camlens.audit.regions import RegionSpec, check_region_specs
from camlens.audit.result import AuditExample, AuditResult

__all__ = ["RayAuditor", "audit"]

_COLUMNS = ("labels", "predictions", "scores", "shares", "areas", "empty")


def audit(model: nn.Module, dataset: Any, regions: Mapping[str, RegionSpec],
          method: str = "gradcam", *, engine: str = "local", actors: int = 2,
          address: str | None = None, layer: str | None = None, target: Any = None,
          batch_size: int = 64, input_key: str | int = "image",
          label_key: str | int | None = "label", class_names: tuple[str, ...] | None = None,
          keep: int = 8, counterfactuals: Mapping[str, Any] | None = None,
          cue_key: str | int | None = None, name_key: str | int | None = None,
          progress: bool = False, **options: Any) -> AuditResult:
    """:func:`camlens.audit.audit` on ``engine`` ("local" or "ray"; see the module docstring);
    every other argument as there. ``actors`` model replicas on Ray, on the cluster at
    ``address`` (default: a local Ray)."""
    from camlens.audit import audit as local_audit
    from camlens.audit.core import audit_target

    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; choose one of local, ray")
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ValueError(f"actors must be a positive int, got {actors!r}")
    if engine == "local":
        return local_audit(model, dataset, regions, method, layer=layer, target=target,
                           batch_size=batch_size, input_key=input_key, label_key=label_key,
                           class_names=class_names, keep=keep, counterfactuals=counterfactuals,
                           cue_key=cue_key, name_key=name_key, progress=progress, **options)
    try:
        import ray
    except ImportError:
        raise ValueError("engine='ray' needs Ray Data: pip install 'camlens[scale]'") from None
    from safetensors.torch import save

    from camlens.methods import get_method

    resolved, described = audit_target(target)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValueError(f"keep must be an int >= 0, got {keep!r}")
    specs = check_region_specs(regions)
    names = tuple(specs)
    method_name = get_method(method)(model, layer, **options).name  # refuses bad names here
    reader = ItemReader(input_key, label_key, specs, cue_key, name_key)
    records, offset = [], 0
    for batch in stream(dataset, reader, batch_size, 0, progress, "reading"):
        tensors = {"inputs": batch.inputs.contiguous(), "labels": batch.labels,
                   "masks": batch.masks.contiguous(), "present": batch.present}
        if batch.cues is not None:
            tensors["cues"] = batch.cues
        records.append({"offset": offset, "batch": save(tensors),
                        "names": json.dumps(batch.names)})
        offset += len(batch)
    parts: dict[int, AuditPart] = {}
    if records:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        cpus = ray.cluster_resources().get("CPU", 1) / actors
        ray.data.DataContext.get_current().enable_progress_bars = False
        answered = ray.data.from_items(records, override_num_blocks=len(records)).map_batches(
            RayAuditor, fn_constructor_kwargs={
                "model_ref": ray.put(model), "method": method, "layer": layer,
                "options": options, "target": resolved, "names": names, "keep": keep,
                "label_key": label_key, "threads": max(1, int(cpus))},
            batch_size=1, batch_format="numpy", concurrency=actors, num_cpus=cpus)
        for answer in answered.iter_batches(batch_size=None, batch_format="numpy"):
            for index in range(len(answer["offset"])):
                part = _part_from_bytes(int(answer["offset"][index]),
                                        bytes(answer["part"][index]),
                                        str(answer["meta"][index]))
                parts.setdefault(part.offset, part)  # a retried batch answered twice
        if len(parts) != len(records):
            raise RuntimeError(f"the Ray engine answered {len(parts)} of {len(records)} "
                               "batches; the audit would leave inputs out")
    result = assemble(list(parts.values()), names, method_name, described, keep,
                      class_names or getattr(model, "class_names", None),
                      with_cues=cue_key is not None, with_names=name_key is not None)
    result.notes.append(f"audited on Ray: {actors} model replica(s), {len(records)} batch(es)")
    if counterfactuals is not None:
        result.counterfactual = counterfactual(
            model, counterfactuals, batch_size=batch_size, input_key=input_key,
            label_key=label_key, cue_key=cue_key, output_fn=options.get("output_fn"),
            progress=progress)
    return result


class RayAuditor:
    """One model replica of the actor pool: audits the batches it is given."""

    def __init__(self, model_ref, method: str, layer: str | None, options: dict, target: Any,
                 names: tuple[str, ...], keep: int, label_key: str | int | None,
                 threads: int = 1) -> None:
        import ray

        from camlens.methods import get_method

        torch.set_num_threads(max(1, threads))
        model = ray.get(model_ref) if isinstance(model_ref, ray.ObjectRef) else model_ref
        self.explainer = get_method(method)(model, layer, **options)
        self.target, self.names, self.keep = target, names, keep
        self.label_key, self.output_fn = label_key, options.get("output_fn")

    def __call__(self, records: dict[str, np.ndarray]) -> dict[str, list]:
        from safetensors.torch import load

        answer: dict[str, list] = {"offset": [], "part": [], "meta": []}
        for index in range(len(records["offset"])):
            tensors = load(bytes(records["batch"][index]))
            batch = Batch(tensors["inputs"], tensors["labels"], tensors["masks"],
                          tensors["present"], tensors.get("cues"),
                          json.loads(str(records["names"][index])))
            offset = int(records["offset"][index])
            part = audit_batch(self.explainer, batch, self.target, self.names, self.keep,
                               offset, self.label_key, self.output_fn)
            data, meta = _part_to_bytes(part)
            answer["offset"].append(offset)
            answer["part"].append(data)
            answer["meta"].append(meta)
        return answer


def _part_to_bytes(part: AuditPart) -> tuple[bytes, str]:
    from safetensors.torch import save

    # safetensors refuses tensors that share memory (an example is a view of its batch)
    tensors = {key: getattr(part, key).detach().clone() for key in _COLUMNS}
    if part.cues is not None:
        tensors["cues"] = part.cues.clone()
    kept = []
    for region, entries in part.kept.items():
        for number, (share, tiebreak, example) in enumerate(entries):
            stem = f"kept/{region}/{number}/"
            for key in ("image", "map", "masks", "present"):
                tensors[stem + key] = getattr(example, key).detach().clone()
            kept.append([region, number, share, tiebreak, example.index])
    meta = json.dumps({"layer": part.layer, "names": part.names, "kept": kept})
    return save(tensors), meta


def _part_from_bytes(offset: int, data: bytes, meta: str) -> AuditPart:
    from safetensors.torch import load

    tensors, info = load(data), json.loads(meta)
    kept: dict[str, list] = {}
    for region, number, share, tiebreak, index in info["kept"]:
        stem = f"kept/{region}/{number}/"
        example = AuditExample(index, tensors[stem + "image"], tensors[stem + "map"],
                               tensors[stem + "masks"], tensors[stem + "present"])
        kept.setdefault(region, []).append((share, tiebreak, example))
    columns = {key: tensors[key] for key in _COLUMNS}
    return AuditPart(offset, info["layer"], **columns, cues=tensors.get("cues"),
                     names=info["names"], kept=kept)
