"""Offline data sets built from what installed packages ship (scikit-learn's digits)."""

from camlens.data.digits import (
    CLASS_NAMES,
    BiasedDigits,
    ClutteredDigits,
    DigitCanvasConfig,
    DigitScenes,
    materialize,
    source_digits,
)

__all__ = [
    "CLASS_NAMES",
    "BiasedDigits",
    "ClutteredDigits",
    "DigitCanvasConfig",
    "DigitScenes",
    "materialize",
    "source_digits",
]
