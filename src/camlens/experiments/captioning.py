"""The captioning reproduction: caption accuracy of digits-captioner and how its per-word and
whole-caption maps point at the digits they name (``camlens reproduce captioning``)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from camlens import metrics
from camlens.captioning import (
    caption_tokens,
    energy_inside_share,
    explain_caption,
    inside_outside_ratio,
)
from camlens.data import DigitScenes, materialize
from camlens.experiments.training import caption_accuracy
from camlens.zoo import load
from camlens.zoo.captioner import END, MAX_TOKENS, START

__all__ = ["CAPTION_ROWS", "CAPTION_SEED", "captioning_table", "evaluate_captioner"]

POINTING_TOLERANCE = metrics.pointing.DIGITS_TOLERANCE


def evaluate_captioner(model, scenes: dict[str, torch.Tensor], method: str = "gradcam",
                       layer: str = "encoder", batch_size: int = 100, beam_size: int = 1,
                       score: str | None = None,
                       tolerance: float = metrics.pointing.DIGITS_TOLERANCE) -> dict[str, Any]:
    """Caption accuracy and how well the caption maps point at the digits they name.

    ``scenes``: materialised :class:`camlens.data.DigitScenes` (image, caption, count, boxes).
    ``method="attention"`` evaluates the decoder's own attention weights (upsampled bilinearly
    from the encoder's grid) in place of a method's maps.

    - ``exact_caption_accuracy``: generated caption equal to the truth;
    - ``token_pointing``: over correctly generated digit tokens, the share whose map's peak lies
      within ``tolerance`` pixels of the box of the digit that token names (the pointing game);
      ``token_pointing_strict``: inside the box itself; each with its Wilson 95% interval
      (``..._interval``);
    - ``token_pointing_same_digit``: the share whose peak misses its own digit but lands on
      another copy of the same digit in the scene (a map made of channel weights, as Grad-CAM's
      is, cannot tell two copies of a digit apart);
    - ``attention_spearman``: mean Spearman correlation, over the same tokens, between the word's
      map (averaged down to the encoder's grid) and the decoder's attention at that step, with a
      bootstrap 95% interval;
    - whole caption (its log-probability's map; for attention, the mean of the caption's
      attention maps), per scene: ``inside_outside`` (mean inside the digit boxes over mean
      outside, 1.0 = uniform; its mean and ``inside_outside_median``), ``energy_inside`` (the
      share of the map's mass inside the boxes, mean and bootstrap interval) and
      ``no_mass_inside`` (the share of scenes whose map has no mass inside any box).
    ``score`` is the per-token score (:class:`CaptionTarget`; the whole caption always uses its
    log-probability).
    """
    exact, pointed, ratios, shares, correlations = 0, 0, [], [], []
    hits = {"token_pointing": 0, "token_pointing_strict": 0, "token_pointing_same_digit": 0}
    for begin in range(0, len(scenes["image"]), batch_size):
        rows = slice(begin, begin + batch_size)
        images, truth = scenes["image"][rows], scenes["caption"][rows]
        counts, boxes = scenes["count"][rows], scenes["boxes"][rows]
        generated = model.generate(images, beam_size=beam_size)
        inputs, scored = caption_tokens(generated, END, START, MAX_TOKENS)
        attention = model.attention(images, inputs)
        size = tuple(images.shape[-2:])
        if method == "attention":
            word_maps = F.interpolate(attention, size=size, mode="bilinear", align_corners=False)
            steps = (scored >= 0).float()[..., None, None]
            whole_maps = (word_maps * steps).sum(dim=1) / steps.sum(dim=1).clamp(min=1)
        else:
            word_maps = explain_caption(model, images, inputs, scored, method, layer,
                                        score=score).maps
            whole_maps = explain_caption(model, images, inputs, scored, method, layer,
                                         per_token=False).maps
        ratios.append(inside_outside_ratio(whole_maps, boxes, counts))
        shares.append(energy_inside_share(whole_maps, boxes, counts))
        pooled = F.adaptive_avg_pool2d(word_maps, tuple(attention.shape[-2:]))
        for row, words in enumerate(generated):
            count = int(counts[row])
            right = truth[row, :count].tolist()
            exact += words == right
            for position, word in enumerate(words[:count]):
                if word != right[position]:
                    continue
                pointed += 1
                peak_map = word_maps[row, position]
                correlations.append(float(metrics.spearman(pooled[row, position],
                                                           attention[row, position])))
                if metrics.pointing_game(peak_map, boxes[row, position], tolerance=tolerance):
                    hits["token_pointing"] += 1
                if metrics.pointing_game(peak_map, boxes[row, position], tolerance=0):
                    hits["token_pointing_strict"] += 1
                elif any(metrics.pointing_game(peak_map, boxes[row, other], tolerance=0)
                         for other in range(count) if other != position and right[other] == word):
                    hits["token_pointing_same_digit"] += 1
    total = len(scenes["image"])
    ratio, share = torch.cat(ratios), torch.cat(shares)
    result: dict[str, Any] = {
        "exact_caption_accuracy": exact / total,
        **{name: value / max(pointed, 1) for name, value in hits.items()},
        "tokens_pointed": pointed,
        "inside_outside": ratio.mean().item(),
        "inside_outside_median": ratio.median().item(),
        "energy_inside": share.mean().item(),
        "energy_inside_interval": metrics.bootstrap_interval(share),
        "no_mass_inside": (share <= 0).float().mean().item(),
        "attention_spearman": sum(correlations) / max(len(correlations), 1),
        "attention_spearman_interval": metrics.bootstrap_interval(correlations)
        if correlations else (float("nan"), float("nan")),
    }
    for name in ("token_pointing", "token_pointing_strict"):
        result[f"{name}_interval"] = (metrics.wilson_interval(hits[name], pointed) if pointed
                                      else (float("nan"), float("nan")))
    return result


#: (method, layer, per-token score) rows of the captioning table: the methods at the encoder's
#: last layer (the Grad-CAM paper's choice), the two that keep the gradient per position at the
#: end of the encoder's second block too (LayerCAM's advice: shallower layers keep finer detail)
#: with Grad-CAM there for contrast, and Grad-CAM on per-token log-probabilities.
CAPTION_ROWS = tuple((method, "encoder", None) for method in
                     ("gradcam", "gradcam++", "hirescam", "layercam", "xgradcam"))
CAPTION_ROWS += (("hirescam", "encoder.7", None), ("layercam", "encoder.7", None),
                 ("gradcam", "encoder.7", None), ("gradcam", "encoder", "logprob"),
                 ("attention", "encoder", None))
#: Scenes of the published table. The rows' layers were chosen looking at 200 scenes of seed 1;
#: seed 2 keeps the table on scenes that choice never saw.
CAPTION_SEED = 2


def captioning_table(test_size: int = 500, log: Callable[[str], None] | None = None) -> str:
    """Caption accuracy of digits-captioner and how its per-word and whole-caption maps point at
    the digits (the Grad-CAM paper's captioning checks, on held-out digit scenes)."""
    say = log or (lambda message: None)
    model = load("digits-captioner")
    scenes = materialize(DigitScenes(test_size, "test", seed=CAPTION_SEED))
    greedy = caption_accuracy(model, scenes["image"], scenes["caption"], scenes["count"])
    beam = caption_accuracy(model, scenes["image"], scenes["caption"], scenes["count"],
                            beam_size=3)
    area_share = float(energy_inside_share(torch.ones_like(scenes["image"][:, 0]),
                                           scenes["boxes"], scenes["count"]).mean())
    lines = [
        f"Held-out digit scenes: {test_size} scenes of 2 to 4 digits (test split, seed "
        f"{CAPTION_SEED}), 64x128. Machine: {platform.machine()}, torch {torch.__version__}.",
        "",
        "| decoding | exact-caption accuracy |",
        "|---|---:|",
        f"| greedy | {100 * greedy:.1f}% |",
        f"| beam search, width 3 | {100 * beam:.1f}% |",
        "",
        "Maps of the greedy caption. Layers: `encoder` is the encoder's last conv block (128 "
        "channels), `encoder.7` the end of its second block (32 channels), both 16x32; "
        "`attention` is the decoder's own attention weights over the encoder's 16x32 grid at "
        "each step (what the model says it looked at), upsampled bilinearly. "
        "Per-token pointing: over the correctly generated digits, the share whose own map (the "
        "token's logit, unless the row says log-probability) peaks within "
        f"{POINTING_TOLERANCE} px of that digit's box (the pointing game's tolerance, as in the "
        "localization table), strictly inside it, and, among the strict misses, on another copy "
        "of the same digit; brackets: Wilson 95% intervals. Agreement with attention: the mean "
        "Spearman correlation between the word's map (averaged down to the 16x32 grid) and the "
        "decoder's attention at that step (bootstrap 95% interval over the words).",
        "",
        f"| method | layer | per-token pointing ({POINTING_TOLERANCE} px) | strictly inside | "
        "on a copy of the digit | tokens | Spearman with the decoder's attention |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    whole = [
        "",
        "The whole caption's map (its log-probability's; for attention, the mean of the "
        "caption's attention maps), per scene: mean inside the digit boxes over mean outside "
        "(1.0 = uniform; the Grad-CAM paper reports 3.27 for Grad-CAM on COCO), as a mean over "
        "scenes and as a median; the share of the map's mass inside the boxes (bootstrap 95% "
        "interval over scenes; a uniform map puts there the boxes' share of the area, "
        f"{100 * area_share:.1f}% on these scenes); and the scenes whose map has no mass inside "
        "any box.",
        "",
        "| method | layer | inside/outside, mean | median | mass inside the boxes | "
        "scenes with no mass inside |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for method, layer, score in CAPTION_ROWS:
        say(f"captioning {method} at {layer} ...")
        result = evaluate_captioner(model, scenes, method=method, layer=layer, score=score,
                                    tolerance=POINTING_TOLERANCE)
        label = method if score is None else f"{method}, log-probability per token"
        agreement = ("-" if method == "attention" else
                     f"{result['attention_spearman']:.2f} "
                     f"{_bracket(result['attention_spearman_interval'], percent=False)}")
        lines.append(f"| {label} | `{layer}` | {100 * result['token_pointing']:.1f}% "
                     f"{_bracket(result['token_pointing_interval'])} | "
                     f"{100 * result['token_pointing_strict']:.1f}% "
                     f"{_bracket(result['token_pointing_strict_interval'])} | "
                     f"{100 * result['token_pointing_same_digit']:.1f}% | "
                     f"{result['tokens_pointed']} | {agreement} |")
        if score is None:
            whole.append(f"| {method} | `{layer}` | {result['inside_outside']:.2f} | "
                         f"{result['inside_outside_median']:.2f} | "
                         f"{100 * result['energy_inside']:.1f}% "
                         f"{_bracket(result['energy_inside_interval'])} | "
                         f"{100 * result['no_mass_inside']:.1f}% |")
    return "\n".join(lines + whole) + "\n"


def _bracket(interval: tuple[float, float], percent: bool = True) -> str:
    low, high = interval
    return f"[{100 * low:.1f}, {100 * high:.1f}]" if percent else f"[{low:.2f}, {high:.2f}]"
