"""A request that finds the server idle runs its model call on all the cores where that is
measured faster for its kind of work, alone; other model work waits for it (camlens.serve.cores)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.serve.cores import MARGIN, PROBE_EVERY, PROBES, RECENT, Cores, ThreadTrials


def _run_trials(trials: ThreadTrials, kind, times: dict[int, float]) -> list[tuple[int, bool]]:
    picks = []
    while True:
        threads, timed = trials.pick(kind)
        picks.append((threads, timed))
        if not timed:
            return picks
        trials.record(kind, threads, times[threads])


@pytest.mark.parametrize("faster", [1, 2])
def test_trials_alternate_skip_each_warm_up_and_keep_the_faster_count(faster):
    trials = ThreadTrials(share=1, whole=2, trials=3)
    times = {faster: 0.004, 3 - faster: 0.005}
    picks = _run_trials(trials, "digits", times)
    # one warm-up and three timed calls of each count, in turn, then the faster (probes later)
    assert picks[:8] == [(1, True), (2, True)] * 4
    assert picks[8] == (faster, False)
    assert trials.pick("digits") == (faster, False)
    (choice,) = trials.choices()
    assert choice["chosen_threads"] == faster
    assert choice["median_ms"] == {str(faster): 4.0, str(3 - faster): 5.0}


def test_a_warm_up_calls_slowness_does_not_decide():
    trials = ThreadTrials(share=1, whole=2, trials=2)
    for threads, seconds in [(1, 0.010), (2, 9.0), (1, 0.010), (2, 0.004), (1, 0.010),
                             (2, 0.004)]:
        assert trials.pick("k") == (threads, True)
        trials.record("k", threads, seconds)
    assert trials.pick("k") == (2, False)  # the 9 s warm-up of the two threads is not counted


def test_a_trial_call_that_could_not_run_alone_leaves_the_trials_where_they_were():
    """A picked trial call that found other work running (so was not timed) is not counted:
    the count's warm-up is still to come, and a cold call is never timed."""
    trials = ThreadTrials(share=1, whole=2, trials=1)
    assert trials.pick("k") == (1, True)  # ran contended: nothing recorded
    assert trials.pick("k") == (1, True)
    trials.record("k", 1, 5.0)  # the share's warm-up
    assert trials.pick("k") == (2, True)
    assert trials.pick("k") == (2, True)  # contended again
    trials.record("k", 2, 5.0)  # the whole count's warm-up, not timed
    assert trials.choices()[0]["median_ms"] == {}


def test_kinds_are_tried_apart_and_the_oldest_is_forgotten():
    trials = ThreadTrials(share=1, whole=4, trials=1, max_kinds=2)
    _run_trials(trials, "small", {1: 0.001, 4: 0.002})
    _run_trials(trials, "large", {1: 0.009, 4: 0.003})
    assert trials.pick("small") == (1, False) and trials.pick("large") == (4, False)
    trials.pick("third")
    assert trials.pick("small") == (1, True)  # forgotten: the oldest of three; tried again


def test_after_the_choice_every_sixteenth_idle_call_probes_the_other_count():
    trials = ThreadTrials(share=1, whole=2, trials=1)
    _run_trials(trials, "k", {1: 0.004, 2: 0.005})  # chooses 1; its first call picked
    picks = [trials.pick("k") for _ in range(2 * PROBE_EVERY)]
    probes = [number for number, (_, timed) in enumerate(picks, start=2) if timed]
    assert probes == [PROBE_EVERY, 2 * PROBE_EVERY]
    assert {picks[number - 2] for number in probes} == {(2, True)}
    assert {pick for pick in picks if not pick[1]} == {(1, False)}


def _times_after_the_choice(trials: ThreadTrials, kind, times: dict[int, float],
                            calls: int) -> None:
    for _ in range(calls):
        threads, _ = trials.pick(kind)
        trials.record(kind, threads, times[threads])


def test_a_count_whose_probes_beat_the_chosen_calls_by_the_margin_is_chosen_instead():
    """A noisy moment made two threads look slower in the trials (94 against 80 ms); later
    calls on one thread take 85 ms and each probe of two 65 ms: two threads are chosen."""
    trials = ThreadTrials(share=1, whole=2, trials=1)
    _run_trials(trials, "k", {1: 0.080, 2: 0.094})
    _times_after_the_choice(trials, "k", {1: 0.085, 2: 0.065}, PROBES * PROBE_EVERY - 2)
    assert trials.choices()[0]["chosen_threads"] == 1  # two probes so far: not yet
    _times_after_the_choice(trials, "k", {1: 0.085, 2: 0.065}, 1)  # the third probe
    assert trials.pick("k") == (2, False)
    (choice,) = trials.choices()
    assert choice["chosen_threads"] == 2 and choice["switches"] == 1
    assert choice["median_ms"] == {"1": 80.0, "2": 94.0}  # the trials, as they were
    assert choice["since_chosen_ms"] == {"2": 65.0}  # starts from the probes' times
    assert choice["timed_since_chosen"] == {"2": PROBES, "1": 0}


