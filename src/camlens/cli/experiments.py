"""``camlens train``, ``camlens reproduce`` and ``camlens demo``: the commands behind the shipped
weights, the tables of docs/results.md and docs/audio.md, and the demo page."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from camlens.cli.options import VERBOSE_OPTION

__all__ = ["demo", "reproduce", "train"]


@click.command()
@VERBOSE_OPTION
@click.argument("name")
@click.option("--seed", default=0, show_default=True, help="Seed of data, init and order.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs.")
@click.option("--train-size", type=click.IntRange(min=10), help="Override the training set size.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override the batch size.")
@click.option("--bias", type=click.FloatRange(0.0, 1.0),
              help="Biased digits only: the share of training images whose mark sits at the "
                   "label's spot (digits-biased: 0.99; digits-debiased: 0, random spots).")
@click.option("--permuted-labels", is_flag=True,
              help="Train on the training labels permuted by the seed (the data randomization "
                   "test of Adebayo et al. 2018; classification models only; needs --out).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the safetensors file (default: the package's weights).")
def train(name: str, seed: int, epochs: int | None, train_size: int | None,
          batch_size: int | None, bias: float | None, permuted_labels: bool,
          out: Path | None) -> None:
    """Train the reference model NAME (digits-gap, digits-fc, digits-biased, ...) from a
    seed."""
    from dataclasses import replace

    from camlens.experiments.training import RECIPES, TrainingRecipe
    from camlens.experiments.training import train as train_model
    from camlens.zoo import get_weights

    try:
        get_weights(name)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    recipe = RECIPES.get(name, TrainingRecipe())
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    if train_size is not None:
        recipe = replace(recipe, train_size=train_size)
    if batch_size is not None:
        recipe = replace(recipe, batch_size=batch_size)
    if bias is not None:
        if get_weights(name).dataset != "biased":
            raise click.UsageError(f"--bias applies to models trained on the biased digits "
                                   f"(digits-biased, digits-debiased), not {name}")
        recipe = replace(recipe, bias=bias)
    if permuted_labels:
        if out is None:
            raise click.UsageError("--permuted-labels needs --out: a model trained on permuted "
                                   f"labels must not replace the shipped {name} weights")
        if get_weights(name).dataset not in ("cluttered", "biased"):
            raise click.UsageError(f"--permuted-labels applies to the digit classifiers, not "
                                   f"{name}")
        recipe = replace(recipe, permuted_labels=True)
    summary = train_model(name, seed=seed, recipe=recipe, out=out, progress=sys.stderr.isatty())
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


# What `camlens reproduce` runs besides the four tables handled below: name -> (module, function).
# Each function is called as fn(out=Path | None, progress=bool, log=callable, **sizes) and returns
# the markdown (writing any figures next to `out`).
TABLES: dict[str, tuple[str, str]] = {
    "maximization": ("camlens.experiments.maximization", "maximization_table"),
    "inversion": ("camlens.experiments.inversion", "inversion_table"),
    "probes": ("camlens.experiments.probes", "probes_table"),
    "transfer": ("camlens.experiments.transfer", "transfer_table"),
    "pooling": ("camlens.experiments.pooling", "pooling_table"),
    "sanity": ("camlens.experiments.sanity", "sanity_table"),
    "gap-fc": ("camlens.experiments.gap_fc", "gap_fc_table"),
    "model-seeds": ("camlens.experiments.model_seeds", "model_seeds_table"),
    "localization-protocols": ("camlens.experiments.localization_protocols",
                               "localization_protocols_table"),
}


def _seeds(text: str | None) -> tuple[int, ...] | None:
    """``--seeds 0,1,2`` as a tuple of distinct non-negative ints (None when not given)."""
    if text is None:
        return None
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: seeds are non-negative integers separated by "
                                 "commas, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"{text!r}: seeds are distinct non-negative integers "
                                 "separated by commas, e.g. 0,1,2")
    return seeds


def _takes_seeds(name: str) -> bool:
    """Whether the table ``name`` of :data:`TABLES` trains models (its function takes
    ``seeds``)."""
    import importlib
    import inspect

    if name not in TABLES:
        return False
    module, function = TABLES[name]
    return "seeds" in inspect.signature(
        getattr(importlib.import_module(module), function)).parameters


@click.command()
@VERBOSE_OPTION
@click.argument("what", type=click.Choice(["localization", "captioning", "audio", "detection",
                                           *TABLES]))
@click.option("--test-size", type=click.IntRange(min=10),
              help="Test images (localization, default 1000), scenes (captioning, default 500; "
                   "detection, default 200) or recordings of each kind (audio, default 400) to "
                   "evaluate.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the markdown to this file (audio: required; its figures are "
                   "written next to it).")
@click.option("--seeds", callback=lambda ctx, param, value: _seeds(value),
              help="Training seeds, separated by commas, for the tables that train models "
                   "(gap-fc, pooling, transfer, model-seeds); default: each table's own.")
@click.option("--trained-only", is_flag=True,
              help="model-seeds: score only the seeds already trained (in the cache), leave "
                   "the others out and say so, instead of training them first.")
def reproduce(what: str, test_size: int | None, out: Path | None,
              seeds: tuple[int, ...] | None, trained_only: bool) -> None:
    """Reproduce the papers' tables on the offline benchmarks: CAM and Grad-CAM localization,
    Grad-CAM for captioning, relevance over time for the accent models, maps of a detector's
    boxes."""
    say = lambda message: click.echo(message, err=True)  # noqa: E731
    sizes = {} if test_size is None else {"test_size": test_size}
    if what == "audio":
        from camlens.experiments.audio import evaluate

        if out is None:
            raise click.UsageError("reproduce audio writes figures next to its markdown; pass "
                                   "--out, e.g. --out docs/audio.md")
        command = shlex.join(["camlens", "reproduce", "audio", *(
            ["--test-size", str(test_size)] if test_size else []), "--out", str(out)])
        click.echo(evaluate(out, **sizes, progress=sys.stderr.isatty(), log=say,
                            command=command))
        return
    if seeds is not None:
        if not _takes_seeds(what):
            raise click.BadParameter(
                f"reproduce {what} trains no models; --seeds applies to "
                f"{', '.join(name for name in TABLES if _takes_seeds(name))}",
                param_hint="--seeds")
        sizes["seeds"] = seeds
    if trained_only:
        if what != "model-seeds":
            raise click.BadParameter(f"--trained-only applies to model-seeds, not {what}",
                                     param_hint="--trained-only")
        sizes["train_missing"] = False
    if what in TABLES:
        import importlib

        module, function = TABLES[what]
        table = getattr(importlib.import_module(module), function)(
            out=out, progress=sys.stderr.isatty(), log=say, **sizes)
    elif what == "captioning":
        from camlens.experiments.captioning import captioning_table

        table = captioning_table(**sizes, log=say)
    elif what == "detection":
        from camlens.experiments.detection import detection_table

        table = detection_table(**sizes, log=say)
    else:
        from camlens.experiments.localization import localization_table

        table = localization_table(**sizes, progress=sys.stderr.isatty(), log=say)
    click.echo(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        click.echo(f"wrote {out}")


@click.command()
@VERBOSE_OPTION
@click.option("--out", "-o", default="camlens-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for the page.")
def demo(out: Path) -> None:
    """The built-in demo: the lecture's story on the shipped models (CAM and Grad-CAM, a map per
    class, counterfactual maps, GAP vs FC, captions, a bias audit, an accent recording, a
    detector), as an offline HTML page; ends with the command that opens the explorer."""
    import time

    from camlens.experiments.demo import EXPLORER_COMMAND, build_demo

    started = time.perf_counter()
    page = build_demo(out, log=lambda line: click.echo(f"  {line}", err=True))
    click.echo(f"wrote {page.resolve()} in {time.perf_counter() - started:.1f} s")
    click.echo(f"explore further in the browser: {EXPLORER_COMMAND}  (then open "
               "http://127.0.0.1:8000/)")
