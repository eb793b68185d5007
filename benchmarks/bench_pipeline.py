"""`camlens explain` on a folder against a bare loop, Ray with 1 and 2 actors, and peak memory.

Measured in one run, on the same images and batch size:

- the bare loop: read each file (PIL), preprocess it with the model's own preprocessing, stack
  a batch and run the model on it under ``torch.inference_mode`` (no explanation, nothing
  written): the speed of inference;
- ``camlens explain FOLDER --format npz`` and ``--format png`` (overlays), in this process
  (``camlens.cli.main``), so the interpreter's start is not counted but the model's loading,
  the checks before any work, the index and every file written are;
- ``--engine ray --format npz`` with 1 and 2 actors (a local Ray started once, not counted);
- the peak resident memory of ``camlens explain --format npz`` on 1,000 and 10,000 images, each
  in its own process (``/usr/bin/time``-like: ``resource.getrusage(RUSAGE_CHILDREN)``);
- ``camlens reproduce``'s explanation step (library calls of 200 scenes generated in memory)
  against a bare loop on the same tensors (:func:`reproduce_speed`).

Models: resnet18 (random weights, 224x224 RGB JPEGs, layer4) and digits-gap (the shipped digit
model, 64x64 gray PNGs). Usage::

    python benchmarks/bench_pipeline.py --output benchmarks/PIPELINE.md
    python benchmarks/bench_pipeline.py --quick   # a smoke run: few images, no Ray, no memory
    python benchmarks/bench_pipeline.py --parts speed --device cuda   # the bars on a GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

torch.manual_seed(0)
CPU = torch.device("cpu")


def make_images(folder: Path, count: int, size: int, mode: str, suffix: str) -> Path:
    """``count`` pictures with some structure (blobs on noise) in ``folder``."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    for number in range(count):
        path = folder / f"img{number:06d}{suffix}"
        if path.exists():
            continue
        pixels = generator.integers(0, 60, (size, size, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = generator.integers(0, size - size // 4, 2)
            draw.ellipse([int(x), int(y), int(x) + size // 4, int(y) + size // 4],
                         fill=tuple(int(v) for v in generator.integers(80, 255, 3)))
        image.convert(mode).save(path, quality=90) if suffix == ".jpg" else image.convert(
            mode).save(path)
    return folder


def resnet18_weights(folder: Path) -> Path:
    import torchvision
    from safetensors.torch import save_file

    path = folder / "resnet18.safetensors"
    if not path.exists():
        save_file(torchvision.models.resnet18(weights=None).state_dict(), str(path))
    return path


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(loaded, files: list[Path], batch_size: int,
              device: torch.device = CPU) -> float:
    """Images per second: decode, preprocess, model forward in batches on ``device``, inference
    mode (the model already there)."""
    from PIL import Image

    model = loaded.model.eval()
    start = time.perf_counter()
    for first in range(0, len(files), batch_size):
        tensors = []
        for path in files[first:first + batch_size]:
            with Image.open(path) as image:
                tensors.append(loaded.preprocess(image.convert("RGB")))
        with torch.inference_mode():
            model(torch.cat(tensors).to(device))
    synchronize(device)
    return len(files) / (time.perf_counter() - start)


def library_call(loaded, files: list[Path], batch_size: int, layer: str,
                 device: torch.device = CPU) -> float:
    """Images per second of ``camlens.explain`` alone on the same batches, decoded and
    preprocessed beforehand: the ceiling of any pipeline around it."""
    from PIL import Image

    from camlens import explain

    batches = []
    for first in range(0, len(files), batch_size):
        tensors = []
        for path in files[first:first + batch_size]:
            with Image.open(path) as image:
                tensors.append(loaded.preprocess(image.convert("RGB")))
        batches.append(torch.cat(tensors).to(device))
    start = time.perf_counter()
    for batch in batches:
        explain(loaded.model, batch, "gradcam", layer=layer)
    synchronize(device)
    return len(files) / (time.perf_counter() - start)


def camlens_explain(args: list[str], count: int) -> float:
    """Images per second of ``camlens explain ARGS`` in this process."""
    from camlens.cli import main

    start = time.perf_counter()
    try:
        main(args, standalone_mode=False)
    except SystemExit as stop:
        if stop.code:
            raise RuntimeError(f"camlens explain {' '.join(args)} exited {stop.code}") from None
    return count / (time.perf_counter() - start)


def reproduce_speed(rounds: int, count: int = 1000) -> tuple[list[str], float]:
    """``camlens reproduce``'s explanation step against a bare loop on the same tensors.

    The reproduce tables explain scenes generated in memory (nothing to read or decode, a table
    written at the end rather than a file per image) in library calls of 200 images
    (``camlens.experiments.localization._batched_maps``). Measured here on ``count`` cluttered
    digit scenes (the training split's generator, seed 1: the tables' test scenes are not
    used), digits-gap, the predicted class: per round the bare loop (``model(batch)`` under
    ``torch.inference_mode``, batches of 200) and the maps of Grad-CAM and CAM, each round's
    ratios against that round's bare loop. Returns the table's rows and the seconds it took to
    generate the scenes."""
    from camlens.data import ClutteredDigits, materialize
    from camlens.experiments.localization import _batched_maps
    from camlens.zoo import load

    began = time.perf_counter()
    images = materialize(ClutteredDigits(count, "train", seed=1))["image"]
    generated = time.perf_counter() - began
    model = load("digits-gap").eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for first in range(0, count, 200):
                model(images[first:first + 200])
        return count / (time.perf_counter() - start)

    def maps(method: str) -> float:
        start = time.perf_counter()
        _batched_maps(model, images, method, predicted)
        return count / (time.perf_counter() - start)

    bare(), maps("gradcam")  # warm up
    runs: dict[str, list[float]] = {"bare": [], "gradcam": [], "cam": []}
    for _ in range(rounds):
        runs["bare"].append(bare())
        runs["gradcam"].append(maps("gradcam"))
        runs["cam"].append(maps("cam"))
    rows = [f"| {method} | {statistics.median(runs[method]):.0f} | "
            f"{statistics.median(runs['bare']):.0f} | "
            f"{paired_cell(runs[method], runs['bare'], 0.8)} |" for method in ("gradcam", "cam")]
    return rows, generated


def paired_cell(pipeline: list[float], bare: list[float], bar: float) -> str:
    """The median of the rounds' ratios ``pipeline / bare`` [lowest, highest], and how many
    rounds reach ``bar``."""
    ratios = sorted(one / other for one, other in zip(pipeline, bare, strict=True))
    held = sum(ratio >= bar for ratio in ratios)
    return (f"{statistics.median(ratios):.2f}x [{ratios[0]:.2f}, {ratios[-1]:.2f}], "
            f"{held} of {len(ratios)} at {bar}x or more")


def peak_rss(args: list[str]) -> float:
    """Peak resident memory (MiB) of ``camlens explain ARGS`` in a fresh process (measured by
    a fresh parent, so each figure is its own run's)."""
    camlens = str(Path(sys.executable).with_name("camlens"))
    probe = ("import resource, subprocess, sys; "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
             "stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, camlens, *args], check=True,
                          capture_output=True, text=True)
    return int(done.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128,
                        help="images per speed run of resnet18")
    parser.add_argument("--digit-images", type=int, default=4096,
                        help="images per speed run of digits-gap (enough that a run's fixed "
                             "start, loading the model and the checks, weighs little)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the speed runs; the best of each is kept")
    parser.add_argument("--parts", default="speed,ray,memory,reproduce",
                        help="what to measure, comma-separated: speed, ray, memory, reproduce")
    parser.add_argument("--models", default="resnet18,digits-gap",
                        help="which models, comma-separated: resnet18, digits-gap")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--results", type=Path,
                        help="also put the speed tables in this page's 'pipeline' section "
                             "(benchmarks/RESULTS.md)")
    parser.add_argument("--device", default="cpu",
                        help="where the models run for the speed and Ray parts: cpu, cuda, "
                             "cuda:N (the bars hold per device)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", type=Path, help="folder for the images (default: a temp one)")
    options = parser.parse_args()
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {options.device}: torch sees no CUDA device here")
    gpu = (f"models on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else
           "no GPU")
    count = 32 if options.quick else options.images
    digit_count = 64 if options.quick else options.digit_images
    work = options.work or Path(tempfile.mkdtemp(prefix="camlens-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = set(options.parts.split(","))
    from camlens.models import load_model

    weights = resnet18_weights(work)
    models = {
        "resnet18": (["--model", str(weights), "--arch", "torchvision:resnet18",
                      "--layer", "layer4"],
                     make_images(work / "rgb224", count, 224, "RGB", ".jpg"), 16,
                     lambda: load_model(str(weights), arch="torchvision:resnet18")),
        "digits-gap": (["--model", "digits-gap"],
                       make_images(work / "gray64", digit_count, 64, "L", ".png"), 64,
                       lambda: load_model("digits-gap")),
    }
    models = {name: models[name] for name in options.models.split(",")}
    lines = ["# camlens explain on a folder against a bare loop (issue 16)", "",
             f"Machine: {os.cpu_count()}-core {platform.machine()} CPU, {gpu}, shared with other "
             f"work; torch {torch.__version__}, {torch.get_num_threads()} threads. "
             f"Images per run: {count} (resnet18), {digit_count} (digits-gap), the same for "
             f"every column of a model; each figure the best of {options.rounds} interleaved "
             "rounds (the machine is shared, so single runs vary by 2x or more).", "",
             f"Command: `{shlex.join(['python', 'benchmarks/bench_pipeline.py', *sys.argv[1:]])}`",
             ""]
    started = (f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f} at "
               "the start")
    speed_from = len(lines)
    # the last column: on a CPU one lane (all threads on a batch), on a GPU decoding in
    # threads rather than processes (camlens.scale.processes)
    alone, alone_args = (("npz, one lane", ["--lanes", "1"]) if device.type == "cpu" else
                         ("npz, decoding threads", ["--processes", "0"]))
    if "speed" in parts:
        lines += ["| model | batch | bare loop (img/s) | explain --format npz (img/s) | npz / "
                  "bare | explain, PNG overlays (img/s) | PNG / bare | library call alone "
                  f"(img/s) | npz / library | {alone} (img/s) | {alone} / bare |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ray_rows: list[str] = []
    paired: list[str] = []
    for name, (model_args, folder, batch, load) in models.items():
        layer = "layer4" if name == "resnet18" else "features"
        files = sorted(folder.iterdir())
        count = len(files)
        loaded = load()
        loaded.model.to(device)
        bare_loop(loaded, files[:batch], batch, device)  # warm up
        common = ["explain", str(folder), *model_args, "--batch-size", str(batch),
                  "--device", str(device)]
        out = work / f"out-{name}"
        warm = work / f"warm-{name}"  # the first 2 batches: imports and caches warmed
        warm.mkdir(exist_ok=True)
        for path in files[:2 * batch]:
            if not (warm / path.name).exists():
                (warm / path.name).symlink_to(path)
        for form in ("npz", "png"):
            camlens_explain(["explain", str(warm), *common[2:], "--format", form, "-o",
                             str(out / f"warm-{form}")], 2 * batch)
        # the machine is shared: the measurements interleaved, best of ``rounds`` each, and
        # each round's pipeline against that round's bare loop (seconds apart)
        runs: dict[str, list[float]] = {"bare": [], "npz": [], "png": [], "library": [],
                                        "npz1": []}
        for _ in range(options.rounds if "speed" in parts else 0):
            runs["bare"].append(bare_loop(loaded, files, batch, device))
            for form in ("npz", "png"):
                runs[form].append(camlens_explain(
                    [*common, "--format", form, "-o", str(out / form)], count))
            runs["npz1"].append(camlens_explain(  # one lane, or decoding threads on a GPU
                [*common, "--format", "npz", *alone_args, "-o", str(out / "npz1")], count))
            runs["library"].append(library_call(loaded, files, batch, layer, device))
        if "speed" in parts:
            best = {key: max(values) for key, values in runs.items()}
            bare, npz, png, library = best["bare"], best["npz"], best["png"], best["library"]
            lines.append(f"| {name} | {batch} | {bare:.1f} | {npz:.1f} | {npz / bare:.2f}x | "
                         f"{png:.1f} | {png / bare:.2f}x | {library:.1f} | "
                         f"{npz / library:.2f}x | {best['npz1']:.1f} | "
                         f"{best['npz1'] / bare:.2f}x |")
            print(lines[-1], flush=True)
            paired.append(f"| {name} | {len(runs['bare'])} | "
                          f"{paired_cell(runs['npz'], runs['bare'], 0.8)} | "
                          f"{paired_cell(runs['png'], runs['bare'], 0.5)} | "
                          f"{paired_cell(runs['npz1'], runs['bare'], 0.8)} |")
            print(paired[-1], flush=True)
        if "ray" in parts and not options.quick:
            import ray

            if not ray.is_initialized():
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            speeds = {"local": 0.0, 1: 0.0, 2: 0.0}  # interleaved, best of the rounds
            for _ in range(max(1, options.rounds - 1)):
                speeds["local"] = max(speeds["local"], camlens_explain(
                    [*common, "--format", "npz", "-o", str(out / "npz")], count))
                for actors in (1, 2):
                    speeds[actors] = max(speeds[actors], camlens_explain(
                        [*common, "--engine", "ray", "--actors", str(actors), "--format",
                         "npz", "-o", str(out / f"ray{actors}")], count))
            local = speeds["local"]
            ray_rows.append(f"| {name} | {local:.1f} | {speeds[1]:.1f} | {speeds[2]:.1f} | "
                            f"{speeds[1] / local:.2f}x | {speeds[2] / local:.2f}x |")
            print(ray_rows[-1], flush=True)
    if paired:
        lines += ["", "Each round's pipeline against the bare loop of the same round (measured "
                  "seconds apart, so load on the shared machine falls on both): the median of "
                  "the rounds' ratios [lowest, highest], and in how many rounds the bar held.",
                  "", "| model | rounds | npz / bare (bar 0.8x) | PNG / bare (bar 0.5x) | "
                  f"{alone} / bare |", "|---|---:|---|---|---|", *paired]
    speed_lines = lines[speed_from:]
    if ray_rows:
        lines += ["", "## Ray on this machine (a local Ray started once before; npz; best of "
                  f"{max(1, options.rounds - 1)} interleaved rounds)", "",
                  "| model | local pipeline (img/s) | Ray, 1 actor | Ray, 2 actors | "
                  "1 actor / local | 2 actors / local |", "|---|---:|---:|---:|---:|---:|",
                  *ray_rows]
    reproduce_lines: list[str] = []
    if "reproduce" in parts:
        scenes = 200 if options.quick else 1000
        rows, generated = reproduce_speed(options.rounds, scenes)
        reproduce_lines = [
            "", "## `camlens reproduce`: its explanation step against a bare loop", "",
            "The reproduce tables explain scenes generated in memory, 200 per library call (no "
            f"files to decode, a table written at the end). Here {scenes:,} cluttered digit "
            f"scenes, digits-gap, the predicted class; medians of {options.rounds} rounds, and "
            "each round against its own bare loop (`model(batch)` under "
            "`torch.inference_mode`, the same batches):", "",
            "| method | maps (img/s) | bare loop (img/s) | maps / bare, median [range] |",
            "|---|---:|---:|---|", *rows, "",
            f"Generating the scenes took {generated:.1f} s, once per table (a table then "
            "explains them with every method on two models)."]
        lines += reproduce_lines
        print("\n".join(reproduce_lines), flush=True)
    if "memory" in parts and not options.quick:
        lines += ["", "## Peak memory (RSS) of `camlens explain --format npz`, digits-gap", "",
                  "| images | peak RSS (MiB) |", "|---:|---:|"]
        for size in (1_000, 10_000):
            folder = make_images(work / f"mem{size}", size, 64, "L", ".png")
            rss = peak_rss(["explain", str(folder), "--model", "digits-gap", "--format", "npz",
                            "-o", str(work / f"mem-out{size}")])
            lines.append(f"| {size:,} | {rss:.0f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if options.output:
        options.output.write_text(text)
    if options.results and "speed" in parts:
        from sections import write_section  # benchmarks/sections.py, beside this script

        write_section(options.results, "pipeline", "\n".join([
            "## Data sets: `camlens explain` on a folder against a bare loop (issue 16)", "",
            f"{os.cpu_count()} cores {platform.machine()}, {gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); {started}; best of {options.rounds} "
            "interleaved rounds. The bars: npz at least 0.8x the bare loop's images per "
            "second, overlay PNGs at least 0.5x. More in PIPELINE.md.", "",
            f"Command: `{shlex.join(['python', 'benchmarks/bench_pipeline.py', *sys.argv[1:]])}`",
            "", *speed_lines, *(line.replace("## ", "### ", 1) if line.startswith("## ") else line
                               for line in reproduce_lines)]))


if __name__ == "__main__":
    main()
