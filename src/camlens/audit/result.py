"""What an audit found: one record per input, summaries per class and overall, the worst cases.

The share of a region is the energy-based pointing game of Score-CAM (Wang et al., CVPR
workshops 2020): the map's mass inside the region over its whole mass,
``share = sum_{(i,j) in region} L_ij / sum_ij L_ij``, with ``L`` the map the method computed
(after ReLU, upsampled to the input, not min-max normalised). A uniform map scores the region's
area share, so ``lift = mean share / mean area share`` says how many times more mass the region
gets than a map that looked everywhere alike: about 1 means no preference, well above 1 that the
model leans on the region.

Every figure over inputs carries a 95% interval (:mod:`camlens.metrics.intervals`): accuracies
and cue-following rates the Wilson score interval over the inputs counted; mean shares the
percentile bootstrap over the inputs (:data:`RESAMPLES` resamples, generator seeded with
:data:`SEED`, so a summary reproduces); lifts the same bootstrap of the ratio
``mean share / mean area share``, numerator and denominator from the same resampled inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from camlens.audit.items import NO_LABEL
from camlens.metrics.intervals import bootstrap_interval, wilson_interval

__all__ = ["INTERVALS", "RESAMPLES", "SEED", "AuditExample", "AuditResult",
           "CounterfactualResult", "VariantResult", "concatenate", "lift_interval",
           "proportion_interval", "rounded", "share_interval"]

#: Bootstrap resamples of the share and lift intervals.
RESAMPLES = 2000
#: Seed of the bootstrap's generator: the same records give the same intervals.
SEED = 0
#: How the ``*_interval`` entries of a summary are computed (in :meth:`AuditResult.to_dict`).
INTERVALS = (f"95% intervals [low, high]: accuracy and cue_following Wilson score over the "
             f"inputs counted; mean_share percentile bootstrap over the inputs ({RESAMPLES} "
             f"resamples, seed {SEED}); lift the same bootstrap of mean share / mean area share "
             "(numerator and denominator from the same resampled inputs)")


@dataclass(eq=False)
class AuditExample:
    """One kept input for the report: its picture, map and regions (all on the CPU)."""

    index: int
    image: torch.Tensor  # (C, H, W) as the model saw it
    map: torch.Tensor  # (H, W) in [0, 1] (min-max normalised for display)
    masks: torch.Tensor  # (R, H, W) bool
    present: torch.Tensor  # (R,) bool


@dataclass(frozen=True)
class VariantResult:
    """The model's accuracy on one variant of the data (the cue moved, removed, ...)."""

    name: str
    count: int
    accuracy: float | None  # None without labels
    cue_following: float | None  # share of predictions equal to the cue's class
    cue_count: int  # inputs that carry a cue (the cue_following denominator)
    correct_count: int = 0  # right predictions (the accuracy's numerator)
    labelled_count: int = 0  # inputs with a label (the accuracy's denominator)
    following_count: int = 0  # predictions equal to the cue's class (cue_following's numerator)

    @property
    def accuracy_interval(self) -> list[float] | None:
        """The Wilson 95% interval of the accuracy over the labelled inputs (None without
        labels)."""
        if self.accuracy is None:
            return None
        return proportion_interval(self.correct_count, self.labelled_count)

    @property
    def cue_following_interval(self) -> list[float] | None:
        """The Wilson 95% interval of the cue-following rate over the inputs with a cue (None
        without cues)."""
        if self.cue_following is None:
            return None
        return proportion_interval(self.following_count, self.cue_count)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "accuracy": rounded(self.accuracy),
                "cue_following": rounded(self.cue_following), "cue_count": self.cue_count,
                "accuracy_interval": self.accuracy_interval,
                "cue_following_interval": self.cue_following_interval}


@dataclass(frozen=True)
class CounterfactualResult:
    """Accuracy on each variant of the data; the first variant is the reference the others are
    compared with (``change``)."""

    variants: tuple[VariantResult, ...]

    def __getitem__(self, name: str) -> VariantResult:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"no variant {name!r}; variants: {[v.name for v in self.variants]}")

    @property
    def reference(self) -> VariantResult:
        return self.variants[0]

    def change(self, name: str) -> float | None:
        """Accuracy of variant ``name`` minus the reference's (negative: the model got worse)."""
        accuracy, reference = self[name].accuracy, self.reference.accuracy
        return None if accuracy is None or reference is None else accuracy - reference

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.name,
                "variants": [dict(v.to_dict(), change=rounded(self.change(v.name)))
                             for v in self.variants]}


