"""Localization protocols stated and compared on the cluttered digits (issue 17, item 4):
``camlens reproduce localization-protocols --out docs/localization_protocols.md``.

The same maps of digits-gap and digits-fc (:data:`METHODS` at ``features``, and a random map),
scored under the protocols the papers use, every figure with a 95% interval:

- **top-1 localization error** (CAM, Zhou et al. CVPR 2016, threshold 20%; Grad-CAM, Selvaraju
  et al. ICCV 2017, 15%): the predicted class's map, the box of the largest 8-connected component
  of ``S >= tau``, a hit when the class is right and ``IoU >= 0.5``; ``S`` under both conventions
  of :func:`camlens.metrics.scale_maps`: ``relu-max`` (``max(M, 0) / max``, Grad-CAM) and
  ``min-max`` (``(M - min) / (max - min)`` of the raw map, no ReLU: CAM's released code). ``M``
  is the method's map *before* its ReLU, upsampled (bilinear) to the 64x64 input; camlens'
  ``Explanation.maps`` are the ReLU'd map, upsampled and min-max normalised, which equals
  ``relu-max`` whenever the upsampled ReLU'd map has a zero, and today's ``camlens reproduce
  localization`` scores them (reported here as ``library maps`` for the comparison);
- **MaxBoxAcc** (Choe et al., CVPR 2020): the true class's map under each convention, boxes at
  ``tau = 0, 0.01, ..., 0.99``, ``IoU >= 0.5`` (version 1: one IoU, the largest component), the
  best threshold's hit rate, with the threshold;
- **pointing game** (Zhang et al., ECCV 2016 / IJCV 2018): the true class's map's maximum
  (``Explanation.maps``) within ``t`` pixels (Euclidean, ``< t``; the maximum itself always
  counts) of the digit's box for ``t`` in :data:`BOX_TOLERANCES` (4 is today's: Zhang et al.'s
  15 px at 224 scaled to 64), and of the digit's ink (:meth:`camlens.data.ClutteredDigits.
  ink_mask`, the generator's record of the pasted digit's pixels above 0.1) for ``t`` in
  :data:`INK_TOLERANCES`; pooled over images, and as Zhang et al. report it, the mean over the
  ten classes of ``hits_c / (hits_c + misses_c)`` (:func:`camlens.metrics.class_mean_accuracy`).

Intervals: Wilson score for the pooled proportions (localization error, pointing), the
percentile bootstrap over images (:data:`RESAMPLES` resamples, seed 0) for MaxBoxAcc (the best
threshold chosen again in each resample) and for the per-class means. Maps of the predicted
class equal those of the true class when the prediction is right; only the misclassified images'
maps are computed again. Nothing here is tuned: the thresholds, IoU and tolerances are the
papers' (the 2 and 0 px tolerances are the issue's stricter variants, fixed before the run).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from camlens import metrics
from camlens.data import ClutteredDigits, materialize
from camlens.evaluation.protocol import LOCALIZATION_THRESHOLDS
from camlens.experiments.localization import MODELS
from camlens.explanation import upsample
from camlens.methods import get_method
from camlens.zoo import load

__all__ = ["BOX_TOLERANCES", "INK_TOLERANCES", "METHODS", "RESAMPLES", "SCORECAM_SIZE",
           "localization_protocols",
           "localization_protocols_table", "protocol_values", "render"]

METHODS = ("cam", "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigengradcam",
           "scorecam", "ablationcam", "guided-gradcam")
#: Pointing tolerances (pixels) against the digit's box: today's 4, then the stricter 2 and 0.
BOX_TOLERANCES = (4, 2, 0)
#: Pointing tolerances (pixels) against the digit's ink.
INK_TOLERANCES = (2, 0)
RESAMPLES = 1000
#: Score-CAM runs one forward pass per channel and image (110 s per 200 images on the 2-core
#: machine with one thread): it is scored on the first this many test images only.
SCORECAM_SIZE = 300
LAYER = "features"
RANDOM_MAP = "baseline: random map"


def _method_maps(model: torch.nn.Module, images: torch.Tensor, method: str,
                 targets: torch.Tensor, batch: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(``Explanation.maps``, the map before the method's ReLU upsampled to the input), both
    ``(N, H, W)``, for one target class per image.

    camlens applies the ReLU when it packages the raw map (``CAMMethod.make_explanation``); the
    pre-ReLU map is the argument of that call, recorded here on this one method object."""
    instance = get_method(method)(model, LAYER)
    captured: list[torch.Tensor] = []
    package = instance.make_explanation

    def recording(forward: Any, raw: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        captured.append(forward.target.squeezed(raw.detach()))
        return package(forward, raw, *args, **kwargs)

    setattr(instance, "make_explanation", recording)  # noqa: B010 - one object, one run
    maps, raws = [], []
    for start in range(0, len(images), batch):
        exp = instance(images[start : start + batch], target=targets[start : start + batch])
        if len(captured) != 1:
            raise RuntimeError(f"{method}: expected one packaged map per call, got "
                               f"{len(captured)}")
        raws.append(upsample(captured.pop(), exp.input_size))
        maps.append(exp.maps)
    return torch.cat(maps), torch.cat(raws)


def _predicted_maps(model: torch.nn.Module, images: torch.Tensor, method: str,
                    predicted: torch.Tensor, labels: torch.Tensor,
                    maps_true: torch.Tensor, raw_true: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The predicted class's maps: the true class's where the prediction is right, computed for
    the misclassified images only."""
    maps, raw = maps_true.clone(), raw_true.clone()
    wrong = torch.nonzero(predicted != labels).flatten()
    if len(wrong):
        maps[wrong], raw[wrong] = _method_maps(model, images[wrong], method, predicted[wrong])
    return maps, raw


def protocol_values(maps_predicted: torch.Tensor, raw_predicted: torch.Tensor,
                    maps_true: torch.Tensor, raw_true: torch.Tensor, boxes: torch.Tensor,
                    ink: torch.Tensor, predicted: torch.Tensor, labels: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
    """Per image: ``hit@{convention}@{tau}`` (bool ``(N,)``, the top-1 box protocol),
    ``boxhits@{convention}`` (bool ``(N, T)``, MaxBoxAcc's hits at every threshold),
    ``hit@library@{tau}`` (the box protocol on ``Explanation.maps``), ``box@{t}`` and
    ``ink@{t}`` (bool ``(N,)``, the pointing game). ``maps_*``: ``Explanation.maps``;
    ``raw_*``: the maps before the ReLU at the input's resolution."""
    values: dict[str, torch.Tensor] = {}
    for threshold in LOCALIZATION_THRESHOLDS:
        found = metrics.largest_component_boxes(maps_predicted, threshold)
        values[f"hit@library@{threshold:.2f}"] = metrics.localization_hits(
            found, boxes, predicted, labels)
    for convention in metrics.MAP_CONVENTIONS:
        scaled = metrics.scale_maps(raw_predicted, convention)
        for threshold in LOCALIZATION_THRESHOLDS:
            found = metrics.largest_component_boxes(scaled, threshold)
            values[f"hit@{convention}@{threshold:.2f}"] = metrics.localization_hits(
                found, boxes, predicted, labels)
        values[f"boxhits@{convention}"] = metrics.box_accuracy_hits(
            metrics.scale_maps(raw_true, convention), boxes)
    for tolerance in BOX_TOLERANCES:
        values[f"box@{tolerance}"] = metrics.pointing_game(maps_true, boxes, tolerance)
    for tolerance in INK_TOLERANCES:
        values[f"ink@{tolerance}"] = metrics.pointing_game(maps_true, ink, tolerance)
    return values


def _proportion(hits: torch.Tensor, error: bool = False) -> dict[str, float]:
    """Percent of hits (or of misses) with its Wilson interval."""
    count = int(hits.sum()) if not error else int((~hits).sum())
    low, high = metrics.wilson_interval(count, int(hits.numel()))
    return {"value": 100 * count / hits.numel(), "low": 100 * low, "high": 100 * high}


def _summarize(values: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, Any]:
    """Every figure of one row with its interval (see the module docstring)."""
    row: dict[str, Any] = {}
    for key, hits in values.items():
        if key.startswith("hit@"):
            row["error@" + key[len("hit@"):]] = _proportion(hits, error=True)
        elif key.startswith("boxhits@"):
            stacked = hits.double()
            per_threshold = stacked.mean(dim=0)
            best = int(per_threshold.argmax())
            low, high = metrics.bootstrap_interval(
                stacked, RESAMPLES, 0, statistic=lambda v: v.mean(dim=-2).amax(dim=-1))
            row["maxboxacc@" + key[len("boxhits@"):]] = {
                "value": 100 * float(per_threshold[best]), "low": 100 * low,
                "high": 100 * high, "threshold": metrics.BOX_ACCURACY_THRESHOLDS[best]}
        else:
            row[key] = _proportion(hits)
            paired = torch.stack([hits.double(), labels.double()], dim=1)  # (N, 2)
            mean = float(metrics.class_mean_accuracy(hits, labels, 10))
            low, high = metrics.bootstrap_interval(
                paired, RESAMPLES, 0, statistic=lambda v: metrics.class_mean_accuracy(
                    v[..., 0], v[..., 1].long(), 10))
            row[key + "@class-mean"] = {"value": 100 * mean, "low": 100 * low,
                                        "high": 100 * high}
    return row


def _random_maps(count: int, size: tuple[int, int]) -> torch.Tensor:
    """The random-map baseline of ``camlens reproduce localization``: 16x16 uniform noise from
    seed 0, upsampled (bilinear)."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(count, 1, 16, 16, generator=generator)
    return F.interpolate(noise, size=size, mode="bilinear", align_corners=False)[:, 0]


def localization_protocols(test_size: int = 1000, methods: tuple[str, ...] = METHODS,
                           models: tuple[str, ...] = MODELS, progress: bool = False,
                           log: Callable[[str], None] | None = None,
                           scorecam_size: int = SCORECAM_SIZE) -> dict[str, Any]:
    """The figures of every row: ``{"rows": [{"model", "method", "images", "figures": {...}}],
    ...}``; Score-CAM's row on the first ``scorecam_size`` images."""
    say = log or (lambda message: None)
    started = time.perf_counter()
    dataset = ClutteredDigits(test_size, "test", seed=0)
    test = materialize(dataset, progress=progress)
    images, labels, boxes = test["image"], test["label"], test["box"]
    ink = torch.stack([dataset.ink_mask(index) for index in range(test_size)])
    size = (images.shape[-2], images.shape[-1])
    record: dict[str, Any] = {"test_size": test_size, "rows": [], "classification": {},
                              "ink_share_of_box": float(
                                  ink.sum() / metrics.box_masks(boxes, size).sum())}
    for name in models:
        model = load(name)
        with torch.no_grad():
            predicted = model(images).argmax(dim=1)
        record["classification"][name] = _proportion(predicted != labels)
        for method in methods:
            began = time.perf_counter()
            n = min(test_size, scorecam_size) if method == "scorecam" else test_size
            try:
                maps_true, raw_true = _method_maps(model, images[:n], method, labels[:n])
            except ValueError as error:
                record["rows"].append({"model": name, "method": method,
                                       "refused": str(error).split(";")[0]})
                continue
            maps_predicted, raw_predicted = _predicted_maps(
                model, images[:n], method, predicted[:n], labels[:n], maps_true, raw_true)
            values = protocol_values(maps_predicted, raw_predicted, maps_true, raw_true,
                                     boxes[:n], ink[:n], predicted[:n], labels[:n])
            negative = (raw_true.amin(dim=(-2, -1)) < 0).float().mean().item()
            record["rows"].append({"model": name, "method": method, "images": n,
                                   "figures": _summarize(values, labels[:n]),
                                   "negative_share": 100 * negative,
                                   "seconds": time.perf_counter() - began})
            say(f"{name} {method}: {time.perf_counter() - began:.0f} s")
        noise = _random_maps(test_size, size)
        scaled = metrics.scale_maps(noise, "min-max")
        values = protocol_values(scaled, noise, scaled, noise, boxes, ink, predicted, labels)
        record["rows"].append({"model": name, "method": RANDOM_MAP, "images": test_size,
                               "figures": _summarize(values, labels), "negative_share": 0.0})
    record["seconds"] = time.perf_counter() - started
    return record


def _label(row: dict[str, Any], test_size: int) -> str:
    """``model | method``, the method with its image count when it is not the whole test set."""
    images = row.get("images", test_size)
    suffix = f" (first {images} images)" if images != test_size else ""
    return f"{row['model']} | {row['method']}{suffix}"


def _cell(figure: dict[str, float] | None) -> str:
    if figure is None:
        return "-"
    return f"{figure['value']:.1f} [{figure['low']:.1f}, {figure['high']:.1f}]"


def render(record: dict[str, Any], command: str) -> str:
    """The markdown page of :func:`localization_protocols`'s record."""
    minutes, seconds = divmod(round(record["seconds"]), 60)
    size = record["test_size"]
    lines = [
        "# Localization protocols stated and compared",
        "",
        f"Written by `{command}` ({record['test_size']} cluttered test digits, 64x64, data seed "
        f"0; {minutes} min {seconds} s on {platform.machine()} with one thread, torch "
        f"{torch.__version__}). Every figure has its 95% interval in brackets: Wilson score for "
        "the proportions, percentile bootstrap over the images "
        f"({RESAMPLES} resamples, seed 0) for MaxBoxAcc and the per-class means. Maps at "
        f"`{LAYER}`; the protocols are stated in "
        "`camlens.experiments.localization_protocols`.",
        "",
        "| model | classification error % |",
        "|---|---:|",
    ]
    for name, figure in record["classification"].items():
        lines.append(f"| {name} | {_cell(figure)} |")
    lines += [
        "",
        "## Box protocols: the threshold convention",
        "",
        "Top-1 localization error % (predicted class's map, largest connected component of "
        "`S >= tau`, right class and IoU >= 0.5) with `S` = `max(M, 0) / max` (**relu-max**, "
        "Grad-CAM) or `(M - min) / (max - min)` of the map before the ReLU (**min-max**, CAM's "
        "released code); `M` is the method's map before its ReLU, upsampled to 64x64. "
        "**MaxBoxAcc** % (Choe et al. 2020): the true class's map under the same convention, "
        "boxes at tau = 0, 0.01, ..., 0.99, IoU >= 0.5, the best tau's hit rate (the tau in "
        "parentheses). *neg. %*: share of the true class's maps with negative values before "
        "the ReLU (where the conventions can differ).",
        "",
        "| model | method | error 20% relu-max | error 20% min-max | error 15% relu-max | "
        "error 15% min-max | MaxBoxAcc relu-max | MaxBoxAcc min-max | neg. % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["rows"]:
        if "refused" in row:
            lines.append(f"| {row['model']} | {row['method']} | refused: {row['refused']} "
                         "| | | | | | |")
            continue
        figures = row["figures"]
        cells = [_cell(figures.get(f"error@{c}@{t:.2f}")) for t in LOCALIZATION_THRESHOLDS
                 for c in metrics.MAP_CONVENTIONS]
        for convention in metrics.MAP_CONVENTIONS:
            best = figures[f"maxboxacc@{convention}"]
            cells.append(f"{_cell(best)} ({best['threshold']:.2f})")
        cells.append(f"{row['negative_share']:.0f}")
        lines.append(f"| {_label(row, size)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`camlens reproduce localization` scores `Explanation.maps` (the ReLU'd map, upsampled "
        "and min-max normalised: relu-max whenever the upsampled map has a zero). Its errors on "
        "these maps, for the comparison:",
        "",
        "| model | method | error 20% library maps | error 15% library maps |",
        "|---|---|---:|---:|",
    ]
    for row in record["rows"]:
        if "refused" in row:
            continue
        figures = row["figures"]
        lines.append(f"| {_label(row, size)} | "
                     + " | ".join(_cell(figures.get(f"error@library@{t:.2f}"))
                                  for t in LOCALIZATION_THRESHOLDS) + " |")
    lines += [
        "",
        "## Pointing game: stricter variants",
        "",
        "Hit: the maximum of the true class's map (`Explanation.maps`) within `t` px "
        "(Euclidean, `< t`; the maximum's own pixel always counts, so 0 px means *on* the "
        "region) of the digit's **box** or of its **ink** (the pixels of the pasted digit "
        "above 0.1, recorded by the generator: "
        f"{100 * record['ink_share_of_box']:.0f}% of the box's pixels on this test set). "
        "Pooled over the images:",
        "",
    ]
    keys = [f"box@{t}" for t in BOX_TOLERANCES] + [f"ink@{t}" for t in INK_TOLERANCES]
    header = ["| model | method | " + " | ".join(
        [f"box {t} px" for t in BOX_TOLERANCES] + [f"ink {t} px" for t in INK_TOLERANCES]) + " |",
        "|---|---|" + "---:|" * len(keys)]
    for suffix in ("", "@class-mean"):
        if suffix:
            lines += ["", "The mean over the ten classes of hits / (hits + misses), as Zhang et "
                      "al. report the pointing game:", ""]
        lines += header
        for row in record["rows"]:
            if "refused" in row:
                continue
            figures = row["figures"]
            lines.append(f"| {_label(row, size)} | "
                         + " | ".join(_cell(figures.get(key + suffix)) for key in keys) + " |")
    return "\n".join(lines) + "\n"


def localization_protocols_table(out: Path | None = None, progress: bool = False,
                                 log: Callable[[str], None] | None = None,
                                 test_size: int = 1000) -> str:
    """The markdown page (see the module docstring); with ``out``, also
    ``localization_protocols.json`` (every figure and interval) next to it."""
    record = localization_protocols(test_size, progress=progress, log=log)
    command = "camlens reproduce localization-protocols" + (
        f" --test-size {test_size}" if test_size != 1000 else "") + (
        f" --out {out}" if out is not None else "")
    page = render(record, command)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).with_name("localization_protocols.json").write_text(
            json.dumps(record, indent=1) + "\n")
    return page