def test_the_choice_stays_while_one_of_the_latest_probes_is_not_faster_by_the_margin():
    """Two of the latest three probes are fast (their median would switch); the third is as
    slow as the chosen count's calls: a noisy machine's lucky probes do not switch."""
    trials = ThreadTrials(share=1, whole=2, trials=1)
    _run_trials(trials, "k", {1: 0.080, 2: 0.094})
    probe_times = iter([0.060, 0.070, 0.086] * 10)
    for _ in range(10 * PROBE_EVERY):
        threads, _ = trials.pick("k")
        trials.record("k", threads, next(probe_times) if threads == 2 else 0.085)
    (choice,) = trials.choices()
    assert choice["chosen_threads"] == 1 and choice["switches"] == 0


def test_a_busy_spell_on_the_chosen_count_alone_does_not_switch():
    """Each probe is compared with the calls just before it: fast probes long ago and a slow
    spell of the chosen count's latest calls (the machine was busy) do not switch."""
    trials = ThreadTrials(share=1, whole=2, trials=1)
    _run_trials(trials, "k", {1: 0.080, 2: 0.094})
    for calls in range(1, PROBES * PROBE_EVERY):  # up to the third probe
        threads, _ = trials.pick("k")
        busy = calls > PROBES * PROBE_EVERY - 2 - RECENT  # the last 8 calls before it
        trials.record("k", threads, 0.070 if threads == 2 else (0.100 if busy else 0.075))
    (choice,) = trials.choices()
    assert choice["timed_since_chosen"] == {"1": RECENT, "2": PROBES}
    assert choice["chosen_threads"] == 1 and choice["switches"] == 0


def test_probes_within_the_margin_keep_the_choice():
    trials = ThreadTrials(share=1, whole=2, trials=1)
    _run_trials(trials, "k", {1: 0.080, 2: 0.094})
    slightly = 0.085 / (1 + MARGIN) + 0.0005  # faster, but by less than the margin
    _times_after_the_choice(trials, "k", {1: 0.085, 2: slightly}, 10 * PROBE_EVERY)
    (choice,) = trials.choices()
    assert choice["chosen_threads"] == 1 and choice["switches"] == 0
    assert choice["timed_since_chosen"] == {"1": RECENT, "2": PROBES}


@pytest.mark.parametrize(("share", "whole", "count"), [(0, 2, 1), (2, 2, 1), (1, 2, 0)])
def test_trials_refuse_counts_that_cannot_compare(share, whole, count):
    with pytest.raises(ValueError, match="must be"):
        ThreadTrials(share, whole, count)


def _needs_thread_counts() -> None:
    from camlens.scale.lanes import _omp_set_num_threads

    if _omp_set_num_threads() is None:
        pytest.skip("this torch does not use OpenMP: a thread's torch count cannot be set")


def test_a_call_alone_runs_on_its_count_and_gives_the_thread_its_count_back():
    _needs_thread_counts()
    cores = Cores(share=1, whole=2, trials=1)
    seen = []

    def worker():
        from camlens.scale.lanes import start_lane

        start_lane(1)
        for _ in range(5):
            with cores.idle_call("k") as threads:
                seen.append((threads, torch.get_num_threads()))
        seen.append(("after", torch.get_num_threads()))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert [threads for threads, _ in seen[:4]] == [1, 2, 1, 2]  # the trials, in turn
    assert all(threads == count for threads, count in seen[:5])
    assert seen[5] == ("after", 1)


def test_other_model_work_waits_for_a_call_alone_and_an_idle_call_shares_when_work_runs():
    cores = Cores(share=1, whole=2, trials=1)
    inside, release, order = threading.Event(), threading.Event(), []

    def alone():
        with cores.idle_call("k") as threads:  # the first call: a (timed) warm-up, alone
            order.append(("alone", threads))
            inside.set()
            release.wait(10)
        order.append(("alone done", None))

    def shared():
        inside.wait(10)
        with cores.shared():
            order.append(("shared", None))

    threads = [threading.Thread(target=alone), threading.Thread(target=shared)]
    for thread in threads:
        thread.start()
    inside.wait(10)
    threading.Event().wait(0.2)  # the shared work has had time to start, and must not have
    assert order == [("alone", 1)]
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == [("alone", 1), ("alone done", None), ("shared", None)]

    # other work runs: an idle call takes its share, untimed
    with cores.shared(), cores.idle_call("k") as threads:
        assert threads == 1
    assert cores.trials.choices()[0]["median_ms"] == {}


