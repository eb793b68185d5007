"""The base class of the shipped networks."""

from __future__ import annotations

from torch import nn

__all__ = ["ZooModule"]

#: What ``camlens.zoo.load`` used to set on the model; it now lives on the weights description.
_MOVED_TO_WEIGHTS = frozenset({"class_names", "target_layer", "preprocess", "metadata"})


class ZooModule(nn.Module):
    """Base of the shipped networks: asking one for what moved to its weights description
    (``class_names``, ``target_layer``, ``preprocess``, ``metadata``) says where it went."""

    def __getattr__(self, name: str):
        if name in _MOVED_TO_WEIGHTS:
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}: what goes with a zoo model "
                f"is on its weights description, camlens.zoo.get_weights(NAME).{name}")
        return super().__getattr__(name)
