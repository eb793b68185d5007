"""Does a GAP head cost accuracy? digits-gap against digits-fc over seeds and capacity
(``camlens reproduce gap-fc``).

The CAM paper (Zhou et al., CVPR 2016, Table 1) trades the fully connected layers of a network
for global average pooling and one linear layer and reports a small cost on ImageNet
(VGGnet-GAP 33.4% against VGGnet 31.2% top-1 error): a question of capacity on a hard task. At
99% accuracy on the cluttered digits nothing of the kind can show, so the table has two parts:

(a) the full recipe of the shipped models (16,000 training images, 8 epochs), both heads, several
    training seeds: per-seed test accuracy on the fixed 2,000 test digits with its Wilson
    interval, the mean over seeds with a 95% Student-t interval
    (:func:`camlens.metrics.seed_interval`), and per seed a paired exact McNemar test
    (:func:`camlens.metrics.paired_tests.mcnemar_exact`, same test images); jointly, the
    seed-paired difference in error (GAP - FC) with its t interval;
(b) a harder regime where capacity can matter: few training images and the trunk's width swept
    (:func:`camlens.zoo.digits.digits_trunk`; ``width`` scales every layer of both heads), both
    heads, the same seeds: test error against parameter count, a PNG figure and the per-seed
    numbers as JSON.

Every network is trained by :func:`camlens.experiments.training.run_epochs`, the loop behind
``camlens train`` (seeded the same way: ``torch.manual_seed(seed)`` then build, so width 1 on the
full recipe is ``camlens train digits-gap --seed N``). The sweep's design (2,000 training images,
15 epochs, widths 1/8 to 1) was fixed from its cost before any run; nothing was chosen on test
images. Seed 0 of the full recipe is scored from the shipped weights, which
``camlens train digits-gap --seed 0`` (and digits-fc) made with this loop and seeding; seeds 1
and up are trained here. The sweep runs first (every seed), then the full recipe seed by seed.
Runs are recorded in the JSON as they finish; a rerun with the same sizes reuses them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from camlens.data.digits import materialize
from camlens.experiments.saved_runs import saved_runs
from camlens.experiments.training import TrainingRecipe, datasets, run_epochs
from camlens.metrics.intervals import seed_interval, wilson_interval
from camlens.metrics.paired_tests import discordant_counts, mcnemar_exact
from camlens.targets import predicted_classes
from camlens.zoo.digits import DigitsFC, DigitsGAP
from camlens.zoo.registry import get_weights

__all__ = ["DEFAULT_SEEDS", "DEFAULT_WIDTHS", "HEADS", "gap_fc_figure", "gap_fc_table",
           "paired_summary", "train_head"]

HEADS: dict[str, type[nn.Module]] = {"digits-gap": DigitsGAP, "digits-fc": DigitsFC}
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_WIDTHS = (0.125, 0.25, 0.5, 1.0)


def train_head(head: str, width: float, train_data: dict[str, torch.Tensor],
               recipe: TrainingRecipe, seed: int, progress: bool = False) -> nn.Module:
    """``head`` (``digits-gap`` or ``digits-fc``) at ``width``, trained on ``train_data`` with
    ``recipe`` from ``seed`` by the loop of ``camlens train`` (in eval mode)."""
    from camlens.experiments.training import ClassificationTask

    torch.manual_seed(seed)
    model = HEADS[head](width=width)
    task = ClassificationTask()
    run_epochs(model, task, train_data, len(train_data["label"]), recipe, seed,
               progress=progress, description=f"training {head} x{width:g} seed {seed}")
    return model


def _shipped(head: str, recipe: TrainingRecipe, seed: int) -> tuple[nn.Module, float] | None:
    """The shipped weights of ``head`` with their stored train error (%), when they were made
    by ``camlens train HEAD --seed SEED`` with exactly ``recipe``'s sizes; else None."""
    weights = get_weights(head)
    stored = weights.metadata
    made = {"seed": str(seed), "train_size": str(recipe.train_size),
            "epochs": str(recipe.epochs), "command": f"camlens train {head} --seed {seed}"}
    if recipe != TrainingRecipe():
        return None
    if any(stored.get(key) != value for key, value in made.items()):
        return None
    return weights.load(), round(100 * (1 - float(stored["train_accuracy"])), 3)


