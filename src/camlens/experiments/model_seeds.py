"""The reference models over training seeds (``camlens reproduce model-seeds --out
docs/model_seeds.md``; issue 17, item 1).

Every model-level figure of docs/results.md came from one training seed. Here each model the
other seed pages do not cover (digits-gap and digits-fc: :mod:`camlens.experiments.gap_fc`;
accent-attention and accent-mean: :mod:`camlens.experiments.pooling`) is trained from
:data:`DEFAULT_SEEDS` by its shipped recipe (``camlens train NAME --seed S``) and scored on the
fixed test data of :func:`camlens.experiments.training.datasets` (test part, data seed 0, the
same for every seed):

- per seed the model's headline figure (test accuracy; for the detector also box recall and
  precision) with its 95% Wilson interval over the test items, and over seeds the mean with a
  Student-t 95% interval (:func:`camlens.metrics.intervals.seed_interval`; wide for 3 seeds,
  as it should be);
- for digits-biased and digits-debiased, the bias audit of docs/results.md per seed
  (:func:`camlens.audit.audit` with Grad-CAM of the predicted class at ``features`` on
  :data:`AUDIT_SIZE` BiasedDigits test images, mark at a random spot, and its counterfactual
  variants), and the biased - debiased difference paired by seed (same seed: the same training
  images and order, the marks placed differently).

Seed 0 is the shipped weights when their metadata says they were made by ``camlens train NAME
--seed 0`` with the recipe's sizes; the other seeds are trained into ``$CAMLENS_CACHE/seeds``
(``NAME-seedS.safetensors``) on first use and reused after. Nothing is tuned here: the recipes
are the shipped ones.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from camlens.experiments.saved_runs import saved_runs
from camlens.metrics.intervals import seed_interval, wilson_interval

__all__ = ["AUDIT_SIZE", "DEFAULT_SEEDS", "MODELS", "audit_figures", "model_seeds_table",
           "render", "score_model", "seed_weights"]

MODELS = ("digits-biased", "digits-debiased", "accent-cnn", "digits-detector",
          "digits-captioner")
DEFAULT_SEEDS = (0, 1, 2)
AUDIT_SIZE = 1000
BIAS_MODELS = ("digits-biased", "digits-debiased")
#: Figures of the audit per seed: key -> (label, kind); kind "%" is a share shown in %.
AUDIT_FIGURES = {
    "accuracy_random": "accuracy, mark at a random spot (%)",
    "accuracy_flipped": "accuracy, mark flipped to another class's spot (%)",
    "accuracy_removed": "accuracy, mark removed (%)",
    "accuracy_aligned": "accuracy, mark at the label's spot (%)",
    "follows_flipped": "flipped images predicted as the mark's class (%)",
    "mark_share": "mean Grad-CAM mass on the mark (%)",
    "mark_lift": "lift of the mark (mass / area share)",
    "object_share": "mean Grad-CAM mass on the digit's box (%)",
}
_VARIANTS = {"accuracy_random": "normal (random mark)",
             "accuracy_flipped": "cue flipped (another class's spot)",
             "accuracy_removed": "cue removed (no mark)",
             "accuracy_aligned": "cue aligned (the label's spot)"}


def _recipe(name: str):
    from camlens.experiments.training import RECIPES, TrainingRecipe

    return RECIPES.get(name, TrainingRecipe())


def _made_by_recipe(metadata: dict[str, str], name: str, seed: int) -> bool:
    recipe = _recipe(name)
    return (metadata.get("name"), metadata.get("seed"), metadata.get("epochs"),
            metadata.get("train_size")) == (name, str(seed), str(recipe.epochs),
                                            str(recipe.train_size))


def seed_weights(name: str, seed: int, *, cache_dir: Path | None = None,
                 use_shipped: bool = True, log: Callable[[str], None] = lambda message: None,
                 progress: bool = False, train_missing: bool = True
                 ) -> tuple[Path, str] | None:
    """(weights file, source) of ``name`` trained from ``seed`` with the shipped recipe: the
    shipped file when ``use_shipped`` and its metadata says it is exactly that run (``camlens
    train NAME --seed SEED``, the recipe's epochs and size); else ``cache_dir/NAME-seedS.
    safetensors`` (default ``default_cache_dir() / "seeds"``), trained when missing or made
    differently (None instead, without ``train_missing``)."""
    from camlens.data.speech import default_cache_dir
    from camlens.experiments.training import train
    from camlens.zoo.registry import file_metadata, get_weights

    shipped = get_weights(name)
    if use_shipped and shipped.file.is_file():
        stored = shipped.metadata
        if _made_by_recipe(stored, name, seed) and \
                stored.get("command") == f"camlens train {name} --seed {seed}":
            return shipped.file, f"shipped weights ({stored['command']})"
    folder = cache_dir if cache_dir is not None else default_cache_dir() / "seeds"
    path = folder / f"{name}-seed{seed}.safetensors"
    if path.is_file() and _made_by_recipe(file_metadata(path), name, seed):
        return path, f"trained here (`camlens train {name} --seed {seed} --out {path.name}`)"
    if not train_missing:
        return None
    log(f"model-seeds: training {name} --seed {seed} into {path} (minutes)")
    train(name, seed=seed, out=path, progress=progress)
    return path, f"trained here (`camlens train {name} --seed {seed} --out {path.name}`)"


def _test_data(name: str, progress: bool) -> tuple[Any, dict]:
    """(task, test tensors) of ``name``: the test split every seed of it is scored on."""
    from camlens.experiments.training import TASKS, datasets
    from camlens.zoo.registry import get_weights

    spec = get_weights(name)
    recipe = _recipe(name)
    test_set = datasets(spec.dataset, 10, recipe.test_size, 0, recipe.bias)[1]
    task = TASKS[spec.dataset]()
    return task, task.tensors(test_set, progress, f"test data of {name}")


def _test_count(data: dict) -> int:
    for key in ("label", "image", "waveform"):
        if key in data:
            return len(data[key])
    raise ValueError(f"no test items among {sorted(data)}")


def score_model(model: torch.nn.Module, task: Any, data: dict) -> dict[str, Any]:
    """The model's test figures by its task (``accuracy``; the detector's ``recall`` and
    ``precision`` too), with the test item count."""
    scores = {key: float(value) for key, value in task.scores(model, data).items()}
    return {**scores, "test_items": _test_count(data)}


def audit_figures(model: torch.nn.Module, size: int = AUDIT_SIZE,
                  progress: bool = False) -> dict[str, float]:
    """The bias audit of docs/results.md on one model (Grad-CAM of the predicted class at
    ``features``, ``size`` BiasedDigits test images with their counterfactual variants): the
    figures of :data:`AUDIT_FIGURES`, shares in %."""
    from camlens.audit import audit
    from camlens.audit.builtin import AUDIT_DATA

    data = AUDIT_DATA["biased-digits"](size, 0)
    result = audit(model, data.dataset, data.regions, "gradcam", layer="features",
                   counterfactuals=data.variants, cue_key=data.cue_key, progress=progress)
    summary = result.summary()["regions"]
    checks = result.counterfactual
    figures = {key: 100 * checks[variant].accuracy for key, variant in _VARIANTS.items()}
    figures["follows_flipped"] = 100 * checks[_VARIANTS["accuracy_flipped"]].cue_following
    figures["mark_share"] = 100 * summary["mark"]["mean_share"]
    figures["mark_lift"] = summary["mark"]["lift"]
    figures["object_share"] = 100 * summary["object"]["mean_share"]
    return figures


def _run_key(run: dict) -> tuple:
    return run["model"], run["seed"], run.get("audit_size")


def model_seeds_table(out: Path | None = None, progress: bool = False,
                      log: Callable[[str], None] | None = None, *,
                      seeds: Sequence[int] = DEFAULT_SEEDS, models: Sequence[str] = MODELS,
                      audit_size: int = AUDIT_SIZE, resume: bool = True,
                      use_shipped: bool = True, cache_dir: Path | None = None,
                      train_missing: bool = True) -> str:
    """Score every model of ``models`` from every seed of ``seeds`` (training missing seeds,
    :func:`seed_weights`) and return the markdown; with ``out``, write it and ``out``'s
    ``.json`` (every run) after each run, so a run cut short leaves a consistent page; with
    ``resume``, runs already in that JSON are reused. Without ``train_missing``, seeds with no
    weights yet are left out (the page says how many runs it has)."""
    from camlens.zoo.registry import file_metadata, get_weights

    unknown = [name for name in models if name not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; model-seeds covers {', '.join(MODELS)}")
    say = log or (lambda message: None)
    started = time.perf_counter()
    json_path = Path(out).with_suffix(".json") if out is not None else None
    previous = saved_runs(json_path, _run_key) if resume else {}
    runs: list[dict] = []
    planned = len(models) * len(seeds)

    def save(markdown: str) -> None:
        if out is None or json_path is None:
            return
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"complete": len(runs) == planned, "runs": runs},
                                        indent=1))
        Path(out).write_text(markdown)

    def page() -> str:
        return render(runs, seeds, models, audit_size, time.perf_counter() - started, planned,
                      trained_only=not train_missing)

    for name in models:
        task = data = None
        for seed in seeds:
            size = audit_size if name in BIAS_MODELS else None
            if (name, seed, size) in previous:
                runs.append(previous[(name, seed, size)])
                say(f"model-seeds: reused {name} seed {seed}")
                continue
            found = seed_weights(name, seed, cache_dir=cache_dir, use_shipped=use_shipped,
                                 log=say, progress=progress, train_missing=train_missing)
            if found is None:
                say(f"model-seeds: {name} seed {seed} not trained yet, left out")
                continue
            path, source = found
            run_started = time.perf_counter()
            if data is None:
                task, data = _test_data(name, progress)
            model = get_weights(name).load(path)
            trained = file_metadata(path).get("train_seconds")
            run = {"model": name, "seed": seed, "source": source,
                   "train_seconds": None if trained is None else float(trained),
                   **score_model(model, task, data), "audit_size": size}
            if size is not None:
                run["audit"] = audit_figures(model, size, progress)
            run["seconds"] = round(time.perf_counter() - run_started, 1)
            runs.append(run)
            save(page())
            say(f"model-seeds: {name} seed {seed}: test accuracy {100 * run['accuracy']:.2f}% "
                f"({source})")
    markdown = page()
    save(markdown)
    return markdown


def _mean_cell(values: Sequence[float], digits: int = 1,
               bounds: tuple[float | None, float | None] = (None, None)) -> str:
    """The mean over seeds with its t interval, clipped to ``bounds`` (the figure's possible
    range: a share cannot leave [0, 100])."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f} (one seed)" if values else "-"
    mean, low, high = seed_interval(values)
    if bounds[0] is not None:
        low = max(low, bounds[0])
    if bounds[1] is not None:
        high = min(high, bounds[1])
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _wilson_cell(share: float, total: int) -> str:
    right = round(share * total)
    low, high = wilson_interval(right, total)
    return f"{100 * share:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


