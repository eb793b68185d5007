"""Activation maximization steps per second: camlens against torch-lucent and a bare loop.

torchvision resnet50 with random weights (nothing downloaded), 224x224, one batch of four units:
the mean of channels 0 to 3 of ``layer4`` (one picture per channel), decorrelated Fourier
parameterisation, Adam at lr 0.05, ImageNet normalisation. Rows, measured in one run:

- **camlens** ``maximize`` with random jitter ±8 px, scale ±5%, rotation ±10° (one affine
  resampling per picture and step), redirected ReLU gradients off (lucent has none) and on
  (camlens' default does it for the first 16 steps only, then the true gradient);
- **torch-lucent** 0.1.8 ``render_vis`` with its ``standard_transforms`` (pad 12, jitter 8,
  scale 0.95 to 1.05, rotate ±10°, jitter 4: four resamplings) and ``param.image(224, batch=4,
  fft=True, decorrelate=True)``; it calls ``loss.backward()``, so the model's weight gradients
  are computed (and accumulated in ``.grad``) at every step, and it hooks every module;
- **bare loop**: the floor; a plain pixel tensor, Adam, one forward hook on ``layer4``,
  ``torch.autograd.grad`` with the weights' ``requires_grad`` off, no transformation, no
  parameterisation.

lucent is installed without its dependencies, so pip cannot touch torch:
``pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1 decorator`` (lucent 0.1.8 pins
``kornia<=0.4.1`` and lists IPython, pytest and coveralls among its requirements); without it the
lucent row is left out.

captum 0.9.0 (the release installed here) has no ``captum.optim`` (it lives on captum's optim-wip
branch, unreleased), so it has no row. lucent imports IPython for notebooks; the benchmark puts an
empty ``IPython.display`` module in its place (nothing of it is called with ``show_image=False``).

Timing: each row is run once to warm up, then, ``--repeats`` times and interleaved with the other
rows (noise hits all), a run of 1 step and a run of ``--steps`` steps; the rate is
``(steps - 1) / (median time of the long run - median time of the 1-step run)``, so what a run
does once (building the parameterisation, lucent's hooks on every module, camlens' forwards at
the start and the end) cancels out. Threads: torch's
default. Run ``python benchmarks/bench_maximize.py --output benchmarks/MAXIMIZE.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from importlib import metadata

import torch
import torchvision

from camlens.representations.maximize import maximize
from camlens.representations.objectives import Channel
from camlens.representations.transforms import RandomTransforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
UNITS = 4
SIZE = 224


def camlens_run(model, steps: int, redirect: int) -> Callable[[], None]:
    def run() -> None:
        maximize(model, [Channel("layer4", c) for c in range(UNITS)], (3, SIZE, SIZE),
                 steps=steps, lr=0.05, seed=0, param="fourier",
                 transforms=RandomTransforms(8, 0.05, 10, seed=0), mean=MEAN, std=STD,
                 redirect_steps=redirect)
    return run


def lucent_run(model, steps: int) -> Callable[[], None] | None:
    if "IPython" not in sys.modules:  # lucent.misc.io.showing imports it for notebooks
        ipython = types.ModuleType("IPython")
        ipython.display = types.ModuleType("IPython.display")  # type: ignore[attr-defined]
        sys.modules["IPython"], sys.modules["IPython.display"] = ipython, ipython.display
    try:
        from lucent.optvis import objectives, param, render, transform
    except ImportError as error:
        print(f"torch-lucent not importable: {error}", file=sys.stderr)
        return None

    def run() -> None:
        objective = sum(objectives.channel("layer4", c, batch=c) for c in range(UNITS))
        render.render_vis(model, objective,
                          lambda: param.image(SIZE, batch=UNITS, fft=True, decorrelate=True),
                          transforms=transform.standard_transforms, thresholds=(steps,),
                          show_image=False, progress=False, preprocess=True)
    return run


def bare_run(model, steps: int) -> Callable[[], None]:
    def run() -> None:
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        captured = {}
        handle = model.layer4.register_forward_hook(
            lambda m, a, o: captured.__setitem__("out", o))
        try:
            pixels = torch.rand(UNITS, 3, SIZE, SIZE, requires_grad=True)
            optimizer = torch.optim.Adam([pixels], lr=0.05)
            mean = torch.tensor(MEAN)[:, None, None]
            std = torch.tensor(STD)[:, None, None]
            channels = torch.arange(UNITS)
            for _ in range(steps):
                model((pixels - mean) / std)
                out = captured["out"]
                loss = -out[channels, channels].mean(dim=(1, 2)).sum()
                (pixels.grad,) = torch.autograd.grad(loss, [pixels])
                optimizer.step()
        finally:
            handle.remove()
            for p, flag in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(flag)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    load_before = os.getloadavg()
    rows: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "bare loop (pixels, Adam, autograd.grad, no transforms)":
            (bare_run(model, 1), bare_run(model, args.steps)),
        "camlens maximize (Fourier, jitter/scale/rotate, redirected ReLU off: steps after "
        "the 16th)":
            (camlens_run(model, 1, 0), camlens_run(model, args.steps, 0)),
        "camlens maximize (the same, redirected ReLU on: the first 16 steps)":
            (camlens_run(model, 1, args.steps), camlens_run(model, args.steps, args.steps)),
    }
    lucent_warm, lucent_timed = lucent_run(model, 1), lucent_run(model, args.steps)
    if lucent_warm is not None and lucent_timed is not None:
        rows["torch-lucent render_vis (Fourier, standard_transforms)"] = (lucent_warm,
                                                                          lucent_timed)
    for warm, _ in rows.values():
        warm()
    short: dict[str, list[float]] = {name: [] for name in rows}
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, (one_step, timed) in rows.items():
            for run, times in ((one_step, short[name]), (timed, seconds[name])):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
    for parameter in model.parameters():  # lucent accumulated weight gradients
        parameter.grad = None
    load_after = os.getloadavg()
    rate = {name: (args.steps - 1) / (statistics.median(seconds[name])
                                      - statistics.median(short[name])) for name in rows}
    floor = rate[next(iter(rows))]
    try:
        lucent_version = metadata.version("torch-lucent")
    except metadata.PackageNotFoundError:
        lucent_version = "not installed"
    lines = [
        "# Activation maximization: steps per second",
        "",
        f"`python benchmarks/bench_maximize.py --steps {args.steps} --repeats {args.repeats}"
        f"{' --output ' + args.output if args.output else ''}`: torchvision resnet50, random "
        f"weights, eval mode, {UNITS} units (channels 0-3 of layer4, one picture each) at "
        f"{SIZE}x{SIZE}, Adam lr 0.05; (steps - 1) / (median time of {args.repeats} runs of "
        f"{args.steps} steps - median of {args.repeats} runs of 1 step); "
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, torch-lucent "
        f"{lucent_version}, CPU. Load average (1 min) {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after: other jobs shared the CPUs, so the ratios (measured "
        "interleaved) say more than the absolute rates.",
        "",
        "| implementation | steps/s | seconds/step | vs bare loop |",
        "|---|---:|---:|---:|",
    ]
    for name in rows:
        lines.append(f"| {name} | {rate[name]:.3f} | {1 / rate[name]:.2f} | "
                     f"{rate[name] / floor:.2f}x |")
    lines += [
        "",
        "Differences: lucent resamples four times per step (pad, jitter, scale, rotate, jitter) "
        "where camlens resamples once (one affine map), and lucent's `loss.backward()` also "
        "computes every weight gradient of resnet50 (camlens and the bare loop differentiate "
        "with respect to the picture only). What a run does once (camlens' forwards at the "
        "start and the end without transformations, lucent's hooks) cancels in the rate. "
        "captum 0.9.0 has no captum.optim: no row.",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(table)


if __name__ == "__main__":
    main()
