"""Reference models shipped with camlens, with their weights description.

    model = camlens.zoo.load("digits-gap")
    weights = camlens.zoo.get_weights("digits-gap")   # class names, preprocess, target layer

Modules: ``registry`` (names -> :class:`ModelWeights`), ``digits`` (DigitsGAP, DigitsFC),
``captioner`` (DigitsCaptioner), ``accent`` (AccentAttention, AccentCNN), ``audio_features``
(log-mel and the segment grid), ``preprocess`` (pictures -> digit canvases).
"""

from camlens.zoo.digits import DigitsFC, DigitsGAP
from camlens.zoo.preprocess import digit_canvas
from camlens.zoo.registry import (
    REGISTRY,
    ModelWeights,
    available_models,
    get_weights,
    load,
    weights_path,
)

__all__ = ["REGISTRY", "DigitsFC", "DigitsGAP", "ModelWeights", "available_models",
           "digit_canvas", "get_weights", "load", "weights_path"]
