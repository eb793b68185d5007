"""Sanity checks for saliency maps at full strength (``camlens reproduce sanity``).

Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim, "Sanity Checks for Saliency Maps", NeurIPS
2018: a map that stays the same when the model's weights (model-parameter randomization) or the
labels it learned from (data randomization) are randomised cannot explain what the model
learned. Protocol here, on the fixed test split of cluttered digits (test part of the source
digits, seed 0; the first ``test_size`` images), every map for the image's true class:

- **Model-parameter randomization**, cascading (re-initialise the layers one after the other from
  the logits down, the earlier ones kept random) and independent (one layer at a time, the others
  trained): :func:`camlens.metrics.randomization_steps`, PyTorch's default initialisers.
- **Data randomization**: digits-gap trained on the training images with their labels permuted
  (``camlens train digits-gap --permuted-labels``), against the same architecture, recipe and
  seed trained on the true labels (the matched control), and against the shipped digits-gap.
- **Similarities** between the trained (or true-label) model's map and the other's, per image:
  Spearman rank correlation of the signed maps, Spearman of their absolute values
  (:func:`camlens.metrics.spearman`), and SSIM (:func:`camlens.metrics.ssim`: Wang et al. 2004,
  Gaussian window 11, sigma 1.5) of the absolute maps each min-max normalised to [0, 1]; the
  table gives the mean over images with a 95% percentile-bootstrap interval (2,000 resamples).

Signed maps: the guided methods' input-space attributions (``Explanation.attributions``), and the
two references computed here (not camlens methods): the plain gradient of the class logit with
respect to the input (Simonyan et al. 2014; "Gradients" in the paper) and input times gradient.
The CAM family's maps are non-negative (a ReLU ends every rule), so for them the signed and the
absolute Spearman are the same number; their maps are compared at the input's resolution
(``Explanation.maps``, upsampled bilinearly from the 16 x 16 ``features`` layer).
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from camlens.api import explain
from camlens.data.digits import ClutteredDigits, materialize
from camlens.experiments.training import TEST_SEED, TrainingRecipe, accuracy, fit
from camlens.explanation import ExplanationWarning
from camlens.metrics import bootstrap_interval, randomization_steps, spearman, ssim
from camlens.model_state import preserved_model_state
from camlens.zoo import load

__all__ = ["DATA_RECIPE", "GRADIENT_REFERENCES", "METRICS", "SANITY_METHODS", "method_maps",
           "sanity_table", "similarities"]

#: The camlens methods checked, then the two gradient references computed here.
SANITY_METHODS = ("gradcam", "layercam", "eigengradcam", "finercam", "shapleycam", "fullgrad",
                  "guided-backprop", "guided-gradcam")
GRADIENT_REFERENCES = ("gradient", "input-x-gradient")
#: The similarities, in table order: key -> heading.
METRICS = {"spearman": "Spearman (signed maps)",
           "abs_spearman": "Spearman of absolute values",
           "ssim": "SSIM (absolute maps scaled to [0, 1])"}
LAYER = "features"
#: The data randomization recipe: a smaller training set and more epochs than the shipped
#: model's (16,000 images, 8 epochs), so the network can memorise permuted labels; the matched
#: control uses the same recipe with the true labels.
DATA_RECIPE = TrainingRecipe(epochs=100, train_size=500, test_size=2000, batch_size=32)
MAP_BATCH = 100


# --- maps and similarities -------------------------------------------------------------------


def input_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``d logit_target / d input`` ``(B, C, H, W)``, the model in eval mode (state restored)."""
    with preserved_model_state(model), torch.enable_grad():
        model.eval()
        pixels = images.detach().clone().requires_grad_(True)
        scores = model(pixels).gather(1, targets[:, None]).sum()
        (gradient,) = torch.autograd.grad(scores, pixels)
    return gradient


