"""The runs a long reproduction saved as it went, read back so that the same command resumes."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path

__all__ = ["saved_runs"]


def saved_runs(path: Path | None, key: Callable[[dict], Hashable]) -> dict[Hashable, dict]:
    """The runs of the JSON file at ``path`` (``{"runs": [...], ...}``) by ``key(run)``; empty
    when there is no file or it cannot be read (a file cut short while written: the runs are
    done again)."""
    if path is None or not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {key(run): run for run in previous.get("runs", [])}
