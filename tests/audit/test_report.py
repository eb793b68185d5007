"""The audit report is one self-contained HTML file; the JSON summary is strict JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from test_audit import BOX_A, InputMap, items, picture

from camlens.audit import audit, counterfactual
from camlens.audit.report import example_picture, render_html, write_report


def refuse_nan(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


@pytest.fixture
def result():
    data = items(4) + [{"image": picture(), "label": 1, "a": BOX_A, "b": None}]
    result = audit(InputMap(), data, {"a": "a", "b": "b"}, layer="features", target="label")
    result.counterfactual = counterfactual(InputMap(), {"normal": data, "again": data})
    return result


def test_report_is_self_contained(result, tmp_path):
    path = write_report(result, tmp_path / "sub" / "report.html", description="hand-built")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "href=" not in page and "<script" not in page and "url(" not in page
    # one histogram and the kept examples: 4 for a, 4 for b (the fifth input has no b)
    assert len(sources) == 1 + len(result.examples["a"]) + len(result.examples["b"])
    assert "Counterfactual check" in page and "hand-built" in page
    assert list(tmp_path.rglob("*")) == [tmp_path / "sub", path]  # no side files


def test_embedded_pictures_are_pngs(result):
    import base64

    page = render_html(result)
    for encoded in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page):
        assert base64.b64decode(encoded)[:8] == b"\x89PNG\r\n\x1a\n"


def test_worst_case_picture_draws_the_region_boxes(result):
    example = result.examples["a"][0]
    image = example_picture(example)
    scale = image.width // 8
    assert scale > 1 and image.height == 8 * scale
    # box a (0, 0, 2, 2) is outlined in green, box b (4, 4, 6, 6) in red
    assert image.getpixel((0, 0)) == (0, 255, 0)
    assert image.getpixel((4 * scale, 4 * scale)) == (255, 0, 0)


def test_json_summary_parses_strictly(result, tmp_path):
    text = result.to_json(tmp_path / "summary.json", records=True)
    data = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse_nan)
    assert json.loads(text, parse_constant=refuse_nan) == data
    assert data["overall"]["count"] == 5 and data["overall"]["accuracy"] == pytest.approx(0.8)
    assert data["regions"] == ["a", "b"]
    assert data["records"][4]["share"]["b"] is None  # NaN written as null
    assert data["counterfactual"]["reference"] == "normal"
    assert data["top"]["a"][0]["share"]["a"] >= data["top"]["a"][-1]["share"]["a"]


def test_report_of_an_empty_data_set(tmp_path):
    result = audit(InputMap(), [], {"a": "a"}, layer="features")
    assert len(result) == 0 and result.summary()["accuracy"] is None
    page = render_html(result)
    assert "0 inputs" in page
    json.loads(result.to_json(), parse_constant=refuse_nan)


def test_import_camlens_loads_no_plotting_or_image_library():
    code = ("import sys, camlens; camlens.audit; "
            "print([m for m in ('matplotlib', 'PIL') if m in sys.modules])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"


def test_normalised_inputs_are_shown_after_rescaling():
    from camlens.audit.report import displayable

    picture_ = displayable(torch.linspace(-2, 2, 16).reshape(1, 4, 4))
    assert picture_.getpixel((0, 0)) == (0, 0, 0) and picture_.getpixel((3, 3)) == (255,) * 3


HOSTILE = '<img src=x onerror="alert(1)">'


def test_every_string_that_reaches_the_page_is_escaped(tmp_path):
    """Class names, region names, the title, the description, notes and a callable target's
    name: none of them can put markup in the report."""
    data = items(4) + [{"image": picture(), "label": 1, "a": BOX_A, "b": None}]
    regions = {f"a{HOSTILE}": "a", f"b{HOSTILE}": "b"}
    names = (f"zero{HOSTILE}", f"one{HOSTILE}")

    def score(logits):
        return logits[:, 0]

    score.__name__ = f"score{HOSTILE}"
    result = audit(InputMap(), data, regions, layer="features", target=score, class_names=names)
    result.notes.append(f"note {HOSTILE}")
    result.counterfactual = counterfactual(InputMap(), {f"normal{HOSTILE}": data,
                                                        f"again{HOSTILE}": data})
    page = render_html(result, title=f"Audit {HOSTILE}", description=f"data {HOSTILE}", top=4)
    assert "onerror" not in page.replace("onerror=&quot;", "")  # only in escaped text
    assert "<img src=x" not in page
    legit = len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', page))
    assert page.count("<img") == legit
    assert page.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") >= 8
