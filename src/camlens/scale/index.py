"""The index of a run over a data set, written as the work goes.

``OUT/explanations.jsonl`` holds one JSON line with the run's settings, then one line per input
as soon as its results are on disk: ``{"file", "status": "explained" | "failed", "error",
"records"}``. Each line is one ``write`` followed by a flush, so Ctrl-C, SIGTERM or a crash leaves
every finished input indexed (at worst the last line is cut short, and is ignored when read
back). ``resume=True`` reads it back and skips the inputs already explained, provided the
settings are the same. At the end (also after an interrupt) ``OUT/explanations.json``, the flat
list of records, is written to a temporary file and moved into place, so it is never half
written or stale.

Both engines (:mod:`camlens.scale.pipeline` and :mod:`camlens.scale.ray_engine`) write it from
one thread of the driving process, so a line is never written twice for one input in a run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

__all__ = ["INDEX_NAME", "SUMMARY_NAME", "ResumeError", "RunIndex"]

INDEX_NAME = "explanations.jsonl"
SUMMARY_NAME = "explanations.json"


class ResumeError(ValueError):
    """``resume`` on an index written with other settings; the message shows both."""


class RunIndex:
    """Append-only index of one run in ``out`` (see the module docstring)."""

    def __init__(self, out: Path, settings: dict[str, Any], resume: bool) -> None:
        self.path = out / INDEX_NAME
        self.summary_path = out / SUMMARY_NAME
        # only each file's status and outputs stay in memory; the records are on disk
        self.status: dict[str, str] = {}
        self._outputs: set[Path] = set()
        if resume and self.path.is_file():
            self._read(settings)
        else:
            for stale in (self.path, self.summary_path):
                stale.unlink(missing_ok=True)
        self._stream: TextIO = self.path.open("a", encoding="utf-8")
        if not self.status and self.path.stat().st_size == 0:
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
            raise ResumeError(
                f"{self.path} was written with other settings ({before}); --resume needs the "
                "same model, layer, methods, target and pictures; run without --resume (it "
                "starts over) or use another --out")
        entries = {entry["file"]: entry for entry in parsed[1:] if "file" in entry}
        for file, entry in entries.items():
            self.status[file] = entry["status"]
            self._outputs |= _outputs_of(entry)
        # rewrite without the cut line, so appending goes on from a whole line
        text = "".join(json.dumps(item) + "\n" for item in [parsed[0], *entries.values()])
        temporary = self.path.with_suffix(".jsonl.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path)

    def _write(self, item: dict[str, Any]) -> None:
        self._stream.write(json.dumps(item) + "\n")
        self._stream.flush()

    def done(self, file: Path | str) -> bool:
        """Whether ``file`` was explained by an earlier part of this run."""
        return self.status.get(str(file)) == "explained"

    def outputs(self) -> set[Path]:
        """Every file the index said was written when it was read back for ``resume`` (so a
        resumed run writes new names)."""
        return set(self._outputs)

    def add(self, file: Path | str, records: list[dict[str, Any]],
            error: str | None = None) -> None:
        """Index ``file`` now: explained with ``records``, or failed with ``error``."""
        status = "failed" if error else "explained"
        entry = {"file": str(file), "status": status, "error": error, "records": records}
        self.status[str(file)] = status
        self._write(entry)

    def close(self) -> Path:
        """Close the stream and write ``explanations.json`` (atomically); returns its path."""
        self._stream.close()
        # two passes over the index, so memory does not grow with the records: which line is
        # each file's last, then those lines' records, streamed into the summary
        last: dict[str, int] = {}
        for number, entry in self._entries():
            last[entry["file"]] = number
        temporary = self.summary_path.with_suffix(".json.tmp")
        with temporary.open("w", encoding="utf-8") as summary:
            summary.write("[")
            first = True
            for number, entry in self._entries():
                if last[entry["file"]] != number or entry["status"] != "explained":
                    continue
                for record in entry["records"]:
                    summary.write(("\n  " if first else ",\n  ") + json.dumps(record))
                    first = False
            summary.write("\n]" if not first else "]")
        os.replace(temporary, self.summary_path)
        return self.summary_path

    def _entries(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """The file entries of the index on disk, numbered by line (cut lines skipped)."""
        with self.path.open(encoding="utf-8") as stream:
            for number, line in enumerate(stream):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "file" in entry:
                    yield number, entry


def _outputs_of(entry: dict[str, Any]) -> set[Path]:
    return {Path(record[key]) for record in entry.get("records", [])
            for key in ("output", "grid") if key in record}
