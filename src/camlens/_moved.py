"""Old import paths that still work, with a ``DeprecationWarning`` naming the new home.

Modules moved in the restructuring (library below, applications above) are aliased by a finder
at the end of ``sys.meta_path``: ``import camlens.image_files`` warns and returns
``camlens.io.images``. Names moved between modules use :func:`moved_attribute` from a module
``__getattr__``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["MOVED_MODULES", "install", "moved_attribute"]

MOVED_MODULES = {
    "camlens.image_files": "camlens.io.images",
    "camlens.command_options": "camlens.cli.options",
    "camlens.demo": "camlens.experiments.demo",
    "camlens.reproduce": "camlens.experiments.localization",
    "camlens.zoo.training": "camlens.experiments.training",
    "camlens.zoo.architectures": "camlens.zoo.digits",
    "camlens.audio.features": "camlens.zoo.audio_features",
    "camlens.audio.models": "camlens.zoo.accent",
    "camlens.audio.batches": "camlens.experiments.audio_batches",
    "camlens.audio.evaluation": "camlens.experiments.audio",
    "camlens.audio.command": "camlens.cli.audio",
    "camlens.audit.command": "camlens.cli.audit",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new_name}; import it from there",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        new_name = MOVED_MODULES.get(fullname)
        if new_name is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new_name))


def install() -> None:
    """Put the finder at the end of ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


def moved_attribute(module: str, name: str, moved: dict[str, str]) -> Any:
    """For a module ``__getattr__``: ``name`` from its new home ``moved[name]`` (a module path,
    or ``module:attribute`` when renamed), with a ``DeprecationWarning``; else AttributeError."""
    if name not in moved:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new_module, _, new_name = moved[name].partition(":")
    new_name = new_name or name
    warnings.warn(f"{module}.{name} moved to {new_module}.{new_name}; import it from there",
                  DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(new_module), new_name)
