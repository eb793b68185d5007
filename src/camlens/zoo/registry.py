"""Named reference models shipped with camlens, described like torchvision's weights.

Each name has a :class:`ModelWeights`: how to build the network, the safetensors file, the
preprocessing (a picture or recording -> the model's input), the class names, the layer to explain
by default, the data set it was trained on, and the metrics stored with the weights (test
accuracy, seed, the command that trained them). ``load(name)`` gives the model in eval mode;
``get_weights(name)`` gives what goes with it. Weights are safetensors files: nothing is
unpickled.

    weights = camlens.zoo.get_weights("digits-gap")
    model = weights.load()                      # or camlens.zoo.load("digits-gap")
    inputs = weights.preprocess("digit.png")    # (1, 1, 64, 64)
    exp = camlens.explain(model, inputs, method="cam", layer=weights.target_layer)
    weights.class_names[int(exp.targets[0])], weights.metrics["test_accuracy"]
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camlens.data.digits import CLASS_NAMES
from camlens.zoo.accent import ACCENTS, AccentAttention, AccentCNN
from camlens.zoo.audio_features import waveform_input
from camlens.zoo.captioner import VOCABULARY, DigitsCaptioner
from camlens.zoo.detector import DigitsDetector
from camlens.zoo.digits import DigitsFC, DigitsGAP
from camlens.zoo.preprocess import digit_canvas

__all__ = ["REGISTRY", "ModelWeights", "WeightsFileError", "available_models", "file_metadata",
           "get_weights", "load", "load_weights_into", "read_weights", "weights_path"]


def weights_path(name: str) -> Path:
    """Where the shipped weights of ``name`` live inside the package."""
    return Path(str(resources.files("camlens.zoo") / "weights" / f"{name}.safetensors"))


class WeightsFileError(ValueError):
    """A weights file cannot be read or does not fit the model; one line naming the file."""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or :class:`WeightsFileError` naming the file (a pickle
    or a damaged file is refused without being unpickled)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsFileError(f"{path}: not a safetensors weights file ({reason}); camlens "
                               "reads weights as safetensors and never unpickles them") from None


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path
                      ) -> None:
    """Load ``state`` into ``model``; a mismatch is one line naming the file and the first key
    that does not fit (instead of torch's many-line report)."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise WeightsFileError(f"{path}: {key} has shape {tuple(value.shape)} where the "
                                   f"model has {tuple(own[key].shape)}")
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        first = (f"no weights for {missing[0]} ({len(missing)} missing)" if missing
                 else f"{unexpected[0]} is not in the model ({len(unexpected)} unexpected)")
        raise WeightsFileError(f"{path}: {first}; are these the weights of this model?")
    model.load_state_dict(state)


