"""Transferability of features by depth on the digits (``camlens reproduce transfer``): Yosinski
et al., NeurIPS 2014, Figure 2, scaled down (:mod:`camlens.representations.transfer` has the
protocol and the network).

Per seed: a random A/B split of the ten classes, baseA and baseB, baseB-2x (baseB trained for
twice the epochs: the budget of a fine-tuned network, whose copied layers train twice), and for
n = 1..5 the networks AnB, AnB+, BnB and BnB+ trained on B and scored on B's test images.
Reported per condition and n: the mean over the seeds and a 95% Student-t interval of that mean.
The architecture, recipe and sizes were settled in short trials of base networks scored on the
test part's images of seed 0 (camlens's usual test set), so those images served as validation
data; the table is scored on test-part images of :data:`TABLE_TEST_SEED`, never seen while
choosing. The seeds are 0, 1, 2, the first three.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from camlens.metrics.intervals import seed_interval
from camlens.representations.transfer import (
    CONDITIONS,
    TransferNet,
    TransferRecipe,
    transfer_data,
    transfer_experiment,
)

__all__ = ["DEFAULT_SEEDS", "TABLE_TEST_SEED", "mean_interval", "summarize", "transfer_figure",
           "transfer_table"]

#: The test images of the table: test-part digits of a seed the recipe's trials never scored
#: (they used seed 0, camlens's usual test set, as validation data).
TABLE_TEST_SEED = 3

DEFAULT_SEEDS = (0, 1, 2)
# Two-sided 95% Student-t quantiles by degrees of freedom (no scipy needed).
def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its 95% Student-t interval
    (:func:`camlens.metrics.seed_interval`; a single value has no interval: low = high = mean)."""
    values = list(values)
    if not values:
        raise ValueError("no values")
    if len(values) < 2:
        return values[0], values[0], values[0]
    return seed_interval(values)


def summarize(records: list[dict]) -> dict[tuple[str, int], tuple[float, float, float]]:
    """``{(condition, n): (mean, low, high)}`` over the seeds; baseB is ``("baseB", 0)``."""
    groups: dict[tuple[str, int], list[float]] = {}
    for record in records:
        groups.setdefault((record["condition"], record["n"]), []).append(record["accuracy"])
    return {key: mean_interval(values) for key, values in groups.items()}


def transfer_figure(records: list[dict], path: Path) -> Path:
    """Accuracy on B's test images against n, as the paper's Figure 2: every network as a dot,
    the mean of each condition as a line, baseB as a band (mean and 95% interval)."""
    from matplotlib.figure import Figure

    summary = summarize(records)
    depths = sorted({record["n"] for record in records if record["n"] > 0})
    colours = {"AnB": "tab:red", "AnB+": "tab:orange", "BnB": "tab:blue", "BnB+": "tab:cyan"}
    figure = Figure(figsize=(7.5, 4.5), dpi=120)
    ax = figure.add_subplot()
    base_mean, base_low, base_high = summary[("baseB", 0)]
    ax.axhspan(base_low, base_high, color="0.85", label="baseB (95% interval)")
    ax.axhline(base_mean, color="0.3", linewidth=1)
    offsets = {name: (index - 1.5) * 0.06 for index, name in enumerate(CONDITIONS)}
    for name in CONDITIONS:
        if not any(record["condition"] == name for record in records):
            continue
        points = [(record["n"] + offsets[name], record["accuracy"]) for record in records
                  if record["condition"] == name]
        ax.scatter(*zip(*points, strict=True), s=10, color=colours[name], alpha=0.5)
        means = [summary[(name, n)][0] for n in depths]
        ax.plot([n + offsets[name] for n in depths], means, "-o", color=colours[name],
                label=name, markersize=4)
    base_points = [record["accuracy"] for record in records if record["condition"] == "baseB"]
    ax.scatter([0] * len(base_points), base_points, s=12, color="0.3")
    if ("baseB-2x", 0) in summary:
        ax.axhline(summary[("baseB-2x", 0)][0], color="0.3", linewidth=1, linestyle="--",
                   label="baseB, twice the epochs (mean)")
    ax.set_xticks([0, *depths])
    ax.set_xlabel("layer n at which the network is chopped and retrained (0: baseB)")
    ax.set_ylabel("top-1 accuracy on B's test images")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Transferability by depth on cluttered digits (Yosinski et al. 2014, Fig. 2)",
                 fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path


def _cell(value: tuple[float, float, float]) -> str:
    mean, low, high = value
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _findings(summary: dict, depths: list[int]) -> list[str]:
    """Sentences comparing the measured curve with the paper's shape, from the numbers."""
    base = summary[("baseB", 0)][0]
    lines = []

    def gap(name: str, n: int) -> float:
        return 100 * (summary[(name, n)][0] - base)

    if all(("BnB", n) in summary for n in depths):
        worst = min(depths, key=lambda n: summary[("BnB", n)][0])
        lines.append(f"- BnB (frozen copies of baseB's own layers): lowest at n = {worst}, "
                     f"{gap('BnB', worst):+.1f} points from baseB; at each n: "
                     + ", ".join(f"n={n} {gap('BnB', n):+.1f}" for n in depths) + ".")
    if all(("AnB", n) in summary for n in depths):
        specific = {n: 100 * (summary[("AnB", n)][0] - summary[("BnB", n)][0]) for n in depths}
        lines.append("- AnB (frozen copies of baseA's layers) from baseB: "
                     + ", ".join(f"n={n} {gap('AnB', n):+.1f}" for n in depths)
                     + "; AnB - BnB (specificity to A's classes beyond co-adaptation): "
                     + ", ".join(f"n={n} {specific[n]:+.1f}" for n in depths) + ".")
    for name in ("AnB+", "BnB+"):
        if all((name, n) in summary for n in depths):
            average = statistics.fmean(gap(name, n) for n in depths)
            lines.append(f"- {name} (fine-tuned) from baseB: "
                         + ", ".join(f"n={n} {gap(name, n):+.1f}" for n in depths)
                         + f"; mean over n {average:+.1f} points.")
    if ("baseB-2x", 0) in summary:
        lines.append(f"- baseB trained for twice the epochs (the training budget of a fine-tuned "
                     f"network's copied layers): {gap('baseB-2x', 0):+.1f} points from baseB.")
    return lines


