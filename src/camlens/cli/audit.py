"""``camlens audit``: audit a model on a built-in data set, write an HTML report and a JSON summary.

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
    """The summary the command prints: accuracy, region shares and the counterfactual check."""
    from camlens.audit.report import number, percent, share_digits

    summary = result.summary()
    lines = [f"{model_name} on {data.description}",
             f"{result.method} at {result.layer!r}, map of the {result.target}; "
             f"accuracy {percent(summary['accuracy'])}",
             f"{'region':<10} {'mean share':>11} {'area':>8} {'lift':>7}"]
    for name, stats in summary["regions"].items():
        lines.append(f"{name:<10} {share_digits(stats['mean_share']):>11} "
                     f"{share_digits(stats['mean_area']):>8} {number(stats['lift']):>7}")
    groups = result.by_cue()
    if groups is not None:
        lines.append("inputs with a cue, by whether the prediction is the cue's class:")
        for group, stats in groups.items():
            shares = ", ".join(f"{name} {share_digits(region['mean_share'])}"
                               for name, region in stats["regions"].items())
            lines.append(f"  {group}: {stats['count']} inputs, mean shares {shares}")
    checks = result.counterfactual
    if checks is not None:
        width = max(len(v.name) for v in checks.variants)
        lines.append("accuracy when the cue changes:")
        lines.append(f"  {'data':<{width}} {'accuracy':>8} {'change':>12} {'follows the cue':>16}")
        for variant in checks.variants:
            change = checks.change(variant.name)
            delta = "" if change is None or variant is checks.reference \
                else f"{100 * change:+.1f} points"
            lines.append(f"  {variant.name:<{width}} {percent(variant.accuracy):>8} {delta:>12} "
                         f"{percent(variant.cue_following):>16}")
    return lines


def _reproduction_command(**options) -> str:
    """The ``camlens audit`` command line that reruns this audit: every option that decides
    the result (the model and its weights, data, method, layer, target, batch size, device)."""
    flags = {"model_spec": "--model", "weights": "--weights", "arch": "--arch",
             "data": "--data", "size": "--size", "seed": "--seed", "method": "--method",
             "layer": "--layer", "target": "--target", "batch_size": "--batch-size",
             "top": "--top", "device": "--device", "out": "--out"}
    words = ["camlens", "audit"]
    for key, flag in flags.items():
        if options.get(key) is not None:
            words += [flag, str(options[key])]
    if options.get("trust_checkpoint"):
        words.append("--trust-checkpoint")
    return shlex.join(words)


@click.command("audit")
@VERBOSE_OPTION
@click.option("--model", "-m", "model_spec", required=True,
              help="A zoo name (digits-biased), or a weights file with --arch.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Local weights (.safetensors, or .pth read with weights_only=True).")
@click.option("--arch", help="The architecture of a weights file (a zoo name).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow a pickled checkpoint to run code when loaded (trusted files only).")
@click.option("--data", "data_name", default="biased-digits", show_default=True,
              type=click.Choice(sorted(AUDIT_DATA)), help="The data set to audit on.")
@click.option("--size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Test images to audit (and per counterfactual variant).")
@click.option("--seed", default=0, show_default=True, help="Seed of the test images.")
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
@click.option("--out", "-o", default="camlens-audit", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html and summary.json (created).")
@DEVICE_OPTION
def audit(model_spec, weights, arch, trust_checkpoint, data_name, size, seed, method, layer,
          target, batch_size, workers, top, out, device) -> None:
    """Audit where MODEL's maps put their mass (the object, a suspected cue) on a built-in data
    set, with the accuracy when the cue is moved or removed; writes report.html and
    summary.json."""
    from camlens.audit.core import audit as run_audit
    from camlens.audit.report import write_report
    from camlens.methods import get_method

    try:
        method_name = get_method(method).name
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--method") from None
    writable_folder(out)  # before the audit, not after it
    loaded = load_or_exit(model_spec, weights, arch, trust_checkpoint)
    layer = layer_option(loaded, layer)
    loaded.model.to(device_option(device))  # the audit follows the model's device
    data = AUDIT_DATA[data_name](size, seed)
    result = run_audit(
        loaded.model, data.dataset, data.regions, method_name, layer=layer, target=target,
        batch_size=batch_size, class_names=loaded.class_names, keep=top,
        counterfactuals=data.variants, cue_key=data.cue_key, progress=sys.stderr.isatty(),
        num_workers=workers,
    )
    out.mkdir(parents=True, exist_ok=True)
    command = _reproduction_command(model_spec=model_spec, weights=weights, arch=arch,
                                   trust_checkpoint=trust_checkpoint, data=data_name, size=size,
                                   seed=seed, method=method_name, layer=layer, target=target,
                                   batch_size=batch_size, top=top, out=out, device=device)
    report = write_report(result, out / "report.html", title=f"Bias audit of {loaded.name}",
                          description=data.description, top=top)
    summary = {"model": loaded.name, "data": data_name, "size": size, "seed": seed,
               "command": command, "description": data.description, **result.to_dict(top=top)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for line in _summary_lines(result, loaded.name, data):
        click.echo(line)
    click.echo(f"wrote {report.resolve()} and {(out / 'summary.json').resolve()}")
