"""An audit as one self-contained HTML page: tables, histograms and the worst cases as overlays.

Every picture is embedded as a ``data:image/png;base64`` URI, so the page is a single file that
can be mailed or archived. Needs the ``viz`` extra (Pillow and matplotlib); figures are made with
``matplotlib.figure.Figure`` (no pyplot, no backend chosen).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from camlens.audit.regions import mask_box
from camlens.audit.result import AuditExample, AuditResult
from camlens.viz import draw_boxes, overlay, to_pil
from camlens.viz.overlay import BOX_COLORS

__all__ = ["INTERVAL_NOTE", "LIFT_HIGHLIGHT", "PICTURE_SIDE", "STYLE", "bracket", "displayable",
           "example_picture", "number", "number_with_interval", "percent",
           "percent_with_interval", "render_html", "share_digits", "share_places",
           "share_with_interval", "table", "write_report"]

#: Longest side, in pixels, of a worst-case picture (small inputs are enlarged, nearest neighbour).
PICTURE_SIDE = 192
#: A region whose lift reaches this is highlighted: its share is this many times a uniform map's.
LIFT_HIGHLIGHT = 2.0
#: What the brackets of the report's tables are.
INTERVAL_NOTE = ("Brackets: 95% intervals over the inputs (Wilson score for accuracies and rates; "
                 "percentile bootstrap, seeded, for mean shares and lifts, the lift's as the ratio "
                 "mean share / mean area share of each resample).")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.flag td { background: #ffe4e1; font-weight: 600; }
.cases { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure { margin: 0; font-size: 0.85em; text-align: center; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 2px solid; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _data_uri(picture: Image.Image | Figure, dpi: float = 100) -> str:
    """A ``data:image/png;base64,...`` URI of a PIL image or a matplotlib figure."""
    buffer = io.BytesIO()
    if isinstance(picture, Figure):
        picture.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    else:
        picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _region_color(column: int) -> tuple[int, int, int]:
    return BOX_COLORS[column % len(BOX_COLORS)]


def displayable(image: Any) -> Image.Image:
    """The model's input as a picture: values outside [0, 1] (a normalised input) are min-max
    scaled first."""
    image = image.detach().float().cpu()
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        image = (image - low) / (high - low) if high > low else image.clamp(0, 1)
    return to_pil(image)


def example_picture(example: AuditExample, alpha: float = 0.5) -> Image.Image:
    """The input enlarged, its map laid over it, and a box around each present region."""
    picture = displayable(example.image)
    scale = max(1, PICTURE_SIDE // max(picture.width, picture.height))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    picture = overlay(picture, example.map, alpha=alpha)
    columns = [c for c in range(len(example.present)) if bool(example.present[c])]
    if not columns:
        return picture
    boxes = np.array([mask_box(example.masks[c]) for c in columns], dtype=np.float64) * scale
    return draw_boxes(picture, boxes, colors=[_region_color(c) for c in columns])


def _histogram_figure(result: AuditResult) -> Figure:
    """One panel per region: the histogram of shares, right and wrong predictions stacked, with
    the mean share and the mean area share (what a uniform map would score) marked."""
    count = len(result.regions)
    figure = Figure(figsize=(4.2 * count, 3.0))
    axes = figure.subplots(1, count, squeeze=False)[0]
    correct = result.correct.numpy()
    labelled = result.has_labels
    for column, (name, ax) in enumerate(zip(result.regions, axes, strict=True)):
        shares = result.shares[:, column].numpy()
        valid = ~np.isnan(shares)
        values = shares[valid]
        if values.size:
            top = max(float(values.max()), float(np.nanmean(result.areas[:, column].numpy())))
            bins = np.linspace(0.0, top * 1.02 if top > 0 else 1.0, 31)
            if labelled:
                ax.hist([shares[valid & correct], shares[valid & ~correct]], bins=bins,
                        stacked=True, color=["#4c72b0", "#dd8452"], label=["right", "wrong"])
            else:
                ax.hist(values, bins=bins, color="#4c72b0")
            ax.axvline(float(values.mean()), color="black", linewidth=1.5, label="mean share")
            area = float(np.nanmean(result.areas[:, column].numpy()))
            ax.axvline(area, color="black", linestyle="--", linewidth=1.2,
                       label="uniform map (area)")
            ax.legend(fontsize=7)
        ax.set_title(f"{name}: share of map mass", fontsize=10)
        ax.set_xlabel("share")
        ax.set_ylabel("inputs")
    figure.tight_layout()
    return figure


def percent(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}%"


def number(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]], flags: list[bool] | None = None) -> str:
    """An HTML table; cells are escaped here."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = []
    for number_, row in enumerate(rows):
        css = ' class="flag"' if flags and flags[number_] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def share_places(value: float | None) -> int:
    """Decimals of a share in percent: small shares (a cue of a few pixels) need more digits
    than large ones."""
    return 1 if value is None or value >= 0.01 else 3


