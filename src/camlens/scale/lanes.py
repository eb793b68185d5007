"""Lanes: several batches explained at once on a CPU, each on its own share of the cores.

torch runs one operation on several threads (intra-op parallelism; OpenMP in the x86 and ARM
Linux wheels). On a small model, or on few cores, that splits work too fine to pay: measured on
2 cores, digits-gap explains about as fast on one thread as on two. Data parallelism does
better: ``lanes`` threads, each taking whole batches (read, explain, write) with ``cores /
lanes`` torch threads of its own, keep every core on useful work and let one lane's reading and
writing run while the other's model works.

A lane's thread count is set with OpenMP's ``omp_set_num_threads``, which by the OpenMP
specification sets the ``nthreads-var`` of the calling thread only (the parallel regions that
thread starts). ``torch.set_num_threads`` cannot be used: it also stores the count that every
thread torch starts later picks up, so it would change the user's other threads. The count is
checked after it is set (``torch.get_num_threads()`` in the lane); where it does not take (a
torch without OpenMP, or another OpenMP runtime), lanes are not used and the run says why.

Warnings: ``warnings.catch_warnings`` swaps process-wide state and is not safe to enter from two
threads at once, so while lanes run, one recorder installed on the calling thread
(:func:`lane_warnings`) hands each warning to the capture of the thread that raised it
(:func:`captured_warnings`, which falls back to ``catch_warnings`` outside lanes).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from camlens.explanation import ExplanationWarning

__all__ = ["LaneError", "captured_warnings", "choose_lanes", "coarse_switching", "default_lanes",
           "lane_threads", "lane_warnings", "lanes_refused", "lanes_unavailable", "start_lane",
           "thread_count"]

#: Method options whose library code enters ``warnings.catch_warnings`` itself: no lanes.
SERIAL_OPTIONS = ("aug_smooth", "smooth_samples")


class LaneError(RuntimeError):
    """A lane's thread count could not be set."""


