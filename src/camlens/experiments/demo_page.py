"""The demo page's parts: its sizes, the page being written, and HTML helpers that escape every
string (shared by :mod:`camlens.experiments.demo` and its application sections)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EXPLORER_COMMAND", "SCALE", "SCENE_SCALE", "DemoPage", "DemoSizes", "enlarged",
           "figure_tag", "paragraph", "row_tag", "table_tag"]

SCALE = 3  # the 64-pixel canvases are drawn three times larger
SCENE_SCALE = 2  # the 64x128 scenes twice
#: The command that opens the explorer; the page and ``make demo`` end with it.
EXPLORER_COMMAND = "camlens serve"


@dataclass(frozen=True)
class DemoSizes:
    """How much each section shows or measures (smaller: a quicker page)."""

    digits: int = 6  # cluttered digits in the CAM / Grad-CAM and localization rows
    scenes: int = 4  # two-digit scenes with a map per class and counterfactual maps
    table: int = 100  # test digits behind the GAP vs FC localization error
    captions: int = 2  # scenes captioned with a map per word
    audit: int = 100  # biased digits per audit (and per counterfactual variant)
    worst: int = 4  # worst cases shown per audited model
    detections: int = 2  # detector scenes
    maximize_steps: int = 48  # activation maximization of the ten class logits
    invert_steps: int = 60  # a digit reconstructed from each layer


@dataclass
class DemoPage:
    """The page being written: its folder, the pictures saved into it and its sections."""

    out: Path
    sections: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, picture, name: str) -> str:
        """Save a PIL image or a matplotlib figure as ``name`` next to the page; its name."""
        from camlens.viz import save_figure

        if hasattr(picture, "savefig"):
            save_figure(picture, self.out / name)
        else:
            picture.save(self.out / name)
        return name

    def section(self, title: str, *parts: str) -> None:
        """A section: an escaped title and ``parts``, HTML made with the escaping helpers."""
        self.sections.append(f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>")


def enlarged(picture, scale: int = SCALE):
    """``picture`` drawn ``scale`` times larger, pixels kept sharp."""
    from PIL import Image

    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def figure_tag(src: str, caption: str) -> str:
    """A figure of the picture ``src`` with ``caption``; both escaped."""
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def paragraph(text: str) -> str:
    """``text`` as an escaped paragraph."""
    return f"<p>{html.escape(text)}</p>"


def row_tag(figures: list[str], kind: str = "row") -> str:
    return f'<div class="{kind}">{"".join(figures)}</div>'


def table_tag(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; every cell escaped."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
