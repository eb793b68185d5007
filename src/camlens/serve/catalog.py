"""The models one server explains: the shipped zoo and any model the command line loads."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from camlens.models import LoadedModel, load_model

__all__ = ["KINDS", "ModelCatalog", "ServedModel", "UnknownModel"]

#: What a served model takes and what the page shows for it.
KINDS = ("image", "caption", "audio")


class UnknownModel(LookupError):
    """A model name the server does not serve (status 404); the message lists the closest."""


@dataclass
class ServedModel:
    """A loaded model, what kind of input it takes, and its layer listing (made once)."""

    loaded: LoadedModel
    kind: str
    description: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _layers: list[dict[str, Any]] | None = field(default=None, repr=False)
    _layers_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.loaded.class_names

    @property
    def default_layer(self) -> str | None:
        """The layer explained when none is asked for: a captioner's word layer (as
        ``camlens caption``), else the model's own layer (None: the automatic choice)."""
        if self.kind == "caption":
            return getattr(self.loaded.model, "word_layer", None) or self.loaded.default_layer
        return self.loaded.default_layer

    def layers(self) -> list[dict[str, Any]]:
        """The rows of ``camlens layers`` for this model (surveyed on first use)."""
        from camlens.serve.layers import layer_rows

        with self._layers_lock:
            if self._layers is None:
                self._layers = layer_rows(self)
            return self._layers

    @property
    def detector(self) -> bool:
        """Whether the model finds boxes (the page then offers ``box:`` and ``detections``):
        a zoo detector, or a torchvision detection model."""
        from camlens.zoo import REGISTRY

        if self.name in REGISTRY:
            return REGISTRY[self.name].dataset == "scene-boxes"
        return type(self.loaded.model).__module__.startswith("torchvision.models.detection")

    @property
    def prompts(self) -> bool:
        """Whether the model scores pictures against text prompts (a CLIP-style folder saved
        with its tokenizer): the page then offers ``text:`` targets."""
        return self.loaded.tokenizer is not None

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/models`` says of it."""
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "detector": self.detector, "prompts": self.prompts,
                "class_names": list(self.class_names) if self.class_names else None,
                "default_layer": self.default_layer, "device": str(self.device)}


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def kind_of(loaded: LoadedModel) -> str:
    """``audio`` for the zoo's audio models, ``caption`` for a model that generates, else
    ``image``."""
    from camlens.zoo import REGISTRY

    if loaded.name in REGISTRY and REGISTRY[loaded.name].input_kind == "audio":
        return "audio"
    if callable(getattr(loaded.model, "generate", None)):
        return "caption"
    return "image"


class ModelCatalog:
    """Served models by name, in the order they were added."""

    def __init__(self, models: Iterable[ServedModel] = ()) -> None:
        self.models: dict[str, ServedModel] = {}
        self.skipped: list[str] = []  # zoo models left out, and why
        for served in models:
            self.add(served)

    def add(self, served: ServedModel) -> None:
        if served.name in self.models:
            raise ValueError(f"model {served.name!r} is served twice")
        self.models[served.name] = served

    @classmethod
    def load(cls, specs: Iterable[str] = (), weights: Iterable[str | None] = (),
             archs: Iterable[str | None] = (), zoo: bool = True,
             device: torch.device | str = "cpu") -> ModelCatalog:
        """The zoo (unless ``zoo=False``) and each spec ``camlens explain --model`` takes, with
        the weights and architecture given in the same position. Pickled checkpoints are refused
        (:class:`camlens.models.ModelLoadError`)."""
        from camlens.zoo import REGISTRY

        device = torch.device(device)
        catalog = cls()
        weights, archs = list(weights), list(archs)
        requested = [(spec, weights[i] if i < len(weights) else None,
                      archs[i] if i < len(archs) else None) for i, spec in enumerate(specs)]
        names = [spec for spec, _, _ in requested]
        if zoo:
            for name in REGISTRY:
                if name in names:
                    continue
                if not REGISTRY[name].file.is_file():  # not trained in this checkout
                    catalog.skipped.append(f"{name}: no weights at {REGISTRY[name].file}")
                    continue
                requested.insert(len(requested) - len(names), (name, None, None))
        for spec, weights_file, arch in requested:
            loaded = load_model(spec, weights=weights_file, arch=arch, trust_checkpoint=False)
            loaded.model.to(device)
            description = REGISTRY[spec].description if spec in REGISTRY else spec
            catalog.add(ServedModel(loaded, kind_of(loaded), description, device))
        return catalog

    def get(self, name: str | None, kind: str | None = None) -> ServedModel:
        """The model called ``name`` (of ``kind`` when given), or :class:`UnknownModel`."""
        if not name:
            raise UnknownModel(f"no model given; served: {', '.join(self.models)}")
        if name not in self.models:
            close = difflib.get_close_matches(name, list(self.models), n=3, cutoff=0.4)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UnknownModel(f"unknown model {name!r}; {hint}served: {', '.join(self.models)}")
        served = self.models[name]
        if kind is not None and served.kind != kind:
            fitting = [n for n, m in self.models.items() if m.kind == kind]
            raise ValueError(f"{name} is {_article(served.kind)} model, not {_article(kind)} "
                             f"model; {kind} models served: {', '.join(fitting) or 'none'}")
        return served

    def describe(self) -> list[dict[str, Any]]:
        return [served.describe() for served in self.models.values()]
