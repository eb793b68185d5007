"""The built-in demo (``camlens demo`` / ``make demo``): the seed lecture's story in one HTML page.

Offline and quick on a laptop CPU, with the shipped models only (no CDN, no download; every
string on the page is HTML-escaped):

1. CAM and Grad-CAM side by side on digits-gap: the same maps (the page prints the largest
   difference), because on a global-average-pooling + linear head Grad-CAM's weights are CAM's;
   Grad-CAM on digits-fc, whose fully connected head CAM cannot explain;
2. two-digit scenes with one map per digit class: class-discriminative maps;
3. counterfactual maps (Grad-CAM Section 7, negated gradients): what speaks *against* a class;
4. GAP vs FC: accuracy and training time from the weights' metadata, parameters counted, and
   localization error measured on this page's own test digits;
5. localization: the box around the largest component of the CAM above 20% of its peak (red)
   against the true box (green), with their IoU;
6. to 9. the applications (:mod:`camlens.experiments.demo_applications`): a caption with a map per
   word, the bias audit's headline and worst cases, an accent recording with its relevance over
   time and a player, a detector's map per detected digit;
10. what the layers learned: the input that maximises each class of digits-gap and a digit
   reconstructed from each of its layers.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from pathlib import Path

import torch

from camlens import metrics
from camlens.api import explain
from camlens.data import ClutteredDigits, DigitScenes, materialize
from camlens.experiments.demo_page import (  # noqa: F401 - the names this module always had
    EXPLORER_COMMAND,
    SCALE,
    SCENE_SCALE,
    DemoPage,
    DemoSizes,
    enlarged,
    figure_tag,
    paragraph,
    row_tag,
    table_tag,
)
from camlens.zoo import get_weights, load

__all__ = ["EXPLORER_COMMAND", "SCALE", "SCENE_SCALE", "DemoPage", "DemoSizes", "build_demo",
           "enlarged", "figure_tag", "gap_fc_rows", "table_tag"]



def _cam_and_gradcam(page: DemoPage, sizes: DemoSizes) -> dict:
    from camlens.viz import overlay, to_pil

    gap, fc = load("digits-gap"), load("digits-fc")
    digits = materialize(ClutteredDigits(sizes.digits, "test", seed=7))
    images, labels = digits["image"], digits["label"]
    cam = explain(gap, images, method="cam", layer="features")
    gradcam = explain(gap, images, method="gradcam", layer="features")
    fc_gradcam = explain(fc, images, method="gradcam", layer="features")
    difference = (cam.maps - gradcam.maps).abs().max().item()
    rows = []
    for index in range(sizes.digits):
        picture = to_pil(images[index])
        cells = [("input", picture),
                 (f"CAM, digits-gap: {int(cam.targets[index])}",
                  overlay(picture, cam.maps[index])),
                 (f"Grad-CAM, digits-gap: {int(gradcam.targets[index])}",
                  overlay(picture, gradcam.maps[index])),
                 (f"Grad-CAM, digits-fc: {int(fc_gradcam.targets[index])}",
                  overlay(picture, fc_gradcam.maps[index]))]
        rows.append(row_tag([figure_tag(page.save(enlarged(image), f"digit{index}_{column}.png"),
                                        caption)
                             for column, (caption, image) in enumerate(cells)]))
    page.section(
        "1. CAM = Grad-CAM on a GAP model; Grad-CAM also explains an FC head",
        paragraph(f"True labels: {', '.join(str(int(v)) for v in labels)}. On digits-gap (conv "
                  "trunk, global average pooling, one linear layer) the CAM and Grad-CAM maps "
                  "differ by at most ").removesuffix("</p>")
        + f"<b>{difference:.1e}</b>"  # a number, nothing to escape
        + html.escape(". digits-fc has a flattened, fully connected head: CAM refuses it, "
                      "Grad-CAM explains it.") + "</p>",
        *rows)
    return {"images": images, "labels": labels, "boxes": digits["box"], "cam": cam}


def _box_share(maps: torch.Tensor, box: torch.Tensor) -> float:
    """The share of a map's mass ``(H, W)`` inside ``box`` (x0, y0, x1, y1, pixels)."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    total = float(maps.sum())
    return float(maps[y0:y1, x0:x1].sum()) / total if total > 0 else float("nan")


