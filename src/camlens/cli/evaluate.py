"""``camlens evaluate``: which explanation method is faithful for my model, on my data?

For a model and a folder of images with boxes, the table of ``camlens reproduce localization``:
one row per method, the CAM box protocol at 20% and 15%, MaxBoxAcc, the pointing game and its
energy variant, deletion / insertion, average drop / increase and ROAD, each with a 95% interval
(Wilson for proportions, bootstrap for means; :mod:`camlens.evaluation`), as Markdown, CSV or
JSON. Images are read in threads (:class:`camlens.data.AnnotatedImages`), a batch at a time;
those that cannot be read or have broken annotations are listed and left out, and the command
then exits with status 1.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from camlens.cli.options import (
    DEVICE_OPTION,
    VERBOSE_OPTION,
    device_option,
    layer_option,
    load_or_exit,
    model_options,
)

__all__ = ["evaluate"]

_METRICS = ("localization", "maxboxacc", "pointing", "deletion", "insertion", "drop", "road")
_FORMATS = {".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json"}


def _default_tolerance(size: tuple[int, ...]) -> int:
    """The pointing game's 15 px on 224-pixel inputs (Zhang et al.) scaled to the input's short
    side (4 px on the 64-pixel digits, as ``camlens reproduce localization``)."""
    return max(1, round(15 * min(size) / 224))


def _protocol_note(spec) -> str:
    """Which class's map each metric reads, at which settings (the metrics computed only)."""
    parts = []
    predicted = [name for metric, name in (("localization", "top-1 localization error"),
                                           ("deletion", "deletion"), ("insertion", "insertion"),
                                           ("drop", "average drop / increase"), ("road", "ROAD"))
                 if metric in spec.metrics]
    true = [name for metric, name in (("pointing", f"pointing (tolerance {spec.tolerance:g} px) "
                                       "and energy"), ("maxboxacc", "MaxBoxAcc"))
            if metric in spec.metrics]
    if predicted:
        parts.append(f"maps of the predicted class for {', '.join(predicted)}")
    if true:
        parts.append(f"of the true class for {', '.join(true)}")
    if {"deletion", "insertion"} & set(spec.metrics):
        parts.append(f"deletion / insertion in {spec.steps} steps")
    if "road" in spec.metrics:
        parts.append(f"ROAD removes {', '.join(f'{f:.0%}' for f in spec.road_fractions)} of the "
                     f"pixels, imputation noise {spec.road_noise}")
    return "; ".join(parts)


@click.command("evaluate")
@VERBOSE_OPTION
@model_options
@click.option("--images", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Your images: a folder (class sub-folders give the labels).")
@click.option("--boxes", "boxes_file", required=True, type=click.Path(path_type=Path),
              help="Ground-truth boxes: COCO .json, Pascal VOC .xml (or a folder of them) or "
                   ".csv (file, category, x0, y0, x1, y1).")
@click.option("--category", default="*", show_default=True,
              help="The category (or supercategory) whose boxes are the object; * for all.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
              help="Labels: CSV (file,label) or JSON (default: the class sub-folders).")
@click.option("--method", "methods", multiple=True, default=("gradcam",), show_default=True,
              help="A method to evaluate (repeat for more).")
@click.option("--layer", "-l", help="Target layer (default: the model's own, else automatic).")
@click.option("--limit", type=click.IntRange(min=1),
              help="Evaluate a random subset of this many images (drawn with --seed).")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the --limit subset, the tie order of deletion / insertion, ROAD's "
                   "noise and the bootstrap.")
@click.option("--skip", "skipped", multiple=True, type=click.Choice(_METRICS),
              help="Leave out a metric group (repeat); road and deletion/insertion cost the "
                   "most forward passes.")
@click.option("--tolerance", type=click.FloatRange(min=0),
              help="Pointing game tolerance in input pixels (default: 15 on a 224-pixel input, "
                   "scaled to the input's short side).")
@click.option("--resamples", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Bootstrap resamples of the 95% intervals of the means (0: no intervals).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="Threads reading and preprocessing the images (0: on the main thread).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Where the per-image work runs: here, or on an actor pool "
                                      "of model replicas on Ray (pip install 'camlens[scale]').")
@click.option("--actors", default=2, show_default=True, type=click.IntRange(min=1),
              help="--engine ray: model replicas.")
@click.option("--ray-address", help="--engine ray: an existing Ray cluster (default: start a "
                                    "local one).")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]),
              help="Output format (default: from --out's suffix, else md).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table here (the Markdown table is printed either way).")
