"""``camlens visualize MODEL`` (activation maximization) and ``camlens invert IMAGE`` (input
reconstruction from hidden layers): PNGs and a JSON summary."""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from camlens.cli.options import (
    DEVICE_OPTION,
    VERBOSE_OPTION,
    device_option,
    layer_option,
    load_or_exit,
    model_options,
    writable_folder,
)

__all__ = ["UNIT_FORMS", "invert", "parse_unit", "visualize"]

UNIT_FORMS = ("class:K (K a class index or name: the output's logit)",
              "c:N or c:N-M (channel N, or channels N to M, of --layer: its mean over positions)",
              "n:C or n:C,Y,X (one neuron: channel C at the centre of --layer's grid, or at row Y, "
              "column X)",
              "N alone (a channel of --layer when --layer is given, else class N)",
              "a class name alone (that class's logit)")


def _class_index(text: str, class_names) -> int:
    if text.lstrip("-").isdigit():
        return int(text)
    if class_names and text in class_names:
        return list(class_names).index(text)
    import difflib

    close = difflib.get_close_matches(text, list(class_names or ()), n=3)
    hint = f"; closest: {', '.join(close)}" if close else (
        "; this model has no class names, give an index" if not class_names else "")
    raise click.BadParameter(f"unknown class {text!r}{hint}", param_hint="--unit")


def _integers(text: str, count: tuple[int, ...], unit: str) -> list[int]:
    parts = text.split(",")
    if len(parts) not in count or not all(re.fullmatch(r"\d+", part) for part in parts):
        raise click.BadParameter(f"{unit!r}: expected {' or '.join(str(n) for n in count)} "
                                 "non-negative integer(s) separated by commas",
                                 param_hint="--unit")
    return [int(part) for part in parts]


def parse_unit(text: str, layer: str | None, class_names=None) -> list:
    """The objectives of one ``--unit`` (a range gives several); see :data:`UNIT_FORMS`."""
    from camlens.representations.objectives import Channel, ClassLogit, Neuron

    kind, colon, rest = text.partition(":")
    if not colon:
        kind = "c" if layer is not None and text.strip().isdigit() else "class"
        rest = text
    kind = kind.strip().lower()
    rest = rest.strip()
    if kind == "class":
        return [ClassLogit(_class_index(rest, class_names))]
    if kind not in ("c", "channel", "n", "neuron"):
        raise click.BadParameter(f"unknown unit form {text!r}; accepted: "
                                 + "; ".join(UNIT_FORMS), param_hint="--unit")
    if layer is None:
        raise click.BadParameter(f"unit {text!r} is at a layer: give --layer (see `camlens "
                                 "layers MODEL`)", param_hint="--unit")
    if kind in ("c", "channel"):
        found = re.fullmatch(r"(\d+)(?:-(\d+))?", rest)
        if found is None:
            raise click.BadParameter(f"{text!r}: a channel is c:N or c:N-M (N <= M)",
                                     param_hint="--unit")
        first, last = int(found[1]), int(found[2] or found[1])
        if last < first:
            raise click.BadParameter(f"{text!r}: the range ends before it starts",
                                     param_hint="--unit")
        return [Channel(layer, channel) for channel in range(first, last + 1)]
    values = _integers(rest, (1, 3), text)
    return [Neuron(layer, *values)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60]


