"""``camlens explain PATHS``, ``camlens layers MODEL`` and ``camlens methods``."""

from __future__ import annotations

import difflib
import signal
import sys
import threading
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
    Detections,
    TextPrompts,
    class_label,
    parse_target,
    prepare_target,
)
from camlens.methods import METHODS
from camlens.scale.lanes import coarse_switching
from camlens.scale.runs import ENGINES, RunCounts, run_explanations
from camlens.scale.sources import SourceError, local_paths, read_inputs
from camlens.scale.work import WorkSpec, display_image
from camlens.scale.writers import FORMATS, make_writer, output_path

__all__ = ["class_label", "display_image", "explain", "layer_shapes", "layers", "methods",
           "output_path", "parse_target"]


@click.command()
@VERBOSE_OPTION
def methods() -> None:
    """List the explanation methods and their papers, one line each."""
    width = max(len(name) for name in METHODS) + 2
    for name, method in METHODS.items():
        click.echo(f"{name:<{width}} {method.paper}")


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


@click.command()
@click.argument("paths", nargs=-1, required=True)  # strings: a URI's // must survive
@model_options
@click.option("--layer", "-l", "layer_names", multiple=True,
              help="Target layer (default: the model's own, else automatic); repeat for several "
                   "(one map per layer and their fusion, see --fuse).")
@click.option("--fuse", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="How the maps of several --layer are merged (each over its maximum, on the "
                   "finest grid).")
@click.option("--method", "method_names", multiple=True, default=("gradcam",), show_default=True,
              help="Method; repeat for several (a grid is written too).")
@click.option("--counterfactual", is_flag=True,
              help="Gradient methods: negated gradients, the regions whose removal would raise "
                   "the score (Grad-CAM, Sec. 7).")
@click.option("--eigen-smooth", is_flag=True,
              help="The first principal component of the map's per-channel terms.")
@click.option("--aug-smooth", is_flag=True,
              help="Average over the image and its mirror at intensity 0.9, 1 and 1.1.")
@click.option("--smooth-samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="Average over this many noisy copies (SmoothGrad; noise 0.15 of the range).")
@click.option("--target", "-t", default="top1", show_default=True,
              help="top1, topK (e.g. top3), a class index or a class name; box:x0,y0,x1,y1[:CLASS] "
                   "(a detector's box); detections[:SCORE] (every detection above SCORE, one map "
                   "each); class:CLASS (a segmentation class); text:PROMPT[|PROMPT] (CLIP).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created).")
@click.option("--resume", is_flag=True,
              help="Go on with an interrupted run into the same --out: skip the images its "
                   "index says are done (same settings only).")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default=None,
              help="png: overlay pictures (the local engine's default); npz: raw maps and "
                   "scores in shards; parquet: one row per image and target (--engine ray's "
                   "default).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images explained together (default: from the model's input size and the "
                   "device, e.g. 16 for 224x224 on a CPU, 64 on a GPU).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Threads decoding and writing (default: the CPU count, at most 4; 0 does "
                   "everything on one thread).")
@click.option("--lanes", type=click.IntRange(min=1), default=None,
              help="Batches explained at once on a CPU, each on its share of torch's threads "
                   "(default: 2 where the CPU has 2 cores or more; 1: one batch at a time on "
                   "every thread).")
@click.option("--processes", type=click.IntRange(min=0), default=None,
              help="Worker processes decoding the images for one lane, for a model faster than "
                   "one process can feed (default: the cores less one, at most 8, on a GPU; "
                   "none on a CPU).")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: this machine's streaming pipeline; ray: an actor pool of model "
                   "replicas on Ray Data (pip install 'camlens[scale]').")
@click.option("--actors", type=click.IntRange(min=1), default=2, show_default=True,
              help="Model replicas with --engine ray.")
