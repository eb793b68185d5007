"""``camlens explain PATHS``, ``camlens layers MODEL`` and ``camlens methods``."""

from __future__ import annotations

import difflib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from camlens.cli.index import RunIndex
from camlens.cli.options import (
    DEVICE_OPTION,
    VERBOSE_OPTION,
    device_option,
    layer_option,
    layout_options,
    load_or_exit,
    model_options,
    writable_folder,
)
from camlens.cli.targets import (
    ImageTarget,
    TextPrompts,
    class_label,
    parse_target,
    prepare_target,
)
from camlens.methods import METHODS

__all__ = ["class_label", "display_image", "explain", "layer_shapes", "layers", "methods",
           "parse_target"]


@click.command()
@VERBOSE_OPTION
def methods() -> None:
    """List the explanation methods, one line each."""
    for name, method in METHODS.items():
        summary = (method.__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:<16} {summary}")


def layer_shapes(loaded, channels_last: bool | None = None,
                 token_grid: tuple[int, int] | None = None):
    """(example input, {layer: output tensor}, {layer: layout}) from one forward of a blank
    picture: what `camlens layers` lists and what --layer is checked against. A layer is a
    candidate when its output can be laid over the input's grid (:mod:`camlens.layouts`)."""
    import torch
    from PIL import Image

    from camlens.capture import first_tensor
    from camlens.layouts import LayoutError, detect_layout

    if isinstance(loaded.model, torch.jit.ScriptModule):
        raise click.UsageError(
            "this model is TorchScript, whose modules take no forward hooks, so camlens cannot "
            "see its layers; save the eager model's state dict as safetensors and pass --arch")
    example = loaded.preprocess(Image.new("RGB", (256, 256)))
    shapes, handles = {}, []
    modules = dict(loaded.model.named_modules())
    try:
        for name, module in modules.items():
            if name:
                handles.append(module.register_forward_hook(
                    lambda m, a, o, name=name: shapes.__setitem__(name, first_tensor(o))))
        with torch.no_grad():
            loaded.model(example)
    finally:
        for handle in handles:
            handle.remove()
    layouts = {}
    for name, tensor in shapes.items():
        if tensor is None or tensor.ndim < 3 or tensor.shape[0] != example.shape[0]:
            continue
        try:
            layouts[name] = detect_layout(tensor.shape, example.shape,
                                          channels_last=channels_last, token_grid=token_grid,
                                          layer_name=name, module=modules[name], strict=True)
        except LayoutError:
            continue
    return example, shapes, layouts


def _predicted_score(example):
    """The explained score of `camlens layers`: the predicted class of ``example``."""
    from camlens.targets import adapt_output, resolve_target

    def scores_of(output):
        return resolve_target(None, adapt_output(output), example.shape[0])[1]

    return scores_of


def _reach_by_layer(loaded, example, channels_last: bool | None = None) -> dict[str, str]:
    """For each layer over the grid, how many of its positions reach the predicted class's
    score ("all 64/64" or "3/64"); empty when the model cannot be surveyed."""
    from camlens.layer_choice import survey_layers
    from camlens.model_state import preserved_model_state

    try:
        with preserved_model_state(loaded.model):
            rows = survey_layers(loaded.model, (example,), example, _predicted_score(example),
                                 channels_last=channels_last)
    except (TypeError, ValueError, RuntimeError):
        return {}
    return {row.name: ("all " if row.reached == row.positions else "") +
            f"{row.reached}/{row.positions}" for row in rows if row.reached is not None}


def automatic_layer(loaded, example, channels_last: bool | None = None) -> str | None:
    """The layer ``layer=None`` would explain for the predicted class of ``example`` (None when
    camlens cannot choose one)."""
    from camlens.layer_choice import LayerChoiceError, choose_layer
    from camlens.model_state import preserved_model_state

    try:
        with preserved_model_state(loaded.model):
            return choose_layer(loaded.model, (example,), example, _predicted_score(example),
                                channels_last=channels_last).name
    except (LayerChoiceError, TypeError, ValueError, RuntimeError):
        return None