def file_metadata(path: str | Path) -> dict[str, str]:
    """The metadata stored in a safetensors file's header (empty when none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class ModelWeights:
    """Everything that goes with one shipped model.

    Attributes:
        name: the zoo name (``"digits-gap"``).
        build: makes the untrained network.
        class_names: the label of each output.
        target_layer: the layer explained by default.
        preprocess: a path, picture, array or tensor -> the model's input batch of one.
        dataset: the generated data set it is trained on (``camlens train NAME`` rebuilds it).
        description: one line on the architecture.
        input_kind: ``"image"`` or ``"audio"``.
    """

    name: str
    build: Callable[[], nn.Module]
    class_names: tuple[str, ...]
    target_layer: str
    preprocess: Callable[[Any], torch.Tensor]
    dataset: str
    description: str
    input_kind: str = "image"
    _metadata: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def file(self) -> Path:
        """The shipped safetensors file."""
        return weights_path(self.name)

    @property
    def metadata(self) -> dict[str, str]:
        """What was stored with the shipped weights: seed, sizes, accuracy, the training command
        (read from the file's header once)."""
        if not self._metadata and self.file.is_file():
            self._metadata.update(file_metadata(self.file))
        return dict(self._metadata)

    @property
    def metrics(self) -> dict[str, float]:
        """The measured figures among :attr:`metadata` (``test_accuracy``, ...), as numbers."""
        figures = {}
        for key, value in self.metadata.items():
            number = _number(value)
            if key.endswith(("accuracy", "error", "loss")) and number is not None:
                figures[key] = number
        return figures

    def load(self, weights: str | Path | None = None,
             device: str | torch.device = "cpu") -> nn.Module:
        """The network with the shipped (or the given) weights, on ``device``, in eval mode."""
        path = Path(weights) if weights is not None else self.file
        if not path.is_file():
            raise FileNotFoundError(
                f"no weights for {self.name!r} at {path}; train them with "
                f"`camlens train {self.name}`")
        model = self.build()
        load_weights_into(model, read_weights(path), path)
        return model.to(device).eval()


REGISTRY: dict[str, ModelWeights] = {
    weights.name: weights
    for weights in (
        ModelWeights("digits-gap", DigitsGAP, CLASS_NAMES, "features", digit_canvas, "cluttered",
                     "conv trunk -> global average pooling -> linear (CAM applies)"),
        ModelWeights("digits-fc", DigitsFC, CLASS_NAMES, "features", digit_canvas, "cluttered",
                     "conv trunk -> flatten -> fully connected layers (CAM refuses; Grad-CAM "
                     "works)"),
        ModelWeights("digits-biased", DigitsGAP, CLASS_NAMES, "features", digit_canvas,
                     "biased",
                     "digits-gap trained on biased digits, where a border mark goes with the "
                     "label"),
        ModelWeights("digits-debiased", DigitsGAP, CLASS_NAMES, "features", digit_canvas,
                     "biased",
                     "digits-biased's control: the same images with every mark at a random "
                     "spot (a balanced set), as the Grad-CAM paper's debiased model"),
        ModelWeights("digits-captioner", DigitsCaptioner, VOCABULARY, "encoder",
                     partial(digit_canvas, size=(64, 128)), "scenes",
                     "conv encoder + attention GRU decoder: writes a scene's digits left to "
                     "right"),
        ModelWeights("digits-detector", DigitsDetector, CLASS_NAMES, "neck",
                     partial(digit_canvas, size=(64, 128)), "scene-boxes",
                     "conv trunk -> stride-8 grid of objectness, box and class (YOLO-style "
                     "dense output (B, N, 4 + classes)); explain a box with LayerCAM"),
        ModelWeights("accent-attention", AccentAttention, ACCENTS, "attention.weights",
                     waveform_input, "accents",
                     "log-mel -> TDNN -> 0.3 s segments -> BLSTM -> attention pooling (Padi et "
                     "al.)", input_kind="audio"),
        ModelWeights("accent-mean", partial(AccentAttention, pooling="mean"), ACCENTS,
                     "attention.weights", waveform_input, "accents",
                     "accent-attention with mean pooling over the segments instead of attention "
                     "(the uniform-pooling control)", input_kind="audio"),
        ModelWeights("accent-cnn", AccentCNN, ACCENTS, "features", waveform_input, "accents",
                     "log-mel -> 1-D convolutions over time -> average -> linear (1-D Grad-CAM)",
                     input_kind="audio"),
    )
}


def available_models() -> list[str]:
    """The names :func:`load` accepts."""
    return list(REGISTRY)


def get_weights(name: str) -> ModelWeights:
    """The :class:`ModelWeights` of ``name``; an unknown name lists the closest ones."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown zoo model {name!r}; {hint}available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def load(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu"
         ) -> nn.Module:
    """The named model with its shipped (or the given) weights, in eval mode.

    What goes with it (class names, preprocessing, target layer, metrics) is
    ``get_weights(name)``."""
    return get_weights(name).load(weights, device)


def __getattr__(name: str):
    from camlens._moved import moved_attribute

    return moved_attribute(__name__, name, {"entry": "camlens.zoo.registry:get_weights",
                                            "ZooEntry": "camlens.zoo.registry:ModelWeights"})