def test_a_call_on_the_chosen_share_is_timed_only_when_no_other_model_work_ran_with_it():
    cores = Cores(share=1, whole=2, trials=1)
    _run_trials(cores.trials, "k", {1: 0.004, 2: 0.005})  # the share is chosen

    def timed_calls() -> int:
        return cores.trials.choices()[0]["timed_since_chosen"]["1"]

    with cores.idle_call("k") as threads:  # the server to itself: timed
        assert threads == 1
    assert timed_calls() == 1
    with cores.shared(), cores.idle_call("k"):  # work was running when it started
        pass
    def other_work() -> None:
        with cores.shared():
            pass

    with cores.idle_call("k"):  # work started (and ended) while it ran
        other = threading.Thread(target=other_work)
        other.start()
        other.join(10)
    assert timed_calls() == 1
    with cores.idle_call("k"):  # alone again: timed
        pass
    assert timed_calls() == 2


def test_an_idle_server_runs_the_call_on_the_count_chosen_and_answers_as_the_library(digits):
    """Through the app: the trials run on requests that find the server idle, their result is in
    /api/status, each call ran on the count it was given (seen by the model's own forward), and
    the answers are the library's."""
    _needs_thread_counts()
    if torch.get_num_threads() < 2:
        pytest.skip("one torch thread here: there are no other threads to give a call")
    from fastapi.testclient import TestClient

    import camlens
    from camlens.cli.serve import build_app
    from camlens.serve import Limits, ModelCatalog

    catalog = ModelCatalog.load(["digits-gap"], zoo=False)
    model = catalog.get("digits-gap").loaded.model
    counts = []
    hook = model.register_forward_pre_hook(lambda *_: counts.append(torch.get_num_threads()))
    try:
        app = build_app(catalog, Limits(workers=2))
        cores = app.state.server.cores
        assert cores is not None and cores.trials.whole == torch.get_num_threads()
        with TestClient(app) as client:
            answers = [client.post("/api/explain", data={"model": "digits-gap"}, files=[
                ("image", ("d.png", digits[index % 6][1], "image/png"))]).json()
                for index in range(10)]
            status = client.get("/api/status").json()["idle_threads"]
    finally:
        hook.remove()
    share, whole = cores.trials.share, cores.trials.whole
    assert status["share"] == share and status["whole"] == whole
    (kind,) = status["kinds"]
    assert kind["model"] == "digits-gap" and kind["shapes"] == [[1, 1, 64, 64]]
    assert kind["chosen_threads"] in (share, whole)
    assert set(kind["median_ms"]) == {str(share), str(whole)}
    assert counts[:8] == [share, whole] * 4
    assert set(counts[8:]) == {kind["chosen_threads"]}
    loaded = catalog.get("digits-gap").loaded
    for index, answer in enumerate(answers):
        image = Image.open(io.BytesIO(digits[index % 6][1])).convert("RGB")
        reference = camlens.explain(model, loaded.preprocess(image), method="gradcam",
                                    layer="features")
        (cell,) = answer["images"][0]["explanations"][0]["maps"]
        assert cell["class"] == int(reference.targets[0])
        assert cell["score"] == pytest.approx(float(reference.scores[0]), rel=1e-5)
        np.testing.assert_allclose(cell["raw"], reference.raw[0].numpy(), rtol=1e-3,
                                   atol=1e-6)


def test_a_call_that_raises_lets_go_of_the_cores_and_of_its_thread_count():
    _needs_thread_counts()
    cores = Cores(share=1, whole=2, trials=1)
    seen = {}

    def worker():
        from camlens.scale.lanes import start_lane

        start_lane(1)
        with cores.idle_call("k"):  # the share's warm-up
            pass
        try:
            with cores.idle_call("k") as threads:  # all the threads, alone
                seen["inside"] = (threads, torch.get_num_threads())
                raise RuntimeError("the model failed")
        except RuntimeError:
            seen["after"] = torch.get_num_threads()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert seen == {"inside": (2, 2), "after": 1}
    with cores.shared():  # not held any more: other work goes on
        pass
    assert cores._hold()  # and a later call may hold the cores again
