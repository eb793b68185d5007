"""The data sets ``camlens audit --data NAME`` knows: each with its regions and its variants.

An entry builds an :class:`AuditData` from a size and a seed; to audit on more data, add a
builder to :data:`AUDIT_DATA`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from camlens.audit.regions import RegionSpec

__all__ = ["AUDIT_DATA", "AuditData"]


@dataclass(frozen=True)
class AuditData:
    """What one audit runs on: the data, its named regions and the counterfactual variants."""

    name: str
    description: str
    dataset: Any
    regions: dict[str, RegionSpec]
    variants: dict[str, Any] = field(default_factory=dict)  # the first is the reference
    cue_key: str | None = None  # the item key of the class the cue points at


def _biased_digits(size: int, seed: int = 0) -> AuditData:
    """Test images of :class:`~camlens.data.BiasedDigits`: the mark at a random border spot
    (independent of the label); variants with the mark at the label's spot, at another class's
    spot, and without it. Regions: the digit's box (``object``) and the mark's (``mark``)."""
    import inspect

    from camlens.data import BiasedDigits

    def variant(mark: str) -> Any:
        return BiasedDigits(size, "test", seed, mark=mark)

    train_bias = inspect.signature(BiasedDigits).parameters["bias"].default
    normal = variant("random")
    return AuditData(
        name="biased-digits",
        description=(f"{size} BiasedDigits test images (seed {seed}): a cluttered digit and a "
                     "bright 4x4 mark at one of ten border spots, here independent of the label "
                     f"(in the train split, digits-biased's data, the spot is the label's in "
                     f"{train_bias:.0%} of the images)."),
        dataset=normal,
        regions={"object": "box", "mark": "mark_box"},
        variants={"normal (random mark)": normal, "cue flipped (another class's spot)":
                  variant("flipped"), "cue removed (no mark)": variant("none"),
                  "cue aligned (the label's spot)": variant("aligned")},
        cue_key="mark_class",
    )


AUDIT_DATA: dict[str, Callable[[int, int], AuditData]] = {"biased-digits": _biased_digits}
