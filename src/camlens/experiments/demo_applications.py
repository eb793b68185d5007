"""The demo page's application sections: a caption with a map per word, the bias audit's headline
and worst cases, an accent recording with its relevance over time and a player, and a detector's
map per detected digit. Each writes its pictures (and the WAV) next to the page through
:class:`camlens.experiments.demo.DemoPage`; every string is escaped."""

from __future__ import annotations

import html
import warnings

import torch

from camlens.api import explain
from camlens.data import DigitScenes, materialize
from camlens.experiments.demo_page import (
    SCENE_SCALE,
    DemoPage,
    DemoSizes,
    enlarged,
    figure_tag,
    paragraph,
    row_tag,
    table_tag,
)
from camlens.explanation import ExplanationWarning
from camlens.zoo import get_weights, load

__all__ = ["AUDITED", "accent_section", "audit_headline", "audit_section", "captions_section",
           "detector_section", "layers_section"]

#: The audited models: the one trained with the cue, and the one trained without it.
AUDITED = ("digits-biased", "digits-gap")


def captions_section(page: DemoPage, sizes: DemoSizes) -> None:
    """Scenes captioned by digits-captioner, the whole caption's map and one map per word."""
    from camlens.captioning import caption_tokens, explain_caption
    from camlens.viz import overlay, to_pil
    from camlens.zoo.captioner import END, MAX_TOKENS, START, VOCABULARY

    model = load("digits-captioner")
    layer = getattr(model, "word_layer", None) or get_weights("digits-captioner").target_layer
    scenes = materialize(DigitScenes(sizes.captions, "test", seed=3, digits=(2, 3)))
    rows = []
    for index in range(sizes.captions):
        scene = scenes["image"][index : index + 1]
        with torch.no_grad():
            words = model.generate(scene)[0]
        inputs, scored = caption_tokens([words], END, START, MAX_TOKENS)
        with warnings.catch_warnings():
            # the padded steps after <end> score 0 by construction: their maps are empty
            warnings.simplefilter("ignore", ExplanationWarning)
            per_word = explain_caption(model, scene, inputs, scored, "layercam", layer)
            whole = explain_caption(model, scene, inputs, scored, "layercam", layer,
                                    per_token=False)
        picture = to_pil(scene[0])
        caption = " ".join(VOCABULARY[token] for token in words)
        figures = [figure_tag(page.save(enlarged(overlay(picture, whole.maps[0]), SCENE_SCALE),
                                        f"caption{index}_whole.png"),
                              f"“{caption}”: the whole caption")]
        for step, token in enumerate([*words, END]):
            figures.append(figure_tag(
                page.save(enlarged(overlay(picture, per_word.maps[0, step]), SCENE_SCALE),
                          f"caption{index}_word{step}.png"),
                f"word {step + 1}: “{VOCABULARY[token]}”"))
        rows.append(row_tag(figures, "row wide"))
    page.section(
        "6. A caption, and a map per word",
        paragraph("digits-captioner (a conv encoder and an attention GRU decoder) writes a "
                  "scene's digits left to right. LayerCAM of each word's logit at the encoder's "
                  f"word layer ({layer}) lands on the digit the word names; the last word is "
                  "<end>. The same as camlens caption SCENE.png --out DIR."),
        *rows)


def audit_headline(results: dict) -> tuple[list[str], list[list[str]]]:
    """The audit table: per audited model its accuracy, each region's mean share and lift, and
    its accuracy when the cue is moved or removed (every figure from the audit results)."""
    from camlens.audit.report import number, percent, share_digits

    first = next(iter(results.values()))
    variants = [] if first.counterfactual is None else [
        v.name for v in first.counterfactual.variants[1:]]
    header = ["model", "accuracy", *[f"{region} share (lift)" for region in first.regions],
              *[f"accuracy, {name}" for name in variants]]
    rows = []
    for name, result in results.items():
        summary = result.summary()
        cells = [name, percent(summary["accuracy"])]
        for region in result.regions:
            stats = summary["regions"][region]
            cells.append(f"{share_digits(stats['mean_share'])} ({number(stats['lift'])}x)")
        for variant in variants:
            cells.append(percent(result.counterfactual[variant].accuracy))
        rows.append(cells)
    return header, rows


