"""Model work off the event loop: a bounded worker pool, admission with a bound, and a
micro-batcher that joins requests for the same model, method, layer and target arriving
together into one library call.

A request is admitted when fewer than :attr:`Limits.queue_size` are running or waiting, else
:class:`Busy` (503). It holds its place until its work has finished, even when it stopped
waiting for it (:class:`TimedOut`, 504): a thread cannot be interrupted, so the bound counts work
that is really running.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from camlens.serve.cores import Cores
from camlens.serve.limits import Limits

__all__ = ["BatchStats", "Busy", "MicroBatcher", "TimedOut", "Ticket", "WorkPool"]

T = TypeVar("T")


class Busy(RuntimeError):
    """The server's queue is full (status 503)."""


class TimedOut(RuntimeError):
    """The answer took longer than the request timeout (status 504)."""


class Ticket:
    """One admitted request's place in the queue; released once, when its work is done."""

    def __init__(self, pool: WorkPool) -> None:
        self._pool = pool
        self._released = False

    def release(self) -> None:
        with self._pool._lock:
            if not self._released:
                self._released = True
                self._pool._admitted -= 1


class WorkPool:
    """A thread pool of :attr:`Limits.workers` threads behind a bounded admission count."""

    def __init__(self, limits: Limits, threads_each: int | None = None,
                 cores: Cores | None = None) -> None:
        """``threads_each``: torch threads of each worker (None: the process's), set with
        :func:`camlens.scale.lanes.start_lane` when the worker starts. ``cores``: where given,
        model work runs within :meth:`Cores.shared` (it waits while one call holds every core)."""
        from camlens.scale.lanes import start_lane

        self.limits = limits
        self.threads_each = threads_each
        self.cores = cores
        self.executor = (
            ThreadPoolExecutor(limits.workers, thread_name_prefix="camlens-serve")
            if threads_each is None else
            ThreadPoolExecutor(limits.workers, thread_name_prefix="camlens-serve",
                               initializer=start_lane, initargs=(threads_each,)))
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Requests running or waiting now."""
        return self._admitted

    def admit(self) -> Ticket:
        """A place in the queue, or :class:`Busy` when it is full."""
        with self._lock:
            if self._admitted >= self.limits.queue_size:
                raise Busy(f"the server is busy: {self._admitted} requests are running or "
                           f"waiting, the limit is {self.limits.queue_size} (camlens serve "
                           "--queue); try again shortly")
            self._admitted += 1
        return Ticket(self)

    def run(self, work: Callable[[], T], shared: bool = True) -> asyncio.Future[T]:
        """``work()`` on a worker thread (model work), on the worker's share of the cores;
        ``shared=False`` for work that takes its share itself (:meth:`Cores.idle_call`)."""
        if shared and self.cores is not None:
            return asyncio.get_running_loop().run_in_executor(
                self.executor, _on_share, self.cores, work)
        return asyncio.get_running_loop().run_in_executor(self.executor, work)

    @staticmethod
    def aside(work: Callable[[], T]) -> asyncio.Future[T]:
        """``work()`` on the event loop's own threads: decoding and encoding, which must not
        hold a model worker (nor keep requests from joining a batch)."""
        return asyncio.get_running_loop().run_in_executor(None, work)

    async def answer(self, ticket: Ticket, futures: Sequence[Awaitable[Any]]) -> list[Any]:
        """The results of ``futures`` within the request timeout; ``ticket`` is released when
        they are all done (now, or later if the request stopped waiting)."""
        gathered = asyncio.gather(*futures)
        gathered.add_done_callback(lambda _: ticket.release())
        try:
            return await asyncio.wait_for(asyncio.shield(gathered), self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise TimedOut(f"no answer within {self.limits.timeout_s:g} s (camlens serve "
                           "--timeout); the work goes on and still counts against the queue"
                           ) from None

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _on_share(cores: Cores, work: Callable[[], T]) -> T:
    with cores.shared():
        return work()


@dataclass
class BatchStats:
    """How the micro-batcher has grouped requests: library calls and the requests in each."""

    calls: int = 0
    requests: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # requests per call -> calls

    def add(self, requests: int) -> None:
        self.calls += 1
        self.requests += requests
        self.largest = max(self.largest, requests)
        self.sizes[requests] = self.sizes.get(requests, 0) + 1


@dataclass
class _Item:
    payload: Any
    size: int
    future: asyncio.Future


class MicroBatcher:
    """Joins work with the same key into one call of ``run_batch(key, payloads) -> results`` on
    the pool; each submitter gets its own result, or its own exception (``run_batch`` may return
    an exception in a payload's place), or the batch's exception.

    Batches form while the workers are busy: work that arrives when a worker is free starts at
    once (no added latency at low load); work that arrives while every worker runs waits, with
    the work of the same key, until a worker frees or ``window_s`` has passed, at most
    ``max_batch`` items a call. ``window_s=0`` turns batching off."""

    def __init__(self, pool: WorkPool,
                 run_batch: Callable[[Hashable, list[Any]], list[Any]],
                 window_s: float, max_batch: int) -> None:
        self.pool, self.run_batch = pool, run_batch
        self.window_s, self.max_batch = window_s, max_batch
        self.pending: dict[Hashable, list[_Item]] = {}
        self.running = 0  # calls on the workers now
        self.stats = BatchStats()

    @property
    def waiting(self) -> int:
        """Items waiting to join a batch."""
        return sum(len(group) for group in self.pending.values())

    @property
    def idle(self) -> bool:
        """Whether a worker is free and nothing waits: work submitted now would start at once,
        alone."""
        return self.running < self.pool.limits.workers and not self.pending

    def whole(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """``work()`` (a whole request: decoding, library calls and encoding) on a worker as one
        call, counted as running like a batch, so work arriving meanwhile batches as usual. For
        a request that arrives when the server is :attr:`idle`: nothing could join it, and one
        trip to a worker instead of three (decode, explain, encode) saves the thread hand-offs,
        which on a busy machine cost more than the work. ``work`` takes its share of the cores
        itself, for its model call (:meth:`Cores.idle_call`)."""
        # raises (a closed pool) before anything is counted
        future = self.pool.run(work, shared=False)
        self.running += 1
        self.stats.add(1)
        future.add_done_callback(lambda _: self._freed())
        return future

    def _freed(self) -> None:
        self.running -= 1
        if self.pending:  # a worker is free: the oldest waiting group goes now
            key, waiting = next(iter(self.pending.items()))
            self._flush(key, waiting)

    def submit(self, key: Hashable, payload: Any, size: int = 1) -> asyncio.Future:
        """Queue ``payload`` (``size`` images) under ``key``; the future of its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        group = self.pending.setdefault(key, [])
        group.append(_Item(payload, size, future))
        free = self.running < self.pool.limits.workers
        if free or self.window_s == 0 or sum(item.size for item in group) >= self.max_batch:
            self._flush(key, group)
        elif len(group) == 1:
            loop.call_later(self.window_s, self._flush, key, group)
        return future

    def _flush(self, key: Hashable, group: list[_Item]) -> None:
        if self.pending.get(key) is not group:
            return  # flushed already (full, or a worker freed) before its window ended
        del self.pending[key]
        self.stats.add(len(group))
        self.running += 1
        payloads = [item.payload for item in group]
        work = self.pool.run(lambda: self.run_batch(key, payloads))
        work.add_done_callback(lambda done: self._done(done, group))

    def _done(self, done: asyncio.Future, group: list[_Item]) -> None:
        _distribute(done, group)
        self._freed()


def _distribute(done: asyncio.Future, group: list[_Item]) -> None:
    error = done.exception()
    results = [] if error is not None else done.result()
    for position, item in enumerate(group):
        if item.future.done():
            continue
        answer = error if error is not None else results[position]
        if isinstance(answer, BaseException):
            item.future.set_exception(answer)
        else:
            item.future.set_result(answer)
