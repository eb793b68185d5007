"""The registry of explanation methods, by the names users type."""

from __future__ import annotations

import difflib

from camlens.methods.attention import AttentionGradient, AttentionWeights
from camlens.methods.base import CAMMethod, GradientCAM, LayerMapMethod
from camlens.methods.cam import CAM
from camlens.methods.eigen import EigenCAM
from camlens.methods.finer import FinerCAM
from camlens.methods.fullgrad import FullGrad
from camlens.methods.gradient import (
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from camlens.methods.guided import GuidedBackprop, GuidedGradCAM
from camlens.methods.perturbation import AblationCAM, ScoreCAM
from camlens.methods.rollout import AttentionGradientRollout, AttentionRollout
from camlens.methods.shapley import ShapleyCAM

METHODS: dict[str, type[CAMMethod]] = {
    method.name: method
    for method in (
        CAM,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        XGradCAM,
        LayerCAM,
        EigenCAM,
        EigenGradCAM,
        FinerCAM,
        ShapleyCAM,
        FullGrad,
        ScoreCAM,
        AblationCAM,
        GuidedBackprop,
        GuidedGradCAM,
        AttentionWeights,
        AttentionGradient,
        AttentionRollout,
        AttentionGradientRollout,
    )
}

ALIASES = {"guidedbackpropagation": "guided-backprop", "gradcampp": "gradcam++"}


def squash(name: str) -> str:
    """A method name without case, dashes, underscores or spaces: 'Grad-CAM++' -> 'gradcam++'."""
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


def available_methods() -> list[str]:
    """The method names :func:`camlens.explain` accepts."""
    return list(METHODS)


def get_method(name: str) -> type[CAMMethod]:
    """The method class for ``name`` (case, dashes and underscores ignored)."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a name such as 'gradcam', got {type(name).__name__}")
    if name in METHODS:  # the usual case: a name as listed
        return METHODS[name]
    by_squashed = {squash(key): key for key in METHODS}
    key = by_squashed.get(squash(name)) or ALIASES.get(squash(name))
    if key is None:
        close = difflib.get_close_matches(name.lower(), list(METHODS), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown method {name!r}; {hint}available: {', '.join(METHODS)}")
    return METHODS[key]


__all__ = [
    "METHODS",
    "CAMMethod",
    "GradientCAM",
    "LayerMapMethod",
    "available_methods",
    "get_method",
    *(cls.__name__ for cls in METHODS.values()),
]
