"""Lanes (several batches at once on a CPU, each on its share of torch's threads): the same
maps as one lane, the process's thread counts and warning state untouched, each thread's
warnings its own, bad inputs handled as in one lane (interrupts: tests/scale/test_pipeline.py)."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

from camlens.explanation import ExplanationWarning
from camlens.scale import explain_dataset
from camlens.scale.lanes import (
    captured_warnings,
    choose_lanes,
    lane_threads,
    lane_warnings,
    lanes_unavailable,
    start_lane,
)
from camlens.scale.pipeline import run_pipeline
from camlens.scale.sources import InputItem
from camlens.scale.work import Decoded, ImageResult
from camlens.scale.writers import Written

needs_lanes = pytest.mark.skipif(lanes_unavailable("cpu") is not None,
                                 reason=f"lanes do not run here: {lanes_unavailable('cpu')}")


def _in_new_thread(work):
    out = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join()
    return out[0]


@needs_lanes
def test_a_lane_has_its_own_thread_count_and_nobody_else_changes():
    main_before = torch.get_num_threads()
    other_before = _in_new_thread(torch.get_num_threads)

    def lane():
        start_lane(1)
        return torch.get_num_threads()

    assert _in_new_thread(lane) == 1
    assert torch.get_num_threads() == main_before
    assert _in_new_thread(torch.get_num_threads) == other_before  # threads started later too


@needs_lanes
def test_lanes_give_the_maps_of_one_lane_and_leave_threads_and_warnings_as_they_were(
        digit_scenes, tmp_path, same_npz_maps):
    threads = torch.get_num_threads()
    show, filters = warnings.showwarning, list(warnings.filters)
    one = explain_dataset("digits-gap", digit_scenes, tmp_path / "one", format="npz",
                          batch_size=3, lanes=1)
    two = explain_dataset("digits-gap", digit_scenes, tmp_path / "two", format="npz",
                          batch_size=3, lanes=2)
    assert one.explained == two.explained == 12
    assert torch.get_num_threads() == threads
    assert warnings.showwarning is show and warnings.filters == filters

    same_npz_maps(tmp_path / "one", tmp_path / "two", 12, rtol=1e-4, atol=1e-5)


def test_each_thread_gets_only_its_own_warnings_while_lanes_run():
    barrier = threading.Barrier(2)
    caught: dict[int, list[str]] = {}

    def work(number: int) -> None:
        with captured_warnings() as mine:
            barrier.wait()  # both captures open at once
            for _ in range(3):
                warnings.warn(f"from {number}", ExplanationWarning, stacklevel=1)
            barrier.wait()
        caught[number] = [str(w.message) for w in mine]

    show, filters = warnings.showwarning, list(warnings.filters)
    with lane_warnings():
        threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert caught == {0: ["from 0"] * 3, 1: ["from 1"] * 3}  # every time, none crossed over
    assert warnings.showwarning is show and warnings.filters == filters


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_bad_input_is_reported_and_the_rest_go_on(lanes):
    items = [InputItem(f"i{n}") for n in range(40)]
    out: list[Written] = []

    class Writer:
        lock = threading.Lock()

        def write(self, result):
            return [Written(result.key, [{"file": result.key}])]

        def close(self):
            return []

    def decode(item):
        return Decoded(item, error=f"{item.key}: unreadable" if item.key == "i9" else None)

    run_pipeline(items, decode, lambda batch: [ImageResult(d.item.key, error=d.error)
                                               for d in batch],
                 Writer(), out.append, batch_size=4, workers=2, lanes=lanes)
    assert sorted(done.key for done in out) == sorted(item.key for item in items)  # each once
    assert [done.error for done in out if done.error] == ["i9: unreadable"]


def test_lanes_are_refused_where_they_cannot_run_and_say_why(digit_scenes, tmp_path):
    assert choose_lanes(2, "cuda")[0] == 1 and "CPU" in choose_lanes(2, "cuda")[1]
    count, why = choose_lanes(2, "cpu", {"aug_smooth": True})
    assert count == 1 and "aug_smooth" in why
    assert choose_lanes(None, "cpu", {"smooth_samples": 4}) == (1, None)  # default: quiet
    with pytest.warns(RuntimeWarning, match="2 lanes asked for, running one: aug_smooth"):
        counts = explain_dataset("digits-gap", sorted(digit_scenes.glob("*.png"))[:2],
                                 tmp_path, format="npz", lanes=2, aug_smooth=True)
    assert counts.explained == 2


@needs_lanes
def test_lane_threads_share_out_the_process_count():
    assert lane_threads(1) == torch.get_num_threads()
    assert lane_threads(10 * torch.get_num_threads()) == 1


def test_runs_of_lanes_in_two_threads_share_the_recorder_and_restore_the_state_once():
    """Two pipelines with lanes in two threads at once: the first to end must not take the
    recorder from the other (whose captures would then fall back to the unsafe
    catch_warnings), and the last restores the warning state as it was."""
    show, filters = warnings.showwarning, list(warnings.filters)
    first_in, first_out = threading.Event(), threading.Event()
    caught: list[str] = []

    def first():
        with lane_warnings():
            first_in.set()
            first_out.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with lane_warnings():
        first_out.set()
        thread.join()  # the first run has ended; this one still records through the recorder
        with captured_warnings() as mine:
            warnings.warn("still mine", ExplanationWarning, stacklevel=1)
            warnings.warn("still mine", ExplanationWarning, stacklevel=1)
        caught = [str(w.message) for w in mine]
        assert warnings.showwarning is not show
    assert caught == ["still mine", "still mine"]
    assert warnings.showwarning is show and warnings.filters == filters


def test_coarse_switching_raises_the_interval_in_the_block_and_restores_it():
    import sys

    from camlens.scale.lanes import coarse_switching

    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), coarse_switching(0.07):
        assert sys.getswitchinterval() == pytest.approx(0.07)
        raise RuntimeError("a run that fails")
    assert sys.getswitchinterval() == before
    with coarse_switching(before / 2):  # never lowered
        assert sys.getswitchinterval() == before


def test_coarse_switching_in_overlapping_threads_restores_the_first_interval():
    import sys

    from camlens.scale.lanes import coarse_switching

    before = sys.getswitchinterval()
    inside, leave = threading.Event(), threading.Event()

    def second() -> None:
        with coarse_switching(0.07):
            inside.set()
            leave.wait(10)

    with coarse_switching(0.07):
        thread = threading.Thread(target=second)
        thread.start()
        inside.wait(10)
    assert sys.getswitchinterval() == pytest.approx(0.07)  # the other block still runs
    leave.set()
    thread.join(10)
    assert sys.getswitchinterval() == before  # the last to end restores the first value
