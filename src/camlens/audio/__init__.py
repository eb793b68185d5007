"""Relevance over time for audio classifiers: attention weights, attention times gradient and
1-D Grad-CAM, per segment and per word, with pictures and an evaluation.

    from camlens import zoo
    from camlens.audio import audio_relevance
    attention = audio_relevance(zoo.load("accent-attention"), "speech.wav",
                                methods=("attention", "attention-gradient"),
                                layer="attention.weights")
    both = attention.merge(audio_relevance(zoo.load("accent-cnn"), "speech.wav",
                                           methods=("gradcam",), layer="features"))
    print(both.summary())
    print(both.table())

Modules: ``relevance`` (the API and :class:`AudioRelevance`), ``plot`` (the picture). The
maps come from the engine's methods (``attention``, ``attention-gradient``, ``gradcam``, ...);
the accent models are in :mod:`camlens.zoo.accent`, their evaluation in
:mod:`camlens.experiments.audio` (``camlens reproduce audio``), the command in
:mod:`camlens.cli.audio`. Reading files needs the ``audio`` extra; pictures the ``viz`` extra.
"""

from camlens.audio.relevance import (
    METHODS,
    AudioRelevance,
    WordSpan,
    audio_relevance,
    log_odds,
    word_spans,
)

__all__ = ["METHODS", "AudioRelevance", "WordSpan", "audio_relevance", "log_odds", "word_spans"]
