"""The README's picture of the explorer, taken by the tests' browser:

    .venv/bin/python tests/serve/screenshot.py docs/explorer.png

Serves the zoo's digit models on a free port of 127.0.0.1, opens the page in headless chromium,
explains a sample with Grad-CAM, CAM and LayerCAM for the top two classes, hovers a map and
saves the window."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from browser import chromium_path, launch  # noqa: E402
from serve_helpers import free_port  # noqa: E402


def main(out: Path) -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from camlens.cli.serve import build_app
    from camlens.serve import ModelCatalog

    if chromium_path() is None:
        sys.exit("no chromium: apt-get install chromium (or set CAMLENS_CHROMIUM)")
    catalog = ModelCatalog.load(["digits-gap", "digits-fc", "digits-captioner",
                                 "accent-attention", "accent-cnn"], zoo=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(catalog), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("button.sample[data-sample='digit-3']")
            page.click("button.sample[data-sample='digit-3']")
            page.wait_for_selector("img.heat")
            page.check("#methods input[value=cam]")
            page.check("#methods input[value=layercam]")
            page.select_option("#target-mode", "top2")
            deadline = time.monotonic() + 30
            while page.evaluate("document.querySelectorAll('img.heat').length") != 6:
                if time.monotonic() > deadline:
                    sys.exit("the page did not show six maps within 30 s")
                time.sleep(0.05)
            page.hover("td[data-method=gradcam] .stack", position={"x": 100, "y": 70})
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    finally:
        server.should_exit = True
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/explorer.png"))
