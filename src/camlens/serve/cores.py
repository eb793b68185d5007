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
:data:`TRIALS` timed calls of each, the count with the lower median is chosen for that work.

A few timed calls decide on a machine that may be busy at that moment, and its load may change
later, so the choice is checked, not kept for good: every :data:`PROBE_EVERY`-th idle call of the
kind runs on the other count, alone, and the calls on the chosen count that had the cores to
themselves are timed too. Each probe is compared with the median of the last :data:`RECENT`
calls on the chosen count before it, its neighbours in time, so a busy spell of the machine
falls on both sides alike. When each of the last :data:`PROBES` probes is more than
:data:`MARGIN` faster than its neighbours, the other count is chosen instead (each, not their
median: one lucky probe does not switch, and two counts that are about as fast do not take
turns). ``GET /api/status`` shows the trials, the choices and the switches.

A call on all the threads holds the cores alone (:class:`Cores`): it starts only when no other
model work is running, and model work that comes meanwhile waits for it to end, so calls never
oversubscribe the cores. A trial's call on the share also runs alone, so both counts are timed
on an otherwise idle server.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MARGIN", "PROBE_EVERY", "PROBES", "RECENT", "TRIALS", "Cores", "ThreadTrials"]

#: Timed calls of each thread count before the faster is chosen (after one warm-up call of each).
TRIALS = 3
#: After the choice, every this many idle calls of a kind one runs on the other count (a probe).
PROBE_EVERY = 16
#: The probes of the other count that must each be faster for it to be chosen (the latest).
PROBES = 3
#: The timed calls on the chosen count a probe is compared with (the latest before it).
RECENT = 8
#: How much faster (relative) each of the other count's probes must be for it to be chosen.
MARGIN = 0.1
#: Work kinds whose trials are remembered (the oldest is forgotten first).
MAX_KINDS = 256


@dataclass
class _Trial:
    seconds: dict[int, list[float]]
    calls: dict[int, int]
    chosen: int | None = None
    label: dict[str, Any] = field(default_factory=dict)
    #: After the choice: idle calls picked, the latest times on the chosen count and of the
    #: probes of the other, each probe's time over its neighbours' median, and how often the
    #: choice changed.
    picks: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    probes: deque[float] = field(default_factory=lambda: deque(maxlen=PROBES))
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=PROBES))
    switches: int = 0


