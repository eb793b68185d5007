"""Score-CAM's fast variant: how much ``skip_below`` saves and how much it changes the maps.

    python benchmarks/scorecam_skip.py --output benchmarks/SCORECAM_SKIP.md

On digits-gap (layer ``features``, 128 channels) and 64 cluttered test digits: for each
threshold, the share of channel masks skipped (each skipped mask is one forward pass saved),
the time against plain Score-CAM (medians of interleaved runs), and the change of the maps (the
largest difference of the normalised maps, and the mean correlation over maps that are not
empty in both).
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
import warnings
from pathlib import Path

import torch

import camlens
from camlens.data import ClutteredDigits, materialize

THRESHOLDS = (0.01, 0.05, 0.1, 0.2, 0.3)


def timed(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    model = camlens.zoo.load("digits-gap")
    images = materialize(ClutteredDigits(args.images, "test", seed=0))["image"]

    def plain():
        return camlens.explain(model, images, "scorecam", layer="features", batch_size=128)

    reference = plain()
    plain_s = timed(plain, args.repeats)
    lines = [
        "# Score-CAM, skipping near-empty channels",
        "",
        f"`python benchmarks/scorecam_skip.py --output benchmarks/SCORECAM_SKIP.md`: digits-gap, "
        f"layer `features` (128 channels), {args.images} cluttered test digits, batch_size 128, "
        f"median of {args.repeats} runs; {platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}. Plain Score-CAM: {plain_s:.2f} s.",
        "",
        "| skip_below | masks skipped | time vs plain | largest map difference "
        "| mean correlation |",
        "|---:|---:|---:|---:|---:|",
    ]
    for threshold in THRESHOLDS:
        def fast(threshold=threshold):
            return camlens.explain(model, images, "scorecam", layer="features", batch_size=128,
                                   skip_below=threshold)

        result = fast()
        seconds = timed(fast, args.repeats)
        note = next(note for note in result.notes if note.startswith("scorecam skipped"))
        skipped, total = (int(value) for value in re.findall(r"\d+", note)[:2])
        both = (reference.maps.flatten(1).amax(1) > 0) & (result.maps.flatten(1).amax(1) > 0)
        correlations = [float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
                        for a, b in zip(reference.maps[both], result.maps[both], strict=True)]
        lines.append(f"| {threshold:g} | {skipped / total:.1%} | {seconds / plain_s:.2f} | "
                     f"{float((reference.maps - result.maps).abs().max()):.3g} | "
                     f"{statistics.mean(correlations):.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
