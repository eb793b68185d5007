"""``POST /api/caption``: a caption of a picture, its map and one map per word (as
``camlens caption``: :func:`camlens.captioning.explain_caption`, the words' logits)."""

from __future__ import annotations

from typing import Any

import torch

from camlens.serve.catalog import ServedModel
from camlens.serve.encoding import map_values, png_data_url

__all__ = ["caption_record", "real_notes"]


def real_notes(notes: list[str], padded: int, steps: int) -> list[str]:
    """``notes`` without the one that counts the padded steps' maps (scored 0 by
    :class:`~camlens.captioning.CaptionTarget`, so zero everywhere by construction); a note
    counting more zero maps than there are padded steps stays."""
    padding = f"{padded} of {steps} "
    return [note for note in notes
            if not (padded and note.startswith(padding) and "zero everywhere" in note)]


def caption_record(served: ServedModel, picture, tensor: torch.Tensor, method: str,
                   layer: str | None, beam: int, value_grid: int, alpha: float = 0.5,
                   colormap: str = "jet") -> dict[str, Any]:
    """The caption of ``tensor`` (the preprocessed ``picture``), the whole caption's map and
    each word's (the last word is ``<end>``), with probabilities, logits and overlays."""
    from camlens.captioning import caption_tokens, explain_caption
    from camlens.viz import overlay
    from camlens.zoo.captioner import END, MAX_TOKENS, START, VOCABULARY

    model = served.loaded.model
    on_device = tensor.to(served.device)
    with torch.no_grad():
        words = model.generate(on_device, beam_size=beam)[0]  # type: ignore[operator]
    inputs, scored = caption_tokens([words], END, START, MAX_TOKENS)
    inputs = inputs.to(served.device)
    per_word = explain_caption(model, on_device, inputs, scored, method, layer).to("cpu")
    whole = explain_caption(model, on_device, inputs, scored, method, layer,
                            per_token=False).to("cpu")
    tokens = [*words, END]
    with torch.no_grad():
        step_probabilities = model(on_device, inputs).softmax(dim=-1)[0].cpu()

    def drawn(map_: torch.Tensor) -> dict[str, Any]:
        return {"overlay": png_data_url(overlay(picture, map_, colormap, alpha)),
                **map_values(map_, value_grid)}

    return {
        "caption": " ".join(VOCABULARY[token] for token in words),
        "method": method, "layer": per_word.layer, "input": png_data_url(picture),
        "input_size": list(per_word.input_size),
        "whole": {"logprob": round(float(whole.scores[0]), 4), **drawn(whole.maps[0])},
        "words": [{"word": VOCABULARY[token],
                   "probability": round(float(step_probabilities[step, token]), 4),
                   "logit": round(float(per_word.scores[0, step]), 4),
                   **drawn(per_word.maps[0, step])}
                  for step, token in enumerate(tokens)],
        "notes": list(dict.fromkeys([
            *real_notes(per_word.notes, MAX_TOKENS - len(tokens), MAX_TOKENS), *whole.notes])),
    }
