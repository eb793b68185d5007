"""Sections of a benchmark page that another benchmark writes: ``RESULTS.md`` is rewritten by
``bench_speed.py`` and carries the data-set pipeline's bars from ``bench_pipeline.py``.

A section sits between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``; writing it replaces
only that span (or appends it), and a page rewritten by its own script keeps its sections.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["kept_sections", "write_section"]


def _pattern(name: str = r"[\w-]+") -> re.Pattern[str]:
    return re.compile(rf"<!-- begin ({name}) -->\n.*?<!-- end \1 -->\n?", re.DOTALL)


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` in ``path`` as section ``name``: in place of the old one, or at the end."""
    block = f"<!-- begin {name} -->\n{text.rstrip()}\n<!-- end {name} -->\n"
    page = path.read_text() if path.exists() else ""
    found = _pattern(re.escape(name)).search(page)
    if found:
        page = page[:found.start()] + block + page[found.end():]
    else:
        page = page.rstrip("\n") + ("\n\n" if page else "") + block
    path.write_text(page)


def kept_sections(path: Path) -> str:
    """The sections of ``path`` (empty when none), to append to a rewritten page."""
    if not path.exists():
        return ""
    return "".join(found.group(0) for found in _pattern().finditer(path.read_text()))