def _correct(model: nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    return predicted_classes(model, data["image"], batch_size=500) == data["label"]


def _key(run: dict) -> tuple:
    return (run["part"], run["head"], run["width"], run["train_size"], run["epochs"],
            run["seed"], run["test_size"])


def paired_summary(runs: Sequence[dict]) -> dict:
    """Per seed the McNemar table of digits-gap against digits-fc on the same test images
    (``b``: only GAP right, ``c``: only FC right, exact p), and over seeds the mean of
    ``error(GAP) - error(FC)`` in % with its 95% t interval (None below two seeds)."""
    by_seed: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_seed.setdefault(run["seed"], {})[run["head"]] = run
    seeds = []
    for seed, pair in sorted(by_seed.items()):
        if set(pair) != set(HEADS):
            continue
        gap, fc = pair["digits-gap"], pair["digits-fc"]
        b, c = discordant_counts([ch == "1" for ch in gap["correct"]],
                                 [ch == "1" for ch in fc["correct"]])
        seeds.append({"seed": seed, "gap_errors": gap["test_errors"],
                      "fc_errors": fc["test_errors"], "only_gap_right": b, "only_fc_right": c,
                      "p": mcnemar_exact(b, c),
                      "difference": 100 * (gap["test_errors"] - fc["test_errors"])
                      / gap["test_size"]})
    differences = [row["difference"] for row in seeds]
    interval = seed_interval(differences) if len(differences) >= 2 else None
    return {"seeds": seeds, "difference": interval}


def _errors(runs: Sequence[dict], key: str = "test_error") -> list[float]:
    return [run[key] for run in runs]


def _mean_cell(values: Sequence[float], digits: int = 2) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    mean, low, high = seed_interval(values)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _reading(interval: tuple[float, float, float] | None) -> str:
    if interval is None:
        return "one seed: no interval"
    mean, low, high = interval
    if low > 0:
        return "GAP worse"
    if high < 0:
        return "GAP better"
    return "no difference shown"


_FLOOR = 0.1  # the figure's lowest error (%), where clipped intervals end


def gap_fc_figure(runs: Sequence[dict], path: Path) -> None:
    """Test error (%) against parameters (log scale) for both heads: the width sweep (means
    over seeds with their 95% t intervals, seeds as dots) and the full recipe."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.4))
    axes = figure.subplots()
    colours = {"digits-gap": "tab:blue", "digits-fc": "tab:orange"}
    for part, marker, style in (("sweep", "o", "-"), ("full", "s", "none")):
        for head, colour in colours.items():
            chosen = [run for run in runs if run["part"] == part and run["head"] == head]
            widths = sorted({run["width"] for run in chosen})
            if not widths:
                continue
            xs, means, lows, highs = [], [], [], []
            for width in widths:
                group = [run for run in chosen if run["width"] == width]
                errors = _errors(group)
                xs.append(group[0]["parameters"])
                axes.scatter([group[0]["parameters"]] * len(errors),
                             [max(error, _FLOOR) for error in errors], s=10,
                             color=colour, alpha=0.35, marker=marker)
                mean, low, high = (seed_interval(errors) if len(errors) >= 2
                                   else (errors[0],) * 3)
                mean = max(mean, _FLOOR)
                means.append(mean)
                # Log scale: the t interval is drawn clipped to [0.1%, 100%].
                lows.append(mean - max(low, _FLOOR))
                highs.append(min(high, 100.0) - mean)
            size = chosen[0]["train_size"]
            axes.errorbar(xs, means, yerr=[lows, highs], color=colour, marker=marker,
                          linestyle=style, capsize=3,
                          label=f"{head}, {size:,} training images"
                          + (" (width sweep)" if part == "sweep" else " (full recipe)"))
    axes.set_xscale("log")
    axes.set_xlabel("parameters")
    axes.axhline(90.0, color="grey", linestyle=":", linewidth=1, label="chance (90% error)")
    axes.set_yscale("log")
    axes.set_ylim(_FLOOR, 100.0)
    axes.set_ylabel("test error (%, log scale), fixed test digits")
    axes.set_title("GAP vs FC head: error against capacity\n(mean over seeds, 95% t interval "
                   "clipped to the axis; dots: seeds)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, bbox_inches="tight", dpi=120)


def gap_fc_table(out: Path | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = None, *,
                 seeds: Sequence[int] = DEFAULT_SEEDS, widths: Sequence[float] = DEFAULT_WIDTHS,
                 test_size: int = 2000, train_size: int = 16000, epochs: int = 8,
                 sweep_train_size: int = 2000, sweep_epochs: int = 15,
                 resume: bool = True, use_shipped: bool = True) -> str:
    """Train both heads over ``seeds`` on the full recipe (``train_size`` images, ``epochs``)
    and over ``widths`` on ``sweep_train_size`` images (``sweep_epochs``), score them on the
    fixed ``test_size`` test digits and return the markdown; with ``out``, write ``gap_fc.png``
    and ``gap_fc.json`` (every run, per-item correctness included) next to it. The JSON is
    rewritten after every run; with ``resume``, runs already in it with the same sizes are
    reused. With ``use_shipped``, a full-recipe network whose shipped weights were made by
    ``camlens train NAME --seed N`` with the same recipe (digits-gap and digits-fc, seed 0) is
    scored from those weights instead of being trained again (the same loop and seeding; the
    run's ``source`` says which)."""
    say = log or (lambda message: None)
    started = time.perf_counter()
    json_path = Path(out).with_suffix(".json") if out is not None else None
    previous = saved_runs(json_path, _key) if resume else {}
    base = TrainingRecipe()
    parts = {"full": (replace(base, epochs=epochs, train_size=train_size), (1.0,)),
             "sweep": (replace(base, epochs=sweep_epochs, train_size=sweep_train_size),
                       tuple(widths))}
    test_data: dict[str, torch.Tensor] | None = None
    runs: list[dict] = []

    planned = len(seeds) * len(HEADS) * (1 + len(widths))
    figure_name = Path(out).with_suffix(".png").name if out is not None else "gap_fc.png"

    def page() -> str:
        return _markdown(runs, parts, seeds, test_size, time.perf_counter() - started,
                         sum(run["seconds"] for run in runs), figure_name, planned)

    def save(complete: bool, markdown: str | None = None) -> None:
        """The JSON, figure and page so far, after every run (a run cut short leaves a
        consistent page saying how far it got)."""
        if json_path is None or out is None:
            return
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"complete": complete, "runs": runs}, indent=1))
        gap_fc_figure(runs, Path(out).with_suffix(".png"))
        Path(out).write_text(markdown if markdown is not None else page())

    # The cheap sweep first, every seed, then the full recipe seed by seed: a run cut short
    # still has whole seeds of each part.
    order = [("sweep", seed) for seed in seeds] + [("full", seed) for seed in seeds]
    for part, seed in order:
        recipe, part_widths = parts[part]
        train_data = None
        for width in part_widths:
            for head in HEADS:
                template = {"part": part, "head": head, "width": float(width),
                            "train_size": recipe.train_size, "epochs": recipe.epochs,
                            "seed": seed, "test_size": test_size}
                if _key(template) in previous:
                    runs.append(previous[_key(template)])
                    say(f"gap-fc: reused {part} {head} x{width:g} seed {seed}")
                    continue
                if test_data is None:
                    say(f"gap-fc: generating {test_size} test digits")
                    test_data = materialize(datasets("cluttered", 10, test_size, 0)[1],
                                            keys=("image", "label"), progress=progress)
                run_started = time.perf_counter()
                shipped = (_shipped(head, recipe, seed) if use_shipped and part == "full"
                           and width == 1.0 else None)
                if shipped is not None:
                    model, train_error = shipped
                    source = f"shipped weights ({get_weights(head).metadata['command']})"
                else:
                    if train_data is None:
                        say(f"gap-fc: generating {recipe.train_size} training digits, seed "
                            f"{seed}")
                        train_data = materialize(
                            datasets("cluttered", recipe.train_size, 10, seed)[0],
                            keys=("image", "label"), progress=progress)
                    model = train_head(head, width, train_data, recipe, seed, progress)
                    train_error = round(
                        100 * float((~_correct(model, train_data)).float().mean()), 3)
                    source = "trained here"
                correct = _correct(model, test_data)
                run = {**template,
                       "parameters": sum(p.numel() for p in model.parameters()),
                       "test_errors": int((~correct).sum()),
                       "test_error": round(100 * float((~correct).float().mean()), 3),
                       "train_error": train_error,
                       "source": source,
                       "seconds": round(time.perf_counter() - run_started, 1),
                       "correct": "".join("1" if hit else "0" for hit in correct.tolist())}
                runs.append(run)
                save(False)
                say(f"gap-fc: {part} {head} x{width:g} seed {seed} ({source}): test error "
                    f"{run['test_error']:.2f}%, train error {run['train_error']:.2f}% "
                    f"({run['seconds']:.0f} s)")
    markdown = page()
    save(True, markdown)
    return markdown


