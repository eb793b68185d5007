"""The index of a ``camlens explain`` run, written as the work goes.

``OUT/explanations.jsonl`` holds one JSON line with the run's settings, then one line per input
file as soon as it is done: ``{"file", "status": "explained" | "failed", "error", "records"}``.
Each line is one ``write`` followed by a flush, so Ctrl-C, SIGTERM or a crash leaves every
finished file indexed (at worst the last line is cut short, and is ignored when read back).
``--resume`` reads it back and skips the files already explained, provided the settings are the
same. At the end (also after an interrupt) ``OUT/explanations.json``, the flat list of records,
is written to a temporary file and moved into place, so it is never half written or stale.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

import click

__all__ = ["INDEX_NAME", "SUMMARY_NAME", "RunIndex"]

INDEX_NAME = "explanations.jsonl"
SUMMARY_NAME = "explanations.json"


class RunIndex:
    """Append-only index of one run in ``out`` (see the module docstring)."""

    def __init__(self, out: Path, settings: dict[str, Any], resume: bool) -> None:
        self.path = out / INDEX_NAME
        self.summary_path = out / SUMMARY_NAME
        self.entries: dict[str, dict[str, Any]] = {}
        if resume and self.path.is_file():
            self._read(settings)
        else:
            for stale in (self.path, self.summary_path):
                stale.unlink(missing_ok=True)
        self._stream: TextIO = self.path.open("a", encoding="utf-8")
        if not self.entries and self.path.stat().st_size == 0:
            self._write({"settings": settings})

    def _read(self, settings: dict[str, Any]) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupt: that file is redone
        if not parsed or parsed[0].get("settings") != settings:
            before = parsed[0].get("settings") if parsed else None
            raise click.UsageError(
                f"{self.path} was written with other settings ({before}); --resume needs the "
                "same model, layer, methods, target and pictures; run without --resume (it "
                "starts over) or use another --out")
        for entry in parsed[1:]:
            if "file" in entry:
                self.entries[entry["file"]] = entry
        # rewrite without the cut line, so appending goes on from a whole line
        text = "".join(json.dumps(item) + "\n" for item in [parsed[0], *self.entries.values()])
        temporary = self.path.with_suffix(".jsonl.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path)

    def _write(self, item: dict[str, Any]) -> None:
        self._stream.write(json.dumps(item) + "\n")
        self._stream.flush()

    def done(self, file: Path) -> bool:
        """Whether ``file`` was explained by an earlier part of this run."""
        entry = self.entries.get(str(file))
        return entry is not None and entry["status"] == "explained"

    def outputs(self) -> set[Path]:
        """Every file the index says was written (so a resumed run writes new names)."""
        written = set()
        for entry in self.entries.values():
            for record in entry.get("records", []):
                for key in ("output", "grid"):
                    if key in record:
                        written.add(Path(record[key]))
        return written

    def add(self, file: Path, records: list[dict[str, Any]], error: str | None = None) -> None:
        """Index ``file`` now: explained with ``records``, or failed with ``error``."""
        entry = {"file": str(file), "status": "failed" if error else "explained",
                 "error": error, "records": records}
        self.entries[str(file)] = entry
        self._write(entry)

    def close(self) -> Path:
        """Close the stream and write ``explanations.json`` (atomically); returns its path."""
        self._stream.close()
        records = [record for entry in self.entries.values() if entry["status"] == "explained"
                   for record in entry["records"]]
        temporary = self.summary_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(records, indent=2), encoding="utf-8")
        os.replace(temporary, self.summary_path)
        return self.summary_path