_FIGURES = {"accuracy": "test accuracy", "recall": "box recall", "precision": "box precision"}
_WHAT = {"digits-biased": "BiasedDigits test images, mark at a random spot",
         "digits-debiased": "BiasedDigits test images, mark at a random spot",
         "accent-cnn": "accent test recordings (half whole, half mixed)",
         "digits-detector": "test scenes (a scene is right when its detections are exactly "
                            "its digits); recall and precision over the boxes",
         "digits-captioner": "test scenes (exact captions, greedy decoding)"}


def render(runs: Sequence[dict], seeds: Sequence[int], models: Sequence[str], audit_size: int,
           seconds: float, planned: int | None = None, trained_only: bool = False) -> str:
    """The markdown page of :func:`model_seeds_table` from its runs."""
    machine = (f"{os.cpu_count()}-core {platform.machine()}, "
               f"{'CUDA available' if torch.cuda.is_available() else 'no GPU'} (run on the "
               f"CPU), torch {torch.__version__.split('+')[0]}, "
               f"{torch.get_num_threads()} torch thread(s)")
    lines = [
        "# The reference models over training seeds",
        "",
        f"`camlens reproduce model-seeds{' --trained-only' if trained_only else ''} --out "
        f"docs/model_seeds.md` (seeds "
        f"{', '.join(map(str, seeds))}; {seconds / 60:.1f} min wall for this call, on "
        f"{machine}; models trained by earlier calls or by `camlens train NAME --seed S --out "
        "CACHE/seeds/NAME-seedS.safetensors` are reused, and their training time is not "
        "counted).",
        "",
        *([f"**Partial: {len(runs)} of the {planned} runs done when this page was written.**",
           ""] if planned is not None and len(runs) < planned else []),
        "Each model's shipped recipe (`camlens train NAME --seed S`), scored on its fixed test "
        "data (test part, data seed 0, the same for every seed). Per seed: the figure % [95% "
        "Wilson interval over the test items]; over seeds: the mean [95% Student-t interval "
        "of the mean over seeds, clipped to the figure's possible range]. digits-gap and "
        "digits-fc over seeds: "
        "[gap_fc.md](gap_fc.md); accent-attention and accent-mean: [pooling.md](pooling.md).",
        "",
        "| model | figure | test items | " + " | ".join(f"seed {seed}" for seed in seeds)
        + " | mean over seeds |",
        "|---|---|---:|" + "---:|" * len(seeds) + "---:|",
    ]
    sources: list[str] = []
    for name in models:
        group = {run["seed"]: run for run in runs if run["model"] == name}
        if not group:
            continue
        for key, label in _FIGURES.items():
            present = [run for run in group.values() if key in run]
            if not present:
                continue
            total = present[0]["test_items"]
            cells = [_wilson_cell(group[seed][key], total) if seed in group else "-"
                     for seed in seeds]
            values = [100 * group[seed][key] for seed in seeds if seed in group]
            lines.append(f"| {name} | {label} | {total:,} | " + " | ".join(cells)
                         + f" | {_mean_cell(values, bounds=(0.0, 100.0))} |")
        sources += [f"- {name} seed {seed}: {run['source']}" + (
            f"; training took {run['train_seconds']:,.0f} s" if run.get("train_seconds")
            else "") for seed, run in sorted(group.items())]
    lines += ["", "Test data: " + "; ".join(f"{name}: {_WHAT[name]}" for name in models) + ".",
              ""]
    audited = {name: {run["seed"]: run["audit"] for run in runs
                      if run["model"] == name and "audit" in run} for name in BIAS_MODELS}
    if any(audited.values()):
        lines += _audit_section(audited, seeds, audit_size)
    lines += ["## Where each seed's weights came from", "",
              "Training times as stored in each weights file (wall time of `camlens train`, on "
              "whatever load the machine had then).", "", *sources, ""]
    return "\n".join(lines)


