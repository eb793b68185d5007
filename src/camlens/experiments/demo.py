"""The built-in demo (``camlens demo`` / ``make demo``): the seed lecture's story in one HTML page.

Offline and quick on a laptop CPU, with the shipped digit models:

1. CAM and Grad-CAM side by side on digits-gap: the same maps (the page prints the largest
   difference), because on a global-average-pooling + linear head Grad-CAM's weights are CAM's;
2. Grad-CAM on digits-fc, whose fully connected head CAM cannot explain;
3. two-digit scenes with one map per digit class: class-discriminative maps;
4. localization: the box around the largest component of the CAM above 20% of its peak (red)
   against the true box (green), with their IoU.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import torch

from camlens import metrics
from camlens.api import explain
from camlens.data import ClutteredDigits, DigitScenes, materialize
from camlens.zoo import get_weights, load

__all__ = ["SCALE", "build_demo", "enlarged"]

SCALE = 3  # the 64-pixel canvases are drawn three times larger


def enlarged(picture):
    from PIL import Image

    return picture.resize((picture.width * SCALE, picture.height * SCALE), Image.NEAREST)


def _figure_tag(src: str, caption: str) -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def build_demo(out: Path, count: int = 6) -> Path:
    """Write ``index.html`` and its PNGs into ``out``; returns the page's path."""
    from camlens.viz import draw_boxes, overlay, save_figure, to_pil
    from camlens.viz.grid import explanation_grid

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    gap, fc = load("digits-gap"), load("digits-fc")
    digits = materialize(ClutteredDigits(count, "test", seed=7))
    images, labels, boxes = digits["image"], digits["label"], digits["box"]

    cam = explain(gap, images, method="cam", layer="features")
    gradcam = explain(gap, images, method="gradcam", layer="features")
    fc_gradcam = explain(fc, images, method="gradcam", layer="features")
    difference = (cam.maps - gradcam.maps).abs().max().item()
    sections = []

    rows = []
    for index in range(count):
        picture = to_pil(images[index])
        cells = [("input", picture), (f"CAM, digits-gap: {int(cam.targets[index])}",
                                      overlay(picture, cam.maps[index])),
                 (f"Grad-CAM, digits-gap: {int(gradcam.targets[index])}",
                  overlay(picture, gradcam.maps[index])),
                 (f"Grad-CAM, digits-fc: {int(fc_gradcam.targets[index])}",
                  overlay(picture, fc_gradcam.maps[index]))]
        tags = []
        for column, (caption, image) in enumerate(cells):
            name = f"digit{index}_{column}.png"
            enlarged(image).save(out / name)
            tags.append(_figure_tag(name, caption))
        rows.append(f'<div class="row">{"".join(tags)}</div>')
    sections.append(
        "<h2>1-2. CAM and Grad-CAM agree on a GAP model; Grad-CAM also explains an FC head</h2>"
        f"<p>True labels: {', '.join(str(int(v)) for v in labels)}. On digits-gap "
        "(conv trunk, global average pooling, one linear layer) the CAM and Grad-CAM maps "
        f"differ by at most <b>{difference:.1e}</b>. digits-fc has a flattened, fully connected "
        "head: CAM refuses it, Grad-CAM explains it.</p>" + "".join(rows))

    scenes = materialize(DigitScenes(count, "test", seed=3, digits=(2, 2)))
    scene_rows = []
    for index in range(count):
        scene = scenes["image"][index : index + 1]
        classes = scenes["labels"][index, :2]
        exp = explain(gap, scene, method="gradcam", layer="features",
                              target=classes[None])
        figure = explanation_grid(exp, scene, class_names=get_weights("digits-gap").class_names)
        name = f"scene{index}.png"
        save_figure(figure, out / name)
        scene_rows.append(_figure_tag(name, f"scene with {classes[0]} and {classes[1]}: "
                                           "one Grad-CAM map per digit class"))
    sections.append("<h2>3. One map per class in the same image</h2><p>Each scene holds two "
                    "digits; asking for each digit's class gives a map on that digit.</p>"
                    f'<div class="column">{"".join(scene_rows)}</div>')

    found = metrics.largest_component_boxes(cam.maps, threshold=0.2)
    overlaps = metrics.box_iou(found, boxes)
    box_tags = []
    for index in range(count):
        picture = overlay(to_pil(images[index]), cam.maps[index])
        drawn = draw_boxes(enlarged(picture), torch.stack([boxes[index], found[index]]) * SCALE,
                           colors=["lime", "red"])
        name = f"box{index}.png"
        drawn.save(out / name)
        box_tags.append(_figure_tag(name, f"IoU {overlaps[index]:.2f}"))
    hits = metrics.localization_hits(found, boxes, cam.targets, labels)
    sections.append(
        "<h2>4. Localization from the map (the CAM paper's protocol)</h2><p>Keep the CAM above "
        "20% of its peak, take the box around the largest connected component (red) and compare "
        f"it with the true box (green): {int(hits.sum())} of {count} are right class and IoU "
        f"&ge; 0.5. The full table is in docs/results.md.</p>"
        f'<div class="row">{"".join(box_tags)}</div>')

    seconds = time.perf_counter() - started
    page = out / "index.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>camlens demo</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        ".row{display:flex;gap:8px;flex-wrap:wrap;margin-bottom:8px}figure{margin:0}"
        "figcaption{font-size:12px;text-align:center}img{image-rendering:pixelated}"
        ".column img{max-width:100%}</style></head><body>"
        "<h1>camlens demo: why did the model say that digit?</h1>"
        "<p>Offline reference models trained by camlens on scikit-learn's handwritten digits, "
        f"placed on cluttered 64x64 canvases. Built in {seconds:.1f} s.</p>"
        + "".join(sections) + "</body></html>"
    )
    return page
