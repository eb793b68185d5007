"""All the cores for a request that has the server to itself, where that is measured faster.

On a CPU each worker runs torch on its share of the process's threads
(:attr:`Limits.split_threads`), so that concurrent calls divide the cores instead of fighting
over them. A request that arrives at an idle server then leaves the other shares unused. Whether
it would be faster on every thread depends on the model: a large one (resnet18 on a 224x224
picture) gains from splitting each operation over more cores; a small one (the 64x64 digit)
runs many short operations, and waking the extra OpenMP threads for each costs more than they
give (in this project's benchmark the digit's request took longer on two threads than on one).

So it is measured, not guessed (:class:`ThreadTrials`): for each model, method, layer and input
shape, the first calls of requests that find the server idle alternate between the worker's
share and all the threads (the first call of each count warms up and is not counted); after
:data:`TRIALS` timed calls of each, the count with the lower median is kept for that work.
``GET /api/status`` shows the trials and the choices.

A call on all the threads holds the cores alone (:class:`Cores`): it starts only when no other
model work is running, and model work that comes meanwhile waits for it to end, so calls never
oversubscribe the cores. A trial's call on the share also runs alone, so both counts are timed
on an otherwise idle server.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TRIALS", "Cores", "ThreadTrials"]

#: Timed calls of each thread count before the faster is kept (after one warm-up call of each).
TRIALS = 3
#: Work kinds whose trials are remembered (the oldest is forgotten first).
MAX_KINDS = 256


@dataclass
class _Trial:
    seconds: dict[int, list[float]]
    calls: dict[int, int]
    chosen: int | None = None
    label: dict[str, Any] = field(default_factory=dict)


class ThreadTrials:
    """Which thread count each kind of work runs on when it has the cores alone: ``share`` and
    ``whole`` in turn until :data:`TRIALS` timed calls of each, then the faster."""

    def __init__(self, share: int, whole: int, trials: int = TRIALS,
                 max_kinds: int = MAX_KINDS) -> None:
        if not 1 <= share < whole:
            raise ValueError(f"share must be from 1 to whole - 1, got share={share}, "
                             f"whole={whole}")
        if trials < 1:
            raise ValueError(f"trials must be 1 or more, got {trials}")
        self.share, self.whole, self.trials, self.max_kinds = share, whole, trials, max_kinds
        self._kinds: OrderedDict[Hashable, _Trial] = OrderedDict()
        self._lock = threading.Lock()

    def _trial(self, kind: Hashable, label: dict[str, Any] | None) -> _Trial:
        trial = self._kinds.get(kind)
        if trial is None:
            trial = _Trial({self.share: [], self.whole: []}, {self.share: 0, self.whole: 0},
                           label=dict(label or {}))
            self._kinds[kind] = trial
            while len(self._kinds) > self.max_kinds:
                self._kinds.popitem(last=False)
        self._kinds.move_to_end(kind)
        return trial

    def pick(self, kind: Hashable, label: dict[str, Any] | None = None) -> tuple[int, bool]:
        """(threads, timed): the count for the next call of ``kind`` and whether it is a trial
        whose time :meth:`record` should get."""
        with self._lock:
            trial = self._trial(kind, label)
            if trial.chosen is not None:
                return trial.chosen, False
            return min((self.share, self.whole), key=lambda count: trial.calls[count]), True

    def record(self, kind: Hashable, threads: int, seconds: float) -> None:
        """A trial call's wall time; the choice is made once both counts have their trials."""
        with self._lock:
            trial = self._kinds.get(kind)
            if trial is None or trial.chosen is not None:
                return
            trial.calls[threads] += 1  # calls that ran alone: a contended one is not counted
            if trial.calls[threads] == 1:
                return  # the warm-up call of this count (its threads start), not timed
            trial.seconds[threads].append(seconds)
            timed = [trial.seconds[count] for count in (self.share, self.whole)]
            if all(len(times) >= self.trials for times in timed):
                medians = [statistics.median(times) for times in timed]
                trial.chosen = self.whole if medians[1] < medians[0] else self.share

    def choices(self) -> list[dict[str, Any]]:
        """Every kind's trial: its label, the median ms of each count so far and the choice."""
        with self._lock:
            return [{**trial.label, "chosen_threads": trial.chosen,
                     "median_ms": {str(count): round(1000 * statistics.median(times), 3)
                                   for count, times in trial.seconds.items() if times}}
                    for trial in self._kinds.values()]


class Cores:
    """The process's cores, shared by the workers' model calls (:meth:`shared`) or held by one
    call on all the threads (:meth:`alone`), chosen per kind of work by :class:`ThreadTrials`."""

    def __init__(self, share: int, whole: int, trials: int = TRIALS) -> None:
        self.trials = ThreadTrials(share, whole, trials)
        self._changed = threading.Condition()
        self._sharing = 0
        self._held = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Model work on a worker's share: waits while a call holds the cores alone."""
        with self._changed:
            while self._held:
                self._changed.wait()
            self._sharing += 1
        try:
            yield
        finally:
            with self._changed:
                self._sharing -= 1
                self._changed.notify_all()

    def _hold(self) -> bool:
        with self._changed:
            if self._held or self._sharing:
                return False
            self._held = True
            return True

    def _release(self) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()

    @contextmanager
    def idle_call(self, kind: Hashable, label: dict[str, Any] | None = None
                  ) -> Iterator[int]:
        """The model call of a request that found the server idle, on the thread count its
        trials chose (yielded). A call that would run on all the threads, or is timed, runs
        alone; where other model work started meanwhile it runs on its share, untimed."""
        from camlens.scale.lanes import thread_count

        threads, timed = self.trials.pick(kind, label)
        alone = (timed or threads != self.trials.share) and self._hold()
        if not alone:
            with self.shared():
                yield self.trials.share
            return
        try:
            with thread_count(threads):
                began = time.perf_counter()
                yield threads
                took = time.perf_counter() - began
            if timed:
                self.trials.record(kind, threads, took)
        finally:
            self._release()
