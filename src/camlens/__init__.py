"""camlens: why did this model predict that? Class activation maps for PyTorch models.

    import camlens
    exp = camlens.explain(model, images, method="gradcam", layer="layer4")
    exp.maps    # (B, H, W) in [0, 1] at the input's resolution
"""

from camlens.api import explain
from camlens.audit import audit
from camlens.explanation import Explanation
from camlens.methods import (
    CAM,
    AblationCAM,
    CAMMethod,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
    available_methods,
    get_method,
)
from camlens.targets import TopK

__version__ = "0.1.0"

__all__ = [
    "CAM",
    "AblationCAM",
    "CAMMethod",
    "EigenCAM",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "TopK",
    "XGradCAM",
    "audit",
    "available_methods",
    "explain",
    "get_method",
]
