"""Named reference models shipped with camlens, and loading them from safetensors.

``camlens.zoo.load(name)`` returns the model in eval mode with, as attributes, its
``class_names``, its ``target_layer`` (the layer to explain by default), its ``preprocess``
(an image -> input tensor function) and the ``metadata`` stored with the weights (how they were
trained and what they scored). Weights are safetensors files: nothing is unpickled.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from camlens.data.digits import CLASS_NAMES
from camlens.zoo.architectures import DigitsFC, DigitsGAP
from camlens.zoo.captioner import VOCABULARY, DigitsCaptioner
from camlens.zoo.preprocess import digit_canvas


@dataclass(frozen=True)
class ZooEntry:
    """How to build, train and use one named model."""

    name: str
    build: Callable[[], nn.Module]
    class_names: tuple[str, ...]
    target_layer: str
    preprocess: Callable
    dataset: str  # the data set it is trained on (see camlens.zoo.training)
    description: str


REGISTRY: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry("digits-gap", DigitsGAP, CLASS_NAMES, "features", digit_canvas, "cluttered",
                 "conv trunk -> global average pooling -> linear (CAM applies)"),
        ZooEntry("digits-fc", DigitsFC, CLASS_NAMES, "features", digit_canvas, "cluttered",
                 "conv trunk -> flatten -> fully connected layers (CAM refuses; Grad-CAM works)"),
        ZooEntry("digits-biased", DigitsGAP, CLASS_NAMES, "features", digit_canvas, "biased",
                 "digits-gap trained on biased digits, where a border mark goes with the label"),
        ZooEntry("digits-captioner", DigitsCaptioner, VOCABULARY, "encoder",
                 partial(digit_canvas, size=(64, 128)), "scenes",
                 "conv encoder + attention GRU decoder: writes a scene's digits left to right"),
    )
}


def _add_accent_models() -> None:
    """The accent classifiers (British vs American English) of :mod:`camlens.audio`."""
    from camlens.audio.features import waveform_input
    from camlens.audio.models import ACCENTS, AccentAttention, AccentCNN

    for accent_entry in (
        ZooEntry("accent-attention", AccentAttention, ACCENTS, "attention.weights",
                 waveform_input, "accents",
                 "log-mel -> TDNN -> 0.3 s segments -> BLSTM -> attention pooling (Padi et al.)"),
        ZooEntry("accent-cnn", AccentCNN, ACCENTS, "features", waveform_input, "accents",
                 "log-mel -> 1-D convolutions over time -> average -> linear (1-D Grad-CAM)"),
    ):
        REGISTRY[accent_entry.name] = accent_entry


_add_accent_models()


def available_models() -> list[str]:
    """The names :func:`load` accepts."""
    return list(REGISTRY)


def entry(name: str) -> ZooEntry:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown zoo model {name!r}; {hint}available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def weights_path(name: str) -> Path:
    """Where the shipped weights of ``name`` live inside the package."""
    return Path(str(resources.files("camlens.zoo") / "weights" / f"{name}.safetensors"))


def load(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu"
         ) -> nn.Module:
    """The named model with its shipped (or the given) weights, in eval mode."""
    spec = entry(name)
    path = Path(weights) if weights is not None else weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no weights for {name!r} at {path}; train them with `camlens train {name}`"
        )
    from safetensors import safe_open
    from safetensors.torch import load_file

    model = spec.build()
    state = load_file(str(path), device=str(device))
    model.load_state_dict(state)
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    model.to(device).eval()
    model.class_names = spec.class_names
    model.target_layer = spec.target_layer
    model.preprocess = spec.preprocess
    model.metadata = metadata
    return model
