"""Per-image rows -> the evaluation table: one row per method, each value with a 95% interval.

Each column's value is a statistic of the per-image values (:mod:`camlens.evaluation.protocol`):
the mean (x 100 for the % columns), ``100 x (1 - hit rate)`` for the localization errors, and
for MaxBoxAcc the best threshold's hit rate. 95% intervals, from :mod:`camlens.metrics.intervals`
as every camlens table:

- a proportion over images (the localization errors, pointing, increase in confidence): the
  Wilson score interval (Wilson 1927);
- a mean of a per-image figure (energy, deletion, insertion, drop, ROAD): the percentile
  bootstrap over the images (Efron 1979), ``resamples`` resamples drawn from ``seed``;
- MaxBoxAcc: the same bootstrap, the maximum over thresholds taken again in each resample
  (:func:`bootstrap_interval` here: any statistic of the resampled images).

An image where a metric does not apply (no box, no label) is left out of that column only; the
counts are in the table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from camlens.evaluation.protocol import Column, EvaluationSpec
from camlens.evaluation.work import ImageRow
from camlens.metrics import intervals

__all__ = ["CONFIDENCE", "EvaluationTable", "MethodRow", "bootstrap_interval", "reduce_rows"]

CONFIDENCE = 0.95
PERCENT = {"loc@0.20", "loc@0.15", "maxboxacc", "pointing", "energy", "drop", "increase"}
#: Columns whose per-image values are 0 or 1: proportions, with Wilson intervals.
PROPORTIONS = {"loc@0.20", "loc@0.15", "pointing", "increase"}


@dataclass
class Cell:
    """One value of the table: the statistic, its interval and how many images it covers."""

    value: float
    low: float
    high: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": _plain(self.value), "low": _plain(self.low), "high": _plain(self.high),
                "count": self.count}


@dataclass
class MethodRow:
    """One method's row: a :class:`Cell` per column, the images it covers, or why it was refused;
    ``threshold``: the MaxBoxAcc threshold that reached the value."""

    method: str
    count: int
    cells: dict[str, Cell] = field(default_factory=dict)
    error: str | None = None
    threshold: float | None = None


@dataclass
class EvaluationTable:
    """The table of :func:`reduce_rows`: rows per method, the columns, settings and notes."""

    rows: list[MethodRow]
    columns: tuple[Column, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, method: str) -> MethodRow:
        for row in self.rows:
            if row.method == method:
                return row
        raise KeyError(f"no method {method!r}; the table has {[r.method for r in self.rows]}")

    def value(self, method: str, column: str) -> float:
        """The value of ``column`` for ``method`` (NaN where no image had it)."""
        cell = self[method].cells.get(column)
        return math.nan if cell is None else cell.value

    def to_markdown(self, intervals: bool = True) -> str:
        """A Markdown table: ``value [low, high]`` per cell (``intervals``), then the notes."""
        header = ["method", "images"] + [c.title for c in self.columns]
        lines = ["| " + " | ".join(header) + " |",
                 "|---|---:|" + "---:|" * len(self.columns)]
        for row in self.rows:
            if row.error is not None:
                lines.append(f"| {_cell_text(row.method)} | {row.count} | refused: "
                             f"{_cell_text(row.error)} |" + " |" * (len(self.columns) - 1))
                continue
            cells = []
            for column in self.columns:
                cell = row.cells.get(column.key)
                if cell is None or math.isnan(cell.value):
                    cells.append("-")
                    continue
                text = column.fmt.format(cell.value)
                if intervals and not math.isnan(cell.low):
                    text += f" [{column.fmt.format(cell.low)}, {column.fmt.format(cell.high)}]"
                cells.append(text)
            lines.append(f"| {_cell_text(row.method)} | {row.count} | " + " | ".join(cells)
                         + " |")
        text = "\n".join(lines) + "\n"
        if self.notes:
            text += "\n" + "\n".join(f"- {note}" for note in self.notes) + "\n"
        return text

    def to_csv(self) -> str:
        """CSV: one row per method, for each column its value, low, high and count."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = ["method", "images", "error"]
        for column in self.columns:
            header += [column.key, f"{column.key}_low", f"{column.key}_high",
                       f"{column.key}_count"]
        writer.writerow(header)
        for row in self.rows:
            values: list[Any] = [row.method, row.count, row.error or ""]
            for column in self.columns:
                cell = row.cells.get(column.key)
                values += ["", "", "", 0] if cell is None else [
                    _csv_number(cell.value), _csv_number(cell.low), _csv_number(cell.high),
                    cell.count]
            writer.writerow(values)
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [{"key": c.key, "title": c.title, "lower_better": c.lower_better}
                        for c in self.columns],
            "rows": [{"method": r.method, "images": r.count, "error": r.error,
                      "maxboxacc_threshold": r.threshold,
                      "values": {k: cell.to_dict() for k, cell in r.cells.items()}}
                     for r in self.rows],
            "settings": self.settings,
            "notes": list(self.notes),
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def render(self, fmt: str) -> str:
        """The table as ``md``, ``csv`` or ``json`` text."""
        renderers = {"md": self.to_markdown, "markdown": self.to_markdown, "csv": self.to_csv,
                     "json": self.to_json}
        if fmt not in renderers:
            raise ValueError(f"unknown format {fmt!r}; use md, csv or json")
        return renderers[fmt]()