def audit_section(page: DemoPage, sizes: DemoSizes) -> None:
    """camlens.audit of digits-biased and digits-gap on the built-in biased digits."""
    from camlens.audit import audit
    from camlens.audit.builtin import AUDIT_DATA
    from camlens.audit.report import example_picture, share_digits

    data = AUDIT_DATA["biased-digits"](sizes.audit, 0)
    results = {}
    for name in AUDITED:
        model = load(name)
        results[name] = audit(model, data.dataset, data.regions, "gradcam",
                              layer=get_weights(name).target_layer, keep=sizes.worst,
                              class_names=get_weights(name).class_names,
                              counterfactuals=data.variants, cue_key=data.cue_key)
    header, rows = audit_headline(results)
    biased = results[AUDITED[0]]
    cases = []
    row_of = {index: row for row, index in enumerate(biased.indices.tolist())}
    for rank, example in enumerate(biased.examples.get("mark", [])[: sizes.worst]):
        record = biased.record(row_of[example.index])
        cases.append(figure_tag(
            page.save(example_picture(example), f"audit_worst{rank}.png"),
            f"#{example.index}: label {record['label']}, predicted {record['prediction']}, "
            f"mark share {share_digits(record['share']['mark'])}"))
    page.section(
        "7. A bias audit: does the model look at the digit or at the mark?",
        paragraph(f"{data.description} Grad-CAM of the predicted class; a region's share is the "
                  "map's mass inside it (its lift: that share over the region's share of the "
                  "area, 1 = no preference). The accuracy columns move or remove the mark."),
        table_tag(header, rows),
        paragraph(f"The {len(cases)} inputs whose {AUDITED[0]} maps put the most mass on the "
                  "mark (boxes: the digit and the mark):"),
        row_tag(cases),
        paragraph(f"The full report: camlens audit --model {AUDITED[0]} --size "
                  f"{sizes.audit} --out audit-report; in the explorer, the audit view."))


def accent_section(page: DemoPage, sizes: DemoSizes) -> None:
    """A synthesized accent recording: the WAV with a player, its relevance over time (attention
    and attention x gradient of accent-attention) and per word."""
    import soundfile

    from camlens.audio.plot import relevance_figure
    from camlens.audio.relevance import audio_relevance
    from camlens.data.speech import AccentRecordings

    weights = get_weights("accent-attention")
    model = load("accent-attention")
    recording = AccentRecordings(2, "test", kind="whole", seed=0).recording(0)
    waveform = recording.waveform.reshape(1, -1)
    words = [{"word": w.word, "start_s": w.start_s, "end_s": w.end_s} for w in recording.words]
    relevance = audio_relevance(model, waveform, methods=["attention", "attention-gradient"],
                                layer=weights.target_layer, words=words,
                                class_names=weights.class_names)
    soundfile.write(page.out / "accent.wav", waveform.reshape(-1).numpy(),
                    recording.sample_rate, subtype="PCM_16")
    figure = relevance_figure(relevance, waveform)
    picture = page.save(figure, "accent.png")
    page.section(
        "8. An accent recording: which seconds decided it?",
        paragraph(f"A synthesized {recording.accent} speaker says "
                  f"“{' '.join(w['word'] for w in words)}” ({recording.duration_s:.1f} s). "
                  f"accent-attention ({weights.description}) says: {relevance.summary()}. "
                  "The attention weights over time, and attention x gradient, are drawn under "
                  "the waveform; the table gives each span's share. The same as camlens "
                  "explain-audio accent.wav --model accent-attention."),
        '<audio controls preload="metadata" src="accent.wav"></audio>',
        f'<div class="wide">{figure_tag(picture, "relevance over time")}</div>',
        f"<pre>{html.escape(relevance.table())}</pre>")