def _per_class_and_counterfactual(page: DemoPage, sizes: DemoSizes) -> None:
    from camlens.viz import overlay, to_pil
    from camlens.viz.grid import explanation_grid

    gap = load("digits-gap")
    names = get_weights("digits-gap").class_names
    scenes = materialize(DigitScenes(sizes.scenes, "test", seed=3, digits=(2, 2)))
    per_class, counter_rows = [], []
    refused = None
    for index in range(sizes.scenes):
        scene = scenes["image"][index : index + 1]
        classes = scenes["labels"][index, :2]
        exp = explain(gap, scene, method="gradcam", layer="features", target=classes[None])
        figure = explanation_grid(exp, scene, class_names=names)
        per_class.append(figure_tag(page.save(figure, f"scene{index}.png"),
                                    f"scene with {int(classes[0])} and {int(classes[1])}: "
                                    "one Grad-CAM map per digit class"))
        first, other_box = int(classes[0]), scenes["boxes"][index, 1]
        try:
            against = explain(gap, scene, method="gradcam", layer="features", target=first,
                              counterfactual=True)
        except TypeError as error:  # an engine without the option
            refused = str(error)
            continue
        picture = to_pil(scene[0])
        ordinary = exp.maps[0, 0]
        counter = against.maps[0]
        own_box = scenes["boxes"][index, 0]
        counter_rows.append(row_tag([
            figure_tag(page.save(enlarged(picture, SCENE_SCALE), f"counter{index}_0.png"),
                       "input"),
            figure_tag(page.save(enlarged(overlay(picture, ordinary), SCENE_SCALE),
                                 f"counter{index}_1.png"),
                       f"Grad-CAM for {first}: {_box_share(ordinary, own_box):.0%} of the "
                       f"map on the {first}"),
            figure_tag(page.save(enlarged(overlay(picture, counter), SCENE_SCALE),
                                 f"counter{index}_2.png"),
                       f"counterfactual for {first}: {_box_share(counter, other_box):.0%} on "
                       f"the {int(classes[1])}")]))
    page.section("2. One map per class in the same image",
                 paragraph("Each scene holds two digits; asking for each digit's class gives a "
                           "map on that digit."),
                 row_tag(per_class, "column"))
    if refused is not None:
        page.section("3. Counterfactual maps",
                      paragraph(f"This build of the engine has no counterfactual option: "
                                f"{refused}"))
        return
    page.section(
        "3. Counterfactual maps: what speaks against a class",
        paragraph("Grad-CAM with the score's gradients negated (explain(..., counterfactual=True),"
                  " the Grad-CAM paper's Section 7) shows the regions that lower the score of "
                  "the class: removing them would make the model surer of it. Beside the "
                  "ordinary map of the first digit's class, its counterfactual map lands on the "
                  "other digit. Shares are of the map's mass (upsampled, normalised) inside "
                  "each digit's true box."),
        *counter_rows)


def gap_fc_rows(localization_size: int) -> tuple[list[str], list[list[str]]]:
    """The GAP vs FC table: head, parameters (counted), test accuracy and training time (from the
    weights' metadata, written by ``camlens train``) and the top-1 localization error of CAM
    and Grad-CAM measured on ``localization_size`` cluttered test digits."""
    digits = materialize(ClutteredDigits(localization_size, "test", seed=11))
    images, labels, boxes = digits["image"], digits["label"], digits["box"]
    header = ["model", "head", "parameters", "test accuracy (metadata)", "trained in",
              f"loc. error, CAM ({localization_size} digits)",
              f"loc. error, Grad-CAM ({localization_size} digits)", "trained by"]
    rows = []
    for name in ("digits-gap", "digits-fc"):
        weights = get_weights(name)
        model = load(name)
        metadata = weights.metadata
        errors = []
        for method in ("cam", "gradcam"):
            try:
                exp = explain(model, images, method=method, layer=weights.target_layer)
            except ValueError:
                errors.append("refused (no GAP + linear head)")
                continue
            found = metrics.largest_component_boxes(exp.maps, threshold=0.2)
            hits = metrics.localization_hits(found, boxes, exp.targets, labels)
            errors.append(f"{100 * (1 - float(hits.float().mean())):.1f}%")
        accuracy = weights.metrics.get("test_accuracy")
        rows.append([name, weights.description.split(" (")[0],
                     f"{sum(p.numel() for p in model.parameters()):,}",
                     "-" if accuracy is None else
                     f"{100 * accuracy:.2f}% of {metadata.get('test_size', '?')}",
                     f"{metadata.get('train_seconds', '?')} s", *errors,
                     metadata.get("command", "?")])
    return header, rows


