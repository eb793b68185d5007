"""The micro-batcher waits for requests being decoded: work reaching a free worker joins the
work of the same model still on its way, within the window (no model, a recording run_batch)."""

from __future__ import annotations

import asyncio
import time

from camlens.serve import Limits
from camlens.serve.batching import MicroBatcher, WorkPool


def batcher(window_s: float = 5.0, workers: int = 1) -> tuple[MicroBatcher, list[list]]:
    calls: list[list] = []

    def run_batch(key, payloads):
        calls.append(list(payloads))
        return [f"done {payload}" for payload in payloads]

    pool = WorkPool(Limits(workers=workers, batch_window_s=window_s))
    return MicroBatcher(pool, run_batch, window_s, max_batch=16), calls


def test_work_for_a_model_being_decoded_waits_and_goes_in_one_call():
    async def run():
        micro, calls = batcher()
        micro.expect("digits")
        micro.expect("digits")
        micro.arrive("digits")  # the first is decoded; the second is still on its way
        first = micro.submit(("digits", "gradcam"), "a")
        micro.flush_ready()
        await asyncio.sleep(0.05)
        assert micro.waiting == 1 and calls == [] and not micro.idle  # it waits for the second
        micro.arrive("digits")
        second = micro.submit(("digits", "gradcam"), "b")
        micro.flush_ready()
        assert await asyncio.gather(first, second) == ["done a", "done b"]
        assert calls == [["a", "b"]] and micro.idle
        micro.pool.close()

    asyncio.run(run())


def test_other_models_and_failed_decodes_do_not_hold_work_back():
    async def run():
        micro, calls = batcher()
        micro.expect("other")  # another model's request being decoded: no reason to wait
        assert await micro.submit(("digits", "gradcam"), "a") == "done a"
        micro.expect("digits")
        micro.arrive("other")
        waiting = micro.submit(("digits", "gradcam"), "b")
        micro.flush_ready()
        await asyncio.sleep(0.05)
        assert micro.waiting == 1
        micro.arrive("digits")  # that request failed to decode: nothing more will come
        micro.flush_ready()
        assert await waiting == "done b"
        assert calls == [["a"], ["b"]]
        micro.pool.close()

    asyncio.run(run())


def test_work_waits_for_an_expected_request_no_longer_than_the_window():
    async def run():
        micro, calls = batcher(window_s=0.1)
        micro.expect("digits")
        micro.expect("digits")
        micro.arrive("digits")
        began = time.monotonic()
        answer = await micro.submit(("digits", "gradcam"), "a")  # the other never comes
        assert answer == "done a" and 0.09 <= time.monotonic() - began < 5
        assert calls == [["a"]]
        micro.pool.close()

    asyncio.run(run())


def test_without_a_window_nothing_waits():
    async def run():
        micro, calls = batcher(window_s=0)
        micro.expect("digits")
        assert micro.expected == {}  # batching off: no expectations kept
        assert await micro.submit(("digits", "gradcam"), "a") == "done a"
        micro.pool.close()

    asyncio.run(run())