def share_digits(value: float | None) -> str:
    """Small shares (a cue of a few pixels) need more digits than large ones."""
    return percent(value, share_places(value))


def bracket(interval: list[float] | tuple[float, float] | None, digits: int,
            scale: float = 100.0) -> str:
    """``" [low, high]"``: a 95% interval's bounds times ``scale`` (100: in percent, without
    the sign) with ``digits`` decimals; empty without an interval."""
    if interval is None:
        return ""
    low, high = interval
    return f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def percent_with_interval(value: float | None, interval: list[float] | None,
                          digits: int = 1) -> str:
    """``"83.5% [81.1, 85.7]"``: :func:`percent` and its interval in percent, as many
    decimals; ``"–"`` without a value."""
    text = percent(value, digits)
    return text if text == "–" else text + bracket(interval, digits)


def share_with_interval(value: float | None, interval: list[float] | None) -> str:
    """``"0.900% [0.810, 0.990]"``: :func:`share_digits` and its interval, as many decimals."""
    return percent_with_interval(value, interval, share_places(value))


def number_with_interval(value: float | None, interval: list[float] | None,
                         digits: int = 2) -> str:
    """``"2.30 [2.07, 2.53]"``: :func:`number` and its interval, as many decimals."""
    text = number(value, digits)
    return text if text == "–" else text + bracket(interval, digits, 1.0)


def _overall_section(result: AuditResult) -> str:
    summary = result.summary()
    rows, flags, sentences = [], [], []
    for column, (name, stats) in enumerate(summary["regions"].items()):
        lift = stats["lift"]
        share = share_with_interval(stats["mean_share"], stats.get("mean_share_interval"))
        lifted = number_with_interval(lift, stats.get("lift_interval"))
        rows.append([name, str(stats["count"]), share, share_digits(stats["median_share"]),
                     share_digits(stats["mean_area"]), lifted])
        flags.append(lift is not None and lift >= LIFT_HIGHLIGHT)
        if stats["mean_share"] is not None and lift is not None:
            color = "rgb({},{},{})".format(*_region_color(column))
            sentences.append(
                f'<li><span class="swatch" style="border-color:{color}"></span> '
                f"<b>{html.escape(name)}</b>: the maps put {html.escape(share)} of their mass "
                f"here, on {share_digits(stats['mean_area'])} of the area: "
                f"{html.escape(lifted)} times what a uniform map would.</li>"
            )
    accuracy = summary["accuracy"]
    accuracy_text = percent_with_interval(accuracy, summary.get("accuracy_interval"))
    head = (f"<p>{summary['count']} inputs; accuracy {html.escape(accuracy_text)}"
            if accuracy is not None else f"<p>{summary['count']} inputs (no labels)")
    head += f"; all-zero maps: {summary['empty_maps']}.</p>"
    return (
        "<h2>Where the maps put their mass</h2>" + head + f"<ul>{''.join(sentences)}</ul>"
        + table(["region", "inputs", "mean share [95%]", "median share", "area (uniform map)",
                 "lift [95%]"], rows, flags)
        + f"<p>Rows with a lift of {LIFT_HIGHLIGHT:g} or more are highlighted. Share: the map's "
        "mass inside the region over its whole mass (energy-based pointing game); lift: mean "
        f"share / mean area share. {html.escape(INTERVAL_NOTE)}</p>"
    )


def _counterfactual_section(result: AuditResult) -> str:
    checks = result.counterfactual
    if checks is None:
        return ""
    rows = []
    for variant in checks.variants:
        change = checks.change(variant.name)
        rows.append([variant.name, str(variant.count),
                     percent_with_interval(variant.accuracy, variant.accuracy_interval),
                     "–" if change is None else f"{100 * change:+.1f} points",
                     percent_with_interval(variant.cue_following,
                                           variant.cue_following_interval)])
    return (
        "<h2>Counterfactual check: accuracy when the cue changes</h2>"
        + table(["data", "inputs", "accuracy [95%]", f"change vs {checks.reference.name}",
                 "predictions = the cue's class [95%]"], rows)
        + "<p>A model that relies on the cue loses accuracy when the cue is moved or removed, "
        "and follows a moved cue. Brackets: Wilson 95% intervals over the inputs counted.</p>"
    )


