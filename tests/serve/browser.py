"""Headless Debian chromium driven by playwright's Python package (no browser download): what
the page tests and the README screenshot share."""

from __future__ import annotations

import os
import shutil

__all__ = ["chromium_path", "launch"]


def chromium_path() -> str | None:
    """The system chromium: $CAMLENS_CHROMIUM, else chromium or chromium-browser on PATH."""
    named = os.environ.get("CAMLENS_CHROMIUM")
    if named:
        return named if os.path.isfile(named) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch(playwright):
    """A headless chromium that may play sound without a click."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), headless=True,
        args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"])
