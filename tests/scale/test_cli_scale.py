"""`camlens explain` on the pipeline: shard formats, a bad file among them, SIGTERM and resume
with shards, and the refusals of the engine options."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from camlens.cli import main

explain_module = importlib.import_module("camlens.cli.explain")


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_parquet_shards_with_a_bad_file_among_them(digit_scenes, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(digit_scenes, folder)
    (folder / "s03.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = run("explain", folder, "-m", "digits-gap", "--format", "parquet", "--batch-size",
                 4, "--method", "gradcam", "--method", "layercam", "-o", out)
    assert result.exit_code == 1, result.output
    assert "explained 11, failed 1" in result.output and "s03.png" in result.output
    rows = pd.read_parquet(out / "maps")
    assert len(rows) == 22 and str(folder / "s03.png") not in set(rows["file"])
    assert set(rows["method"]) == {"gradcam", "layercam"}
    lines = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert lines[0]["settings"]["format"] == "parquet"
    assert [line["status"] for line in lines[1:]].count("failed") == 1
    assert not list(out.glob("*.png"))  # no overlays


def test_sigterm_with_shards_keeps_an_index_of_rows_that_exist_and_resumes(
        digit_scenes, tmp_path, monkeypatch):
    out = tmp_path / "out"
    original, seen = explain_module.RunIndex.add, []

    def add(self, file, records, error=None):
        seen.append(file)
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, file, records, error)

    monkeypatch.setattr(explain_module.RunIndex, "add", add)
    first = run("explain", digit_scenes, "-m", "digits-gap", "--format", "npz",
                "--shard-size", 2, "--batch-size", 2, "-o", out)
    assert first.exit_code == 130, first.output
    monkeypatch.undo()
    records = json.loads((out / "explanations.json").read_text())
    assert 2 <= len(records) < 12
    for record in records:  # every indexed row is in its shard
        with np.load(record["output"]) as shard:
            assert shard["file"][record["row"]] == record["file"]
    again = run("explain", digit_scenes, "-m", "digits-gap", "--format", "npz",
                "--shard-size", 2, "-o", out, "--resume")
    assert again.exit_code == 0, again.output
    files = []
    for path in sorted((out / "maps").glob("*.npz")):
        with np.load(path) as shard:
            files.extend(shard["file"].tolist())
    assert sorted(files) == sorted(map(str, digit_scenes.glob("*.png")))  # each once


def test_engine_options_are_checked_before_any_work(digit_scenes, tmp_path):
    overlays = run("explain", digit_scenes, "-m", "digits-gap", "--engine", "ray", "--format",
                   "png", "-o", tmp_path / "a")
    assert overlays.exit_code == 2 and "--format parquet or npz" in overlays.output
    address = run("explain", digit_scenes, "-m", "digits-gap", "--ray-address", "auto",
                  "-o", tmp_path / "b")
    assert address.exit_code == 2 and "--ray-address needs --engine ray" in address.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow  # worker processes start torch: ~17 s on 2 cores
def test_audit_prepares_batches_in_worker_processes_with_the_same_result(tmp_path):
    results = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        result = run("audit", "-m", "digits-biased", "--size", 40, "--batch-size", 16,
                     "--workers", workers, "-o", out)
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        results.append({key: summary[key] for key in ("overall", "per_class", "counterfactual")})
    assert results[0] == results[1]