def _cell_text(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _plain(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _statistic(key: str, values: torch.Tensor) -> torch.Tensor:
    """The column's statistic over the last axis of ``values`` (per-image values)."""
    mean = values.mean(dim=-1)
    return 100.0 * mean if key in PERCENT else mean


def bootstrap_interval(values: torch.Tensor, statistic, resamples: int = 1000,
                       confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic(values[indices])`` over the first axis
    of ``values`` (:func:`camlens.metrics.intervals.bootstrap_interval`); NaN for fewer than 2
    values or no resamples."""
    if values.shape[0] < 2 or resamples < 1:
        return math.nan, math.nan
    return intervals.bootstrap_interval(values, resamples, seed, confidence,
                                        statistic=statistic)


def _z(confidence: float) -> float:
    """The normal quantile of a two-sided ``confidence`` interval: 1.96 for 95%, as
    :func:`camlens.metrics.intervals.wilson_interval` takes it."""
    if abs(confidence - CONFIDENCE) < 1e-12:
        return 1.96
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + confidence / 2)))


def reduce_rows(rows: Sequence[ImageRow], spec: EvaluationSpec, resamples: int = 1000,
                seed: int = 0, confidence: float = CONFIDENCE) -> EvaluationTable:
    """The :class:`EvaluationTable` of the per-image ``rows`` (see the module docstring)."""
    columns = spec.columns
    table = EvaluationTable([], columns, {
        "methods": list(spec.methods), "layer": spec.layer, "metrics": list(spec.metrics),
        "pointing_tolerance": spec.tolerance, "steps": spec.steps,
        "road_fractions": list(spec.road_fractions), "road_noise": spec.road_noise,
        "iou": spec.iou, "localization_thresholds": list(spec.localization_thresholds),
        "interval": f"{confidence:.0%}: Wilson score for the proportions (localization error, "
                    "pointing, increase in confidence), percentile bootstrap over the images for "
                    f"the means and MaxBoxAcc ({resamples} resamples, seed {seed})"})
    for method in spec.methods:
        mine = [row for row in rows if row.method == method]
        errors = [row.error for row in mine if row.error is not None]
        if errors and len(errors) == len(mine):
            table.rows.append(MethodRow(method, len(mine), error=errors[0]))
            continue
        good = [row for row in mine if row.error is None]
        if errors:
            table.notes.append(f"{method}: {len(errors)} image(s) refused ({errors[0]}), left "
                               "out of its row")
        row = MethodRow(method, len(good))
        for column in columns:
            if column.key == "maxboxacc":
                hits = [r.box_hits for r in good if r.box_hits is not None]
                if not hits:
                    continue
                stacked = torch.stack(hits).double()  # (N, T)
                per_threshold = stacked.mean(dim=0)
                best = int(per_threshold.argmax())
                row.threshold = float(spec.box_thresholds[best])
                low, high = bootstrap_interval(
                    stacked, lambda v: 100.0 * v.mean(dim=-2).amax(dim=-1), resamples,
                    confidence, seed)
                row.cells[column.key] = Cell(100.0 * float(per_threshold[best]), low, high,
                                             len(hits))
                continue
            values = torch.tensor([r.values.get(column.key, math.nan) for r in good],
                                  dtype=torch.float64)
            values = values[~torch.isnan(values)]
            if values.numel() == 0:
                continue
            value = float(_statistic(column.key, values))
            scale = 100.0 if column.key in PERCENT else 1.0
            low, high = math.nan, math.nan
            if resamples and column.key in PROPORTIONS:
                low, high = (scale * bound for bound in intervals.wilson_interval(
                    int(values.sum().round()), int(values.numel()), _z(confidence)))
            elif resamples and values.numel() >= 2:
                low, high = (scale * bound for bound in intervals.bootstrap_interval(
                    values, resamples, seed, confidence))
            row.cells[column.key] = Cell(value, low, high, int(values.numel()))
        table.rows.append(row)
    return table
