"""``POST /api/explain-audio``: which seconds of a recording decided the accent (as
``camlens explain-audio``: attention and attention x gradient from accent-attention, 1-D
Grad-CAM from accent-cnn, merged with :meth:`camlens.audio.AudioRelevance.merge`)."""

from __future__ import annotations

from typing import Any

import torch

from camlens.serve.catalog import ModelCatalog, ServedModel

__all__ = ["OWN_METHODS", "audio_plan", "audio_record", "envelope"]

#: The relevance methods each shipped audio model gives itself.
OWN_METHODS = {"accent-attention": ("attention", "attention-gradient"),
               "accent-cnn": ("gradcam",)}


def audio_plan(catalog: ModelCatalog, served: ServedModel, methods: list[str]
               ) -> list[tuple[ServedModel, list[str]]]:
    """(model, its methods) in the order they run: the model's own methods, then, for
    accent-attention, Grad-CAM from accent-cnn when it is served. ``methods`` (empty: all)
    must be among them, else a ValueError naming the available ones."""
    if served.name not in OWN_METHODS:
        raise ValueError(f"{served.name} is not an audio model camlens serve explains; audio "
                         f"models: {', '.join(OWN_METHODS)}")
    plan = [(served, list(OWN_METHODS[served.name]))]
    if served.name == "accent-attention" and "accent-cnn" in catalog.models:
        plan.append((catalog.models["accent-cnn"], list(OWN_METHODS["accent-cnn"])))
    available = [method for _, own in plan for method in own]
    unknown = [method for method in methods if method not in available]
    if unknown:
        raise ValueError(f"method {unknown[0]!r} is not available with {served.name}; "
                         f"available: {', '.join(available)}")
    chosen = methods or available
    return [(model, [m for m in own if m in chosen]) for model, own in plan
            if any(m in chosen for m in own)]


def envelope(waveform: torch.Tensor, points: int = 800) -> list[list[float]]:
    """The waveform ``(T,)`` as ``points`` [min, max] pairs, for drawing."""
    samples = waveform.reshape(-1)
    points = max(1, min(points, samples.numel()))
    usable = samples[: samples.numel() // points * points].reshape(points, -1)
    return [[round(float(low), 4), round(float(high), 4)]
            for low, high in zip(usable.amin(dim=1), usable.amax(dim=1), strict=True)]


def audio_record(catalog: ModelCatalog, served: ServedModel, waveform: torch.Tensor,
                 methods: list[str], words: list[dict] | None = None) -> dict[str, Any]:
    """The relevance of ``waveform`` ``(1, T)`` at 16 kHz: the JSON of
    :meth:`~camlens.audio.AudioRelevance.to_dict` plus each method's relevance per 10 ms frame,
    the frame edges and the waveform's envelope."""
    from camlens.audio.relevance import audio_relevance

    relevance = None
    for model, chosen in audio_plan(catalog, served, methods):
        part = audio_relevance(model.loaded.model, waveform, methods=chosen,
                               layer=model.loaded.default_layer, words=words,
                               class_names=model.class_names,
                               target=None if relevance is None else relevance.target)
        relevance = part if relevance is None else relevance.merge(part)
    assert relevance is not None  # audio_plan gives at least one model
    return {"model": served.name, **relevance.to_dict(), "methods": relevance.methods,
            "frame_edges": [round(float(edge), 4) for edge in relevance.frame_edges],
            "frame_relevance": {method: [round(float(v), 6) for v in values]
                                for method, values in relevance.frame_relevance.items()},
            "sample_rate": 16000, "envelope": envelope(waveform)}
