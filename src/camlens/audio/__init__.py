"""Relevance over time for audio classifiers: attention weights, attention times gradient and
1-D Grad-CAM, per segment and per word, with pictures and an evaluation.

    from camlens import zoo
    from camlens.audio import audio_relevance
    model = zoo.load("accent-attention")
    relevance = audio_relevance(model, "speech.wav", cnn=zoo.load("accent-cnn"))
    print(relevance.summary())
    print(relevance.table())

Modules: ``features`` (log-mel in torch, segment grid), ``models`` (AccentAttention, AccentCNN),
``relevance`` (the API), ``plot`` (the picture), ``evaluation``, ``command`` (the
``explain-audio`` command). Reading files needs the ``audio`` extra; pictures the ``viz`` extra.
"""

from camlens.audio.relevance import METHODS, AudioRelevance, WordSpan, audio_relevance

__all__ = ["METHODS", "AudioRelevance", "WordSpan", "audio_relevance"]
