"""Linear probes per layer of the shipped digit models (``camlens reproduce probes``): how
linearly separable the ten classes are at each depth (Alain and Bengio 2016; the protocol is in
:mod:`camlens.representations.probes`), and a representation map of digits-gap's layers.

Data, disjoint in their roles:

- probe train: 2,000 cluttered digits (train part of the source digits, seed 1);
- validation (chooses the L2 penalty C): 1,000 (train part, seed 2);
- test: the fixed test split (test part of the source digits, seed 0; 2,000 by default), the
  one every camlens model is scored on, never used for a choice.

The models were trained on the train part with seed 0, so probe train and validation images are
new renderings (placement, size, clutter) of the digits the models saw; the test images are of
digits they never saw. Each layer is read twice: mean-pooled over positions (one feature per
channel) and average-pooled to a 4 x 4 grid (keeps coarse position). A control probe fitted on
shuffled train labels shows what the probe alone reaches.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from camlens.data.digits import CLASS_NAMES, ClutteredDigits, materialize
from camlens.representations.activations import INPUT_LAYER, layer_activations
from camlens.representations.embedding import embed_2d, embedding_figure, neighbour_agreement
from camlens.representations.probes import C_GRID, fit_probe
from camlens.zoo import load

__all__ = ["PROBED_LAYERS", "POOLINGS_REPORTED", "probe_model", "probes_table"]

#: The layers probed, from the input up (ReLU outputs of the trunk's blocks, then the head).
PROBED_LAYERS = {
    "digits-gap": (INPUT_LAYER, "features.2", "features.6", "features.10", "features.13",
                   "classifier"),
    "digits-fc": (INPUT_LAYER, "features.2", "features.6", "features.10", "features.13",
                  "reduce", "classifier.2", "classifier"),
}
POOLINGS_REPORTED = ("mean", "grid")
TRAIN_SEED, VALIDATION_SEED, TEST_SEED = 1, 2, 0


def _split(size: int, split: str, seed: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    data = materialize(ClutteredDigits(size, split, seed), keys=("image", "label"),
                       progress=progress, description=f"probes: {split} seed {seed}")
    return data["image"], data["label"]


def probe_model(name: str, splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
                log: Callable[[str], None]) -> dict:
    """Probe every layer of zoo model ``name`` on ``splits`` (train, validation, test), with
    both poolings; returns ``{"results": {pooling: {layer: ProbeResult}}, "control": ...,
    "test_features": {pooling: {layer: (N, D)}}}``."""
    model = load(name)
    layers = PROBED_LAYERS[name]
    results: dict[str, dict] = {}
    collected: dict[str, dict] = {}
    for pooling in POOLINGS_REPORTED:
        features = collected[pooling] = {
            split: layer_activations(model, data, layers, pooling=pooling)[0]
            for split, data in splits.items()}
        results[pooling] = {}
        for layer in layers:
            results[pooling][layer] = fit_probe(
                *((features[split][layer], splits[split][1])
                  for split in ("train", "validation", "test")), layer=layer)
            log(f"probes: {name} {layer} ({pooling}): {results[pooling][layer].accuracy:.4f}")
    control_layer = "features.13"
    control = fit_probe(*((collected["grid"][split][control_layer], splits[split][1])
                          for split in ("train", "validation", "test")),
                        layer=control_layer, shuffle_labels=True)
    test_features = {pooling: found["test"] for pooling, found in collected.items()}
    return {"results": results, "control": control, "test_features": test_features}


def _cell(result) -> str:
    low, high = result.interval
    return f"{100 * result.accuracy:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def probes_table(out: Path | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = None, *, test_size: int = 2000,
                 train_size: int = 2000, validation_size: int = 1000,
                 figure_size: int = 1000, seed: int = 0) -> str:
    """Probe digits-gap and digits-fc layer by layer and return the markdown; with ``out``,
    write ``probes.png`` (t-SNE maps of digits-gap's layers on the first ``figure_size`` test
    images) and ``probes.json`` next to it."""
    started = time.perf_counter()
    say = log or (lambda message: None)
    splits = {"train": _split(train_size, "train", TRAIN_SEED, progress),
              "validation": _split(validation_size, "train", VALIDATION_SEED, progress),
              "test": _split(test_size, "test", TEST_SEED, progress)}
    probed = {name: probe_model(name, splits, say) for name in PROBED_LAYERS}
    chance = next(iter(probed["digits-gap"]["results"]["mean"].values())).chance
    figure_note = []
    if out is not None:
        figure_note = _figure(probed["digits-gap"], splits["test"], figure_size, seed,
                              Path(out).with_name("probes.png"), say)
    seconds = time.perf_counter() - started
    machine = (f"{os.cpu_count()}-core {platform.machine()}, "
               f"{'CUDA available' if torch.cuda.is_available() else 'no GPU'} (run on the "
               f"CPU), torch {torch.__version__.split('+')[0]}, "
               f"{torch.get_num_threads()} torch thread(s)")
    lines = [
        "# Linear probes per layer (digits)",
        "",
        "Alain and Bengio, *Understanding intermediate layers using linear classifier probes*, "
        "2016: a multinomial logistic regression on each layer's frozen activations. "
        f"`camlens reproduce probes --out docs/probes.md` ({seconds / 60:.1f} min on "
        f"{machine}).",
        "",
        f"- Probe train: {train_size} cluttered digits (train part, seed {TRAIN_SEED}); "
        f"validation: {validation_size} (train part, seed {VALIDATION_SEED}) chooses the L2 "
        f"penalty C from {', '.join(f'{c:g}' for c in C_GRID)}; test: the fixed test split "
        f"({test_size} images, test part, seed {TEST_SEED}), scored once.",
        "- Features standardised with the train split's statistics; loss "
        "`sum(W**2)/2 + C * sum cross-entropy` (L-BFGS, 100 iterations at most).",
        "- mean: each channel averaged over positions; grid: averaged over a 4 x 4 grid of "
        "cells (C x 16 features). `input` is the image itself pooled the same way.",
        f"- Chance (the best constant answer: the test split's most frequent class): "
        f"{100 * chance:.1f}%. Intervals: "
        "Wilson 95% on the test split.",
        "",
        "Test accuracy (%) [Wilson 95%]:",
        "",
        "| model | layer | features (mean) | mean-pooled | C | features (grid) | grid-pooled | C |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, found in probed.items():
        for layer in PROBED_LAYERS[name]:
            mean, grid = (found["results"][pooling][layer] for pooling in POOLINGS_REPORTED)
            lines.append(f"| {name} | `{layer}` | {mean.features} | {_cell(mean)} | "
                         f"{mean.c:g} | {grid.features} | {_cell(grid)} | {grid.c:g} |")
    lines += ["", "Control, probe fitted on shuffled train labels (same layer, grid-pooled):", ""]
    for name, found in probed.items():
        control = found["control"]
        lines.append(f"- {name} `{control.layer}`: {_cell(control)}% (chance "
                     f"{100 * control.chance:.1f}%).")
    lines += figure_note
    if out is not None:
        Path(out).with_name("probes.json").write_text(json.dumps({
            name: {"probes": {pooling: [result.as_dict() for result in results.values()]
                              for pooling, results in found["results"].items()},
                   "control": found["control"].as_dict()}
            for name, found in probed.items()} | {"seconds": round(seconds, 1)}, indent=1))
    return "\n".join(lines) + "\n"


def _figure(found: dict, test: tuple[torch.Tensor, torch.Tensor], size: int, seed: int,
            path: Path, say: Callable[[str], None]) -> list[str]:
    """t-SNE maps of digits-gap's layers; returns the markdown lines that describe them."""
    images, labels = test[0][:size], test[1][:size]
    shown = (("grid", INPUT_LAYER), ("mean", "features.6"), ("mean", "features.13"),
             ("mean", "classifier"))
    panels, lines = [], []
    for pooling, layer in shown:
        features = found["test_features"][pooling][layer][:size]
        say(f"probes: t-SNE of digits-gap {layer}")
        agreement = neighbour_agreement(features, labels, k=5)
        probe = found["results"][pooling][layer]
        panels.append({"coordinates": embed_2d(features, "tsne", seed=seed),
                       "features": features,
                       "title": f"{layer} ({pooling})\nprobe {100 * probe.accuracy:.1f}%, "
                                f"5-NN same class {100 * agreement:.0f}%"})
        lines.append(f"| `{layer}` | {pooling} | {100 * agreement:.1f} |")
    embedding_figure(panels, labels, path, images=images, class_names=CLASS_NAMES, seed=seed,
                     title=f"digits-gap: t-SNE of {size} test digits per layer, coloured by "
                           "class; rows below: an image and its 5 nearest neighbours")
    return ["", f"Representation maps of digits-gap ({path.name}): t-SNE (scikit-learn, seed "
            f"{seed}) of the first {size} test images; the share of each image's 5 nearest "
            "neighbours (in the layer's standardised features) that share its class:", "",
            "| layer | pooling | 5-NN same class (%) |", "|---|---|---|", *lines, "",
            f"![representation maps]({path.name})"]
