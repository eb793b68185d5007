"""Decoding in worker processes, for a model faster than one process can feed it.

On a GPU a batch of small inputs is explained in a millisecond or two, and what limits a run is
the Python work of reading, decoding and preprocessing each file. Threads cannot share that
out: PIL's and numpy's small calls hold the interpreter's lock most of the time, so decoding
threads mostly take turns (measured in ``benchmarks/PIPELINE.md``: on an H200 with 16 cores,
threads fed digits-gap at 0.30x the rate of a plain single-threaded loop). Worker processes
each have their own interpreter.

:func:`decoded_batches` runs the pipeline's ``decode`` in a torch ``DataLoader`` with
``processes`` workers: each worker decodes a whole batch (in order: batch ``k`` holds items
``k * batch_size ...``) and sends it back as one stacked tensor per input shape, so a batch
crosses between processes in a few shared-memory blocks rather than one per input. Workers
are forked (they inherit the model's preprocessing, which need not be picklable), use one
torch thread each, and never touch the model or a GPU. A file that fails to decode is a
:class:`~camlens.scale.work.Decoded` with its error, as in the threads. Forking copies only
the calling thread: from a program whose other threads may hold a lock while the run starts
(a logging handler's, say), pass ``processes=0``, as for a torch ``DataLoader``.

While the workers run, the thread driving the model gives up as many of its torch threads as
they take cores (:func:`cores_left`): an operation split over every core waits for its slowest
part, and with the cores busy decoding, that part waits for a turn (seen on an H200:
``benchmarks/PIPELINE_CUDA.md``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from camlens.scale.sources import InputItem
from camlens.scale.work import Decoded

__all__ = ["cores_left", "decoded_batches", "default_processes", "processes_unavailable"]


def processes_unavailable() -> str | None:
    """Why decoding processes cannot run here (None when they can): they are forked."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return "decoding processes are forked, and this platform cannot fork"
    return None


def default_processes(device: torch.device | str) -> int:
    """Decoding processes by default: on an accelerator, one per core left beside the
    process driving it, at most 8; none on a CPU (the model needs the cores; lanes share them
    out, :mod:`camlens.scale.lanes`) or where processes cannot run."""
    if torch.device(device).type == "cpu" or processes_unavailable() is not None:
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass
class _Packed:
    """A decoded batch as it crosses from a worker: the items, each one's error or
    (group, row), and one stacked tensor per input shape."""

    items: list[InputItem]
    places: list[tuple[int, int] | str]
    stacks: list[torch.Tensor]


class _Batches(torch.utils.data.Dataset):
    """Batch ``k`` of ``items``, decoded and packed (in a worker process)."""

    def __init__(self, items: Sequence[InputItem], decode: Callable[[InputItem], Decoded],
                 batch_size: int) -> None:
        self.items, self.decode, self.batch_size = items, decode, batch_size

    def __len__(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def __getitem__(self, number: int) -> _Packed:
        first = number * self.batch_size
        batch = self.items[first:first + self.batch_size]
        return _pack([self.decode(item) for item in batch])


def _pack(decoded: list[Decoded]) -> _Packed:
    shapes: dict[tuple, list[torch.Tensor]] = {}
    places: list[tuple[int, int] | str] = []
    for one in decoded:
        if one.tensor is None:
            places.append(one.error or "not decoded")
            continue
        group = shapes.setdefault(tuple(one.tensor.shape), [])
        places.append((list(shapes).index(tuple(one.tensor.shape)), len(group)))
        group.append(one.tensor)
    return _Packed([one.item for one in decoded], places,
                   [torch.cat(group) for group in shapes.values()])


def _unpack(packed: _Packed) -> list[Decoded]:
    return [Decoded(item, error=place) if isinstance(place, str) else
            Decoded(item, packed.stacks[place[0]][place[1]:place[1] + 1])
            for item, place in zip(packed.items, packed.places, strict=True)]


def _as_is(packed: Any) -> Any:
    return packed


def decoded_batches(items: Sequence[InputItem], decode: Callable[[InputItem], Decoded],
                    batch_size: int, processes: int
                    ) -> Generator[list[Decoded], None, None]:
    """``items`` decoded by ``processes`` forked workers, a batch of ``batch_size`` at a time,
    in order; at most two batches per worker are decoded ahead."""
    loader = torch.utils.data.DataLoader(
        _Batches(items, decode, batch_size), batch_size=None, shuffle=False,
        num_workers=processes, collate_fn=_as_is, prefetch_factor=2,
        multiprocessing_context="fork")
    return _unpacked(iter(loader))  # the workers are forked now


def _unpacked(packed_batches: Iterator[_Packed]) -> Generator[list[Decoded], None, None]:
    for packed in packed_batches:
        yield _unpack(packed)


@contextlib.contextmanager
def cores_left(busy: int) -> Iterator[None]:
    """Within the block, the calling thread runs torch on its threads less ``busy`` (at least
    one), then on as many as before. Per thread (OpenMP's ``omp_set_num_threads``, as lanes
    set theirs: :mod:`camlens.scale.lanes`): the user's other threads keep their count. Where
    torch does not use OpenMP the block changes nothing."""
    from camlens.scale.lanes import thread_count

    with thread_count(torch.get_num_threads() - max(0, busy)):
        yield