def method_maps(model: nn.Module, images: torch.Tensor, method: str, targets: torch.Tensor,
                layer: str = LAYER, batch: int = MAP_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """(signed, absolute) maps ``(B, H, W)`` at input resolution of ``method`` for ``targets``.

    Gradient references and guided methods: the signed map is the input-space attribution summed
    over channels (one channel for digits), the absolute map its magnitude, largest over channels
    (camlens' convention for the guided maps). CAM methods: both are ``Explanation.maps``.
    :class:`~camlens.ExplanationWarning` (all-zero maps, common for randomised models) is
    silenced: the page counts constant maps instead."""
    signed, absolute = [], []
    for start in range(0, len(images), batch):
        chunk, chunk_targets = images[start : start + batch], targets[start : start + batch]
        attribution: torch.Tensor | None
        if method in GRADIENT_REFERENCES:
            attribution = input_gradient(model, chunk, chunk_targets)
            if method == "input-x-gradient":
                attribution = attribution * chunk
        else:
            with warnings.catch_warnings():  # all-zero maps of random models: counted instead
                warnings.simplefilter("ignore", ExplanationWarning)
                exp = explain(model, chunk, method=method, layer=layer, target=chunk_targets)
            attribution = exp.attributions
            if attribution is None:
                signed.append(exp.maps.detach())
                absolute.append(exp.maps.detach())
                continue
        signed.append(attribution.detach().sum(dim=1))
        absolute.append(attribution.detach().abs().amax(dim=1))
    return torch.cat(signed), torch.cat(absolute)


def similarities(reference: tuple[torch.Tensor, torch.Tensor],
                 other: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-image Spearman (signed), Spearman of absolute values and SSIM (absolute maps scaled
    to [0, 1]) between two ``(signed, absolute)`` pairs of maps ``(B, H, W)``."""
    return {"spearman": spearman(reference[0], other[0]),
            "abs_spearman": spearman(reference[0], other[0], absolute=True),
            "ssim": ssim(reference[1], other[1])}


def _summary(values: torch.Tensor, resamples: int) -> dict[str, float]:
    low, high = bootstrap_interval(values, resamples=resamples, seed=0)
    return {"mean": float(values.double().mean()), "low": low, "high": high}


# --- the runs ----------------------------------------------------------------------------------


def _all_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
              methods: Sequence[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {method: method_maps(model, images, method, targets) for method in methods}


def model_randomization(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                        methods: Sequence[str], *, cascading: bool, resamples: int,
                        log: Callable[[str], None], keep: Sequence[int] = ()) -> dict:
    """Similarities after each randomization step: ``{"steps": [names], "modules": [their
    classes], "results": {method:
    [{metric: summary}] per step}, "constant": {method: [count of constant randomised maps]},
    "kept": {method: [maps of the images ``keep``, trained first, then each step]}}``."""
    trained = _all_maps(model, images, targets, methods)
    kept = {method: [trained[method][1][list(keep)]] for method in methods}
    steps: list[str] = []
    modules: list[str] = []
    results: dict[str, list[dict]] = {method: [] for method in methods}
    constant: dict[str, list[int]] = {method: [] for method in methods}
    for name, randomized in randomization_steps(model, images, cascading=cascading):
        steps.append(name)
        modules.append(type(model.get_submodule(name)).__name__)
        started = time.perf_counter()
        for method in methods:
            maps = method_maps(randomized, images, method, targets)
            values = similarities(trained[method], maps)
            results[method].append({key: _summary(found, resamples)
                                    for key, found in values.items()})
            flat = maps[1].flatten(1)
            constant[method].append(int((flat.amax(1) == flat.amin(1)).sum()))
            kept[method].append(maps[1][list(keep)])
        kind = "cascading" if cascading else "independent"
        log(f"sanity: {kind} {name} ({time.perf_counter() - started:.1f} s)")
    return {"steps": steps, "modules": modules, "results": results, "constant": constant,
            "kept": kept}


def data_randomization(images: torch.Tensor, targets: torch.Tensor, methods: Sequence[str], *,
                       recipe: TrainingRecipe, resamples: int, log: Callable[[str], None],
                       keep: Sequence[int] = ()) -> dict:
    """Train digits-gap on permuted and on true labels (same recipe and seed) and compare the
    maps of three pairs: matched true vs permuted (the test), shipped vs permuted, and shipped vs
    matched true (how much two true-label models' maps differ anyway)."""
    permuted_model, permuted_summary = fit("digits-gap", seed=0, progress=False,
                                           recipe=_with(recipe, permuted_labels=True))
    log(f"sanity: permuted-label model {permuted_summary}")
    true_model, true_summary = fit("digits-gap", seed=0, progress=False, recipe=recipe)
    log(f"sanity: matched true-label model {true_summary}")
    shipped = load("digits-gap")
    models = {"shipped": shipped, "true": true_model, "permuted": permuted_model}
    maps = {key: _all_maps(model, images, targets, methods) for key, model in models.items()}
    pairs = {"true vs permuted": ("true", "permuted"),
             "shipped vs permuted": ("shipped", "permuted"),
             "shipped vs true": ("shipped", "true")}
    results = {pair: {method: {key: _summary(found, resamples) for key, found in similarities(
        maps[left][method], maps[right][method]).items()} for method in methods}
        for pair, (left, right) in pairs.items()}
    on_these = {key: accuracy(model, images, targets) for key, model in models.items()}
    kept = {key: {method: found[method][1][list(keep)] for method in methods}
            for key, found in maps.items()}
    return {"summaries": {"permuted": permuted_summary, "true": true_summary},
            "recipe": asdict(recipe),
            "accuracy_on_these_images": on_these, "results": results, "kept": kept}


def _with(recipe: TrainingRecipe, **changes) -> TrainingRecipe:
    from dataclasses import replace

    return replace(recipe, **changes)


# --- the page ----------------------------------------------------------------------------------


def _cell(summary: dict[str, float]) -> str:
    return f"{summary['mean']:.2f} [{summary['low']:.2f}, {summary['high']:.2f}]"


def _randomization_lines(found: dict, methods: Sequence[str], model_name: str, kind: str
                         ) -> list[str]:
    lines = []
    for metric, heading in METRICS.items():
        lines += ["", f"{model_name}, {kind} randomization, {heading}: mean over images "
                  "[95% bootstrap interval]", ""]
        lines.append("| randomised | " + " | ".join(methods) + " |")
        lines.append("|---|" + "---:|" * len(methods))
        for index, step in enumerate(found["steps"]):
            lines.append(f"| {step} ({found['modules'][index]}) | " + " | ".join(
                _cell(found["results"][method][index][metric]) for method in methods) + " |")
    constant = {method: counts for method, counts in found["constant"].items() if any(counts)}
    if constant:
        lines += ["", "Randomised maps that are constant (no ordering; Spearman counts them as "
                  "0): " + "; ".join(f"{method} {counts}" for method, counts in constant.items())
                  + "."]
    return lines


def _data_lines(found: dict, methods: Sequence[str]) -> list[str]:
    permuted, true = found["summaries"]["permuted"], found["summaries"]["true"]
    recipe = found["recipe"]
    accuracies = found["accuracy_on_these_images"]
    lines = ["", "## Data randomization (digits-gap)", "",
             f"Both trained from seed 0 on the first {permuted['train_size']} training images "
             f"for {permuted['epochs']} epochs, batch {recipe['batch_size']} (a smaller set and "
             "more steps than the shipped model, so that permuted labels can be memorised; "
             "`camlens train digits-gap --seed 0 --train-size "
             f"{permuted['train_size']} --epochs {permuted['epochs']} --batch-size "
             f"{recipe['batch_size']} [--permuted-labels] --out FILE`):", "",
             "| model | train accuracy (on its own labels) | test accuracy (2,000 test images, "
             "true labels) | accuracy on the compared images | train seconds |",
             "|---|---:|---:|---:|---:|",
             f"| permuted labels | {100 * permuted['train_accuracy']:.1f}% | "
             f"{100 * permuted['test_accuracy']:.1f}% | {100 * accuracies['permuted']:.1f}% | "
             f"{permuted['train_seconds']} |",
             f"| true labels (matched control) | {100 * true['train_accuracy']:.1f}% | "
             f"{100 * true['test_accuracy']:.1f}% | {100 * accuracies['true']:.1f}% | "
             f"{true['train_seconds']} |",
             f"| shipped digits-gap (16,000 images, 8 epochs) | - | - | "
             f"{100 * accuracies['shipped']:.1f}% | - |"]
    for pair, results in found["results"].items():
        lines += ["", f"Maps of {pair}: mean over images [95% bootstrap interval]", "",
                  "| method | " + " | ".join(METRICS.values()) + " |",
                  "|---|" + "---:|" * len(METRICS)]
        for method in methods:
            lines.append(f"| {method} | " + " | ".join(
                _cell(results[method][metric]) for metric in METRICS) + " |")
    return lines


def cascade_figure(images: torch.Tensor, found: dict, methods: Sequence[str], path: Path,
                   title: str) -> Path:
    """Rows: methods; columns: the image, the trained model's map, then the map after each
    cascading step (absolute maps, each scaled to [0, 1])."""
    from matplotlib.figure import Figure

    from camlens.explanation import normalize

    columns = ["input", "trained", *found["steps"]]
    rows = len(images) * len(methods)
    figure = Figure(figsize=(0.95 * len(columns) + 1.2, 0.95 * rows + 0.6), dpi=80)
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for image_index, image in enumerate(images):
        for method_index, method in enumerate(methods):
            row = image_index * len(methods) + method_index
            pictures = [image[0]] + [normalize(maps[image_index], 2)
                                     for maps in found["kept"][method]]
            for column, picture in enumerate(pictures):
                axis = axes[row][column]
                axis.imshow(picture.cpu().numpy(), cmap="gray" if column == 0 else "inferno",
                            vmin=0, vmax=1)
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(columns[column], fontsize=6)
            axes[row][0].set_ylabel(method, fontsize=6)
    figure.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path


def data_figure(images: torch.Tensor, found: dict, methods: Sequence[str], path: Path) -> Path:
    """Rows: methods; columns per image: the image, the shipped, matched true-label and
    permuted-label models' maps."""
    from matplotlib.figure import Figure

    from camlens.explanation import normalize

    models = ("shipped", "true", "permuted")
    columns = len(images) * (1 + len(models))
    figure = Figure(figsize=(0.95 * columns + 1.2, 0.95 * len(methods) + 0.6), dpi=80)
    axes = figure.subplots(len(methods), columns, squeeze=False)
    for row, method in enumerate(methods):
        for image_index, image in enumerate(images):
            pictures = [image[0]] + [normalize(found["kept"][key][method][image_index], 2)
                                     for key in models]
            for offset, picture in enumerate(pictures):
                axis = axes[row][image_index * (1 + len(models)) + offset]
                axis.imshow(picture.cpu().numpy(), cmap="gray" if offset == 0 else "inferno",
                            vmin=0, vmax=1)
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(("input", *models)[offset], fontsize=6)
        axes[row][0].set_ylabel(method, fontsize=6)
    figure.suptitle("Data randomization: digits-gap trained on true vs permuted labels",
                    fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path


def _jsonable(found: dict) -> dict:
    return {key: value for key, value in found.items() if key != "kept"}


def sanity_table(out: Path | None = None, *, progress: bool = False,
                 log: Callable[[str], None] = print, test_size: int = 200,
                 models: Sequence[str] = ("digits-gap", "digits-fc"),
                 methods: Sequence[str] = SANITY_METHODS + GRADIENT_REFERENCES,
                 independent: bool = True, data: bool = True,
                 data_recipe: TrainingRecipe = DATA_RECIPE, resamples: int = 2000,
                 figure_images: int = 1) -> str:
    """The sanity-check page: model-parameter randomization (cascading, and independent when
    ``independent``) of each of ``models`` and, when ``data``, the data randomization test of
    digits-gap; writes ``sanity.json`` and the figures next to ``out``."""
    started = time.perf_counter()
    torch.manual_seed(0)
    test = materialize(ClutteredDigits(test_size, "test", TEST_SEED), keys=("image", "label"),
                       progress=progress, description="sanity: test images")
    images, targets = test["image"], test["label"]
    keep = list(range(min(figure_images, test_size)))
    record: dict = {"test_size": test_size, "methods": list(methods), "layer": LAYER,
                    "resamples": resamples}
    lines = ["# Sanity checks for saliency maps (Adebayo et al. 2018)", "",
             f"{test_size} test images of cluttered digits (test split, seed 0), every map for "
             f"the image's true class, CAM methods at `{LAYER}`. Similarity between the map of "
             "the trained (or true-label) model and the other model's map, per image: Spearman "
             "rank correlation of the signed maps, Spearman of their absolute values, and SSIM "
             "(Wang et al. 2004; Gaussian window 11, sigma 1.5) of the absolute maps each "
             "min-max scaled to [0, 1]. Cells: mean over images [95% percentile-bootstrap "
             f"interval, {resamples} resamples]. High similarity after randomization means the "
             "map does not depend on what was randomised: the method fails the check. The CAM "
             "methods' maps are non-negative, so their two Spearman columns are equal; "
             "`gradient` and `input-x-gradient` are references computed in "
             "`camlens.experiments.sanity` (not camlens methods)."]
    figures = []
    data_lines: list[str] = []
    if data:  # first: its training takes longest, and its log says early how far it memorised
        found = data_randomization(images, targets, methods, recipe=data_recipe,
                                   resamples=resamples, log=log, keep=keep)
        record["data_randomization"] = _jsonable(found)
        data_lines = _data_lines(found, methods)
        if out is not None and keep:
            data_figure_path = data_figure(images[keep], found, methods,
                                           out.parent / "sanity-data.png")
    for model_name in models:
        model = load(model_name)
        record[model_name] = {}
        kinds = ("cascading", "independent") if independent else ("cascading",)
        for kind in kinds:
            found = model_randomization(model, images, targets, methods,
                                        cascading=kind == "cascading", resamples=resamples,
                                        log=log, keep=keep if kind == "cascading" else ())
            record[model_name][kind] = _jsonable(found)
            lines += ["", f"## {model_name}: {kind} model-parameter randomization"]
            lines += _randomization_lines(found, methods, model_name, kind)
            if kind == "cascading" and out is not None and keep:
                figures.append(cascade_figure(
                    images[keep], found, methods,
                    out.parent / f"sanity-cascade-{model_name}.png",
                    f"Cascading randomization of {model_name}: maps after each layer is "
                    "re-initialised, from the logits down"))
    lines += data_lines
    if data and out is not None and keep:
        figures.append(data_figure_path)
    seconds = time.perf_counter() - started
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, {threads} thread(s), "
               f"torch {torch.__version__}")
    command = (f"camlens reproduce sanity --test-size {test_size}"
               + (f" --out {out}" if out is not None else ""))
    for path in figures:
        lines += ["", f"![{path.stem}]({path.name})"]
    lines += ["", f"Command: `{command}`; {seconds / 60:.1f} min on {machine}."]
    record.update({"seconds": round(seconds, 1), "machine": machine, "command": command})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / "sanity.json").write_text(json.dumps(record, indent=1) + "\n")
    return "\n".join(lines) + "\n"
