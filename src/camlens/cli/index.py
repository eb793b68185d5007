"""The index of a ``camlens explain`` run, written as the work goes: :mod:`camlens.scale.index`
(where both engines use it), with a settings mismatch on ``--resume`` as a usage error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from camlens.scale.index import INDEX_NAME, SUMMARY_NAME, ResumeError
from camlens.scale.index import RunIndex as _ScaleIndex

__all__ = ["INDEX_NAME", "SUMMARY_NAME", "RunIndex"]


class RunIndex(_ScaleIndex):
    """:class:`camlens.scale.index.RunIndex`; resuming with other settings exits 2."""

    def __init__(self, out: Path, settings: dict[str, Any], resume: bool) -> None:
        try:
            super().__init__(out, settings, resume)
        except ResumeError as error:
            raise click.UsageError(str(error)) from None