@DEVICE_OPTION
def evaluate(model_spec, weights, arch, trust_checkpoint, images, boxes_file, category, labels,
             methods, layer, limit, seed, skipped, tolerance, resamples, batch_size, workers,
             engine, actors, ray_address, fmt, out, device) -> None:
    """Evaluate explanation METHODs on MODEL and your images with boxes: localization (CAM
    protocol, MaxBoxAcc), pointing, deletion / insertion, average drop and ROAD, one row per
    method with 95% intervals."""
    from camlens.data.annotations import AnnotationError, read_annotations
    from camlens.data.folders import (
        AnnotatedImages,
        class_indices,
        image_folder,
        read_label_list,
        select,
        unlisted,
    )
    from camlens.evaluation import EvaluationSpec, batches, reduce_rows
    from camlens.methods import get_method
    from camlens.scale.evaluation_engine import evaluate_rows

    names = []
    for method in methods:
        try:
            names.append(get_method(method).name)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--method") from None
    names = list(dict.fromkeys(names))
    fmt = fmt or (_FORMATS.get(out.suffix.lower(), "md") if out is not None else "md")
    if out is not None and out.parent and not out.parent.exists():
        raise click.BadParameter(f"the folder {out.parent} does not exist", param_hint="--out")
    metrics = tuple(m for m in _METRICS if m not in skipped)
    if not metrics:
        raise click.BadParameter(f"every metric is skipped; keep one of {', '.join(_METRICS)}",
                                 param_hint="--skip")
    loaded = load_or_exit(model_spec, weights, arch, trust_checkpoint)
    layer = layer_option(loaded, layer)
    loaded.model.to(device_option(device))
    try:
        annotations = read_annotations(boxes_file)
        entries = image_folder(images)
        chosen = select(entries, limit, seed)
        label_map = read_label_list(labels) if labels is not None else None
        label_names = [name for name in (label_map.values() if label_map is not None
                                         else (e.label for e in entries)) if name is not None]
        class_to_index, note = class_indices(label_names, loaded.class_names) \
            if label_names else ({}, None)
        dataset = AnnotatedImages(images, chosen, loaded.preprocess, annotations=annotations,
                                  boxes=category, labels=label_map,
                                  class_to_index=class_to_index if label_names else None,
                                  threads=workers)
    except (AnnotationError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from None
    notes = [f"note: {line}" for line in unlisted(annotations, entries, images)]
    spec = EvaluationSpec(tuple(names), layer, metrics=metrics, batch_size=64, seed=seed)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(chosen), desc="evaluating", unit="image", leave=False)
    size: tuple[int, ...] | None = None

    def sized(stream):  # the pointing tolerance follows the first input's size
        nonlocal size
        for batch in stream:
            if size is None:
                size = tuple(batch.images.shape[-2:])
                spec.tolerance = float(tolerance if tolerance is not None
                                       else _default_tolerance(size))
            yield batch

    try:
        rows = evaluate_rows(loaded.model, spec, sized(batches(dataset, batch_size)),
                             engine=engine, actors=actors, address=ray_address,
                             batch_size=batch_size,
                             progress=None if bar is None else bar.update)
    except ValueError as error:
        if engine == "ray" and "Ray Data" in str(error):
            raise click.UsageError(str(error)) from None
        raise
    finally:
        if bar is not None:
            bar.close()
    table = reduce_rows(rows, spec, resamples=resamples, seed=seed)
    count = len({row.name for row in rows})
    subset = f" (drawn at random from {len(entries)}, seed {seed})" \
        if len(chosen) < len(entries) else ""
    words = ["camlens", "evaluate", "--model", model_spec, "--images", str(images), "--boxes",
             str(boxes_file), "--category", category]
    for flag, value in (("--weights", weights), ("--arch", arch), ("--labels", labels),
                        ("--layer", layer), ("--limit", limit), ("--tolerance", tolerance)):
        if value is not None:
            words += [flag, str(value)]
    for name in names:
        words += ["--method", name]
    for metric in skipped:
        words += ["--skip", metric]
    words += ["--seed", str(seed), "--resamples", str(resamples)]
    if engine != "local":
        words += ["--engine", engine, "--actors", str(actors)]
    command = shlex.join(words)
    head = (f"{loaded.name} on {count} images{subset} of {images}, boxes of category "
            f"{category} from {boxes_file}; input {size[0]}x{size[1]}" if size
            else f"{loaded.name}: no image could be evaluated")
    table.notes[:0] = [head, _protocol_note(spec),
                       "intervals: " + (table.settings["interval"] if resamples
                                        else "none (--resamples 0)")]
    if note:
        table.notes.append(note)
    problems = list(dict.fromkeys(dataset.problems))
    table.notes.extend(notes)
    if problems:
        table.notes.append(f"{len(problems)} image(s) or annotation(s) left out: "
                           + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
    table.settings.update({"model": loaded.name, "images": str(images),
                           "boxes": str(boxes_file), "category": category, "count": count,
                           "seed": seed, "limit": limit, "command": command,
                           "left_out": problems})
    markdown = table.to_markdown(intervals=resamples > 0)
    click.echo(markdown, nl=False)
    if out is not None:
        out.write_text(markdown if fmt == "md" else table.render(fmt), encoding="utf-8")
        click.echo(f"wrote {out.resolve()}")
    for line in problems[:20]:
        click.echo(f"left out: {line}", err=True)
    if len(problems) > 20:
        click.echo(f"left out: {len(problems) - 20} more (all in the JSON output)", err=True)
    if problems:
        sys.exit(1)
