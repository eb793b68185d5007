"""The page in a real headless browser (Debian's chromium through playwright): upload a
picture, change the method and see new overlays, read a map's value, click a word of a caption,
play a recording and watch the cursor move. Skipped with the reason where chromium or
playwright is missing (CI installs chromium: .ci/run)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from browser import chromium_path, launch

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install playwright)")
if chromium_path() is None:
    pytest.skip("no chromium on this machine (apt-get install chromium, or set "
                "CAMLENS_CHROMIUM)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as playwright:
        started = launch(playwright)
        yield started
        started.close()


@pytest.fixture
def page(browser, live_server) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(live_server + "/")
    opened.wait_for_selector("#methods input")
    yield opened
    context.close()
    assert errors == []


def wait_until(page, expression: str, timeout_s: float = 30) -> None:
    """Poll ``expression`` (the page's CSP forbids the eval behind wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        time.sleep(0.05)


def heat_sources(page) -> list[str]:
    return page.eval_on_selector_all("img.heat", "nodes => nodes.map(n => n.src)")


#: Records the text fields of every form the page posts (in ``window.sentForms``).
RECORD_FORMS = """() => {
  const send = window.fetch;
  window.sentForms = [];
  window.fetch = (url, options) => {
    if (options && options.body instanceof FormData) {
      window.sentForms.push(Object.fromEntries([...options.body.entries()].filter(
        ([, value]) => typeof value === "string")));
    }
    return send(url, options);
  };
}"""


def test_upload_a_picture_change_the_method_and_read_a_value(page, digits, tmp_path):
    page.evaluate(RECORD_FORMS)
    hostile = tmp_path / "<img src=x onerror=alert(1)>.png"
    hostile.write_bytes(digits[0][1])
    page.set_input_files("#files", str(hostile))
    page.wait_for_selector("td[data-method=gradcam] img.heat")
    assert page.text_content(".card h2") == hostile.name  # shown as text, not markup
    assert page.query_selector(".card h2 img") is None
    before = heat_sources(page)
    page.check("#methods input[value=layercam]")
    page.uncheck("#methods input[value=gradcam]")
    wait_until(page, "document.querySelector('td[data-method=layercam] img.heat') !== null && "
                     "document.querySelector('td[data-method=gradcam]') === null && "
                     "!document.body.dataset.busy")
    after = heat_sources(page)
    assert len(after) == 1 and after != before
    # no overlay PNGs (the page lays the heatmap over the input); the input as the model saw
    # it asked for once, then reused from the first answer
    sent = page.evaluate("window.sentForms")
    assert [form.get("overlay") for form in sent] == ["false"] * len(sent)
    assert "input" not in sent[0] and sent[-1]["input"] == "false"
    bases = page.eval_on_selector_all("figure.input img, img.base", "n => n.map(x => x.src)")
    assert len(bases) == 2 and all(src.startswith("data:image/png;base64,") for src in bases)
    # a model named like an object's property is not taken for one whose picture was kept
    assert page.evaluate("""() => {
      const input = state.inputs[0];
      return ["toString", "constructor", "__proto__"].map((name) => seenBy(input, name));
    }""") == [None, None, None]
    page.hover("td[data-method=layercam] .stack")
    readout = page.text_content("#readout")
    assert readout.startswith("layercam · ") and " map " in readout and "raw " in readout
    page.fill("#opacity", "20")
    page.dispatch_event("#opacity", "input")
    assert page.eval_on_selector("img.heat", "n => n.style.opacity") == "0.2"


@pytest.mark.slow
def test_top_classes_make_a_grid_of_class_by_method(page):
    page.click("button.sample[data-sample='digit-1']")
    page.wait_for_selector("img.heat")
    page.check("#methods input[value=cam]")
    page.select_option("#target-mode", "top3")
    wait_until(page, "document.querySelectorAll('img.heat').length === 6")
    classes = page.eval_on_selector_all("td[data-method=cam]", "n => n.map(x => x.dataset.class)")
    assert len(set(classes)) == 3
    page.select_option("#target-mode", "classes")
    page.fill("#class-search", "4")
    visible = page.eval_on_selector_all("#class-list label:not([hidden])",
                                        "n => n.map(x => x.textContent.trim())")
    assert visible == ["4"]
    page.check("#class-list input[value='4']")
    wait_until(page, "[...document.querySelectorAll('td[data-class]')].every("
                     "n => n.dataset.class === '4') && !document.body.dataset.busy")
    assert page.eval_on_selector_all("td[data-class]", "n => n.map(x => x.dataset.class)") == [
        "4", "4"]
    page.uncheck("#methods input[value=cam]")  # CAM explains only the layer before the GAP
    page.select_option("#layer", ["features", "features.3"])
    wait_until(page, "document.querySelector(\"td[data-layer='features.3']\") !== null")
    assert sorted(page.eval_on_selector_all("td[data-layer]",
                                            "n => n.map(x => x.dataset.layer)")) == [
        "features", "features.3"]


@pytest.mark.slow
def test_a_caption_shows_the_map_of_the_word_clicked(page):
    page.select_option("#model", "digits-captioner")
    page.click("button.sample[data-sample='scene-0']")
    page.wait_for_selector("button.word[data-word='1']")
    page.click("button.word[data-word='1']")
    page.wait_for_selector(".card.caption[data-shown^='word 2']")  # drawn, also under load
    shown = page.get_attribute(".card.caption", "data-shown")
    word = page.text_content("button.word[data-word='1'] b")
    assert shown.startswith(f"word 2 “{word}”")
    page.hover(".caption .stack")
    page.wait_for_function("shown => document.getElementById('readout').textContent"
                           ".startsWith(shown)", arg=shown)


@pytest.mark.slow
def test_a_recording_plays_with_a_moving_cursor(page):
    page.select_option("#model", "accent-attention")
    page.wait_for_selector("button.sample[data-sample='speech-0']", timeout=120_000)
    page.click("button.sample[data-sample='speech-0']")
    page.wait_for_selector("#timeline", timeout=60_000)
    assert page.get_attribute("#timeline", "data-cursor") == "0.0"
    rows = page.eval_on_selector_all(".words-table tr", "n => n.length")
    assert rows > 1
    page.evaluate("document.getElementById('player').play()")
    deadline = time.monotonic() + 20
    while page.evaluate("document.getElementById('player').currentTime") < 0.3:
        assert time.monotonic() < deadline, "the recording did not play"
        time.sleep(0.1)
    page.evaluate("document.getElementById('player').pause()")
    assert float(page.get_attribute("#timeline", "data-cursor")) > 0


@pytest.mark.slow
def test_an_audit_sorts_by_region_share_and_opens_the_worst_cases(page):
    page.fill("#audit-size", "20")
    page.click("#audit-run")
    page.wait_for_selector(".audit-records tr[data-index]", timeout=60_000)
    wait_until(page, "!document.body.dataset.busy")
    page.select_option("#audit-sort", "mark:desc")
    shares = page.eval_on_selector_all(
        ".audit-records tr[data-index] td:nth-child(5)",
        "n => n.map(x => parseFloat(x.textContent))")
    assert len(shares) == 20 and shares == sorted(shares, reverse=True)
    first = page.get_attribute(".worst button.case", "data-index")
    assert first == page.get_attribute(".audit-records tr[data-index]", "data-index")
    page.click(".worst button.case")
    assert page.is_visible("#audit-case img")
    assert page.get_attribute("#audit-case", "data-index") == first
    assert "mark share" in page.text_content("#audit-case p")


@pytest.mark.slow
def test_a_box_drawn_on_a_detector_input_gets_its_map(page):
    page.select_option("#model", "digits-detector")
    page.click("button.sample[data-sample='scene-0']")
    page.wait_for_selector("td[data-method=gradcam] .box-outline")
    wait_until(page, "!document.body.dataset.busy")
    assert page.eval_on_selector_all("td[data-method=gradcam]", "n => n.length") >= 2  # detections
    # draw, on the input, the box of the first detection (a box must match one to score)
    stack = page.query_selector("td[data-method=gradcam] .stack").bounding_box()
    outline = page.query_selector("td[data-method=gradcam] .box-outline").bounding_box()
    holder = page.query_selector("figure.input .stack.drawable").bounding_box()

    def on_input(x: float, y: float) -> tuple[float, float]:
        return (holder["x"] + (x - stack["x"]) / stack["width"] * holder["width"],
                holder["y"] + (y - stack["y"]) / stack["height"] * holder["height"])

    page.mouse.move(*on_input(outline["x"], outline["y"]))
    page.mouse.down()
    page.mouse.move(*on_input(outline["x"] + outline["width"], outline["y"] + outline["height"]),
                    steps=4)
    page.mouse.up()
    wait_until(page, "document.querySelectorAll('td[data-method=gradcam]').length === 1 && "
                     "!document.body.dataset.busy")
    assert page.eval_on_selector("#target-mode", "n => n.value") == "box"
    assert page.query_selector("figure.input .stack .box-outline") is not None  # kept drawn
    assert page.query_selector("td[data-method=gradcam] .box-outline") is not None
    assert not page.eval_on_selector("#status", "n => n.classList.contains('error')")


def test_text_prompts_of_a_clip_folder_give_a_map_each(browser, tmp_path, digits):
    transformers = pytest.importorskip("transformers")
    from serve_helpers import served
    from toy_models import save_tiny_clip

    from camlens.cli.serve import build_app
    from camlens.serve import ModelCatalog

    catalog = ModelCatalog.load([f"hf:{save_tiny_clip(transformers, tmp_path / 'clip')}"],
                                zoo=False)
    picture = tmp_path / "photo.png"
    picture.write_bytes(digits[0][1])
    with served(build_app(catalog)) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url + "/")
        page.wait_for_selector("#methods input")
        assert page.eval_on_selector("#target-mode", "n => n.value") == "prompts"
        assert page.is_visible("#prompts")
        page.fill("#prompts", "a cat|a dog")
        page.set_input_files("#files", str(picture))
        wait_until(page, "document.querySelectorAll('td[data-method=gradcam] img.heat').length"
                         " === 2 && !document.body.dataset.busy")
        text = page.text_content("#results")
        assert "a cat" in text and "a dog" in text
        assert not page.eval_on_selector("#status", "n => n.classList.contains('error')")
        context.close()
    assert errors == []