class ThreadTrials:
    """Which thread count each kind of work runs on when it has the cores alone: ``share`` and
    ``whole`` in turn until :data:`TRIALS` timed calls of each, then the faster, checked by a
    probe of the other count every :data:`PROBE_EVERY` calls (see the module)."""

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
        or a probe, which must run alone and whose time :meth:`record` should get. A call on the
        chosen count (``timed`` False) may be recorded too, where it had the cores to itself."""
        with self._lock:
            trial = self._trial(kind, label)
            if trial.chosen is not None:
                trial.picks += 1
                if trial.picks % PROBE_EVERY == 0:
                    return self._other(trial.chosen), True
                return trial.chosen, False
            return min((self.share, self.whole), key=lambda count: trial.calls[count]), True

    def _other(self, threads: int) -> int:
        return self.whole if threads == self.share else self.share

    def record(self, kind: Hashable, threads: int, seconds: float) -> None:
        """The wall time of a call that had the cores to itself: a trial's (the choice is made
        once both counts have their trials), or after the choice a call on the chosen count or
        a probe of the other (the other is chosen when each of its latest probes is faster than
        its neighbours by the margin)."""
        with self._lock:
            trial = self._kinds.get(kind)
            if trial is None:
                return
            if trial.chosen is not None:
                self._check(trial, threads, seconds)
                return
            trial.calls[threads] += 1  # calls that ran alone: a contended one is not counted
            if trial.calls[threads] == 1:
                return  # the warm-up call of this count (its threads start), not timed
            trial.seconds[threads].append(seconds)
            timed = [trial.seconds[count] for count in (self.share, self.whole)]
            if all(len(times) >= self.trials for times in timed):
                medians = [statistics.median(times) for times in timed]
                trial.chosen = self.whole if medians[1] < medians[0] else self.share

    def _check(self, trial: _Trial, threads: int, seconds: float) -> None:
        """After the choice: ``seconds`` of a call on the chosen count or of a probe. A probe
        counts against the median of the chosen count's latest calls (its neighbours); the
        other count is chosen when each of the latest :data:`PROBES` probes beats its
        neighbours by the margin (the chosen count then starts from those probes' times)."""
        assert trial.chosen is not None
        if threads == trial.chosen:
            trial.recent.append(seconds)
            return
        if not trial.recent:
            return  # nothing to compare it with yet
        trial.probes.append(seconds)
        trial.ratios.append(seconds / statistics.median(trial.recent))
        if len(trial.ratios) == PROBES and max(trial.ratios) * (1 + MARGIN) < 1.0:
            trial.chosen = self._other(trial.chosen)
            trial.recent = deque(trial.probes, maxlen=RECENT)
            trial.probes.clear()
            trial.ratios.clear()
            trial.switches += 1

    def _since_chosen(self, trial: _Trial) -> dict[str, dict[str, Any]]:
        """The latest timed calls on the chosen count and probes of the other: count, median."""
        if trial.chosen is None:
            return {"since_chosen_ms": {}, "timed_since_chosen": {}}
        latest = {trial.chosen: trial.recent, self._other(trial.chosen): trial.probes}
        return {"since_chosen_ms": {str(count): round(1000 * statistics.median(times), 3)
                                    for count, times in latest.items() if times},
                "timed_since_chosen": {str(count): len(times)
                                       for count, times in latest.items()}}

    def choices(self) -> list[dict[str, Any]]:
        """Every kind's trial: its label, the median ms of each count so far and the choice."""
        with self._lock:
            return [{**trial.label, "chosen_threads": trial.chosen,
                     "median_ms": {str(count): round(1000 * statistics.median(times), 3)
                                   for count, times in trial.seconds.items() if times},
                     **self._since_chosen(trial), "switches": trial.switches}
                    for trial in self._kinds.values()]


class Cores:
    """The process's cores, shared by the workers' model calls (:meth:`shared`) or held by one
    call on all the threads (:meth:`alone`), chosen per kind of work by :class:`ThreadTrials`."""

    def __init__(self, share: int, whole: int, trials: int = TRIALS) -> None:
        self.trials = ThreadTrials(share, whole, trials)
        self._changed = threading.Condition()
        self._sharing = 0
        self._entered = 0  # model work that has started on a share, ever
        self._held = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Model work on a worker's share: waits while a call holds the cores alone."""
        with self._sharing_watched():
            yield

    @contextmanager
    def _sharing_watched(self) -> Iterator[list[bool]]:
        """:meth:`shared`, yielding a list whose one flag says, once the block has ended,
        whether no other model work ran during it (the block had the cores to itself)."""
        with self._changed:
            while self._held:
                self._changed.wait()
            self._sharing += 1
            self._entered += 1
            alone, entered = self._sharing == 1, self._entered
        undisturbed = [False]
        try:
            yield undisturbed
        finally:
            with self._changed:
                undisturbed[0] = alone and self._entered == entered
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
        trials chose (yielded). A call that would run on all the threads, a trial and a probe
        run alone (timed); where other model work started meanwhile they run on the share,
        untimed. A call on the chosen share is timed where no other model work ran with it."""
        from camlens.scale.lanes import thread_count

        threads, timed = self.trials.pick(kind, label)
        alone = (timed or threads != self.trials.share) and self._hold()
        if not alone:
            with self._sharing_watched() as undisturbed:
                began = time.perf_counter()
                yield self.trials.share
                took = time.perf_counter() - began
            if not timed and threads == self.trials.share and undisturbed[0]:
                self.trials.record(kind, threads, took)
            return
        try:
            with thread_count(threads):
                began = time.perf_counter()
                yield threads
                took = time.perf_counter() - began
            self.trials.record(kind, threads, took)
        finally:
            self._release()