def _group_table(first_column: str, groups: dict, regions) -> str:
    """One row per group of inputs (a class, a cue condition): its size, accuracy, and each
    region's mean share of the map and lift, each with its 95% interval."""
    header = [first_column, "inputs", "accuracy [95%]"] + [
        f"share {n} [95%]" for n in regions] + [f"lift {n} [95%]" for n in regions]
    rows = []
    for name, stats in groups.items():
        shares = stats["regions"]
        rows.append([name, str(stats["count"]),
                     percent_with_interval(stats["accuracy"], stats.get("accuracy_interval"))]
                    + [share_with_interval(shares[n]["mean_share"],
                                           shares[n].get("mean_share_interval"))
                       for n in regions]
                    + [number_with_interval(shares[n]["lift"], shares[n].get("lift_interval"))
                       for n in regions])
    return table(header, rows)


def _cue_section(result: AuditResult) -> str:
    groups = result.by_cue()
    if groups is None:
        return ""
    return ("<h2>Does the map follow the cue?</h2>"
            + _group_table("inputs with a cue", groups, result.regions)
            + "<p>A model that leans on the cue puts more of the map's mass on it when it "
            f"predicts the class the cue points at. {html.escape(INTERVAL_NOTE)}</p>")


def _per_class_section(result: AuditResult) -> str:
    per_class = result.per_class()
    if not per_class:
        return ""
    return ("<h2>Per class (by label)</h2>" + _group_table("class", per_class, result.regions)
            + f"<p>{html.escape(INTERVAL_NOTE)}</p>")


def _cases_section(result: AuditResult, top: int) -> str:
    parts = ["<h2>The inputs whose maps lean most on each region</h2>",
             "<p>Map of the explained class over the input; boxes around the regions: "]
    parts.append(", ".join(
        f'<span class="swatch" style="border-color:rgb({r},{g},{b})"></span> {html.escape(n)}'
        for n, (r, g, b) in ((n, _region_color(c)) for c, n in enumerate(result.regions))))
    parts.append(".</p>")
    row_of = {index: row for row, index in enumerate(result.indices.tolist())}
    for name in result.regions:
        examples = result.examples.get(name, [])[:top]
        parts.append(f"<h3>{html.escape(name)}</h3>")
        if not examples:
            parts.append("<p>No kept examples (audit(..., keep=0) or no input has the region)."
                         "</p>")
            continue
        cards = []
        for example in examples:
            record = result.record(row_of[example.index])
            label = "–" if record["label"] is None else result.class_name(record["label"])
            verdict = "" if record["correct"] is None else (" ✓" if record["correct"] else " ✗")
            predicted = result.class_name(record["prediction"])
            shown = html.escape(result.name(example.index))
            caption = (f"{shown}: label {html.escape(label)}, predicted "
                       f"{html.escape(predicted)}{verdict}<br>{html.escape(name)}"
                       f" share {share_digits(record['share'][name])}")
            cards.append(f'<figure><img alt="input {shown}" '
                         f'src="{_data_uri(example_picture(example))}">'
                         f"<figcaption>{caption}</figcaption></figure>")
        parts.append(f'<div class="cases">{"".join(cards)}</div>')
    return "".join(parts)


def _target_words(target: str) -> str:
    """How the report names what the maps explain."""
    return {"predicted": "predicted class", "label": "true class"}.get(target, target)


def render_html(result: AuditResult, title: str = "camlens bias audit",
                description: str | None = None, top: int = 8) -> str:
    """The whole report as one HTML string (pictures embedded)."""
    settings = (f"method <code>{html.escape(result.method)}</code> at layer "
                f"<code>{html.escape(result.layer)}</code>, map of the "
                f"{html.escape(_target_words(result.target))}")
    intro = f"<p>{html.escape(description)}</p>" if description else ""
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in result.notes)
    histogram = ""
    if len(result):
        figure = _histogram_figure(result)
        histogram = (f'<h2>Shares, input by input</h2><img alt="histograms of the region shares" '
                     f'src="{_data_uri(figure)}">')
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{intro}<p>{settings}.</p>"
        + _overall_section(result) + _counterfactual_section(result) + _cue_section(result)
        + histogram
        + _per_class_section(result) + _cases_section(result, top)
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + "</body></html>"
    )


def write_report(result: AuditResult, path: str | Path, title: str = "camlens bias audit",
                 description: str | None = None, top: int = 8) -> Path:
    """Write :func:`render_html` to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result, title, description, top), encoding="utf-8")
    return path