def _audit_section(audited: dict[str, dict[int, dict]], seeds: Sequence[int],
                   audit_size: int) -> list[str]:
    lines = ["## The bias audit over seeds", "",
             f"`camlens audit --model NAME --size {audit_size}` per seed (Grad-CAM of the "
             f"predicted class at `features`; {audit_size:,} BiasedDigits test images, mark at "
             "a random spot, and the same items with the mark aligned, flipped or removed). "
             "Per model: the mean over seeds [95% t interval, clipped to the possible range] "
             "(each seed's figure in "
             "parentheses after it); biased - debiased: the difference paired by seed (the same "
             "seed trains both on the same images in the same order).", "",
             "| figure | digits-biased | digits-debiased | biased - debiased |",
             "|---|---|---|---|"]
    for key, label in AUDIT_FIGURES.items():
        digits = 2 if key in ("mark_lift",) else 3 if key == "mark_share" else 1
        cells = []
        for name in BIAS_MODELS:
            values = [audited[name][seed][key] for seed in seeds if seed in audited[name]]
            per_seed = ", ".join(f"{value:.{digits}f}" for value in values)
            bounds = (0.0, None) if key == "mark_lift" else (0.0, 100.0)
            cells.append("-" if not values else _mean_cell(values, digits) if len(values) < 2
                         else f"{_mean_cell(values, digits, bounds)} ({per_seed})")
        paired = [audited["digits-biased"][seed][key] - audited["digits-debiased"][seed][key]
                  for seed in seeds
                  if seed in audited["digits-biased"] and seed in audited["digits-debiased"]]
        cells.append(_mean_cell(paired, digits) if paired else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]