@click.option("--ray-address", default=None,
              help="The Ray cluster for --engine ray (what ray.init takes: auto, "
                   "ray://HOST:10001); default: a local Ray for this run.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Images per npz or Parquet shard (a shard is indexed when it is written).")
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
            counterfactual, eigen_smooth, aug_smooth, smooth_samples, target, out, resume,
            output_format, batch_size, workers, lanes, processes, engine, actors, ray_address,
            shard_size, colormap, alpha, max_pixels, max_aspect, channels_last, token_grid,
            device) -> None:
    """Explain the model's prediction for each image (folders are walked, remote ones too:
    s3://, gs://, hdfs://, abfs://; a .txt list of paths or URIs or a Parquet table with a path
    or image column is read too): one PNG per image and method
    (a grid when several), or npz / Parquet shards of the raw maps, and the index
    (explanations.jsonl as it goes, explanations.json at the end). Images are decoded and
    written in worker threads and explained in batches; --engine ray spreads the work over a
    Ray cluster."""
    from camlens.methods import get_method
    from camlens.viz import get_colormap

    methods = []
    for name in method_names:
        try:
            methods.append(get_method(name))
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--method") from None
    output_format = output_format or ("parquet" if engine == "ray" else "png")
    if engine == "ray" and output_format == "png":
        raise click.BadParameter("overlays are drawn by the local engine; with --engine ray "
                                 "use --format parquet or npz", param_hint="--format")
    if ray_address is not None and engine != "ray":
        raise click.BadParameter("--ray-address needs --engine ray", param_hint="--ray-address")
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
    rule_options = {key: value for key, value in (
        ("counterfactual", counterfactual), ("eigen_smooth", eigen_smooth),
        ("aug_smooth", aug_smooth), ("smooth_samples", smooth_samples)) if value}
    for method in methods:  # an option a method cannot take is a usage error, before any work
        try:
            method(loaded.model, layer, **rule_options)
        except ValueError as error:
            flag = "--" + next((key for key in rule_options if key in str(error)),
                               "method").replace("_", "-")
            raise click.BadParameter(str(error), param_hint=flag) from None
    device = device_option(device)
    loaded.model.to(device)
    try:
        get_colormap(colormap)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--colormap") from None

    try:
        items = read_inputs(list(paths))
    except SourceError as error:
        raise click.UsageError(str(error)) from None
    if not items:
        click.echo(f"warning: no image files in {', '.join(str(p) for p in paths)}", err=True)
        sys.exit(1)
    writable_folder(out)
    settings = {"model": model_spec, "weights": str(weights) if weights else None,
                "arch": arch, "layer": layer, "fuse": fuse if len(resolved) > 1 else None,
                "methods": [m.name for m in methods],
                "target": target, "colormap": colormap, "alpha": alpha,
                "channels_last": channels_last, "token_grid": token_grid, **rule_options}
    if output_format != "png":  # an index of overlays reads as before
        settings["format"] = output_format
    per_image = isinstance(chosen_target, (Detections, TextPrompts))
    if per_image and batch_size != 1:
        click.echo(f"note: --target {target} is prepared for each image (its own "
                   f"{'detections' if isinstance(chosen_target, Detections) else 'prompts'}), "
                   "so images are explained one at a time", err=True)
    spec = WorkSpec(methods=tuple(m.name for m in methods), layer=layer, target=chosen_target,
                    options={"channels_last": channels_last, "token_grid": token_grid,
                             **({"fuse": fuse} if len(resolved) > 1 else {}), **rule_options},
                    prepare=prepare_target, per_image=per_image,
                    pictures=output_format == "png", max_pixels=max_pixels,
                    max_aspect=max_aspect)
    index = RunIndex(out, settings, resume)
    try:
        writer = make_writer(output_format, loaded, out, colormap=colormap, alpha=alpha,
                             inputs=local_paths(items),
                             taken=index.outputs(), shard_size=shard_size, resume=resume)
    except ValueError as error:
        index.close()
        raise click.BadParameter(str(error), param_hint="--format") from None
    counts = RunCounts()
    interrupted = False
    with _sigterm_as_interrupt(), coarse_switching():  # fewer forced GIL hand-offs
        try:
            run_explanations(
                loaded, spec, items, index, writer, counts, engine=engine, device=device,
                batch_size=1 if per_image else batch_size, workers=workers, lanes=lanes,
                processes=processes, actors=actors,
                ray_address=ray_address,
                on_note=lambda key, note: click.echo(f"note: {key}: {note}", err=True),
                on_error=lambda error: click.echo(f"error: {error}", err=True),
                progress=sys.stderr.isatty())
        except KeyboardInterrupt:
            interrupted = True
        except ValueError as error:  # Ray missing or refusing
            raise click.UsageError(str(error)) from None
        finally:
            summary = index.close()
    click.echo(f"explained {counts.explained}, failed {counts.failed}, skipped "
               f"{counts.skipped} (done before) of {len(items)} images with "
               f"{', '.join(m.name for m in methods)}; wrote {summary}")
    if counts.failures:
        click.echo(f"{len(counts.failures)} file(s) failed:", err=True)
        for failure in counts.failures:
            click.echo(f"  {failure}", err=True)
    if interrupted:
        click.echo("interrupted: the index holds what was done; rerun with --resume to go on",
                   err=True)
        sys.exit(130)
    if counts.failures:
        sys.exit(1)


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