def detector_section(page: DemoPage, sizes: DemoSizes) -> None:
    """digits-detector on scenes: one LayerCAM map per detected digit, at the neck."""
    from camlens.score_targets import BoxesTarget, dense_detections
    from camlens.viz import draw_boxes, overlay, to_pil

    model = load("digits-detector")
    names = get_weights("digits-detector").class_names
    scenes = materialize(DigitScenes(sizes.detections, "test", seed=5))
    rows = []
    for index in range(sizes.detections):
        scene = scenes["image"][index : index + 1]
        with torch.no_grad():
            found = dense_detections(model(scene))[0]
        target = BoxesTarget.from_detections(found)
        exp = explain(model, scene, method="layercam", layer="neck", target=target)
        boxes = torch.as_tensor(target.boxes, dtype=torch.float32).reshape(-1, 4)
        picture = to_pil(scene[0])
        digits = ", ".join(str(int(v)) for v in scenes["labels"][index] if v >= 0)
        figures = [figure_tag(page.save(enlarged(picture, SCENE_SCALE),
                                        f"detect{index}_input.png"),
                              f"scene with {digits}")]
        for box_index, box in enumerate(boxes):
            label = names[int(target.labels[box_index])] if target.labels is not None else "box"
            drawn = draw_boxes(enlarged(overlay(picture, exp.maps[0, box_index]), SCENE_SCALE),
                               box[None] * SCENE_SCALE, colors=["white"])
            figures.append(figure_tag(page.save(drawn, f"detect{index}_{box_index}.png"),
                                      f"{label} (score {float(exp.scores[0, box_index]):.2f})"))
        rows.append(row_tag(figures, "row wide"))
    page.section(
        "9. A detector: one map per detected digit",
        paragraph("digits-detector (a YOLO-style one-stage detector) finds the digits of a "
                  "scene; LayerCAM of each detection's score at the neck puts the map inside its "
                  "box (docs/detection.md: camlens reproduce detection). The same as camlens "
                  "explain scene.png --model digits-detector --method layercam --target "
                  "detections."),
        *rows)


def layers_section(page: DemoPage, sizes: DemoSizes) -> None:
    """What the layers of digits-gap learned: the input that maximises each class logit
    (activation maximization, one batch of ten) and one test digit reconstructed from each depth
    (Mahendran and Vedaldi 2015). Few steps, to keep the page quick; ``camlens reproduce
    maximization`` / ``inversion`` run the full versions (docs/maximization.md,
    docs/inversion.md)."""
    from camlens.data import ClutteredDigits
    from camlens.experiments.inversion import LAYERS, invert_digits
    from camlens.experiments.maximization import maximize_classes
    from camlens.representations.figures import to_picture

    model = load("digits-gap")
    names = get_weights("digits-gap").class_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExplanationWarning)  # said on the page instead
        maximised = maximize_classes(model, steps=sizes.maximize_steps, seed=0,
                                     param="fourier", tv=0.5)
        digit = materialize(ClutteredDigits(1, "test", seed=0))["image"]
        layers = tuple(name for name, _ in LAYERS if name != "features.3")
        inverted = invert_digits(model, digit, steps=sizes.invert_steps, layers=layers)
    assert maximised.output is not None
    class_tags = []
    for k in range(10):
        probabilities = maximised.output[k].softmax(dim=0)
        predicted = int(probabilities.argmax())
        class_tags.append(figure_tag(
            page.save(enlarged(to_picture(maximised.pixels[k]), 2), f"maximized{k}.png"),
            f"class {names[k]}: logit {float(maximised.final_values[k]):.0f}, model says "
            f"{names[predicted]} ({float(probabilities[predicted]):.2f})"))
    row = [figure_tag(page.save(enlarged(to_picture(inverted.original_pixels[0]), 2),
                                "inverted_input.png"), "test digit")]
    for index, (name, layer) in enumerate(inverted.layers.items()):
        row.append(figure_tag(
            page.save(enlarged(to_picture(layer.pixels[0]), 2), f"inverted{index}.png"),
            f"from {name}: representation error {float(layer.representation_error[0]):.2f}, "
            f"pixel RMSE {float(layer.pixel_rmse[0]):.2f}"))
    not_raised = sum(not bool(value) for value in maximised.improved)
    page.section(
        "10. What the layers learned",
        paragraph(f"Activation maximization: for each class, the 64x64 picture that maximises "
                  f"digits-gap's logit of that class ({sizes.maximize_steps} Adam steps from "
                  "grey, decorrelated Fourier parameterisation, random jitter, scale and "
                  "rotation, total variation; one batch for the ten classes; "
                  f"{10 - not_raised} of 10 rose above their start). Under each: the logit "
                  "reached and the class the model gives the picture."),
        row_tag(class_tags),
        paragraph(f"Input reconstruction (Mahendran and Vedaldi 2015): a test digit "
                  f"reconstructed from its representation at each depth ({sizes.invert_steps} "
                  "steps, every layer in one batch). Relative representation error "
                  "||Φ(x) - Φ(x0)||² / ||Φ(x0)||²; pixel RMSE in [0, 1] pixels. The deeper "
                  "the layer, the less of the picture it keeps. Full runs: camlens reproduce "
                  "maximization and camlens reproduce inversion."),
        row_tag(row))
