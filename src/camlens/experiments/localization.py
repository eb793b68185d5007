"""Reproduce the CAM and Grad-CAM papers' evaluation on the offline cluttered-digits benchmark.

``camlens reproduce localization`` builds the tables of ``docs/results.md``:

- classification error of digits-gap (CAM architecture) and digits-fc (fully connected head);
- for every method on both models (``cam`` only where it applies): top-1 localization error at
  the CAM paper's 20% and Grad-CAM's 15% thresholds (largest connected component, right class
  and IoU >= 0.5), pointing accuracy and energy-based pointing game for the true class, and, on
  the first ``faithfulness_size`` images, RISE deletion / insertion AUC and Grad-CAM++ average
  drop / increase in confidence for the predicted class, and on the first ``road_size`` ROAD's
  MoRF and LeRF means (noisy linear imputation; :mod:`camlens.metrics.road_metric`);
- baselines: a centred box of the training set's average size, the full image, a random map;
- a sanity check: cascading randomization of digits-gap (Spearman rank correlation between the
  maps of the trained and the randomised model, the mean over 50 images with its bootstrap
  interval).

Every figure of the main table is a statistic of one value per image and carries its 95% interval,
``value [low, high]``, from :func:`camlens.evaluation.table.reduce_rows` (the reduction of
``camlens evaluate``, over the same per-image values of :mod:`camlens.evaluation.protocol`): the
Wilson score interval (Wilson 1927) for the percentages of images (localization error, pointing
accuracy, increase in confidence), the percentile bootstrap over the images (Efron 1979; 1000
resamples, seed 0) for the means (energy pointing, deletion / insertion AUC, average drop, ROAD).
The point figures are computed as before the intervals were added.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable

import torch
import torch.nn.functional as F

from camlens import metrics
from camlens.api import explain
from camlens.data import ClutteredDigits, materialize
from camlens.evaluation.protocol import (
    FAITHFULNESS_STEPS,
    LOCALIZATION_THRESHOLDS,
    METRICS,
    ROAD_FRACTIONS,
    EvaluationSpec,
    faithfulness_values,
    localization_values,
)
from camlens.evaluation.table import reduce_rows
from camlens.evaluation.work import ImageRow
from camlens.zoo import get_weights, load

__all__ = ["COLUMNS", "FAITHFULNESS_STEPS", "MODELS", "POINTING_TOLERANCE", "TABLE_METHODS",
           "localization_table"]

TABLE_METHODS = ("cam", "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam",
                 "eigengradcam", "finercam", "shapleycam", "fullgrad", "scorecam",
                 "ablationcam", "guided-backprop", "guided-gradcam")
MODELS = ("digits-gap", "digits-fc")
POINTING_TOLERANCE = metrics.pointing.DIGITS_TOLERANCE
SANITY_METHODS = ("gradcam", "layercam", "eigengradcam", "finercam", "shapleycam", "fullgrad",
                  "guided-backprop", "guided-gradcam")


def _batched_maps(model, images, method: str, targets: torch.Tensor, batch: int = 200,
                 layer: str = "features"):
    """Normalised maps at input resolution for ``targets``, ``batch`` images at a time."""
    maps = []
    for start in range(0, len(images), batch):
        exp = explain(model, images[start : start + batch], method=method, layer=layer,
                      target=targets[start : start + batch])
        maps.append(exp.maps)
    return torch.cat(maps)


#: A figure with its 95% interval: ``(value, low, high)``.
Figure = tuple[float, float, float]


def _intervals(per_image: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """The 95% interval of each column's per-image values (protocol units: 1 for a
    localization miss, the energy share, the AUCs, the drop share, the ROAD means; NaN where an
    image was not evaluated), by :func:`camlens.evaluation.table.reduce_rows`."""
    count = len(next(iter(per_image.values())))
    columns = {key: values.double().tolist() for key, values in per_image.items()}
    rows = [ImageRow(str(index), "row", -1, -1, {key: values[index]
                                                   for key, values in columns.items()})
            for index in range(count)]
    spec = EvaluationSpec(methods=("row",), metrics=tuple(m for m in METRICS if m != "maxboxacc"))
    cells = reduce_rows(rows, spec)["row"].cells
    return {key: (cell.low, cell.high) for key, cell in cells.items()}


def _with_intervals(row: dict[str, float], per_image: dict[str, torch.Tensor]
                    ) -> dict[str, Figure]:
    bounds = _intervals(per_image)
    return {key: (value, *bounds.get(key, (math.nan, math.nan))) for key, value in row.items()}


def _evaluate_maps(model, images, labels, boxes, predicted, maps_predicted, maps_true,
                  faithfulness_size: int, road_size: int = 0) -> dict[str, Figure]:
    """Every metric of one method (or baseline map) on one model: the per-image values of
    :mod:`camlens.evaluation.protocol` (what ``camlens evaluate`` computes on a user's data),
    averaged, each with its 95% interval."""
    row = {}
    per_image: dict[str, torch.Tensor] = {}
    found = localization_values(maps_predicted, maps_true, boxes, predicted, labels,
                                LOCALIZATION_THRESHOLDS, POINTING_TOLERANCE)
    for threshold in LOCALIZATION_THRESHOLDS:
        hits = found[f"hit@{threshold:.2f}"]
        row[f"loc@{threshold:.2f}"] = 100 * (1.0 - hits.float().mean().item())
        per_image[f"loc@{threshold:.2f}"] = 1.0 - hits.double()
    row["pointing"] = 100 * found["pointing"].float().mean().item()
    row["energy"] = 100 * found["energy"].mean().item()
    per_image["pointing"] = found["pointing"].double()
    per_image["energy"] = found["energy"].double()

    def first(values: torch.Tensor) -> torch.Tensor:  # the first images' values, NaN after
        padded = torch.full((len(images),), math.nan, dtype=torch.float64)
        padded[:len(values)] = values.double()
        return padded

    few = slice(0, faithfulness_size)
    faithful = faithfulness_values(model, images[few], maps_predicted[few], predicted[few],
                                   FAITHFULNESS_STEPS, batch_size=256)
    row["deletion"] = faithful["deletion"].mean().item()
    row["insertion"] = faithful["insertion"].mean().item()
    row["drop"] = 100.0 * faithful["drop"].mean().item()
    row["increase"] = 100.0 * faithful["increased"].float().mean().item()
    per_image.update(deletion=first(faithful["deletion"]), insertion=first(faithful["insertion"]),
                     drop=first(faithful["drop"]), increase=first(faithful["increased"]))
    if road_size:
        some = slice(0, road_size)
        road = metrics.road_scores(model, images[some], maps_predicted[some],
                                   targets=predicted[some], fractions=ROAD_FRACTIONS,
                                   batch_size=256)
        row["road_morf"] = road.morf_mean.mean().item()
        row["road_lerf"] = road.lerf_mean.mean().item()
        per_image.update(road_morf=first(road.morf_mean), road_lerf=first(road.lerf_mean))
    return _with_intervals(row, per_image)


def _box_baseline(labels, boxes, predicted, box: torch.Tensor) -> dict[str, Figure]:
    boxes_guess = box.expand(len(labels), 4)
    row = {}
    per_image = {}
    for threshold in (0.20, 0.15):
        row[f"loc@{threshold:.2f}"] = 100 * metrics.localization_error(boxes_guess, boxes,
                                                                       predicted, labels)
        hits = metrics.localization_hits(boxes_guess, boxes, predicted, labels)
        per_image[f"loc@{threshold:.2f}"] = 1.0 - hits.double()
    return _with_intervals(row, per_image)


COLUMNS = (("loc@0.20", "top-1 loc. error % (20%)", "{:.1f}"),
           ("loc@0.15", "top-1 loc. error % (15%)", "{:.1f}"),
           ("pointing", "pointing acc. %", "{:.1f}"),
           ("energy", "energy pointing %", "{:.1f}"),
           ("deletion", "deletion AUC (lower better)", "{:.3f}"),
           ("insertion", "insertion AUC (higher better)", "{:.3f}"),
           ("drop", "avg drop % (lower better)", "{:.1f}"),
           ("increase", "increase in conf. %", "{:.1f}"),
           ("road_morf", "ROAD MoRF (lower better)", "{:.3f}"),
           ("road_lerf", "ROAD LeRF (higher better)", "{:.3f}"))


def _cell(figure: Figure, fmt: str) -> str:
    """``value [low, high]`` (the value alone where there is no interval)."""
    value, low, high = figure
    text = fmt.format(value)
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{fmt.format(low)}, {fmt.format(high)}]"
    return text


def _markdown_row(label: str, row: dict[str, Figure]) -> str:
    cells = [_cell(row[key], fmt) if key in row else "-" for key, _, fmt in COLUMNS]
    return f"| {label} | " + " | ".join(cells) + " |"


def localization_table(test_size: int = 1000, faithfulness_size: int = 250,
                       road_size: int = 100, progress: bool = False,
                       log: Callable[[str], None] | None = None) -> str:
    """The markdown report (see the module docstring)."""
    say = log or (lambda message: None)
    torch.manual_seed(0)
    test = materialize(ClutteredDigits(test_size, "test", seed=0), progress=progress)
    images, labels, boxes = test["image"], test["label"], test["box"]
    train_boxes = materialize(ClutteredDigits(2000, "train", seed=0), keys=("box",))["box"]
    mean_size = ((train_boxes[:, 3] - train_boxes[:, 1]).mean().item(),
                 (train_boxes[:, 2] - train_boxes[:, 0]).mean().item())
    size = tuple(images.shape[-2:])
    faithfulness_size = min(faithfulness_size, test_size)
    road_size = min(road_size, test_size)

    lines = [
        "Cluttered digits, test split "
        f"({test_size} images, 64x64; deletion/insertion and average drop on the first "
        f"{faithfulness_size}, {FAITHFULNESS_STEPS} steps; ROAD on the first {road_size}, "
        f"removing {', '.join(f'{f:.0%}' for f in ROAD_FRACTIONS)} of the pixels, noise 0.01). "
        "Maps for the predicted class for "
        "localization and faithfulness, for the true class for pointing "
        f"(tolerance {POINTING_TOLERANCE} px). Each figure with its 95% interval "
        "[low, high]: Wilson score for the percentages of images (localization error, pointing "
        "accuracy, increase in confidence), percentile bootstrap over the images (1000 "
        "resamples, seed 0) for the means (energy pointing, deletion / insertion AUC, average "
        "drop, ROAD). "
        f"Machine: {platform.machine()}, torch {torch.__version__}.",
        "",
        "| model | classification error % | parameters | trained |",
        "|---|---:|---:|---|",
    ]
    models = {name: load(name) for name in MODELS}
    predictions = {}
    for name, model in models.items():
        with torch.no_grad():
            predicted = model(images).argmax(dim=1)
        predictions[name] = predicted
        error = 100 * (predicted != labels).float().mean().item()
        parameters = sum(p.numel() for p in model.parameters())
        lines.append(f"| {name} | {error:.1f} | {parameters:,} | "
                     f"`{get_weights(name).metadata.get('command', '?')}` |")
    lines += ["", "| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
              "|---|" + "---:|" * len(COLUMNS)]
    for name, model in models.items():
        predicted = predictions[name]
        for method in TABLE_METHODS:
            label = f"{name} {method}"
            try:
                maps_predicted = _batched_maps(model, images, method, predicted)
            except ValueError as error:
                lines.append(f"| {label} | refused: {str(error).split(';')[0]} |")
                continue
            maps_true = _batched_maps(model, images, method, labels)
            say(f"{label} ...")
            row = _evaluate_maps(model, images, labels, boxes, predicted, maps_predicted,
                                maps_true, faithfulness_size, road_size)
            lines.append(_markdown_row(label, row))
        generator = torch.Generator().manual_seed(0)
        noise = torch.rand(len(images), 1, 16, 16, generator=generator)
        random_maps = F.interpolate(noise, size=size, mode="bilinear", align_corners=False)[:, 0]
        lines.append(_markdown_row(f"{name} baseline: random map", _evaluate_maps(
            model, images, labels, boxes, predicted, random_maps, random_maps, faithfulness_size,
            road_size)))
        lines.append(_markdown_row(f"{name} baseline: centred box of average size", _box_baseline(
            labels, boxes, predicted, metrics.center_box(size, mean_size))))
        lines.append(_markdown_row(f"{name} baseline: full image", _box_baseline(
            labels, boxes, predicted, metrics.full_image_box(size))))
    lines += ["", *_sanity_lines(models["digits-gap"], images[:50])]
    return "\n".join(lines) + "\n"


def _sanity_lines(model, images: torch.Tensor) -> list[str]:
    """Cascading randomization of digits-gap: Spearman correlation after each step, the mean
    over the images with its 95% bootstrap interval (the per-image correlations of
    :func:`camlens.metrics.cascading_randomization`'s steps, which averages them)."""
    lines = [f"Sanity check (Adebayo et al. 2018), digits-gap, {len(images)} test images: "
             "Spearman rank "
             "correlation between the maps of the trained model and of the model with its layers "
             "re-initialised from the output down (cumulative). A map that stays similar when the "
             "weights are random does not explain the model. Each mean over the images with its "
             "95% percentile bootstrap interval (1000 resamples, seed 0).", ""]
    results = {method: _cascading_correlations(model, images, method)
               for method in SANITY_METHODS}
    steps = [layer for layer, _ in results["gradcam"]]
    lines.append("| randomised down to | " + " | ".join(results) + " |")
    lines.append("|---|" + "---:|" * len(results))
    for layer in steps:
        cells = []
        for method in results:
            rho = dict(results[method]).get(layer)
            if rho is None:
                cells.append("nan")
                continue
            low, high = metrics.bootstrap_interval(rho, 1000, 0)
            cells.append(_cell((rho.mean().item(), low, high), "{:.2f}"))
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


def _cascading_correlations(model, images: torch.Tensor, method: str
                            ) -> list[tuple[str, torch.Tensor]]:
    """Per image ``(N,)``: the Spearman correlation after each step of
    :func:`camlens.metrics.cascading_randomization` (the same steps, seeds, layer and classes;
    it returns their means)."""
    original = explain(model, images, method=method, layer="features")
    results = []
    with torch.random.fork_rng(devices=[]):
        for name, randomized in metrics.randomization_steps(model, images, seed=0,
                                                            cascading=True):
            changed = explain(randomized, images, method=method, layer=original.layer,
                              target=original.targets)
            results.append((name, metrics.spearman(original.maps, changed.maps,
                                                   len(original.input_size))))
    return results
