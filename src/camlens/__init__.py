"""camlens: why did this model predict that? Class activation maps for PyTorch models.

    import camlens
    exp = camlens.explain(model, images, method="gradcam", layer="layer4")
    exp.maps    # (B, H, W) in [0, 1] at the input's resolution

``import camlens`` loads the engine only (torch, no plotting, data or command-line library);
``camlens.viz``, ``camlens.metrics``, ``camlens.io``, ``camlens.zoo``, ``camlens.audit``,
``camlens.audio`` and the rest load when first used (see docs/ARCHITECTURE.md).
"""

import importlib
from typing import Any

from camlens import _moved
from camlens.api import explain
from camlens.explanation import Explanation, ExplanationWarning
from camlens.methods import (
    CAM,
    AblationCAM,
    CAMMethod,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
    available_methods,
    get_method,
)
from camlens.methods.attention import AttentionGradient, AttentionWeights
from camlens.methods.rollout import AttentionGradientRollout, AttentionRollout
from camlens.score_targets import BoxesTarget, BoxTarget, RegionTarget, SimilarityTarget
from camlens.targets import TopK

__version__ = "0.2.0"

_moved.install()

#: Sub-packages reachable as attributes (``camlens.zoo.load(...)``), imported on first use.
_SUBPACKAGES = frozenset({"audio", "audit", "captioning", "cli", "data", "experiments", "io",
                          "metrics", "models", "scale", "serve", "viz", "zoo"})


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"camlens.{name}")
    raise AttributeError(f"module 'camlens' has no attribute {name!r}")


__all__ = [
    "CAM",
    "AblationCAM",
    "AttentionGradient",
    "AttentionGradientRollout",
    "AttentionRollout",
    "AttentionWeights",
    "BoxTarget",
    "BoxesTarget",
    "CAMMethod",
    "EigenCAM",
    "EigenGradCAM",
    "Explanation",
    "ExplanationWarning",
    "FinerCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "RegionTarget",
    "ScoreCAM",
    "ShapleyCAM",
    "SimilarityTarget",
    "TopK",
    "XGradCAM",
    "available_methods",
    "explain",
    "get_method",
]