@functools.cache
def _omp_set_num_threads() -> Callable[[int], None] | None:
    """The ``omp_set_num_threads`` of the OpenMP runtime torch uses, or None."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    candidates: list[str | None] = [None]  # the symbols already loaded into the process
    folder = Path(torch.__file__).parent / "lib"
    candidates += sorted(str(path) for pattern in ("libgomp*.so*", "libiomp5*.so*", "libomp*.so*")
                         for path in folder.glob(pattern))
    for name in candidates:
        try:
            function = ctypes.CDLL(name).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        function.argtypes, function.restype = [ctypes.c_int], None
        return function
    return None


def lanes_unavailable(device: torch.device | str, options: dict | None = None) -> str | None:
    """Why lanes cannot run here (None when they can): a device other than the CPU (one
    accelerator runs one batch at a time best), options that use ``catch_warnings`` inside the
    library, or a torch whose threads cannot be set per thread."""
    if torch.device(device).type != "cpu":
        return f"lanes are for the CPU; the model runs on {device}"
    used = [name for name in SERIAL_OPTIONS if (options or {}).get(name)]
    if used:
        return f"{', '.join(used)} explain each input several times under their own warnings"
    if _omp_set_num_threads() is None:
        return "this torch does not use OpenMP, whose thread count can be set per thread"
    return None


def default_lanes(device: torch.device | str, options: dict | None = None) -> int:
    """Two lanes on a CPU with at least two cores where lanes work, else one."""
    if lanes_unavailable(device, options) is not None:
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def lane_threads(lanes: int) -> int:
    """torch threads per lane: this process's count shared out, at least one."""
    return max(1, torch.get_num_threads() // max(1, lanes))


def start_lane(threads: int) -> None:
    """Run in a lane's thread before its first batch: its own torch thread count (see the
    module docstring); a :class:`LaneError` when the count does not take."""
    setter = _omp_set_num_threads()
    if setter is None:
        raise LaneError("this torch does not use OpenMP; lanes cannot set their threads")
    torch.get_num_threads()  # torch's per-thread setup first: it would reset the count later
    setter(threads)
    if torch.get_num_threads() != threads:
        raise LaneError(f"a lane asked for {threads} torch thread(s) and got "
                        f"{torch.get_num_threads()}; lanes are not used")


@contextlib.contextmanager
def thread_count(threads: int) -> Iterator[None]:
    """Within the block, the calling thread runs torch on ``threads`` threads (at least one),
    then on as many as before; per thread, as a lane sets its count, so the user's other threads
    keep theirs. Where torch does not use OpenMP the block changes nothing."""
    setter = _omp_set_num_threads()
    before = torch.get_num_threads()
    threads = max(1, threads)
    if setter is None or threads == before:
        yield
        return
    setter(threads)
    try:
        yield
    finally:
        setter(before)


class _Recorder:
    """``warnings.showwarning`` while lanes run: a warning goes to the capture of the thread
    that raised it, or is shown as usual where that thread captures nothing."""

    def __init__(self, show: Callable) -> None:
        self.show = show
        self.local = threading.local()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        caught = getattr(self.local, "caught", None)
        if caught is None:
            self.show(message, category, filename, lineno, file, line)
        else:
            caught.append(warnings.WarningMessage(message, category, filename, lineno, file,
                                                  line))


class _Shared:
    """A process-wide setting held while any of several overlapping blocks runs (lanes may run
    in several threads at once): the first block to enter calls ``install(*args)``, which
    returns what it replaced; the last to leave calls ``restore(replaced)``."""

    def __init__(self, install: Callable[..., Any], restore: Callable[[Any], None]) -> None:
        self._install, self._restore = install, restore
        self._lock = threading.Lock()
        self._users = 0
        self._replaced: Any = None

    @contextlib.contextmanager
    def held(self, *args) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._replaced = self._install(*args)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._restore(self._replaced)
                    self._replaced = None


_recorder: _Recorder | None = None


def _install_recorder() -> tuple[Any, Callable]:
    global _recorder
    replaced = (warnings.filters, warnings.showwarning)
    warnings.filters = list(warnings.filters)
    warnings.simplefilter("always", ExplanationWarning)
    _recorder = _Recorder(warnings.showwarning)
    warnings.showwarning = _recorder
    return replaced


def _restore_warnings(replaced) -> None:
    global _recorder
    warnings.filters, warnings.showwarning = replaced
    warnings._filters_mutated()  # type: ignore[attr-defined]
    _recorder = None


_lane_warnings = _Shared(_install_recorder, _restore_warnings)


def lane_warnings() -> contextlib.AbstractContextManager[None]:
    """Around the lanes: one recorder for every thread (see the module docstring);
    :class:`ExplanationWarning` is recorded every time, as ``captured_warnings`` asks. Runs of
    lanes in several threads at once share the recorder: the first to start installs it, the
    last to end restores the process's warning state as it found it."""
    return _lane_warnings.held()


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings raised on this thread inside the block (``ExplanationWarning`` every
    time): through the lanes' recorder while lanes run, else ``catch_warnings(record=True)``."""
    recorder = _recorder
    if recorder is None:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always", ExplanationWarning)
            yield recorded if recorded is not None else []
        return
    caught: list[warnings.WarningMessage] = []
    recorder.local.caught = caught
    try:
        yield caught
    finally:
        recorder.local.caught = None


@functools.cache
def lanes_refused(threads: int) -> str | None:
    """Why a lane of ``threads`` torch threads cannot be started here (None when it can):
    :func:`start_lane` tried once in a thread of its own."""
    outcome: list[str | None] = []

    def trial() -> None:
        try:
            start_lane(threads)
            outcome.append(None)
        except LaneError as error:
            outcome.append(str(error))

    thread = threading.Thread(target=trial, name="camlens-lane-check")
    thread.start()
    thread.join()
    return outcome[0] if outcome else "the lane check did not finish"


def choose_lanes(requested: int | None, device: torch.device | str,
                 options: dict | None = None) -> tuple[int, str | None]:
    """(lanes to run, why fewer than requested or None): ``requested`` (None: the default)
    checked against :func:`lanes_unavailable` and a trial lane."""
    wanted = default_lanes(device, options) if requested is None else max(1, requested)
    if wanted == 1:
        return 1, None
    why = lanes_unavailable(device, options) or lanes_refused(lane_threads(wanted))
    return (1, why) if why is not None else (wanted, None)


#: The interpreter's switch interval while the command line runs lanes (seconds).
LANE_SWITCH_INTERVAL = 0.05


def _raise_switch_interval(seconds: float) -> float:
    before = sys.getswitchinterval()
    sys.setswitchinterval(max(before, seconds))
    return before


_switching = _Shared(_raise_switch_interval, sys.setswitchinterval)


def coarse_switching(seconds: float = LANE_SWITCH_INTERVAL
                     ) -> contextlib.AbstractContextManager[None]:
    """The interpreter's switch interval (``sys.setswitchinterval``, 5 ms by default) raised to
    ``seconds`` in the block, then restored. A thread that waits that long for the GIL makes
    the holder drop it; between two lanes each doing short Python steps those forced hand-offs
    cost more than they give. Process-wide, so the command line uses it (it owns the process),
    not the library. Blocks overlapping in several threads share it, as :func:`lane_warnings`
    does: the first raises the interval, the last restores it."""
    return _switching.held(seconds)
