"""``camlens audit``: audit a model on a built-in data set or on the user's annotated folder, write
an HTML report and a JSON summary.

The folder path: ``--images DIR`` (class sub-folders give the labels, else ``--labels FILE``),
``--annotations FILE`` (COCO JSON, Pascal VOC XML or CSV boxes; :mod:`camlens.data.annotations`)
and/or ``--masks DIR`` (PNG region ids, named by ``--mask-ids FILE``), the regions to measure
(``--region object=category:dog``, ``--region cue=mask:watermark``) and counterfactual variants
as folders of the same files (``--variant "no watermark=DIR2"``). Images that cannot be read or
whose annotations are broken or missing are listed and left out; the others are audited and the
command exits with status 1.

The command is registered on the ``camlens`` group with ``main.add_command(audit)``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from camlens.audit.builtin import AUDIT_DATA
from camlens.cli.options import (
    DEVICE_OPTION,
    VERBOSE_OPTION,
    device_option,
    layer_option,
    load_or_exit,
    writable_folder,
)

__all__ = ["audit"]


def _summary_lines(result, model_name: str, data) -> list[str]:
    """The summary the command prints: accuracy, region shares and the counterfactual check,
    each figure with its 95% interval in brackets (Wilson for accuracies and rates, the seeded
    bootstrap over the inputs for shares and lifts; :mod:`camlens.audit.result`)."""
    from camlens.audit.report import (
        number_with_interval,
        percent_with_interval,
        share_digits,
        share_with_interval,
    )

    summary = result.summary()
    accuracy = percent_with_interval(summary["accuracy"], summary.get("accuracy_interval"))
    lines = [f"{model_name} on {data.description}",
             f"{result.method} at {result.layer!r}, map of the {result.target}; "
             f"accuracy {accuracy}",
             f"{'region':<10} {'mean share [95%]':>24} {'area':>8} {'lift [95%]':>18}"]
    for name, stats in summary["regions"].items():
        share = share_with_interval(stats["mean_share"], stats.get("mean_share_interval"))
        lift = number_with_interval(stats["lift"], stats.get("lift_interval"))
        lines.append(f"{name:<10} {share:>24} {share_digits(stats['mean_area']):>8} {lift:>18}")
    groups = result.by_cue()
    if groups is not None:
        lines.append("inputs with a cue, by whether the prediction is the cue's class:")
        for group, stats in groups.items():
            shares = ", ".join(
                name + " " + share_with_interval(region["mean_share"],
                                                 region.get("mean_share_interval"))
                for name, region in stats["regions"].items())
            lines.append(f"  {group}: {stats['count']} inputs, mean shares {shares}")
    checks = result.counterfactual
    if checks is not None:
        width = max(len(v.name) for v in checks.variants)
        lines.append("accuracy when the cue changes (95% intervals in brackets):")
        lines.append(f"  {'data':<{width}} {'accuracy':>20} {'change':>12} "
                     f"{'follows the cue':>20}")
        for variant in checks.variants:
            change = checks.change(variant.name)
            delta = "" if change is None or variant is checks.reference \
                else f"{100 * change:+.1f} points"
            right = percent_with_interval(variant.accuracy, variant.accuracy_interval)
            follows = percent_with_interval(variant.cue_following,
                                            variant.cue_following_interval)
            lines.append(f"  {variant.name:<{width}} {right:>20} {delta:>12} {follows:>20}")
    return lines


def _repeated(values) -> list[str]:
    return [str(value) for value in values or ()]


def _reproduction_command(**options) -> str:
    """The ``camlens audit`` command line that reruns this audit: every option that decides
    the result (the model and its weights, data, method, layer, target, batch size, device)."""
    flags = {"model_spec": "--model", "weights": "--weights", "arch": "--arch",
             "data": "--data", "size": "--size", "seed": "--seed", "method": "--method",
             "layer": "--layer", "target": "--target", "batch_size": "--batch-size",
             "top": "--top", "device": "--device", "out": "--out", "images": "--images",
             "annotations": "--annotations", "masks": "--masks", "mask_ids": "--mask-ids",
             "labels": "--labels", "limit": "--limit"}
    words = ["camlens", "audit"]
    for key, flag in flags.items():
        if options.get(key) is not None:
            words += [flag, str(options[key])]
    for key, flag in (("regions", "--region"), ("variants", "--variant"),
                      ("variant_labels", "--variant-labels")):
        for value in _repeated(options.get(key)):
            words += [flag, value]
    if options.get("trust_checkpoint"):
        words.append("--trust-checkpoint")
    return shlex.join(words)


@click.command("audit")
@VERBOSE_OPTION
@click.option("--model", "-m", "model_spec", required=True,
              help="A zoo name (digits-biased), torchvision:NAME, timm:NAME, hf:FOLDER, or a "
                   "model file (a weights file with --arch).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Local weights (.safetensors, or .pth read with weights_only=True).")
@click.option("--arch", help="The architecture of a weights file (a zoo name).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow a pickled checkpoint to run code when loaded (trusted files only).")
@click.option("--data", "data_name", type=click.Choice(sorted(AUDIT_DATA)),
              help="A built-in data set to audit on (default biased-digits, unless --images).")
@click.option("--size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Test images to audit (and per counterfactual variant), built-in data.")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the built-in test images, or of the --limit subset of a folder.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Your images: a folder (class sub-folders give the labels).")
@click.option("--annotations", type=click.Path(path_type=Path),
              help="Boxes and outlines of --images: COCO .json, Pascal VOC .xml (or a folder of "
                   "them) or .csv (file, category, x0, y0, x1, y1).")
@click.option("--masks", type=click.Path(file_okay=False, path_type=Path),
              help="A folder of PNG masks of region ids, one per image (same relative path).")
@click.option("--mask-ids", type=click.Path(dir_okay=False, path_type=Path),
              help='Names of the mask ids: JSON {"1": "dog", "2": "watermark"}.')
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
              help="Labels of --images: CSV (file,label) or JSON (default: the class "
                   "sub-folders); a cue column (the class an image's cue points at) adds the "
                   "follow-the-cue figures.")
@click.option("--region", "regions", multiple=True, metavar="NAME=KIND:VALUE",
              help="A region to measure (repeat): object=category:dog (its outline, else its "
                   "box), object=box:dog, cue=mask:watermark or cue=mask:2; * for every object.")
@click.option("--variant", "variants", multiple=True, metavar='"NAME=DIR"',
              help="A counterfactual variant of --images: a folder of the same files (the cue "
                   "removed, moved...); repeat for more.")
@click.option("--variant-labels", "variant_labels", multiple=True, metavar='"NAME=FILE"',
              help="Labels (and cues) of the variant NAME, as --labels (default: --labels).")
@click.option("--limit", type=click.IntRange(min=1),
              help="Audit a random subset of this many images of --images (drawn with --seed).")
@click.option("--method", default="gradcam", show_default=True, help="The CAM method.")
@click.option("--layer", "-l", help="Target layer (default: the model's own, else automatic).")
@click.option("--target", type=click.Choice(["predicted", "label"]), default="predicted",
              show_default=True, help="Explain the predicted or the true class.")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Worker processes preparing the next batches while the model explains "
                   "(a DataLoader's num_workers; 0: on the main process). Results do not "
                   "depend on it.")
@click.option("--top", default=8, show_default=True, type=click.IntRange(min=0),
              help="Worst cases shown per region.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Where the batches are explained: here, or on an actor "
                                      "pool of model replicas on Ray (pip install "
                                      "'camlens[scale]').")
@click.option("--actors", default=2, show_default=True, type=click.IntRange(min=1),
              help="--engine ray: model replicas.")
@click.option("--ray-address", help="--engine ray: an existing Ray cluster (default: start a "
                                    "local one).")
@click.option("--out", "-o", default="camlens-audit", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html and summary.json (created).")
@DEVICE_OPTION
def audit(model_spec, weights, arch, trust_checkpoint, data_name, size, seed, images,
          annotations, masks, mask_ids, labels, regions, variants, variant_labels, limit, method,
          layer, target, batch_size, workers, top, engine, actors, ray_address, out,
          device) -> None:
    """Audit where MODEL's maps put their mass (the object, a suspected cue) on a built-in data
    set or on your annotated images (--images), with the accuracy when the cue is moved or
    removed; writes report.html and summary.json."""
    from camlens.audit.core import audit as run_audit
    from camlens.audit.report import write_report
    from camlens.methods import get_method

    try:
        method_name = get_method(method).name
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--method") from None
    folder_options = {"--annotations": annotations, "--masks": masks, "--mask-ids": mask_ids,
                      "--labels": labels, "--region": regions or None,
                      "--variant": variants or None,
                      "--variant-labels": variant_labels or None, "--limit": limit}
    if images is None:
        given = [flag for flag, value in folder_options.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} describe a folder of images: give it "
                                   "with --images DIR")
    elif data_name is not None:
        raise click.UsageError("give either --data (a built-in data set) or --images (your "
                               "folder), not both")
    writable_folder(out)  # before the audit, not after it
    loaded = load_or_exit(model_spec, weights, arch, trust_checkpoint)
    layer = layer_option(loaded, layer)
    loaded.model.to(device_option(device))  # the audit follows the model's device
    problems: list[str] = []
    if images is None:
        data_name = data_name or "biased-digits"
        data = AUDIT_DATA[data_name](size, seed)
        name_key, num_workers = None, workers
    else:
        data, problems = _folder_data(loaded, images, annotations, masks, mask_ids, labels,
                                      regions, variants, variant_labels, limit, seed, workers)
        name_key, num_workers = "file", 0  # the folder reads in its own threads
    if engine == "ray":
        from camlens.scale.audit_engine import audit as scaled_audit

        try:
            result = scaled_audit(
                loaded.model, data.dataset, data.regions, method_name, engine="ray",
                actors=actors, address=ray_address, layer=layer, target=target,
                batch_size=batch_size, class_names=loaded.class_names, keep=top,
                counterfactuals=data.variants or None, cue_key=data.cue_key,
                progress=sys.stderr.isatty(), name_key=name_key)
        except ValueError as error:
            if "Ray Data" in str(error):
                raise click.UsageError(str(error)) from None
            raise
    else:
        result = run_audit(
            loaded.model, data.dataset, data.regions, method_name, layer=layer, target=target,
            batch_size=batch_size, class_names=loaded.class_names, keep=top,
            counterfactuals=data.variants or None, cue_key=data.cue_key,
            progress=sys.stderr.isatty(), num_workers=num_workers, name_key=name_key,
        )
    left_out = _left_out(data, problems)
    result.notes.extend(left_out)
    out.mkdir(parents=True, exist_ok=True)
    command = _reproduction_command(
        model_spec=model_spec, weights=weights, arch=arch, trust_checkpoint=trust_checkpoint,
        data=data_name, size=size if images is None else None, seed=seed, images=images,
        annotations=annotations, masks=masks, mask_ids=mask_ids, labels=labels,
        regions=regions, variants=variants, variant_labels=variant_labels, limit=limit,
        method=method_name, layer=layer,
        target=target, batch_size=batch_size, top=top, out=out, device=device)
    report = write_report(result, out / "report.html", title=f"Bias audit of {loaded.name}",
                          description=data.description, top=top)
    summary = {"model": loaded.name, "data": data_name or str(images),
               "size": size if images is None else len(result), "seed": seed,
               "command": command, "description": data.description, **result.to_dict(top=top)}
    if images is not None:
        summary["left_out"] = left_out
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for line in _summary_lines(result, loaded.name, data):
        click.echo(line)
    for line in left_out[:20]:
        click.echo(f"left out: {line}", err=True)
    if len(left_out) > 20:
        click.echo(f"left out: {len(left_out) - 20} more (all in summary.json)", err=True)
    click.echo(f"wrote {report.resolve()} and {(out / 'summary.json').resolve()}")
    if any(not line.startswith("note: ") for line in left_out):
        sys.exit(1)


def _left_out(data, problems: list[str]) -> list[str]:
    """Every problem of a folder audit: the annotations', then each data set's, in order."""
    lines = list(problems)
    datasets = [data.dataset, *data.variants.values()]
    for dataset in datasets:
        for line in getattr(dataset, "problems", []):
            if line not in lines:
                lines.append(line)
    return lines


def _named_paths(texts, option: str, folders: bool) -> dict[str, Path]:
    """``NAME=PATH`` values of a repeated option, checked."""
    named: dict[str, Path] = {}
    for text in texts:
        name, equals, path = str(text).partition("=")
        if not equals or not name.strip() or not path.strip():
            raise click.BadParameter(f"{text!r} is not NAME={'DIR' if folders else 'FILE'}, e.g. "
                                     f"\"no watermark={'DIR2' if folders else 'labels2.csv'}\"",
                                     param_hint=option)
        path = Path(path.strip())
        if not (path.is_dir() if folders else path.is_file()):
            raise click.BadParameter(f"{str(path)!r} is not a {'folder' if folders else 'file'}",
                                     param_hint=option)
        named[name.strip()] = path
    return named


def _folder_data(loaded, images: Path, annotations: Path | None, masks: Path | None,
                 mask_ids: Path | None, labels: Path | None, regions, variants, variant_labels,
                 limit, seed: int, workers: int):
    """The :class:`AuditData` of a folder audit and the notes found before reading an image."""
    from camlens.audit.builtin import AuditData
    from camlens.data.annotations import (
        AnnotationError,
        parse_region,
        read_annotations,
        read_mask_ids,
    )
    from camlens.data.folders import (
        AnnotatedImages,
        class_indices,
        image_folder,
        read_cue_list,
        read_label_list,
        select,
        unlisted,
    )

    if not regions:
        raise click.UsageError("--images needs at least one --region NAME=KIND:VALUE, e.g. "
                               "--region object=category:dog or --region cue=mask:watermark")
    if annotations is None and masks is None:
        raise click.UsageError("--images needs --annotations FILE (boxes, outlines) or --masks "
                               "DIR (PNG region ids) for its regions")
    try:
        rules = [parse_region(text) for text in regions]
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise AnnotationError(f"region names repeat: {names}; give each region its own name")
        entries = image_folder(images)
        chosen = select(entries, limit, seed)
        label_map = read_label_list(labels) if labels is not None else None
        cues = read_cue_list(labels) if labels is not None else None
        folders = _named_paths(variants, "--variant", folders=True)
        lists = _named_paths(variant_labels, "--variant-labels", folders=False)
        unknown = [name for name in lists if name not in folders]
        if unknown:
            raise click.BadParameter(f"no --variant named {unknown[0]!r}; the variants are "
                                     f"{list(folders)}", param_hint="--variant-labels")
        variant_lists = {name: (read_label_list(path), read_cue_list(path))
                         for name, path in lists.items()}
        label_names = [name for name in (label_map.values() if label_map is not None
                                         else (e.label for e in entries)) if name is not None]
        for mapping in [cues or {}] + [m for pair in variant_lists.values() for m in pair if m]:
            label_names += [name for name in mapping.values() if name]
        class_to_index, note = class_indices(label_names, loaded.class_names) \
            if label_names else ({}, None)
        read = read_annotations(annotations) if annotations is not None else None
        problems = [] if read is None else unlisted(read, entries, images)
        problems = [f"note: {line}" for line in problems]
        if note:
            problems.append(f"note: {note}")
        common = {"preprocess": loaded.preprocess, "threads": workers or 2,
                  "class_to_index": class_to_index if label_names else None}
        dataset = AnnotatedImages(images, chosen, annotations=read, regions=rules, masks=masks,
                                  mask_names=read_mask_ids(mask_ids) if mask_ids else None,
                                  require_annotation=annotations is not None, labels=label_map,
                                  cues=cues, **common)
        counterfactuals = {}
        for name, folder in folders.items():
            own_labels, own_cues = variant_lists.get(name, (label_map, cues))
            counterfactuals[name] = AnnotatedImages(folder, chosen, require_annotation=False,
                                                    labels=own_labels, cues=own_cues, **common)
    except (AnnotationError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from None
    if counterfactuals:
        counterfactuals = {f"as given ({images.name})": dataset, **counterfactuals}
    sources = ", ".join(str(p) for p in (annotations, masks) if p is not None)
    subset = f"{len(chosen)} of {len(entries)}" if len(chosen) < len(entries) else \
        f"{len(entries)}"
    description = (f"{subset} images of {images} (regions from {sources}: "
                   f"{', '.join(str(rule) for rule in rules)})")
    return AuditData("folder", description, dataset, {rule.name: rule.name for rule in rules},
                     counterfactuals, cue_key="cue" if cues is not None else None), problems
