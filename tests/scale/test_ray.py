"""The Ray engine on a local Ray (``ray.init(num_cpus=2)``, no cluster): the same rows as the
local engine, resumable, and complete without duplicates when an actor dies mid-run."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from camlens.scale import explain_dataset

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's model class
    yield
    ray.shutdown()
    for number, handler in handlers.items():  # ray.init installs its own; later tests check
        signal.signal(number, handler)


def table(out: Path):
    data = pq.read_table(out / "maps").sort_by([("file", "ascending"), ("method", "ascending")])
    maps = data.column("map").combine_chunks().to_numpy_ndarray()
    return data.drop(["map"]).to_pylist(), maps


def assert_same_rows(out_a: Path, out_b: Path):
    rows_a, maps_a = table(out_a)
    rows_b, maps_b = table(out_b)
    assert [(r["file"], r["method"], r["target"]) for r in rows_a] == [
        (r["file"], r["method"], r["target"]) for r in rows_b]
    np.testing.assert_allclose([r["score"] for r in rows_a], [r["score"] for r in rows_b],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps_a, maps_b, rtol=1e-4, atol=1e-5)


def test_ray_gives_the_local_rows(local_ray, digit_scenes, tmp_path):
    files = sorted(digit_scenes.glob("*.png"))[:6]
    local = explain_dataset("digits-gap", files, tmp_path / "local",
                            method=["gradcam", "layercam"], batch_size=4)
    on_ray = explain_dataset("digits-gap", files, tmp_path / "ray", engine="ray", actors=2,
                             method=["gradcam", "layercam"], batch_size=4)
    assert (local.explained, on_ray.explained) == (6, 6)
    assert_same_rows(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_ray_resumes_a_run(local_ray, digit_scenes, tmp_path):
    files = sorted(digit_scenes.glob("*.png"))
    explain_dataset("digits-gap", files, tmp_path / "local", batch_size=4)
    first = explain_dataset("digits-gap", files[:5], tmp_path / "ray", engine="ray", actors=2,
                            batch_size=4)
    again = explain_dataset("digits-gap", digit_scenes, tmp_path / "ray", engine="ray",
                            actors=3, batch_size=4, resume=True)  # more replicas than CPUs
    assert (first.explained, again.explained, again.skipped) == (5, 7, 5)
    assert_same_rows(tmp_path / "local", tmp_path / "ray")


class DiesOnce(nn.Module):
    """``inner``, whose process exits on its second batch, once in the whole run (the first
    replica to get there creates ``marker``)."""

    def __init__(self, inner: nn.Module, marker: str) -> None:
        super().__init__()
        self.inner, self.marker, self.calls = inner, marker, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)  # the actor's process dies mid-run
        return self.inner(x)


@pytest.mark.slow
def test_an_actor_that_dies_mid_run_loses_nothing_and_writes_nothing_twice(
        local_ray, digit_scenes, tmp_path):
    from camlens.models import LoadedModel, load_model

    digits = load_model("digits-gap")
    marker = tmp_path / "died"
    dying = LoadedModel(DiesOnce(digits.model, str(marker)), "digits-gap",
                        digits.preprocess, digits.class_names, "inner.features")
    counts = explain_dataset(dying, digit_scenes, tmp_path / "ray", engine="ray", actors=2,
                             batch_size=2)
    assert marker.exists()  # an actor did die
    assert counts.explained == 12 and not counts.failures
    rows, _ = table(tmp_path / "ray")
    assert sorted(r["file"] for r in rows) == sorted(map(str, digit_scenes.glob("*.png")))
    index = [json.loads(line) for line in
             (tmp_path / "ray" / "explanations.jsonl").read_text().splitlines()[1:]]
    assert len(index) == len({entry["file"] for entry in index}) == 12
    explain_dataset(digits, digit_scenes, tmp_path / "local", layer="features", batch_size=2)
    assert_same_rows(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_the_command_on_ray(local_ray, digit_scenes, tmp_path):
    from click.testing import CliRunner

    from camlens.cli import main

    result = CliRunner().invoke(main, ["explain", str(digit_scenes), "-m", "digits-gap",
                                       "--engine", "ray", "--actors", "2", "--format", "npz",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "explained 12, failed 0" in result.output
    with np.load(tmp_path / "out" / "maps" / "part-00000.npz") as shard:
        assert sorted(shard["file"].tolist()) == sorted(map(str, digit_scenes.glob("*.png")))
