"""How much faster is ROAD's batched imputation than the per-image sparse solve it replaced?

ROAD (Rong et al., ICML 2022) imputes the removed pixels by noisy linear imputation: each removed
pixel the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal), one sparse linear system
per image, plus noise. camlens used to solve it image by image and channel by channel with scipy's
conjugate gradients (kept verbatim as the reference in
``tests/metrics/test_road_imputation_equality.py``); it now builds the systems of a batch with
vectorised index arithmetic and solves each by banded Cholesky
(:func:`camlens.metrics.road_metric.linear_imputation`).

The workload is the one of ``camlens reproduce localization``: digits-gap, the first ``--images``
cluttered test digits (64x64, one channel), Grad-CAM maps of the predicted class, ROAD's fractions
of :data:`camlens.evaluation.protocol.ROAD_FRACTIONS`, MoRF and LeRF. Rows:

1. the imputations alone (every image, fraction and order, the same masks for both);
2. ``road_scores`` whole (masks, imputation, the model's forwards on the imputed images) against
   the original ``road`` loop on the same inputs; the largest difference of the scores;
3. one wide image, 3x224x224 (random pixels; a smooth blob as the map), 50% and 90% removed:
   where the band is wide and the three channels share one factorisation.

Timing: the median of ``--repeats`` runs, old and new alternately (noise on a shared machine hits
both); threads as the environment sets them. ``--output PATH`` also writes the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from camlens import metrics
from camlens.api import explain
from camlens.data import ClutteredDigits, materialize
from camlens.evaluation.protocol import ROAD_FRACTIONS, ROAD_NOISE
from camlens.metrics.road_metric import _removal_masks, linear_imputation
from camlens.zoo import load

ROOT = Path(__file__).resolve().parents[1]


def _reference() -> Any:
    """The original implementation, from the equality test that keeps it."""
    path = ROOT / "tests" / "metrics" / "test_road_imputation_equality.py"
    spec = importlib.util.spec_from_file_location("road_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    reference = _reference()
    images = materialize(ClutteredDigits(args.images, "test", seed=0))["image"]
    model = load("digits-gap").eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    maps = explain(model, images, method="gradcam", layer="features", target=predicted).maps
    generator = torch.Generator().manual_seed(0)
    masks = torch.cat([_removal_masks(maps, fraction, order, generator)
                       for order in ("morf", "lerf") for fraction in ROAD_FRACTIONS])
    repeated = images.repeat(2 * len(ROAD_FRACTIONS), 1, 1, 1)

    def old_imputation() -> torch.Tensor:
        return torch.stack([reference.reference_imputation(image, mask, 0.0)
                            for image, mask in zip(repeated, masks, strict=True)])

    def new_imputation() -> torch.Tensor:
        return linear_imputation(repeated, masks).to(images.dtype)

    def old_road() -> torch.Tensor:
        return torch.cat([reference.reference_road(model, images, maps, predicted,
                                                   ROAD_FRACTIONS, order, ROAD_NOISE, 0, 256)
                          for order in ("morf", "lerf")], dim=1)

    def new_road() -> torch.Tensor:
        scores = metrics.road_scores(model, images, maps, targets=predicted,
                                     fractions=ROAD_FRACTIONS, noise=ROAD_NOISE, seed=0,
                                     batch_size=256)
        return torch.cat([scores.morf, scores.lerf], dim=1)

    side = 224
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    blob = -((yy - side / 3) ** 2 + (xx - side / 2) ** 2).float().flatten()
    wide_image = torch.rand(3, side, side, generator=torch.Generator().manual_seed(1))
    wide_masks = torch.zeros(2, side * side, dtype=torch.bool)
    for row, fraction in enumerate((0.5, 0.9)):
        wide_masks[row, blob.argsort(descending=True)[:int(fraction * side * side)]] = True
    wide_masks = wide_masks.reshape(2, side, side)

    def old_wide() -> torch.Tensor:
        return torch.stack([reference.reference_imputation(wide_image, mask, 0.0)
                            for mask in wide_masks])

    def new_wide() -> torch.Tensor:
        return linear_imputation(wide_image.expand(2, -1, -1, -1), wide_masks).float()

    rows = []
    for label, old, new in (("imputation only", old_imputation, new_imputation),
                            ("road_scores (MoRF + LeRF)", old_road, new_road),
                            ("one 3x224x224 image, 50% and 90% removed", old_wide, new_wide)):
        old_times, new_times = [], []
        for _ in range(args.repeats):
            seconds, before = _timed(old)
            old_times.append(seconds)
            seconds, after = _timed(new)
            new_times.append(seconds)
        difference = float((before - after).abs().max())
        old_s, new_s = statistics.median(old_times), statistics.median(new_times)
        rows.append(f"| {label} | {old_s:.2f} | {new_s:.2f} | {old_s / new_s:.1f}x | "
                    f"{difference:.1e} |")
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    lines = [
        "# ROAD: batched banded imputation against the per-image CG solve",
        "",
        f"`python benchmarks/bench_road.py --images {args.images} --repeats {args.repeats}`: "
        f"digits-gap, {args.images} cluttered test digits (64x64), Grad-CAM maps of the "
        f"predicted class, fractions {', '.join(f'{f:.0%}' for f in ROAD_FRACTIONS)}, MoRF and "
        f"LeRF ({2 * len(ROAD_FRACTIONS) * args.images} imputations); median of {args.repeats} "
        f"runs, old and new alternately; {platform.machine()}, {os.cpu_count()} cores, "
        f"{threads} thread(s), torch {torch.__version__}.",
        "",
        "| work | per-image CG (s) | batched banded (s) | speed-up | largest difference |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
