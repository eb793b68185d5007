"""The local engine: bounded queues, the same results with or without threads, interrupts
that leave only what is on disk indexed, shards and their index, resume."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from camlens.scale import explain_dataset
from camlens.scale.pipeline import run_pipeline
from camlens.scale.sources import InputItem
from camlens.scale.work import Decoded, ImageResult
from camlens.scale.writers import Written


class CountingWriter:
    """A writer that remembers what it wrote and what is held."""

    def __init__(self, hold: int = 1) -> None:
        self.hold, self.held, self.closed = hold, [], 0
        self.lock = threading.Lock()

    def write(self, result):
        time.sleep(0.001)
        with self.lock:
            self.held.append(result.key)
            if len(self.held) < self.hold:
                return []
            done, self.held = self.held, []
        return [Written(key, [{"file": key}]) for key in done]

    def close(self):
        self.closed += 1
        with self.lock:
            done, self.held = self.held, []
        return [Written(key, [{"file": key}]) for key in done]


@pytest.mark.parametrize("workers", [0, 3])
def test_memory_is_bounded_and_every_input_comes_out_once(workers):
    items = [InputItem(f"i{n}") for n in range(300)]
    in_memory, peak, lock = [0], [0], threading.Lock()

    def decode(item):
        with lock:
            in_memory[0] += 1
            peak[0] = max(peak[0], in_memory[0])
        return Decoded(item, error=None if item.key != "i7" else "i7: unreadable")

    def explain(batch):
        with lock:
            in_memory[0] -= len(batch)
        return [ImageResult(d.item.key, error=d.error) for d in batch]

    out = []
    writer = CountingWriter(hold=10)
    run_pipeline(items, decode, explain, writer, out.append, batch_size=8, workers=workers)
    assert sorted(done.key for done in out) == sorted(item.key for item in items)
    assert [done.error for done in out if done.error] == ["i7: unreadable"]
    assert peak[0] <= 4 * 8  # never more than four batches decoded and waiting
    assert writer.closed == 1


@pytest.mark.parametrize("lanes", [1, 2])
def test_an_interrupt_reports_what_is_on_disk_and_flushes_the_writer(lanes):
    items = [InputItem(f"i{n}") for n in range(100)]
    writer, seen = CountingWriter(hold=7), []

    def on_written(done):
        seen.append(done.key)
        if len(seen) == 14:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(items, lambda item: Decoded(item),
                     lambda batch: [ImageResult(d.item.key) for d in batch], writer,
                     on_written, batch_size=4, workers=2, lanes=lanes)
    assert writer.closed >= 1 and writer.held == []
    assert len(seen) > 14 and len(seen) == len(set(seen)) < 100  # held ones were flushed


def test_threads_change_nothing_and_shards_match_their_index(digit_scenes, tmp_path):
    serial = explain_dataset("digits-gap", digit_scenes, tmp_path / "serial", format="npz",
                             workers=0, batch_size=1, method=["gradcam", "layercam"])
    threaded = explain_dataset("digits-gap", digit_scenes, tmp_path / "threaded",
                               format="parquet", workers=3, batch_size=5, shard_size=4,
                               method=["gradcam", "layercam"])
    assert serial.explained == threaded.explained == 12 and not serial.failures
    records = json.loads((tmp_path / "threaded" / "explanations.json").read_text())
    assert len(records) == 24 and len({r["output"] for r in records}) == 3  # 12 inputs / 4
    table = pd.read_parquet(tmp_path / "threaded" / "maps")
    for record in records:  # each index record names its row
        shard = pd.read_parquet(record["output"])
        row = shard.iloc[record["row"]]
        assert (row["file"], row["method"], row["target"]) == (
            record["file"], record["method"], record["target"])
        assert row["score"] == pytest.approx(record["score"], abs=1e-5)
    npz = np.load(tmp_path / "serial" / "maps" / "part-00000.npz")  # no pickle needed
    assert npz["raw"].shape == (24, 16, 16) and npz["raw"].dtype == np.float32
    by_key = {(f, m): raw for f, m, raw in zip(npz["file"], npz["method"], npz["raw"],
                                               strict=True)}
    assert len(table) == 24
    import pyarrow.parquet as pq

    maps = pq.read_table(tmp_path / "threaded" / "maps").column("map").combine_chunks()
    maps = maps.to_numpy_ndarray()  # the fixed-shape column keeps the grid
    assert maps.shape == (24, 16, 16)
    for position, row in table.iterrows():
        np.testing.assert_allclose(maps[position], by_key[(row["file"], row["method"])],
                                   rtol=1e-4, atol=1e-5)


def test_resume_adds_shards_and_never_writes_an_input_twice(digit_scenes, tmp_path):
    files = sorted(digit_scenes.glob("*.png"))
    out = tmp_path / "out"
    first = explain_dataset("digits-gap", files[:5], out, shard_size=2)
    assert first.explained == 5
    shards = sorted(p.name for p in (out / "maps").iterdir())
    assert shards == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    again = explain_dataset("digits-gap", files, out, shard_size=2, resume=True)
    assert (again.explained, again.skipped) == (7, 5)
    table = pd.read_parquet(out / "maps")
    assert sorted(table["file"]) == sorted(map(str, files))  # each once
    with pytest.raises(ValueError, match="other settings"):
        explain_dataset("digits-gap", files, out, method="layercam", resume=True)


@pytest.mark.parametrize("form", ["npz", "parquet"])
def test_a_shard_written_but_not_indexed_is_recovered_not_redone(digit_scenes, tmp_path, form):
    """Killed after a shard is in place but before its index lines: resume indexes its rows
    from the shard instead of explaining (and writing) them again."""
    files = sorted(digit_scenes.glob("*.png"))[:6]
    out = tmp_path / "out"
    explain_dataset("digits-gap", files, out, format=form, shard_size=3)
    lines = (out / "explanations.jsonl").read_text().splitlines()
    (out / "explanations.jsonl").write_text("\n".join(lines[:-2]) + "\n")  # two lines lost
    before = json.loads((out / "explanations.json").read_text())
    again = explain_dataset("digits-gap", files, out, format=form, shard_size=3, resume=True)
    assert (again.explained, again.skipped) == (0, 6)
    assert len(list((out / "maps").iterdir())) == 2  # no new shard
    after = json.loads((out / "explanations.json").read_text())
    key = lambda record: record["file"]  # noqa: E731
    assert sorted(after, key=key) == sorted(before, key=key)


def test_a_fresh_run_replaces_an_earlier_runs_shards(digit_scenes, tmp_path):
    files = sorted(digit_scenes.glob("*.png"))
    explain_dataset("digits-gap", files, tmp_path, format="npz", shard_size=5)
    again = explain_dataset("digits-gap", files[:2], tmp_path, format="npz", shard_size=5)
    assert (again.explained, again.skipped) == (2, 0)
    assert [p.name for p in (tmp_path / "maps").iterdir()] == ["part-00000.npz"]


def test_input_paths_resolve_as_path_resolve_does(tmp_path, monkeypatch):
    """The fast resolution a PNG run uses to never overwrite an input: folder once, then the
    name; symbolic links (to files and to folders) resolved in full."""
    from camlens.scale.writers import resolved_paths

    real = tmp_path / "real"
    real.mkdir()
    for name in ("a.png", "b.png"):
        (real / name).write_bytes(b"x")
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    (tmp_path / "file-link.png").symlink_to(real / "a.png")
    monkeypatch.chdir(tmp_path)
    paths = ["real/a.png", real / "b.png", "linked/b.png", "file-link.png", "linked/../real/a.png",
             "missing/c.png"]
    assert resolved_paths(paths) == {Path(path).resolve() for path in paths}


@pytest.mark.parametrize("fields, message", [
    ({"methods": ["gradcam"]}, r"explain_dataset got methods=, which is neither one of its "
                               r"parameters nor an option of gradcam; did you mean method\?"),
    ({"channel_last": True}, r"did you mean channels_last\?"),
    ({"batch_size": 0}, r"batch_size must be an int of at least 1 or None \(the default\), "
                        r"got 0"),
    ({"workers": -1}, r"workers must be an int of at least 0"),
    ({"shard_size": 2.5}, r"shard_size must be an int of at least 1, got 2.5"),
])
def test_a_misspelt_option_or_impossible_count_is_refused_before_any_input(
        digit_scenes, tmp_path, fields, message):
    """A keyword explain_dataset does not take lands in the method's options: refused before
    the run, not as a failure of every input; so are counts that cannot be."""
    with pytest.raises((TypeError, ValueError), match=message):
        explain_dataset("digits-gap", digit_scenes, tmp_path / "out", **fields)
    assert not (tmp_path / "out").exists()
