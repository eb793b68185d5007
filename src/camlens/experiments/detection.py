"""Explaining a detector's boxes, checked where the answer is known (``camlens reproduce
detection``): the shipped digits-detector on fresh digit scenes.

For every digit of every scene, the explained score is the detector's score for the box that
matches the digit's true box (:class:`camlens.BoxTarget`, IoU at least 0.3, the digit's class).
A map that explains that box should lie on that digit, not on the scene's other digits. Reported
per layer and method over all digits:

- **energy inside**: the share of the map's mass (at input resolution, normalised to [0, 1])
  inside the digit's box; the box covers 5 to 8% of the 64 x 128 canvas, so a map spread evenly
  scores about 0.07;
- **pointing**: the share of digits whose map peaks inside their own box.

The scenes are of seed 2 of the test split; the default layer (``neck``) and method (LayerCAM)
were chosen on 60 scenes of seed 1, never on these.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable, Sequence

import torch

from camlens.api import explain
from camlens.data.digits import DigitScenes
from camlens.explanation import ExplanationWarning
from camlens.score_targets import BoxTarget
from camlens.zoo import get_weights

__all__ = ["box_map_scores", "detection_table"]

LAYERS: tuple[str | list[str], ...] = ("features", "neck", ["features", "neck"])
METHODS = ("gradcam", "hirescam", "layercam")


def box_map_scores(model: torch.nn.Module, scenes: DigitScenes, method: str,
                   layer: str | list[str], iou_threshold: float = 0.3) -> dict[str, float]:
    """Energy inside and pointing (see the module's docstring) of ``method`` at ``layer`` over
    every digit of ``scenes``; digits the detector does not find (score 0) count as misses."""
    shares, points = [], []
    for index in range(len(scenes)):
        item = scenes[index]
        image = item["image"][None]
        for digit in range(int(item["count"])):
            box = item["boxes"][digit]
            target = BoxTarget(box.tolist(), label=int(item["labels"][digit]),
                               iou_threshold=iou_threshold)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExplanationWarning)  # a missed digit: empty map
                exp = explain(model, image, method, layer=layer, target=target)
            heat = exp.maps[0]
            x0, y0, x1, y1 = (int(value) for value in box.round().tolist())
            inside = torch.zeros_like(heat, dtype=torch.bool)
            inside[y0:y1, x0:x1] = True
            total = float(heat.sum())
            if total <= 0 or float(exp.scores[0]) == 0:
                shares.append(0.0)
                points.append(0)
                continue
            shares.append(float(heat[inside].sum()) / total)
            peak = torch.nonzero(heat == heat.max())[0]
            points.append(int(inside[peak[0], peak[1]]))
    return {"energy_inside": statistics.mean(shares),
            "energy_inside_median": statistics.median(shares),
            "pointing": sum(points) / len(points), "digits": len(points)}


def detection_table(test_size: int = 200, seed: int = 2,
                    layers: Sequence[str | list[str]] = LAYERS,
                    methods: Sequence[str] = METHODS,
                    log: Callable[[str], None] = lambda message: None) -> str:
    """The Markdown table of :func:`box_map_scores` for each layer and method, after the
    detector's own accuracy on the same scenes."""
    from camlens.data.digits import materialize
    from camlens.experiments.training import detection_scores

    weights = get_weights("digits-detector")
    model = weights.load()
    scenes = DigitScenes(test_size, "test", seed)
    data = materialize(scenes, keys=("image", "labels", "boxes"))
    found = detection_scores(model, data["image"], data["boxes"], data["labels"])
    lines = [
        "# Explaining a detector's boxes: digits-detector",
        "",
        f"Made by `camlens reproduce detection --test-size {test_size} --out "
        "docs/detection.md`. For every digit of every scene, the explained score is the "
        "detector's score for the box that matches the digit's true box (IoU >= 0.3, its "
        "class). *Energy inside*: the share of the map's mass (input resolution, normalised "
        "to [0, 1]) inside the digit's box; *pointing*: the share of digits whose map peaks "
        "inside their own box. The default layer (`neck`) and method (LayerCAM) were chosen "
        "on 60 scenes of seed 1, not these.",
        "",
        f"digits-detector on {test_size} scenes (test split, seed {seed}): "
        f"{found['accuracy']:.1%} of scenes exactly right, box recall {found['recall']:.1%}, "
        f"precision {found['precision']:.1%} (score >= 0.5, IoU >= 0.5, class right).",
        "",
        "| layer | method | energy inside the box (mean / median) | pointing |",
        "|---|---|---|---|",
    ]
    for layer in layers:
        for method in methods:
            scores = box_map_scores(model, scenes, method, layer)
            name = "+".join(layer) if isinstance(layer, list) else layer
            log(f"{name} {method}: {scores}")
            lines.append(f"| {name} | {method} | {scores['energy_inside']:.3f} / "
                         f"{scores['energy_inside_median']:.3f} | {scores['pointing']:.1%} |")
    lines += ["", f"{scores['digits']} digits; a map spread evenly would put about 0.07 of its "
              "energy inside a box."]
    return "\n".join(lines) + "\n"