def output_path(out: Path, stem: str, suffix: str, inputs: set[Path], taken: set[Path]) -> Path:
    """A fresh file name in ``out``: never an input file, never one written in this run."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{stem}_{suffix}")
    candidate, counter = out / f"{safe}.png", 2
    while candidate.resolve() in inputs or candidate in taken:
        candidate, counter = out / f"{safe}-{counter}.png", counter + 1
    taken.add(candidate)
    return candidate


def display_image(loaded, tensor):
    """The model's input as a picture (normalisation undone), so maps line up with it."""
    from camlens.viz import denormalize, to_pil

    image = tensor[0]
    if loaded.mean is not None and loaded.std is not None:
        image = denormalize(image, loaded.mean, loaded.std)
    return to_pil(image.clamp(0, 1))


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option("--layer", "-l", "layer_names", multiple=True,
              help="Target layer (default: the model's own, else automatic); repeat for several "
                   "(one map per layer and their fusion, see --fuse).")
@click.option("--fuse", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="How the maps of several --layer are merged (each over its maximum, on the "
                   "finest grid).")
@click.option("--method", "method_names", multiple=True, default=("gradcam",), show_default=True,
              help="Method; repeat for several (a grid is written too).")
@click.option("--target", "-t", default="top1", show_default=True,
              help="top1, topK (e.g. top3), a class index or a class name; box:x0,y0,x1,y1[:CLASS] "
                   "(a detector's box); detections[:SCORE] (every detection above SCORE, one map "
                   "each); class:CLASS (a segmentation class); text:PROMPT[|PROMPT] (CLIP).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created).")
@click.option("--resume", is_flag=True,
              help="Go on with an interrupted run into the same --out: skip the images its "
                   "index says are done (same settings only).")
@click.option("--colormap", default="jet", show_default=True)
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1))
@click.option("--max-pixels", default=40_000_000, show_default=True, type=click.IntRange(min=1),
              help="Refuse larger images (decompression bombs).")
@click.option("--max-aspect", default=20.0, show_default=True, type=click.FloatRange(min=1),
              help="Refuse images whose long side is more than this many times the short one "
                   "(resizing them to the model's input needs unbounded memory).")
@layout_options
@DEVICE_OPTION
@VERBOSE_OPTION
def explain(paths, model_spec, weights, arch, trust_checkpoint, layer_names, fuse, method_names,
            target, out, resume, colormap, alpha, max_pixels, max_aspect, channels_last,
            token_grid, device) -> None:
    """Explain the model's prediction for each image (folders are walked): one PNG per image and
    method, a grid when several, and the index (explanations.jsonl as it goes,
    explanations.json at the end)."""
    from camlens.io.images import find_images
    from camlens.methods import get_method
    from camlens.viz import get_colormap

    methods = []
    for name in method_names:
        try:
            methods.append(get_method(name))
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--method") from None
    loaded = load_or_exit(model_spec, weights, arch, trust_checkpoint)
    chosen_target = parse_target(target, loaded.class_names)
    if len(set(layer_names)) < len(layer_names):
        raise click.BadParameter(f"a layer is given twice: {', '.join(layer_names)}",
                                 param_hint="--layer")
    resolved = [layer_option(loaded, name) for name in layer_names or (None,)]
    if not isinstance(chosen_target, TextPrompts):  # a text model needs its prompts to run
        _check_layers_fit(loaded, [name for name in resolved if name is not None],
                          channels_last, token_grid)
        _check_target_fits(loaded, chosen_target, target)
    layer = resolved if len(resolved) > 1 else resolved[0]
    device = device_option(device)
    loaded.model.to(device)
    try:
        get_colormap(colormap)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--colormap") from None

    files = find_images(list(paths))
    if not files:
        click.echo(f"warning: no image files in {', '.join(str(p) for p in paths)}", err=True)
        sys.exit(1)
    writable_folder(out)
    settings = {"model": model_spec, "weights": str(weights) if weights else None,
                "arch": arch, "layer": layer, "fuse": fuse if len(resolved) > 1 else None,
                "methods": [m.name for m in methods],
                "target": target, "colormap": colormap, "alpha": alpha,
                "channels_last": channels_last, "token_grid": token_grid}
    run = _Run(loaded, methods, layer, chosen_target, device, out, colormap, alpha,
               max_pixels, max_aspect, {path.resolve() for path in files if path.exists()},
               {"channels_last": channels_last, "token_grid": token_grid,
                **({"fuse": fuse} if len(resolved) > 1 else {})})
    index = RunIndex(out, settings, resume)
    run.taken |= index.outputs()
    counts = {"explained": 0, "failed": 0, "skipped": 0}
    failures: list[str] = []
    interrupted = False
    with _sigterm_as_interrupt():
        try:
            for path in _progress(files):
                if index.done(path):
                    counts["skipped"] += 1
                    continue
                try:
                    records = run.one(path)
                except _FileFailed as failure:
                    counts["failed"] += 1
                    failures.append(str(failure))
                    click.echo(f"error: {failure}", err=True)
                    index.add(path, [], error=str(failure))
                else:
                    counts["explained"] += 1
                    index.add(path, records)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            summary = index.close()
    click.echo(f"explained {counts['explained']}, failed {counts['failed']}, skipped "
               f"{counts['skipped']} (done before) of {len(files)} images with "
               f"{', '.join(m.name for m in methods)}; wrote {summary}")
    if failures:
        click.echo(f"{len(failures)} file(s) failed:", err=True)
        for failure in failures:
            click.echo(f"  {failure}", err=True)
    if interrupted:
        click.echo("interrupted: the index holds what was done; rerun with --resume to go on",
                   err=True)
        sys.exit(130)
    if failures:
        sys.exit(1)


