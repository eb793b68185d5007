"""Reference models shipped with camlens: ``camlens.zoo.load("digits-gap")``."""

from camlens.zoo.architectures import DigitsFC, DigitsGAP
from camlens.zoo.preprocess import digit_canvas
from camlens.zoo.registry import REGISTRY, available_models, load, weights_path

__all__ = ["REGISTRY", "DigitsFC", "DigitsGAP", "available_models", "digit_canvas", "load",
           "weights_path"]
