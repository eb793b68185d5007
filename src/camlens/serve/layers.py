"""``GET /api/models/{name}/layers``: what ``camlens layers`` lists, as JSON rows.

The rows come from :func:`camlens.layer_choice.survey_layers` on one example input (a blank
picture, or a blank picture and its caption, or a second of silence) and its predicted score;
:func:`camlens.layer_choice.choose_layer` marks the layer ``layer=None`` would explain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# ``served`` below is a camlens.serve.catalog.ServedModel; catalog imports this module, so the
# type is not imported here (no circle in the import graph).
ServedModel = Any

__all__ = ["example_inputs", "layer_rows"]


def _predicted_score(explained: torch.Tensor) -> Callable[[object], torch.Tensor]:
    from camlens.targets import adapt_output, resolve_target

    def scores_of(output: object) -> torch.Tensor:
        return resolve_target(None, adapt_output(output), explained.shape[0])[1]

    return scores_of


def example_inputs(served: ServedModel
                   ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, Callable[[object],
                                                                             torch.Tensor]]:
    """(inputs, the explained input, the scores) of one example for ``served``."""
    from PIL import Image

    loaded, device = served.loaded, served.device
    if served.kind == "audio":
        waveform = torch.full((1, 16000), 1e-3, device=device)
        return (waveform,), waveform, _predicted_score(waveform)
    picture = loaded.preprocess(Image.new("RGB", (256, 256))).to(device)
    if served.kind == "caption":
        from camlens.captioning import CaptionTarget, caption_tokens
        from camlens.zoo.captioner import END, MAX_TOKENS, START

        with torch.no_grad():
            words = loaded.model.generate(picture)[0]
        decoder_inputs, scored = caption_tokens([words], END, START, MAX_TOKENS)
        return (picture, decoder_inputs.to(device)), picture, CaptionTarget(scored)
    return (picture,), picture, _predicted_score(picture)


def _layout_text(layout) -> str:
    grid = f" {'x'.join(map(str, layout.grid))}" if layout.grid else ""
    return layout.kind.replace("_", " ") + grid


def layer_rows(served: ServedModel) -> list[dict[str, Any]]:
    """One row per module output of 3 or more axes: ``name``, ``type``, ``shape``, ``layout``
    (None when it does not lie over the input's grid, with ``reason``), ``reach`` ("all 256/256"
    or "136/256"), ``explainable``, ``automatic`` (what ``layer=None`` explains) and
    ``model_layer`` (the model's own layer)."""
    from camlens.layer_choice import LayerChoiceError, choose_layer, survey_layers
    from camlens.model_state import preserved_model_state

    model = served.loaded.model
    inputs, explained, scores_of = example_inputs(served)
    with preserved_model_state(model):
        rows = survey_layers(model, inputs, explained, scores_of)
        try:
            automatic: str | None = choose_layer(model, inputs, explained, scores_of).name
        except (LayerChoiceError, TypeError, ValueError, RuntimeError):
            automatic = None
    modules = dict(model.named_modules())
    listed = []
    for row in rows:
        reach = None
        if row.reached is not None and row.positions is not None:
            reach = ("all " if row.reached == row.positions else "") + (
                f"{row.reached}/{row.positions}")
        listed.append({
            "name": row.name, "type": type(modules[row.name]).__name__ if row.name in modules
            else "", "shape": list(row.shape),
            "layout": None if row.layout is None else _layout_text(row.layout),
            "reason": row.reason, "reach": reach, "reached": row.reached,
            "positions": row.positions,
            "explainable": row.layout is not None and bool(row.reached),
            "automatic": row.name == automatic,
            "model_layer": row.name == served.default_layer})
    return listed
