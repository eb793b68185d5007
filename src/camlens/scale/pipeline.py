"""The local streaming engine: decode in worker threads, explain in batches, write in the
background, with bounded queues.

::

    inputs ──► decode pool (``workers`` threads, each batch in ``workers`` chunks,
               at most 2 batches read ahead)
           ──► explain_batch on the calling thread (the model; torch releases the GIL)
           ──► writer pool (``workers`` threads, results in chunks, at most 2 batches waiting)
           ──► on_written(Written) on the calling thread (the index, the console)

Every queue is bounded, so memory does not grow with the number of inputs: at any time at most
about four batches of inputs are in memory. Decoding, the model and writing overlap (PIL, zlib
and torch release the GIL). ``workers=0`` does everything on the calling thread, one input after
another (for debugging and for deterministic tests).

With ``lanes`` > 1 (:mod:`camlens.scale.lanes`; CPU only) the stages run inside lanes instead:
``lanes`` threads, each with its share of torch's threads, each taking whole batches through
reading, explaining and writing, at most two batches per lane in flight; the calling thread
reports each batch, in order.

Ctrl-C or SIGTERM (raised as KeyboardInterrupt on the calling thread) stops reading, lets the
writes under way finish and be reported, flushes the writer (a shard writer writes what it
holds), and raises again: every input reported is on disk, and nothing else is.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice

from camlens.scale.sources import InputItem
from camlens.scale.work import Decoded, ImageResult
from camlens.scale.writers import Written, accepted

__all__ = ["default_workers", "run_pipeline"]


def default_workers() -> int:
    """Decoding and writing threads: the CPU count, between 1 and 4."""
    return max(1, min(4, os.cpu_count() or 1))


def run_pipeline(
    items: Sequence[InputItem],
    decode: Callable[[InputItem], Decoded],
    explain: Callable[[list[Decoded]], list[ImageResult]],
    writer,
    on_written: Callable[[Written], None],
    *,
    batch_size: int,
    workers: int | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
    lanes: int = 1,
    processes: int = 0,
) -> None:
    """Run ``items`` through ``decode``, ``explain`` (a batch at a time) and ``writer``; call
    ``on_result`` for each explained input (its console notes) and ``on_written`` for each one
    on disk or failed, on this thread (see the module docstring).

    ``writer`` has ``write(result) -> [Written]`` and ``close() -> [Written]``, and may have
    ``write_batch(results) -> [Written]`` (several inputs at once: overlays drawn together)."""
    workers = default_workers() if workers is None else workers
    batch_size = max(1, batch_size)
    if lanes > 1 and workers > 0:
        _run_in_lanes(items, decode, explain, writer, on_written, batch_size, lanes, on_result)
        return
    if workers == 0:
        _run_serially(items, decode, explain, writer, on_written, batch_size, on_result)
        return
    if processes > 0:  # forked before this run starts threads of its own
        from camlens.scale.processes import cores_left, decoded_batches

        batches = decoded_batches(items, decode, batch_size, processes)
        busy = processes
        start = getattr(writer, "start_processes", None)
        if start is not None:
            start(processes)
            busy += processes
        workers = max(workers, processes)  # writing threads: each waits on a process
        with cores_left(busy):  # the model's thread leaves the processes their cores
            _explain_and_write(batches, explain, writer, on_written, on_result, workers,
                               batch_size)
    else:
        batches = _decoded_in_threads(items, decode, batch_size, workers,
                                      max(1, -(-batch_size // workers)))
        _explain_and_write(batches, explain, writer, on_written, on_result, workers,
                           batch_size)


def _explain_and_write(batches: Generator[list[Decoded], None, None], explain, writer, on_written,
                       on_result, workers: int, batch_size: int) -> None:
    """Explain the decoded ``batches`` on this thread and write the results in ``workers``
    threads (at most two chunks each waiting); an interrupt stops the decoding, lets the
    writes under way finish and be reported, and flushes the writer."""
    writing = ThreadPoolExecutor(workers, thread_name_prefix="camlens-write")
    # Work goes to the threads in chunks (a batch split among them), not an input at a time:
    # a hand-off costs tens of microseconds, a small model's input little more.
    chunk = max(1, -(-batch_size // workers))
    written: deque[Future] = deque()  # chunks of results being written

    def report(block: bool) -> None:
        while written and (block or written[0].done() or len(written) > 2 * workers):
            for done in written.popleft().result():
                on_written(done)

    try:
        for batch in batches:  # the next batches decode while this one is explained
            results = [result for result in explain(batch)
                       if accepted(result, on_written, on_result)]
            for first in range(0, len(results), chunk):
                written.append(writing.submit(_write_all, writer, results[first:first + chunk]))
            report(block=False)
        report(block=True)
        for done in writer.close():
            on_written(done)
    except BaseException:
        batches.close()  # stops the decoding threads or processes
        _finish_writes(written, writer, on_written)
        raise
    finally:
        batches.close()
        writing.shutdown(wait=True)


def _decoded_in_threads(items: Sequence[InputItem], decode: Callable[[InputItem], Decoded],
                        batch_size: int, workers: int, chunk: int
                        ) -> Generator[list[Decoded], None, None]:
    """``items`` decoded by ``workers`` threads, a batch at a time in order, each batch in
    chunks of ``chunk``; at most three batches decoding ahead of the one being used."""
    decoding = ThreadPoolExecutor(workers, thread_name_prefix="camlens-decode")
    decoded: deque[list[Future]] = deque()  # per batch, its chunks being decoded
    source = iter(items)

    def fill() -> None:
        while len(decoded) < 3:  # the batch being explained waits apart: four in memory at most
            batch = list(islice(source, batch_size))
            if not batch:
                return
            decoded.append([decoding.submit(_decode_all, decode, batch[first:first + chunk])
                            for first in range(0, len(batch), chunk)])

    try:
        fill()
        while decoded:
            batch = [one for part in decoded.popleft() for one in part.result()]
            fill()
            yield batch
    finally:
        for parts in decoded:
            for future in parts:
                future.cancel()
        decoding.shutdown(wait=False, cancel_futures=True)


def _run_in_lanes(items, decode, explain, writer, on_written, batch_size: int, lanes: int,
                  on_result) -> None:
    """The lanes (module docstring): each batch read, explained and written in one lane; the
    calling thread reports the batches in order and keeps at most ``2 * lanes`` in flight."""
    from camlens.scale.lanes import lane_threads, lane_warnings, start_lane

    def one_batch(batch: list[InputItem]) -> tuple[list[ImageResult], list[Written]]:
        results = explain([decode(item) for item in batch])
        return results, _write_all(writer, [result for result in results
                                            if result.error is None])

    source = iter(items)
    running: deque[Future] = deque()
    with lane_warnings(), ThreadPoolExecutor(lanes, thread_name_prefix="camlens-lane",
                                             initializer=start_lane,
                                             initargs=(lane_threads(lanes),)) as pool:
        try:
            while True:
                while len(running) < 2 * lanes:
                    batch = list(islice(source, batch_size))
                    if not batch:
                        break
                    running.append(pool.submit(one_batch, batch))
                if not running:
                    break
                results, done = running.popleft().result()
                _report_batch(results, done, on_written, on_result)
            for done in writer.close():
                on_written(done)
        except BaseException:
            _finish_lanes(running, on_written, on_result, writer)
            raise


def _finish_lanes(running: Iterable[Future], on_written, on_result, writer) -> None:
    """After an interrupt or an error: the batches under way finish and are reported (what
    they wrote is on disk), those not started are dropped, then the writer is flushed."""
    for future in running:
        if future.cancel():
            continue
        try:
            results, done = future.result()
        except Exception:  # noqa: BLE001 - an interrupt must still close the run
            continue
        _report_batch(results, done, on_written, on_result)
    for done in writer.close():
        on_written(done)


def _report_batch(results: list[ImageResult], done: list[Written], on_written,
                  on_result) -> None:
    """A lane's batch on the calling thread: each input's failure or notes, then what is on
    disk."""
    for result in results:
        accepted(result, on_written, on_result)
    for written in done:
        on_written(written)


def _decode_all(decode: Callable[[InputItem], Decoded], items: list[InputItem]
                ) -> list[Decoded]:
    return [decode(item) for item in items]


def _write_all(writer, results: list[ImageResult]) -> list[Written]:
    """``writer.write_batch(results)``, or ``write`` for each where it has no ``write_batch``."""
    together = getattr(writer, "write_batch", None)
    if together is not None:
        return together(results)
    return [done for result in results for done in writer.write(result)]


def _finish_writes(written: Iterable[Future], writer, on_written) -> None:
    """After an interrupt: report the writes under way and what the writer flushes."""
    for future in written:
        if future.cancel():
            continue
        try:
            for done in future.result():
                on_written(done)
        except Exception:  # noqa: BLE001 - an interrupt must still close the run
            continue
    for done in writer.close():
        on_written(done)


def _run_serially(items, decode, explain, writer, on_written, batch_size, on_result) -> None:
    batch: list[Decoded] = []
    try:
        for position, item in enumerate(items):
            batch.append(decode(item))
            if len(batch) < batch_size and position < len(items) - 1:
                continue
            good = [result for result in explain(batch)
                    if accepted(result, on_written, on_result)]
            for done in _write_all(writer, good):
                on_written(done)
            batch = []
    finally:
        for done in writer.close():
            on_written(done)