def _markdown(runs: list[dict], parts: dict, seeds: Sequence[int], test_size: int,
              seconds: float, trained_seconds: float, figure_name: str,
              planned: int | None = None) -> str:
    full_recipe, _ = parts["full"]
    sweep_recipe, widths = parts["sweep"]
    machine = (f"{os.cpu_count()}-core {platform.machine()}, "
               f"{'CUDA available' if torch.cuda.is_available() else 'no GPU'} (run on the "
               f"CPU), torch {torch.__version__.split('+')[0]}, "
               f"{torch.get_num_threads()} torch thread(s)")
    full = [run for run in runs if run["part"] == "full"]
    sweep = [run for run in runs if run["part"] == "sweep"]
    lines = [
        "# Does a GAP head cost accuracy? digits-gap vs digits-fc over seeds and capacity",
        "",
        "Zhou et al., *Learning Deep Features for Discriminative Localization*, CVPR 2016, "
        "Table 1 (VGGnet-GAP 33.4% against VGGnet 31.2% top-1 error on ImageNet), asked on the "
        "cluttered digits: `camlens reproduce gap-fc --out docs/gap_fc.md` "
        f"(seeds {', '.join(map(str, seeds))}; {seconds / 60:.1f} min wall, "
        f"{trained_seconds / 60:.1f} min of it training and scoring, on {machine}).",
        "",
        *([f"**Partial: {len(runs)} of the {planned} runs done when this page was written.**",
           ""] if planned is not None and len(runs) < planned else []),
        f"- Test images: the fixed {test_size:,} cluttered test digits (test part of the source "
        "digits, seed 0), the same for every network, so the heads are compared pairwise.",
        "- Heads: `DigitsGAP` (trunk -> global average pooling -> linear) and `DigitsFC` (trunk "
        "-> 1x1 conv -> max pool -> two fully connected layers, dropout 0.3); `width` scales "
        "every layer's channels and units (width 1: the shipped networks).",
        f"- Recipe (both parts): `camlens train`'s loop, AdamW, one-cycle learning rate "
        f"{full_recipe.learning_rate:g}, weight decay {full_recipe.weight_decay:g}, batch "
        f"{full_recipe.batch_size}; seeded like `camlens train NAME --seed N`.",
        f"- (a) Full recipe: {full_recipe.train_size:,} training images, "
        f"{full_recipe.epochs} epochs, width 1.",
        f"- (b) Capacity sweep: {sweep_recipe.train_size:,} training images (train part, the "
        f"seed's first {sweep_recipe.train_size:,}), {sweep_recipe.epochs} epochs, widths "
        f"{', '.join(f'{width:g}' for width in widths)}. The design was fixed from its cost "
        "before any run; no choice looked at test images.",
        "",
        "## (a) Full recipe, per seed",
        "",
        "Test accuracy % [95% Wilson interval over the test images]; McNemar: test images only "
        "GAP gets right (b) and only FC gets right (c), exact two-sided p.",
        "",
        "| seed | digits-gap | digits-fc | GAP errors | FC errors | b | c | McNemar p |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    shipped = sorted({run["seed"] for run in full
                      if run.get("source", "").startswith("shipped")})
    if shipped:
        lines[-3:-3] = [f"Seed {', '.join(map(str, shipped))}: the shipped weights (made by "
                        "`camlens train NAME --seed N`: the same loop, seeding and data), scored "
                        "here; the other seeds trained here.", ""]
    paired = paired_summary(full)
    by_seed = {(run["seed"], run["head"]): run for run in full}
    for row in paired["seeds"]:
        cells = []
        for head in HEADS:
            run = by_seed[(row["seed"], head)]
            right = run["test_size"] - run["test_errors"]
            low, high = wilson_interval(right, run["test_size"])
            cells.append(f"{100 * right / run['test_size']:.2f} "
                         f"[{100 * low:.2f}, {100 * high:.2f}]")
        lines.append(f"| {row['seed']} | {cells[0]} | {cells[1]} | {row['gap_errors']} | "
                     f"{row['fc_errors']} | {row['only_gap_right']} | {row['only_fc_right']} | "
                     f"{row['p']:.3f} |")
    lines += ["", "Over the seeds (mean [95% t interval of the mean]):", "",
              "| | test error % | train error % | parameters |", "|---|---:|---:|---:|"]
    for head in HEADS:
        group = [run for run in full if run["head"] == head]
        if group:
            lines.append(f"| {head} | {_mean_cell(_errors(group))} | "
                         f"{_mean_cell(_errors(group, 'train_error'))} | "
                         f"{group[0]['parameters']:,} |")
    difference = paired["difference"]
    significant = sum(row["p"] < 0.05 for row in paired["seeds"])
    lines += ["", "Error of GAP minus error of FC, paired by seed: "
              + (f"{difference[0]:+.2f} points [{difference[1]:+.2f}, {difference[2]:+.2f}] "
                 f"({_reading(difference)})" if difference else "one seed, no interval")
              + f"; McNemar p < 0.05 in {significant} of {len(paired['seeds'])} seeds.", ""]
    lines += ["## (b) Capacity sweep", "",
              f"Test error % on the {test_size:,} test digits, mean over seeds [95% t interval]; "
              "GAP - FC: the seed-paired difference in error (points).", "",
              "| width | GAP parameters | GAP test error | GAP train error | FC parameters | "
              "FC test error | FC train error | GAP - FC | reading |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    sweep_pairs = {}
    for width in widths:
        at_width = [run for run in sweep if run["width"] == width]
        gap = [run for run in at_width if run["head"] == "digits-gap"]
        fc = [run for run in at_width if run["head"] == "digits-fc"]
        if not gap or not fc:
            continue
        pair = paired_summary(at_width)
        sweep_pairs[width] = pair
        diff = pair["difference"]
        lines.append(
            f"| {width:g} | {gap[0]['parameters']:,} | {_mean_cell(_errors(gap))} | "
            f"{_mean_cell(_errors(gap, 'train_error'))} | {fc[0]['parameters']:,} | "
            f"{_mean_cell(_errors(fc))} | {_mean_cell(_errors(fc, 'train_error'))} | "
            + (f"{diff[0]:+.2f} [{diff[1]:+.2f}, {diff[2]:+.2f}]" if diff else "-")
            + f" | {_reading(diff)} |")
    lines += ["", "At about equal parameters (GAP at twice FC's width; same seeds, so paired by "
              "seed):", "", "| GAP width (parameters) | FC width (parameters) | GAP test error | "
              "FC test error | GAP - FC | reading |", "|---|---|---:|---:|---:|---|"]
    for width in widths:
        gap = [run for run in sweep if run["head"] == "digits-gap" and run["width"] == width]
        fc = [run for run in sweep if run["head"] == "digits-fc" and run["width"] == width / 2]
        if not gap or not fc:
            continue
        pair = paired_summary([*gap, *fc])
        diff = pair["difference"]
        lines.append(
            f"| {width:g} ({gap[0]['parameters']:,}) | {width / 2:g} ({fc[0]['parameters']:,}) "
            f"| {_mean_cell(_errors(gap))} | {_mean_cell(_errors(fc))} | "
            + (f"{diff[0]:+.2f} [{diff[1]:+.2f}, {diff[2]:+.2f}]" if diff else "-")
            + f" | {_reading(diff)} |")
    lines += ["", "Per seed (test error %):", "",
              "| part | head | width | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
              "|---|---|---:|" + "---:|" * len(seeds)]
    for part in ("full", "sweep"):
        for head in HEADS:
            for width in sorted({run["width"] for run in runs if run["part"] == part}):
                per_seed = {run["seed"]: run for run in runs if run["part"] == part
                            and run["head"] == head and run["width"] == width}
                if per_seed:
                    lines.append(f"| {part} | {head} | {width:g} | " + " | ".join(
                        f"{per_seed[seed]['test_error']:.2f}" if seed in per_seed else "-"
                        for seed in seeds) + " |")
    lines += ["", f"![test error against parameters]({figure_name})", "",
              "Every run (per-image correctness included): "
              f"`{Path(figure_name).with_suffix('.json').name}`.", ""]
    return "\n".join(lines)
