"""``camlens data``: the shipped data sets as folders of the user's kind (images + annotations).

``camlens data export biased-digits DIR`` writes PNG images in class sub-folders, COCO JSON
boxes and outlines of the digit and the mark, PNG region masks and the counterfactual variants,
so ``camlens audit --images`` and ``camlens evaluate`` can be tried offline in a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from camlens.cli.options import VERBOSE_OPTION

__all__ = ["data"]

_EXPORT_NAMES = ("biased-digits", "cluttered-digits")


@click.group("data")
def data() -> None:
    """The shipped data sets as folders of images and annotations."""


@data.command("export")
@VERBOSE_OPTION
@click.argument("name", type=click.Choice(_EXPORT_NAMES))
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default=200, show_default=True, type=click.IntRange(min=1),
              help="Images to write (the test split).")
@click.option("--seed", default=0, show_default=True, help="Seed of the test images.")
def export(name: str, folder: Path, size: int, seed: int) -> None:
    """Write the data set NAME into FOLDER (a new or empty folder): images and COCO JSON
    (biased-digits: also masks and the variants no-mark/, flipped/, aligned/)."""
    from camlens.data.export import EXPORTS

    writer, what = EXPORTS[name]
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=size, desc=f"writing {name}", unit="image", leave=False)
    try:
        written = writer(folder, size=size, seed=seed,
                         progress=None if bar is None else bar.update)
    except FileExistsError as error:
        raise click.BadParameter(str(error), param_hint="FOLDER") from None
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"wrote {written['images']} images of {name} (seed {seed}) to {folder}: {what}")
    click.echo(f"annotations: {written['annotations']}")