@dataclass(eq=False)
class AuditResult:
    """Per-input records of an audit (columns of ``N`` rows) and what they add up to.

    - ``indices`` (N,): the position of each input in the data set; ``labels`` (N,) (-1 where an
      item has none), ``predictions`` (N,), ``scores`` (N,): the explained score (logit);
    - ``shares`` (N, R): the map's mass share in each region (NaN where the item lacks the region
      or the map is all zero); ``areas`` (N, R): each region's share of the input's area;
    - ``empty`` (N,): the map was all zero (no mass to place); ``cues`` (N,): the class a
      suspected cue points at (-1: no cue), when the audit was given a ``cue_key``;
    - ``examples``: for each region, the inputs with the highest share (pictures and maps), for
      the report; ``counterfactual``: accuracies on variants of the data, when asked for.
    """

    regions: tuple[str, ...]
    method: str
    layer: str
    target: str
    indices: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor
    scores: torch.Tensor
    shares: torch.Tensor
    areas: torch.Tensor
    empty: torch.Tensor
    class_names: tuple[str, ...] | None = None
    cues: torch.Tensor | None = None
    examples: dict[str, list[AuditExample]] = field(default_factory=dict)
    counterfactual: CounterfactualResult | None = None
    notes: list[str] = field(default_factory=list)
    names: list[str] | None = None  # each row's name (its file), when the audit had a name_key

    def name(self, index: int) -> str:
        """How the report names input ``index``: its file, else ``#index``."""
        if self.names is not None:
            rows = (self.indices == index).nonzero().flatten()
            if len(rows):
                return self.names[int(rows[0])]
        return f"#{index}"

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def column(self, region: str) -> int:
        if region not in self.regions:
            raise KeyError(f"unknown region {region!r}; the audit has {list(self.regions)}")
        return self.regions.index(region)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels != NO_LABEL).any())

    @property
    def correct(self) -> torch.Tensor:
        """(N,) bool: prediction == label (False where there is no label)."""
        return (self.predictions == self.labels) & (self.labels != NO_LABEL)

    def class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def record(self, row: int) -> dict[str, Any]:
        """Row ``row`` as a dict: index, label, prediction, correct, score, and per region its
        share and area share (None where absent)."""
        label = int(self.labels[row])
        named = {} if self.names is None else {"file": self.names[row]}
        return {
            "index": int(self.indices[row]),
            **named,
            "label": None if label == NO_LABEL else label,
            "prediction": int(self.predictions[row]),
            "correct": bool(self.correct[row]) if label != NO_LABEL else None,
            "score": rounded(float(self.scores[row])),
            "share": {name: rounded(float(self.shares[row, c]))
                      for c, name in enumerate(self.regions)},
            "area": {name: rounded(float(self.areas[row, c]))
                     for c, name in enumerate(self.regions)},
        }

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every row as :meth:`record` gives it."""
        return [self.record(row) for row in range(len(self))]

    def summarize(self, rows: torch.Tensor | None = None) -> dict[str, Any]:
        """Count, accuracy and per region mean share, median share, mean area share and lift of
        ``rows`` (a bool (N,) selection; all rows by default). Means skip NaN (absent regions,
        empty maps). Each of accuracy, mean share and lift has its 95% interval ``[low, high]``
        under ``accuracy_interval``, ``mean_share_interval``, ``lift_interval`` (None where the
        figure is): Wilson for the accuracy, the seeded bootstrap over the inputs for the others
        (:func:`proportion_interval`, :func:`share_interval`, :func:`lift_interval`)."""
        rows = torch.ones(len(self), dtype=torch.bool) if rows is None else rows
        labelled = rows & (self.labels != NO_LABEL)
        count = int(rows.sum())
        summary: dict[str, Any] = {
            "count": count,
            "accuracy": rounded(float(self.correct[labelled].float().mean()))
            if labelled.any() else None,
            "accuracy_interval": proportion_interval(int(self.correct[labelled].sum()),
                                                     int(labelled.sum())),
            "empty_maps": int((self.empty & rows).sum()),
            "regions": {},
        }
        for column, name in enumerate(self.regions):
            shares = self.shares[rows, column]
            areas = self.areas[rows, column]
            valid = ~torch.isnan(shares)
            mean_share = float(shares[valid].mean()) if valid.any() else math.nan
            mean_area = float(areas[valid].mean()) if valid.any() else math.nan
            summary["regions"][name] = {
                "count": int(valid.sum()),
                "mean_share": rounded(mean_share),
                "median_share": rounded(float(shares[valid].median()) if valid.any() else math.nan),
                "mean_area": rounded(mean_area),
                "lift": rounded(mean_share / mean_area if mean_area > 0 else math.nan),
                "mean_share_interval": share_interval(shares[valid]),
                "lift_interval": lift_interval(shares[valid], areas[valid])
                if mean_area > 0 else None,
            }
        return summary

    def summary(self) -> dict[str, Any]:
        """:meth:`summarize` over all inputs."""
        return self.summarize()

    def per_class(self, by: str = "label") -> dict[str, dict[str, Any]]:
        """:meth:`summarize` per class of the label (``by="label"``) or of the prediction
        (``by="prediction"``), keyed by class name, in class order."""
        if by not in ("label", "prediction"):
            raise ValueError(f"by must be 'label' or 'prediction', got {by!r}")
        classes = self.labels if by == "label" else self.predictions
        return {self.class_name(int(c)): self.summarize(classes == c)
                for c in classes.unique().tolist() if c != NO_LABEL}

    def by_cue(self) -> dict[str, dict[str, Any]] | None:
        """:meth:`summarize` of the inputs whose prediction is the class the cue points at, and
        of those with a cue pointing elsewhere (None without cues). A model that leans on the
        cue puts more mass on it when it follows it."""
        if self.cues is None:
            return None
        with_cue = self.cues >= 0
        follows = with_cue & (self.predictions == self.cues)
        return {"prediction = the cue's class": self.summarize(follows),
                "prediction = another class": self.summarize(with_cue & ~follows)}

    def mean_share(self, region: str) -> float:
        return self.summary()["regions"][region]["mean_share"]

    def lift(self, region: str) -> float:
        return self.summary()["regions"][region]["lift"]

    def top(self, region: str, n: int = 10, correct: bool | None = None) -> list[dict[str, Any]]:
        """The ``n`` inputs whose maps put the largest share on ``region``, largest first, as
        records; ``correct`` keeps only right (True) or wrong (False) predictions."""
        shares = self.shares[:, self.column(region)]
        keep = ~torch.isnan(shares)
        if correct is not None:
            keep &= self.correct == correct
        rows = torch.nonzero(keep).flatten()
        # stable sort: ties keep data-set order
        order = torch.sort(shares[rows], descending=True, stable=True).indices[:n]
        return [self.record(int(row)) for row in rows[order]]

    def to_dict(self, top: int = 10, records: bool = False) -> dict[str, Any]:
        """The summary as plain JSON-ready data: settings, overall, per class, the ``top``
        inputs per region, the counterfactual check, and every record when ``records``."""
        data: dict[str, Any] = {
            "method": self.method,
            "layer": self.layer,
            "target": self.target,
            "regions": list(self.regions),
            "overall": self.summary(),
            "per_class": self.per_class(),
            "by_cue": self.by_cue(),
            "top": {name: self.top(name, top) for name in self.regions},
            "counterfactual": None if self.counterfactual is None
            else self.counterfactual.to_dict(),
            "notes": list(self.notes),
            "intervals": INTERVALS,
        }
        if records:
            data["records"] = self.records
        return data

    def to_json(self, path: str | Path | None = None, top: int = 10, records: bool = False,
                indent: int = 2) -> str:
        """:meth:`to_dict` as JSON text (NaN written as null); also written to ``path`` when
        given."""
        text = json.dumps(self.to_dict(top=top, records=records), indent=indent)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text


def rounded(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded for JSON; NaN and None become None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _bounds(low: float, high: float) -> list[float] | None:
    """``[low, high]`` rounded for JSON; None when a bound is not finite."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return [rounded(low), rounded(high)]