def _picture_scale(height: int, width: int) -> int:
    return max(1, 192 // max(height, width))


def _bar_progress() -> bool:
    return sys.stderr.isatty()


@contextmanager
def _warnings_echoed() -> Iterator[None]:
    """Warnings of the body as one ``warning:`` line each on stderr (not Python's two lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)


@click.command()
@click.argument("model_spec", metavar="MODEL")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Local weights (.safetensors, or .pth read with weights_only=True).")
@click.option("--arch", help="The architecture of a weights file: a zoo name, torchvision:NAME "
              "or timm:NAME.")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow a pickled checkpoint to run code when loaded (only for trusted files).")
@click.option("--layer", "-l", "layer_name",
              help="The layer of channel and neuron units (see `camlens layers MODEL`).")
@click.option("--unit", "-u", "unit_texts", multiple=True, required=True,
              help="What to maximise; repeat for several (one optimisation, one picture each): "
                   + "; ".join(UNIT_FORMS) + ".")
@click.option("--steps", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="Adam's learning rate.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the start and the transformations.")
@click.option("--param", type=click.Choice(["fourier", "pixel"]), default="fourier",
              show_default=True, help="Decorrelated Fourier spectrum (Olah et al. 2017) or free "
              "pixels; both through a sigmoid to [0, 1].")
@click.option("--jitter", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="Random shift in pixels at each step (0: none).")
@click.option("--scale", "scale_range", type=click.FloatRange(min=0, max=1, max_open=True),
              default=0.05, show_default=True, help="Random scaling by 1 ± this (0: none).")
@click.option("--rotate", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Random rotation up to this many degrees (0: none).")
@click.option("--tv", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Total variation weight (on [0, 1] pixels).")
@click.option("--l2", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="L2 weight (distance from mid-grey of the [0, 1] pixels).")
@click.option("--diversity", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pictures per unit; above 1 they are pushed apart (Gram-matrix cosine).")
@click.option("--diversity-weight", type=click.FloatRange(min=0), default=10.0,
              show_default=True, help="Weight of the diversity penalty.")
@click.option("--diversity-layer", help="Layer whose Gram matrices are compared (default: the "
              "unit's layer; for class units --layer, else the model's own layer).")
@click.option("--redirect-steps", type=click.IntRange(min=0), default=16, show_default=True,
              help="For this many first steps a ReLU whose gradient is zero for a picture "
                   "passes a redirected one (lucid), so units off at the start can rise.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created): a PNG per picture, grid.png, summary.json.")
@DEVICE_OPTION
@VERBOSE_OPTION
def visualize(model_spec, weights, arch, trust_checkpoint, layer_name, unit_texts, steps, lr,
              seed, param, jitter, scale_range, rotate, tv, l2, diversity, diversity_weight,
              diversity_layer, redirect_steps, out, device) -> None:
    """Activation maximization: optimise pictures that maximise units of MODEL (a zoo name,
    torchvision:NAME, timm:NAME or a model file), all units in one batch, in the model's input
    space (a [0, 1] picture through its normalisation). Writes a PNG per picture, grid.png and
    summary.json (each unit's score at the start and the end, the class the model assigns)."""
    from camlens.representations.figures import picture_grid, save_picture
    from camlens.representations.maximize import maximize
    from camlens.representations.transforms import RandomTransforms
    from camlens.viz import save_figure

    loaded = load_or_exit(model_spec, weights, arch, trust_checkpoint)
    layer = layer_option(loaded, layer_name) if layer_name else None
    units = [unit for text in unit_texts for unit in parse_unit(text, layer, loaded.class_names)]
    if diversity > 1:
        diversity_layer = layer_option(loaded, diversity_layer or layer)
    shape = _input_shape(loaded)
    chosen_device = device_option(device)
    loaded.model.to(chosen_device)
    writable_folder(out)
    moves = RandomTransforms(jitter, scale_range, rotate, seed=seed)
    try:
        with _warnings_echoed():
            result = maximize(
                loaded.model, units, shape, steps=steps, lr=lr, seed=seed, param=param,
                transforms=moves, tv=tv, l2=l2, images_per_unit=diversity,
                diversity=diversity_weight if diversity > 1 else 0.0,
                diversity_layer=diversity_layer, mean=loaded.mean, std=loaded.std,
                device=chosen_device, progress=True if _bar_progress() else None,
                redirect_steps=redirect_steps)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--unit") from None
    scale = _picture_scale(*shape[1:])
    names = loaded.class_names
    pictures, rows, captions = [], [], []
    for index in range(len(result.unit_of_image)):
        unit = result.objectives[int(result.unit_of_image[index])]
        variant = index % diversity
        name = (f"unit{int(result.unit_of_image[index]):02d}_{_slug(unit.label)}"
                + (f"_v{variant}" if diversity > 1 else "") + ".png")
        save_picture(result.pixels[index], out / name, scale)
        entry = {"unit": unit.label, "file": name, "start": float(result.start_values[index]),
                 "final": float(result.final_values[index])}
        if result.output is not None and result.output.ndim == 2:
            probabilities = result.output[index].softmax(dim=0)
            predicted = int(probabilities.argmax())
            entry["assigned_class"] = names[predicted] if names and predicted < len(names) \
                else predicted
            entry["softmax"] = float(probabilities[predicted])
        pictures.append(entry)
        if variant == 0:
            rows.append([])
            captions.append([])
        rows[-1].append(result.pixels[index])
        captions[-1].append(f"{unit.label[:28]}: {entry['final']:.3g}")
    save_figure(picture_grid(rows, captions), out / "grid.png")
    summary = {"model": model_spec, "layer": layer, "settings": result.settings,
               "notes": result.notes, "pictures": pictures,
               "trajectory": [[round(float(v), 5) for v in step] for step in result.trajectory]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    click.echo(f"maximised {len(units)} unit(s), {len(pictures)} picture(s): " + "; ".join(
        f"{entry['unit']} {entry['start']:.3g} -> {entry['final']:.3g}" for entry in pictures[:8])
        + ("; ..." if len(pictures) > 8 else "") + f"; wrote {out / 'summary.json'}")


def _input_shape(loaded) -> tuple[int, int, int]:
    """(C, H, W) of the model's input: the preprocessing of a blank picture."""
    from PIL import Image

    example = loaded.preprocess(Image.new("RGB", (256, 256)))
    if example.ndim != 4:
        raise click.UsageError(f"this model's input has shape {tuple(example.shape)}, not a "
                               "picture (1, C, H, W); visualize and invert need image models")
    return tuple(int(size) for size in example.shape[1:])  # type: ignore[return-value]


@click.command()
@click.argument("image", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@model_options
@click.option("--layer", "-l", "layer_names", multiple=True, required=True,
              help="Reconstruct from this layer; repeat for several (one optimisation).")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="Adam's learning rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the start.")
@click.option("--param", type=click.Choice(["pixel", "fourier"]), default="pixel",
              show_default=True, help="Free pixels or a decorrelated Fourier spectrum.")
@click.option("--jitter", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Random shift in pixels at each step (0: none).")
@click.option("--tv", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Total variation weight (on [0, 1] pixels).")
@click.option("--l2", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="L2 weight (distance from mid-grey).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created): input.png, a PNG per layer, row.png, summary.json.")
@DEVICE_OPTION
@VERBOSE_OPTION
def invert(image, model_spec, weights, arch, trust_checkpoint, layer_names, steps, lr, seed,
           param, jitter, tv, l2, out, device) -> None:
    """Reconstruct IMAGE from its representation at each --layer (Mahendran and Vedaldi 2015):
    the picture whose layer output matches the image's. Writes the reconstructions, a row of
    the input and them, and summary.json with each layer's relative representation error
    ||Φ(x) - Φ(x0)||² / ||Φ(x0)||² and pixel RMSE (in [0, 1] pixels)."""
    from camlens.io.images import ImageFileError, read_image
    from camlens.representations.figures import picture_grid, save_picture
    from camlens.representations.invert import invert as invert_layers
    from camlens.representations.transforms import RandomTransforms
    from camlens.viz import save_figure

    loaded = load_or_exit(model_spec, weights, arch, trust_checkpoint)
    if len(set(layer_names)) < len(layer_names):
        raise click.BadParameter(f"a layer is given twice: {', '.join(layer_names)}",
                                 param_hint="--layer")
    layers = [layer_option(loaded, name) for name in layer_names]
    _input_shape(loaded)
    try:
        inputs = loaded.preprocess(read_image(image))
    except ImageFileError as error:
        raise click.UsageError(str(error)) from None
    chosen_device = device_option(device)
    loaded.model.to(chosen_device)
    writable_folder(out)
    moves = RandomTransforms(jitter, 0, 0, seed=seed) if jitter else None
    try:
        with _warnings_echoed():
            result = invert_layers(loaded.model, inputs, layers, steps=steps, lr=lr, seed=seed,
                                   param=param, transforms=moves, tv=tv, l2=l2,
                                   mean=loaded.mean, std=loaded.std, device=chosen_device,
                                   progress=True if _bar_progress() else None)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--layer") from None
    scale = _picture_scale(*inputs.shape[2:])
    save_picture(result.original_pixels[0], out / "input.png", scale)
    rows, captions, entries = [result.original_pixels[0]], ["input"], []
    for name, layer in result.layers.items():
        file = f"layer_{_slug(name)}.png"
        save_picture(layer.pixels[0], out / file, scale)
        rows.append(layer.pixels[0])
        captions.append(f"{name}: {float(layer.pixel_rmse[0]):.2f}")
        entries.append({"layer": name, "file": file,
                        "representation_error": float(layer.representation_error[0]),
                        "start_error": float(layer.start_error[0]),
                        "pixel_rmse": float(layer.pixel_rmse[0]),
                        "trajectory": [round(float(v), 6) for v in layer.trajectory[:, 0]]})
    save_figure(picture_grid([rows], [captions]), out / "row.png")
    summary = {"image": str(image), "model": model_spec, "settings": result.settings,
               "notes": result.notes, "pixel_error": "RMSE in [0, 1] pixels", "layers": entries}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    click.echo("; ".join(f"{entry['layer']}: representation error "
                         f"{entry['representation_error']:.3g}, pixel RMSE "
                         f"{entry['pixel_rmse']:.3f}" for entry in entries)
               + f"; wrote {out / 'summary.json'}")
