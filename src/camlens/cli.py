"""The ``camlens`` command line (click)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from camlens.methods import METHODS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="camlens")
def main() -> None:
    """camlens: why did this model predict that? Class activation maps for PyTorch models."""


@main.command()
def methods() -> None:
    """List the explanation methods, one line each."""
    for name, method in METHODS.items():
        summary = (method.__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:<16} {summary}")


@main.command()
@click.argument("name")
@click.option("--seed", default=0, show_default=True, help="Seed of data, init and order.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs.")
@click.option("--train-size", type=click.IntRange(min=10), help="Override the training set size.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the safetensors file (default: the package's weights).")
def train(name: str, seed: int, epochs: int | None, train_size: int | None,
          out: Path | None) -> None:
    """Train the reference model NAME (digits-gap, digits-fc, digits-biased) from a seed."""
    from dataclasses import replace

    from camlens.zoo.registry import entry
    from camlens.zoo.training import TrainingRecipe
    from camlens.zoo.training import train as train_model

    try:
        entry(name)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    recipe = TrainingRecipe()
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    if train_size is not None:
        recipe = replace(recipe, train_size=train_size)
    summary = train_model(name, seed=seed, recipe=recipe, out=out, progress=sys.stderr.isatty())
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


@main.command()
@click.argument("what", type=click.Choice(["localization"]))
@click.option("--test-size", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Cluttered-digit test images to evaluate.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the markdown table to this file.")
def reproduce(what: str, test_size: int, out: Path | None) -> None:
    """Reproduce the CAM and Grad-CAM papers' tables on the offline digit benchmark."""
    from camlens.reproduce import localization_table

    table = localization_table(test_size=test_size, progress=sys.stderr.isatty())
    click.echo(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        click.echo(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
