"""Decoding in worker processes (camlens.scale.processes): the same inputs, tensors and errors
as decoding in threads, in order, and the same maps from a whole run."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.scale import explain_dataset
from camlens.scale.pipeline import run_pipeline
from camlens.scale.processes import decoded_batches, default_processes
from camlens.scale.sources import InputItem
from camlens.scale.work import Decoded, ImageResult, WorkSpec, decode_input
from camlens.scale.writers import Written


def _mixed_folder(folder, count=11):
    """Pictures of two sizes with a broken file among them."""
    folder.mkdir()
    generator = np.random.default_rng(3)
    for number in range(count):
        side = 40 if number % 3 == 0 else 64
        pixels = generator.integers(0, 255, (side, side), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{number:02d}.png")
    (folder / "p05.png").write_bytes(b"not a png")
    return folder


def test_batches_decoded_in_processes_equal_those_decoded_here(tmp_path):
    from torchvision import transforms

    from camlens.models import load_model

    folder = _mixed_folder(tmp_path / "mixed")
    # a preprocessing that keeps each picture's size, so one batch holds two shapes
    loaded = load_model("digits-gap")
    loaded.preprocess = lambda image: transforms.functional.to_tensor(  # noqa: E731
        image.convert("L"))[None]
    items = [InputItem(str(path)) for path in sorted(folder.iterdir())]
    spec = WorkSpec()

    def decode(item):
        return decode_input(loaded, spec, item)

    here = [decode(item) for item in items]
    batches = list(decoded_batches(items, decode, batch_size=4, processes=2))
    assert [len(batch) for batch in batches] == [4, 4, 3]
    there = [one for batch in batches for one in batch]
    assert [one.item for one in there] == items  # in order
    for mine, theirs in zip(here, there, strict=True):
        assert theirs.error == mine.error
        if mine.error is None:
            assert torch.equal(theirs.pixels, mine.pixels)
    assert there[5].error is not None and "p05.png" in there[5].error
    assert {one.pixels.shape[-1] for one in there if one.error is None} == {40, 64}


def test_a_run_with_decoding_processes_writes_the_maps_of_one_without(digit_scenes, tmp_path,
                                                                      same_npz_maps):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG cut short")
    sources = [digit_scenes, broken]
    threads = explain_dataset("digits-gap", sources, tmp_path / "threads", format="npz",
                              batch_size=5, processes=0, lanes=1)
    processes = explain_dataset("digits-gap", sources, tmp_path / "processes", format="npz",
                                batch_size=5, processes=2)
    assert (threads.explained, threads.failed) == (processes.explained, processes.failed) == (
        12, 1)
    assert "broken.png" in processes.failures[0]

    same_npz_maps(tmp_path / "threads", tmp_path / "processes", 12, rtol=1e-5, atol=1e-6)


def test_processes_are_not_asked_for_with_lanes_or_without_threads(digit_scenes, tmp_path):
    with pytest.raises(ValueError, match="processes=2 decode for one lane, and lanes=2"):
        explain_dataset("digits-gap", digit_scenes, tmp_path, format="npz", processes=2,
                        lanes=2)
    with pytest.raises(ValueError, match="processes=2 decode beside .* and workers=0"):
        explain_dataset("digits-gap", digit_scenes, tmp_path, format="npz", processes=2,
                        workers=0)
    with pytest.raises(ValueError, match="processes must be an int of at least 0"):
        explain_dataset("digits-gap", digit_scenes, tmp_path, format="npz", processes=-1)


def test_processes_by_default_on_an_accelerator_only():
    assert default_processes("cpu") == 0
    assert default_processes("cuda") == max(0, min(8, (os.cpu_count() or 1) - 1))


def test_an_interrupt_stops_the_decoding_processes_and_reports_what_was_written():
    items = [InputItem(f"i{n}") for n in range(64)]
    out: list[Written] = []

    class Writer:
        def write(self, result):
            return [Written(result.key, [{"file": result.key}])]

        def close(self):
            return []

    def decode(item):
        return Decoded(item, torch.zeros(1, 1, 2, 2))

    explained = []
    during = []

    def explain(batch):
        explained.append(len(batch))
        during.append(set(_children()))
        if len(explained) == 3:
            raise KeyboardInterrupt
        return [ImageResult(one.item.key) for one in batch]

    before = set(_children())
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(items, decode, explain, Writer(), out.append, batch_size=4, workers=2,
                     processes=2)
    assert sorted(done.key for done in out) == sorted(f"i{n}" for n in range(8))
    assert len(during[0] - before) >= 2  # the workers ran (so their going is no accident)
    assert set(_children()) <= before  # the workers are gone


def _children() -> list[int]:
    """This process's living child processes."""
    folder = f"/proc/{os.getpid()}/task"
    if not os.path.isdir(folder):
        pytest.skip("needs /proc to list child processes")
    found = []
    for task in os.listdir(folder):
        try:
            with open(f"{folder}/{task}/children") as stream:
                found += [int(pid) for pid in stream.read().split()]
        except FileNotFoundError:  # a thread that ended while the tasks were listed
            continue
    return [pid for pid in found if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True



def test_overlays_drawn_in_processes_are_the_files_drawn_here(digit_scenes, tmp_path,
                                                              monkeypatch):
    from concurrent.futures import ProcessPoolExecutor

    from camlens import TopK
    from camlens.scale import writers

    sent = []
    submit = ProcessPoolExecutor.submit

    def counted(self, function, *args, **kwargs):
        sent.append(function)
        return submit(self, function, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", counted)

    scenes = sorted(digit_scenes.glob("*.png"))[:6]
    for target in (None, TopK(2)):  # one map per input; two, with a grid
        name = "top2" if target else "top1"
        here = explain_dataset("digits-gap", scenes, tmp_path / f"here-{name}",
                               format="png", batch_size=4, processes=0, lanes=1, target=target)
        there = explain_dataset("digits-gap", scenes, tmp_path / f"there-{name}",
                                format="png", batch_size=4, processes=2, target=target)
        assert here.explained == there.explained == 6
        assert sent.count(writers._overlays_per_input) >= 2  # the batches of 4 and 2
        sent.clear()
        drawn_here = sorted((tmp_path / f"here-{name}").glob("*.png"))
        drawn_there = sorted((tmp_path / f"there-{name}").glob("*.png"))
        assert [path.name for path in drawn_here] == [path.name for path in drawn_there]
        assert len(drawn_here) == 6 * (1 if target is None else 3)
        for mine, theirs in zip(drawn_here, drawn_there, strict=True):
            if "grid" not in mine.name:  # grids are matplotlib figures, drawn here in both
                assert mine.read_bytes() == theirs.read_bytes(), mine.name


def test_the_driving_thread_leaves_the_processes_their_cores_and_gets_its_threads_back():
    from camlens.scale.lanes import _omp_set_num_threads
    from camlens.scale.processes import cores_left

    if _omp_set_num_threads() is None:
        pytest.skip("this torch does not use OpenMP")
    before = torch.get_num_threads()
    seen = {}

    def other_thread():
        seen["other"] = torch.get_num_threads()

    with cores_left(1):
        seen["inside"] = torch.get_num_threads()
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen["inside"] == max(1, before - 1)
    assert seen["other"] == before  # another thread keeps its count
    assert torch.get_num_threads() == before

    items = [InputItem(f"i{n}") for n in range(8)]
    counts = []

    def explain(batch):
        counts.append(torch.get_num_threads())
        return [ImageResult(one.item.key) for one in batch]

    class Writer:
        def write(self, result):
            return [Written(result.key, [])]

        def close(self):
            return []

    run_pipeline(items, lambda item: Decoded(item, torch.zeros(1, 1, 2, 2)), explain, Writer(),
                 lambda done: None, batch_size=4, workers=1, processes=1)
    assert counts == [max(1, before - 1)] * 2
    assert torch.get_num_threads() == before