class _FileFailed(Exception):
    """One input could not be explained or written; the message names the file and why."""


class _Run:
    """What explaining one file needs, and doing it."""

    def __init__(self, loaded, methods, layer, target, device, out: Path, colormap: str,
                 alpha: float, max_pixels: int, max_aspect: float, inputs: set[Path],
                 layout: dict) -> None:
        self.loaded, self.methods, self.layer, self.target = loaded, methods, layer, target
        self.device, self.out, self.colormap, self.alpha = device, out, colormap, alpha
        self.max_pixels, self.max_aspect, self.inputs = max_pixels, max_aspect, inputs
        self.layout = layout
        self.taken: set[Path] = set()

    def one(self, path: Path) -> list[dict]:
        """Explain ``path`` and write its pictures; the index records, or :class:`_FileFailed`."""
        from camlens.explanation import ExplanationWarning
        from camlens.io.images import ImageFileError, read_image

        loaded = self.loaded
        try:
            image = read_image(path, self.max_pixels, max_aspect=self.max_aspect)
            tensor = loaded.preprocess(image)
        except ImageFileError as error:
            raise _FileFailed(str(error)) from None
        picture = display_image(loaded, tensor)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ExplanationWarning)
                asked = prepare_target(loaded, self.target, tensor, self.device)
                explanations = [
                    method(loaded.model, self.layer, **self.layout, **asked.options)(
                        asked.inputs, target=asked.target).to("cpu")
                    for method in self.methods]
        except (ValueError, TypeError, IndexError, RuntimeError) as error:
            raise _FileFailed(f"{path}: {error}") from None
        for warning in caught:  # one line per image; the index keeps the notes too
            if issubclass(warning.category, ExplanationWarning):
                click.echo(f"note: {path}: {warning.message}", err=True)
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno)
        try:
            return self.write(path, picture, explanations, asked, tensor)
        except OSError as error:
            raise _FileFailed(f"{path}: cannot write its pictures ({error})") from None

    def target_name(self) -> str:
        """How a callable target is named in file names and the index."""
        from camlens.score_targets import BoxTarget, RegionTarget

        if isinstance(self.target, BoxTarget):
            return "box" if self.target.label is None else (
                f"box_{class_label(self.target.label, self.loaded.class_names)}")
        if isinstance(self.target, RegionTarget):
            return f"region_{class_label(self.target.label, self.loaded.class_names)}"
        return "custom"

    def write(self, path: Path, picture, explanations, asked: ImageTarget, tensor
              ) -> list[dict]:
        from camlens.viz import (
            draw_boxes,
            draw_outline,
            explanation_grid,
            grid,
            overlay,
            save_figure,
        )

        loaded, records = self.loaded, []
        outline = self.region_mask(tensor, picture.size)
        for method, exp in zip(self.methods, explanations, strict=True):
            maps = exp.maps[0] if exp.maps.ndim == 4 else exp.maps[0][None]
            targets = exp.targets[0].reshape(-1).tolist() if exp.targets is not None else [None]
            targets = targets * (len(maps) // len(targets))
            scores = exp.scores[0].reshape(-1).tolist()
            for number, (map_, class_index, score) in enumerate(
                    zip(maps, targets, scores, strict=True)):
                if asked.names is not None:
                    name = asked.names[number]
                elif class_index is not None:
                    name = class_label(class_index, loaded.class_names)
                else:
                    name = self.target_name()
                suffix = method.name if len(maps) == 1 else f"{method.name}_{name}"
                destination = output_path(self.out, path.stem, suffix, self.inputs, self.taken)
                drawn = overlay(picture, map_, colormap=self.colormap, alpha=self.alpha)
                if outline is not None:  # the segmentation class's predicted region
                    drawn = draw_outline(drawn, outline)
                if asked.boxes is not None:  # the explained box, with its class and score
                    box = asked.boxes[number if len(asked.boxes) > 1 else 0]
                    label = name if asked.names is not None else f"{name} {score:.2f}"
                    drawn = draw_boxes(drawn, [box], labels=[label])
                drawn.save(destination)
                records.append({"file": str(path), "model": loaded.name, "layer": exp.layer,
                                "method": method.name, "target": class_index,
                                "target_name": name, "score": round(float(score), 6),
                                "output": str(destination), "notes": list(exp.notes)})
        if asked.names is not None and len(asked.names) > 1:
            for method, exp in zip(self.methods, explanations, strict=True):
                figure = grid(picture, exp.maps[0], titles=list(asked.names),
                              colormap=self.colormap, alpha=self.alpha,
                              columns=min(len(asked.names) + 1, 5))
                grid_path = output_path(self.out, path.stem, f"{method.name}_grid", self.inputs,
                                        self.taken)
                save_figure(figure, grid_path)
                records.append({"file": str(path), "grid": str(grid_path)})
        elif len(explanations) > 1 or explanations[0].maps.ndim == 4:
            figure = explanation_grid(explanations if len(explanations) > 1 else explanations[0],
                                      picture, class_names=loaded.class_names,
                                      colormap=self.colormap, alpha=self.alpha)
            grid_path = output_path(self.out, path.stem, "grid", self.inputs, self.taken)
            save_figure(figure, grid_path)
            records.append({"file": str(path), "grid": str(grid_path)})
        return records

    def region_mask(self, tensor, size: tuple[int, int]):
        """For a segmentation class target, the pixels the model assigns to that class (its
        argmax), at the picture's ``size`` (width, height); else None."""
        import torch
        import torch.nn.functional as F

        from camlens.model_state import preserved_model_state
        from camlens.score_targets import RegionTarget
        from camlens.targets import adapt_output

        if not isinstance(self.target, RegionTarget):
            return None
        with preserved_model_state(self.loaded.model), torch.no_grad():
            self.loaded.model.eval()
            logits = adapt_output(self.loaded.model(tensor.to(self.device)))
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
            return None
        width, height = size
        resized = F.interpolate(logits[:1].float().cpu(), size=(height, width), mode="bilinear",
                                align_corners=False)
        return (resized[0].argmax(dim=0) == self.target.label).numpy()


def _progress(files: list[Path]):
    from tqdm import tqdm

    return tqdm(files, desc="explaining", unit="image", disable=not sys.stderr.isatty())


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM stops the run like Ctrl-C (the index is closed properly)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_layers_fit(loaded, names: list[str], channels_last, token_grid) -> None:
    """Each --layer must lie over the input's grid: a usage error naming the layers that do."""
    if not names:
        return
    _, shapes, layouts = layer_shapes(loaded, channels_last, token_grid)
    for layer in names:
        if layer in layouts:
            continue
        candidates = list(layouts)
        shape = tuple(shapes[layer].shape) if shapes.get(layer) is not None else "no tensor"
        close = difflib.get_close_matches(layer, candidates, n=3, cutoff=0.3) or candidates[-3:]
        raise click.BadParameter(
            f"layer {layer!r} outputs {shape}, which does not lie over the input's grid (no "
            f"spatial or token axis, or not the batch first); layers that do: "
            f"{', '.join(close)} (see `camlens layers`)", param_hint="--layer")


def _check_target_fits(loaded, chosen, text: str) -> None:
    """A class index or topK that the model's output cannot give is a usage error before any
    image is read (one forward of a blank picture tells the number of classes)."""
    from camlens.targets import TopK

    if chosen is None or not isinstance(chosen, (int, TopK)):
        return
    count = len(loaded.class_names) if loaded.class_names is not None else _output_classes(loaded)
    if count is None:
        return
    wanted = chosen.k if isinstance(chosen, TopK) else chosen + 1
    if wanted > count:
        what = f"top{chosen.k}" if isinstance(chosen, TopK) else f"class index {chosen}"
        raise click.BadParameter(f"{what} does not fit a model with {count} classes "
                                 f"(valid: top1 to top{count}, 0 to {count - 1})",
                                 param_hint="--target")


def _output_classes(loaded) -> int | None:
    """The number of classes the model outputs for a blank picture, or None when its output is
    not ``(1, classes)``."""
    import torch
    from PIL import Image

    from camlens.model_state import preserved_model_state
    from camlens.targets import adapt_output

    example = loaded.preprocess(Image.new("RGB", (256, 256)))
    try:
        with preserved_model_state(loaded.model), torch.no_grad():
            output = adapt_output(loaded.model(example))
    except (TypeError, ValueError, RuntimeError):
        return None
    return int(output.shape[1]) if isinstance(output, torch.Tensor) and output.ndim == 2 else None


@click.command()
@VERBOSE_OPTION
@click.argument("model_spec")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--arch")
@click.option("--trust-checkpoint", is_flag=True)
@click.option("--all", "show_all", is_flag=True,
              help="Also list layers whose output does not lie over the input's grid.")
@layout_options
def layers(model_spec, weights, arch, trust_checkpoint, show_all, channels_last,
           token_grid) -> None:
    """List the layers of MODEL_SPEC that can be explained (for a blank picture and its
    predicted class): output shape, layout over the input's grid, how many positions reach the
    score; mark the model's own layer and the one layer=None would choose."""
    loaded = load_or_exit(model_spec, weights, arch, trust_checkpoint)
    example, shapes, layouts = layer_shapes(loaded, channels_last, token_grid)
    automatic = automatic_layer(loaded, example, channels_last)
    reach = _reach_by_layer(loaded, example, channels_last)
    click.echo(f"{'layer':<40} {'type':<22} {'output shape':<22} {'layout':<24} reaches score "
               f"(input {tuple(example.shape)})")
    modules = dict(loaded.model.named_modules())
    for name, tensor in shapes.items():
        if tensor is None or (not show_all and name not in layouts):
            continue
        layout = layouts.get(name)
        described = "-" if layout is None else layout.kind.replace("_", " ") + (
            f" {'x'.join(map(str, layout.grid))}" if layout.grid else "")
        marks = [mark for mark, chosen in (("model's layer", loaded.default_layer),
                                           ("automatic", automatic)) if name == chosen]
        mark = f"  <- {', '.join(marks)}" if marks else ""
        click.echo(f"{name:<40} {type(modules[name]).__name__:<22} "
                   f"{str(tuple(tensor.shape)):<22} {described:<24} {reach.get(name, '-')}{mark}")
    if automatic is None:
        click.echo("layer=None cannot choose a layer for this model: pass --layer", err=True)
