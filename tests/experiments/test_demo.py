"""The demo page: offline (every asset a file next to it), escaped, the whole story, and the GAP
vs FC table read from the weights' metadata."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the demo needs the viz extra")

from camlens.experiments.demo import (  # noqa: E402
    DemoSizes,
    build_demo,
    figure_tag,
    gap_fc_rows,
    table_tag,
)

HOSTILE = '<script>alert("x")</script>&'


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data) -> None:
        self.text.append(data)


def parsed(markup: str) -> Tags:
    tags = Tags()
    tags.feed(markup)
    return tags


def test_figures_and_tables_escape_every_string():
    markup = figure_tag(HOSTILE, HOSTILE) + table_tag([HOSTILE], [[HOSTILE]])
    tags = parsed(markup)
    assert "script" not in [tag for tag, _ in tags.tags]
    assert tags.tags[1] == ("img", {"src": HOSTILE, "alt": HOSTILE})
    assert "".join(tags.text).count(HOSTILE) == 3


def test_gap_vs_fc_reads_the_metadata_and_measures_localization():
    from camlens.zoo import get_weights, load

    header, rows = gap_fc_rows(10)
    assert [row[0] for row in rows] == ["digits-gap", "digits-fc"]
    for row in rows:
        weights = get_weights(row[0])
        assert row[3] == f"{100 * weights.metrics['test_accuracy']:.2f}% of " \
                         f"{weights.metadata['test_size']}"
        assert row[4] == f"{weights.metadata['train_seconds']} s"
        assert row[-1] == weights.metadata["command"]
        assert row[2] == f"{sum(p.numel() for p in load(row[0]).parameters()):,}"
    assert rows[1][5].startswith("refused")  # CAM cannot explain the FC head
    assert all(cell.endswith("%") for cell in (rows[0][5], rows[0][6], rows[1][6]))
    assert "(10 digits)" in header[5]


@pytest.mark.slow
def test_the_page_tells_the_whole_story_offline(tmp_path: Path):
    import soundfile

    sizes = DemoSizes(digits=2, scenes=1, table=10, captions=1, audit=20, worst=2, detections=1,
                      maximize_steps=4, invert_steps=4)
    index = build_demo(tmp_path, sizes)
    markup = index.read_text()
    tags = parsed(markup)
    assert re.findall(r"<h2>(\d+)\. ", markup) == [str(n) for n in range(1, 11)]
    assert "Counterfactual maps: what speaks against a class" in markup
    # offline: no script, stylesheet link or remote URL; every picture and sound is next to it
    names = {tag for tag, _ in tags.tags}
    assert not names & {"script", "link", "iframe", "object"}
    sources = [attrs["src"] for tag, attrs in tags.tags if tag in ("img", "audio")]
    assert sources and all("/" not in src and ":" not in src for src in sources)
    assert all((tmp_path / src).is_file() for src in sources)
    assert ("audio", {"controls": None, "preload": "metadata", "src": "accent.wav"}) in tags.tags
    samples, rate = soundfile.read(tmp_path / "accent.wav")
    assert rate == 16000 and len(samples) > rate  # more than a second of speech
    assert sum(src.startswith("detect0_") for src in sources) >= 2  # input and a map per digit
    assert any(src.startswith("caption0_word") for src in sources)
    assert sum(src.startswith("audit_worst") for src in sources) == 2
    assert sum(src.startswith("maximized") for src in sources) == 10  # one per class
    assert sum(src.startswith("inverted") for src in sources) == 7  # the digit and 6 layers
    assert "camlens serve" in markup


def test_the_layers_section_shows_every_class_and_a_reconstruction_row(tmp_path: Path):
    from camlens.experiments.demo_applications import layers_section
    from camlens.experiments.demo_page import DemoPage

    page = DemoPage(tmp_path)
    layers_section(page, DemoSizes(maximize_steps=2, invert_steps=2))
    markup = page.sections[0]
    assert "10. What the layers learned" in markup
    sources = [attrs["src"] for tag, attrs in parsed(markup).tags if tag == "img"]
    assert sources == [f"maximized{k}.png" for k in range(10)] + ["inverted_input.png"] + [
        f"inverted{k}.png" for k in range(6)]
    assert all((tmp_path / src).is_file() for src in sources)
    assert "from classifier: representation error" in markup
