"""A run over a data set: the inputs not done yet, through an engine, into a writer and the index.

:func:`run_explanations` is what ``camlens explain`` and :func:`explain_dataset` share: it
skips what the index says is done, runs the rest on the local pipeline or on Ray, indexes each
input once it is on disk and counts. :func:`explain_dataset` is the Python entry point.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from camlens.scale.sources import InputItem, local_paths, read_inputs
from camlens.scale.work import WorkSpec, decode_input, default_batch_size, explain_batch
from camlens.scale.writers import FORMATS, Written, make_writer

__all__ = ["ENGINES", "RunCounts", "explain_dataset", "run_explanations"]

#: The engines, by ``--engine`` name.
ENGINES = ("local", "ray")


@dataclass
class RunCounts:
    """What a run did: inputs explained, failed (with the reasons) and skipped (done before)."""

    explained: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    summary: Path | None = None


def run_explanations(
    loaded,
    spec: WorkSpec,
    items: Sequence[InputItem],
    index,
    writer,
    counts: RunCounts,
    *,
    engine: str = "local",
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    workers: int | None = None,
    lanes: int | None = None,
    processes: int | None = None,
    actors: int = 2,
    ray_address: str | None = None,
    on_note: Callable[[str, str], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    progress: bool = False,
) -> RunCounts:
    """Explain the ``items`` the ``index`` has not done, with ``engine``, into ``writer``;
    ``counts`` is filled as the run goes (so it holds what was done after an interrupt).
    ``lanes``: batches explained at once on a CPU (:mod:`camlens.scale.lanes`; None: two where
    they work, else one); lanes asked for that cannot run are refused with a
    :class:`RuntimeWarning` saying why, and the run goes on in one lane. ``processes``: worker
    processes decoding the inputs, in one lane (:mod:`camlens.scale.processes`; None: several
    on an accelerator, none on a CPU); where they cannot run, a :class:`RuntimeWarning` says
    why and threads decode."""
    from tqdm import tqdm

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    for found in getattr(writer, "recover", lambda done: [])(index.done):
        index.add(found.key, found.records)  # in a shard already: done before
    todo = [item for item in items if not index.done(item.key)]
    counts.skipped += len(items) - len(todo)
    batch_size = batch_size or default_batch_size(loaded, device)
    bar = tqdm(total=len(todo), desc="explaining", unit="image", disable=not progress,
               smoothing=0.1)

    def written(done: Written) -> None:
        if done.error is not None:
            counts.failed += 1
            counts.failures.append(done.error)
            if on_error is not None:
                on_error(done.error)
            index.add(done.key, [], error=done.error)
        else:
            counts.explained += 1
            index.add(done.key, done.records)
        bar.update(1)

    def noted(result) -> None:
        if on_note is not None:
            for note in result.console_notes:
                on_note(result.key, note)

    try:
        if engine == "local":
            from camlens.scale.lanes import choose_lanes
            from camlens.scale.pipeline import run_pipeline
            from camlens.scale.processes import default_processes, processes_unavailable

            if processes and workers == 0:
                raise ValueError(f"processes={processes} decode beside the thread running the "
                                 "model, and workers=0 runs everything on that thread; "
                                 "choose one")
            if processes and lanes is not None and lanes > 1:
                raise ValueError(f"processes={processes} decode for one lane, and lanes="
                                 f"{lanes} were asked for; choose one (lanes for a model "
                                 "that needs the CPU's cores, processes for a fast one)")
            # decoding processes asked for: one lane feeds them
            count, why = choose_lanes(1 if processes else lanes, device, spec.options)
            if why is not None and lanes is not None:
                warnings.warn(f"{lanes} lanes asked for, running one: {why}", RuntimeWarning,
                              stacklevel=2)
            if processes is None:
                processes = default_processes(device) if count == 1 else 0
            elif processes > 0 and processes_unavailable() is not None:
                warnings.warn(f"{processes} decoding processes asked for, decoding in "
                              f"threads: {processes_unavailable()}", RuntimeWarning,
                              stacklevel=2)
                processes = 0
            run_pipeline(todo, partial(decode_input, loaded, spec),
                         partial(explain_batch, loaded, spec, device), writer, written,
                         batch_size=batch_size, workers=workers, on_result=noted,
                         lanes=count, processes=processes)
        else:
            from camlens.scale.ray_engine import run_on_ray

            run_on_ray(todo, loaded, spec, writer, written, batch_size=batch_size,
                       actors=actors, address=ray_address, device=device, on_result=noted)
    finally:
        bar.close()
    return counts


def explain_dataset(
    model,
    source: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    method: str | Sequence[str] = "gradcam",
    layer: str | list[str] | None = None,
    target: Any = None,
    format: str = "parquet",
    engine: str = "local",
    batch_size: int | None = None,
    workers: int | None = None,
    lanes: int | None = None,
    processes: int | None = None,
    actors: int = 2,
    ray_address: str | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    shard_size: int = 1000,
    preprocess: Callable | None = None,
    progress: bool | None = None,
    **options: Any,
) -> RunCounts:
    """Explain every image of ``source`` (folders, files, ``.txt`` lists, Parquet tables) with
    ``model`` and write the maps to ``out`` with their index (``explanations.jsonl`` as it goes,
    ``explanations.json`` at the end).

    ``model``: a zoo name or a spec ``camlens explain`` takes (``torchvision:resnet18``...), a
    loaded model (:func:`camlens.models.load_model`), or an ``nn.Module`` with its
    ``preprocess`` (PIL image -> ``(1, C, H, W)`` tensor). ``layer``: None is the model's own
    layer (else the automatic choice). ``target``: None (the predicted class), an index,
    ``camlens.TopK(k)``, ``"all"`` or a callable score, the same for every
    input. ``format``: ``parquet`` (default), ``npz`` or ``png`` (overlays; local engine only).
    ``engine``: ``local`` (threads on this machine) or ``ray`` (an actor pool of ``actors``
    model replicas on the Ray cluster at ``ray_address``, or a local one). ``lanes``: batches
    explained at once on a CPU, each on its share of torch's threads (None: two where they
    work; :mod:`camlens.scale.lanes`). ``processes``: worker processes decoding the inputs
    for one lane, for a model faster than one process can feed (None: up to 8 on a GPU, none
    on a CPU; :mod:`camlens.scale.processes`). ``resume``: go on
    with an interrupted run into the same ``out`` (same settings). ``options`` go to the method
    (``channels_last``, ``token_grid``, ``fuse``). Returns the counts; the failures name the
    inputs and why.

    Example:
        >>> counts = explain_dataset("digits-gap", "digits/", "maps/")  # doctest: +SKIP
        >>> import pandas; pandas.read_parquet("maps/")  # doctest: +SKIP
    """
    from camlens.methods import get_method
    from camlens.scale.index import RunIndex

    loaded = _loaded(model, preprocess)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if engine == "ray" and format == "png":
        raise ValueError("overlays are drawn by the local engine; with engine='ray' use "
                         "format='parquet' or 'npz'")
    classes = [get_method(name) for name in ([method] if isinstance(method, str) else method)]
    names = tuple(cls.name for cls in classes)
    _check_counts(batch_size=batch_size, workers=workers, lanes=lanes, processes=processes,
                  actors=actors, shard_size=shard_size)
    for cls in classes:  # before any input: a misspelt option would fail every one of them
        _check_options(cls, options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.to(device)
    layer = loaded.default_layer if layer is None else layer  # as `camlens explain` does
    spec = WorkSpec(methods=names, layer=layer, target=target, options=dict(options),
                    pictures=format == "png")
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    items = read_inputs(sources)
    settings = {"model": loaded.name, "layer": layer, "methods": list(names),
                "target": repr(target), "format": format, "options": repr(sorted(options))}
    index = RunIndex(out, settings, resume)
    writer = make_writer(format, loaded, out, inputs=local_paths(items),
                         taken=index.outputs(),
                         shard_size=shard_size, resume=resume)
    counts = RunCounts()
    try:
        run_explanations(loaded, spec, items, index, writer, counts, engine=engine,
                         device=device, batch_size=batch_size, workers=workers, lanes=lanes,
                         processes=processes, actors=actors, ray_address=ray_address,
                         progress=sys.stderr.isatty() if progress is None else progress)
    finally:
        counts.summary = index.close()
    return counts


def _check_counts(**counts: int | None) -> None:
    """Refuse a count that cannot be: batches, lanes, actors and shards of at least 1, workers
    of at least 0 (None: the default)."""
    for name, value in counts.items():
        least = 0 if name in ("workers", "processes") else 1
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < least):
            default = " or None (the default)" if name in ("batch_size", "workers", "lanes",
                                                           "processes") else ""
            raise ValueError(f"{name} must be an int of at least {least}{default}, got "
                             f"{value!r}")


def _check_options(method_class, options: dict[str, Any]) -> None:
    """Refuse ``options`` the method does not take, naming the close ones: a misspelt keyword
    of :func:`explain_dataset` (``methods=``) lands in ``options``."""
    import difflib
    import inspect

    parameters = inspect.signature(method_class).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    taken = [name for name in parameters if name not in ("model", "layer")]
    for name in options:
        if name not in taken:
            ours = [p for p in inspect.signature(explain_dataset).parameters if p != "options"]
            close = difflib.get_close_matches(name, [*ours, *taken], n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise TypeError(f"explain_dataset got {name}=, which is neither one of its "
                            f"parameters nor an option of {method_class.name}; {hint}the "
                            f"method's options: {', '.join(taken)}")


def _loaded(model, preprocess):
    """A LoadedModel from a spec, a LoadedModel, or a module with its preprocess."""
    from torch import nn

    from camlens.models import LoadedModel, load_model

    if isinstance(model, (str, Path)):
        return load_model(str(model))
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        if preprocess is None:
            raise ValueError("an nn.Module needs its preprocess: a function from a PIL image "
                             "to the model's (1, C, H, W) input tensor")
        return LoadedModel(model=model, name=type(model).__name__, preprocess=preprocess)
    raise TypeError(f"model must be a zoo name or spec, a LoadedModel or an nn.Module, got "
                    f"{type(model).__name__}")