def _gap_vs_fc(page: DemoPage, sizes: DemoSizes) -> None:
    header, rows = gap_fc_rows(sizes.table)
    page.section(
        "4. GAP vs FC: what the GAP head costs",
        paragraph("The seed lecture (after the CAM paper's Table 1) warns that a global-average-"
                  "pooling head can cost accuracy. Accuracy and training time are read from the "
                  "weights' metadata (camlens train wrote them); parameters are counted; the "
                  "localization errors (wrong class, or the box from the map above 20% of its "
                  "peak has IoU < 0.5 with the true box) are measured by this page on its own "
                  "test digits. The 1,000-image table is docs/results.md (camlens reproduce "
                  "localization)."),
        table_tag(header, rows))


def _localization(page: DemoPage, digits: dict, sizes: DemoSizes) -> None:
    from camlens.viz import draw_boxes, overlay, to_pil

    cam, images, boxes, labels = digits["cam"], digits["images"], digits["boxes"], digits["labels"]
    found = metrics.largest_component_boxes(cam.maps, threshold=0.2)
    overlaps = metrics.box_iou(found, boxes)
    tags = []
    for index in range(sizes.digits):
        picture = overlay(to_pil(images[index]), cam.maps[index])
        drawn = draw_boxes(enlarged(picture), torch.stack([boxes[index], found[index]]) * SCALE,
                           colors=["lime", "red"])
        tags.append(figure_tag(page.save(drawn, f"box{index}.png"),
                               f"IoU {overlaps[index]:.2f}"))
    hits = metrics.localization_hits(found, boxes, cam.targets, labels)
    page.section(
        "5. Localization from the map (the CAM paper's protocol)",
        paragraph("Keep the CAM above 20% of its peak, take the box around the largest connected "
                  "component (red) and compare it with the true box (green): "
                  f"{int(hits.sum())} of {sizes.digits} are right class and IoU >= 0.5."),
        row_tag(tags))


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         ".row{display:flex;gap:8px;flex-wrap:wrap;margin-bottom:8px;align-items:flex-start}"
         "figure{margin:0}figcaption{font-size:12px;text-align:center;max-width:400px}"
         "img{image-rendering:pixelated}.column img,.wide img{max-width:100%}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
         "padding:3px 8px;font-size:13px;text-align:left}pre{background:#f6f6f6;padding:8px;"
         "overflow-x:auto}code{background:#f3f3f3;padding:0 .2em}")


def build_demo(out: Path, sizes: DemoSizes | None = None,
               log: Callable[[str], None] | None = None) -> Path:
    """Write ``index.html``, its PNGs and its WAV into ``out``; returns the page's path.
    ``log`` hears each section's time."""
    from camlens.experiments import demo_applications as applications

    sizes = sizes or DemoSizes()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    page = DemoPage(out)

    def timed(name: str, work: Callable[[], object]) -> object:
        begun = time.perf_counter()
        result = work()
        page.timings[name] = time.perf_counter() - begun
        if log is not None:
            log(f"{name}: {page.timings[name]:.1f} s")
        return result

    digits = timed("CAM and Grad-CAM", lambda: _cam_and_gradcam(page, sizes))
    timed("per class and counterfactual", lambda: _per_class_and_counterfactual(page, sizes))
    timed("GAP vs FC", lambda: _gap_vs_fc(page, sizes))
    timed("localization", lambda: _localization(page, digits, sizes))  # type: ignore[arg-type]
    timed("captions", lambda: applications.captions_section(page, sizes))
    timed("bias audit", lambda: applications.audit_section(page, sizes))
    timed("accent", lambda: applications.accent_section(page, sizes))
    timed("detector", lambda: applications.detector_section(page, sizes))
    timed("what the layers learned", lambda: applications.layers_section(page, sizes))
    page.section("Explore further",
                 paragraph("Every map here, and any picture or recording of your own, can be "
                           "explored in the browser: run the command below, then open "
                           "http://127.0.0.1:8000/ (pick a model, a method, layers and targets; "
                           "hover to read values; browse a bias audit)."),
                 f"<pre>{html.escape(EXPLORER_COMMAND)}</pre>")
    seconds = time.perf_counter() - started
    index = out / "index.html"
    index.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>camlens demo</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>camlens demo: why did the model say that?</h1>"
        + paragraph("Offline reference models trained by camlens: handwritten digits from "
                    "scikit-learn on cluttered 64x64 canvases and two-digit scenes, a captioner, "
                    "a detector, a biased classifier and an accent classifier on synthesized "
                    f"speech. Built in {seconds:.1f} s.")
        + "".join(page.sections) + "</body></html>")
    return index