def proportion_interval(successes: int, total: int) -> list[float] | None:
    """The Wilson score 95% interval ``[low, high]`` of ``successes / total`` (None when
    ``total`` is 0: no proportion to bound)."""
    if total <= 0:
        return None
    return _bounds(*wilson_interval(successes, total))


def share_interval(shares: torch.Tensor) -> list[float] | None:
    """The percentile bootstrap 95% interval ``[low, high]`` of the mean of ``shares`` (one per
    input, NaN already dropped): :data:`RESAMPLES` resamples of the inputs, seeded with
    :data:`SEED`; None without inputs."""
    if shares.numel() == 0:
        return None
    return _bounds(*bootstrap_interval(shares, RESAMPLES, SEED))


def _ratio_of_means(resampled: torch.Tensor) -> torch.Tensor:
    """(R,) mean of column 0 over mean of column 1 of resampled pairs ``(R, N, 2)``."""
    return resampled[..., 0].mean(dim=1) / resampled[..., 1].mean(dim=1)


def lift_interval(shares: torch.Tensor, areas: torch.Tensor) -> list[float] | None:
    """The percentile bootstrap 95% interval ``[low, high]`` of the lift
    ``mean share / mean area share``: each resample draws inputs (pairs of share and area
    share) and takes the ratio of their means, so the spread of the areas counts too. The same
    resamples and seed as :func:`share_interval` (the same inputs drawn); None without inputs
    or when a bound is not finite (an area share of zero)."""
    if shares.numel() == 0:
        return None
    pairs = torch.stack([shares.double(), areas.double()], dim=1)
    return _bounds(*bootstrap_interval(pairs, RESAMPLES, SEED, statistic=_ratio_of_means))


def concatenate(parts: Sequence[torch.Tensor], empty_shape: tuple[int, ...], dtype) -> torch.Tensor:
    return torch.cat(list(parts)) if parts else torch.zeros(empty_shape, dtype=dtype)