def transfer_table(out: Path | None = None, progress: bool = False,
                   log: Callable[[str], None] | None = None, *, test_size: int = 2000,
                   train_size: int = 6000, seeds: Sequence[int] = DEFAULT_SEEDS,
                   recipe: TransferRecipe | None = None) -> str:
    """Run the experiment and return its markdown; with ``out``, write ``transfer.png`` (the
    figure) and ``transfer.json`` (every network's record) next to it."""
    recipe = recipe or TransferRecipe()
    started = time.perf_counter()
    say = log or (lambda message: None)
    say(f"transfer: generating {train_size} train and {test_size} test digits")
    train_images, train_labels, test_images, test_labels = transfer_data(
        train_size, test_size, test_seed=TABLE_TEST_SEED, progress=progress)
    records = transfer_experiment(train_images, train_labels, test_images, test_labels,
                                  seeds=seeds, recipe=recipe, log=say)
    seconds = time.perf_counter() - started
    summary = summarize(records)
    depths = sorted({record["n"] for record in records if record["n"] > 0})
    splits = sorted({(record["seed"], tuple(record["split_a"]), tuple(record["split_b"]))
                     for record in records})
    per_seed = [f"seed {seed}: A = {{{', '.join(map(str, a))}}}, B = {{{', '.join(map(str, b))}}}"
                for seed, a, b in splits]
    base_a = summary[("baseA", 0)]
    parameters = sum(parameter.numel() for parameter in TransferNet().parameters())
    machine = (f"{os.cpu_count()}-core {platform.machine()}, "
               f"{'CUDA available' if torch.cuda.is_available() else 'no GPU'} (run on the "
               f"CPU), torch {torch.__version__.split('+')[0]}, "
               f"{torch.get_num_threads()} torch thread(s)")
    lines = [
        "# Transferability of features by depth (digits)",
        "",
        "Yosinski, Clune, Bengio and Lipson, *How transferable are features in deep neural "
        "networks?*, NeurIPS 2014, Figure 2, on cluttered digits: "
        "`camlens reproduce transfer --out docs/transfer.md` "
        f"({len(seeds)} seeds, {seconds / 60:.1f} min on {machine}).",
        "",
        f"- Data: {train_size} cluttered digits on a 32 x 32 canvas "
        "(`camlens.representations.transfer.TRANSFER_CANVAS`; train part of the source digits, "
        f"seed 5) and {test_size} test images (test part, seed {TABLE_TEST_SEED}); each half "
        "gets the images of its five classes.",
        f"- Class splits (drawn from the seed): {'; '.join(per_seed)}.",
        f"- Network: `TransferNet`, 6 layers (3 conv + BN + ReLU + max pool, 3 fully connected; "
        f"{parameters:,} parameters); layers 1..n copied, the rest freshly initialised.",
        f"- Recipe, the same for every network: Adam, "
        f"{recipe.epochs} epochs, batch {recipe.batch_size}, learning rate "
        f"{recipe.learning_rate:g}"
        f"{' decayed to 0 along a cosine' if recipe.cosine_decay else ''}, weight decay "
        f"{recipe.weight_decay:g}. Frozen layers run "
        "in eval mode (copied batch-norm statistics). The canvas, sizes and recipe were "
        "settled in short trials that scored base networks (not the transfer conditions) on "
        "the test part's images of seed 0; the accuracies here are on test-part images of "
        f"seed {TABLE_TEST_SEED}, which those trials never saw.",
        f"- baseB: {_cell(summary[('baseB', 0)])}% on B's test images; baseA on A's: "
        f"{_cell(base_a)}%"
        + (f"; baseB-2x (baseB trained from scratch for {2 * recipe.epochs} epochs): "
           f"{_cell(summary[('baseB-2x', 0)])}%." if ("baseB-2x", 0) in summary else "."),
        "",
        "Top-1 accuracy (%) on B's test images, mean over the seeds [95% t interval of the "
        "mean]:",
        "",
        "| n | " + " | ".join(CONDITIONS) + " |",
        "|---|" + "---|" * len(CONDITIONS),
    ]
    for n in depths:
        lines.append(f"| {n} | " + " | ".join(_cell(summary[(name, n)]) for name in CONDITIONS)
                     + " |")
    lines += ["", "Differences from baseB in points (mean over the seeds):", "",
              *_findings(summary, depths), "",
              "In the paper (ImageNet halves, 8 layers): BnB falls at n = 3..5 (fragile "
              "co-adaptation of middle layers), AnB falls increasingly from n = 4 (features "
              "specific to A), and AnB+ stays at or above baseB (transfer plus fine-tuning "
              "helps generalisation)."]
    if out is not None:
        figure = transfer_figure(records, Path(out).with_name("transfer.png"))
        lines += ["", f"![transferability by depth]({figure.name})"]
        Path(out).with_name("transfer.json").write_text(json.dumps(
            {"recipe": asdict(recipe), "seeds": list(seeds), "train_size": train_size,
             "test_size": test_size, "seconds": round(seconds, 1), "records": records},
            indent=1))
    return "\n".join(lines) + "\n"
