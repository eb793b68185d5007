"""The limits one server enforces on every request."""

from __future__ import annotations

from dataclasses import dataclass

from camlens.io.images import DEFAULT_MAX_ASPECT

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """What a request may ask of the server.

    Attributes:
        max_upload_bytes: the largest request body (all files together); larger is 413.
        max_files: the most files in one request.
        max_pixels: the largest picture (width x height), checked before decoding.
        max_aspect: the longest side over the shortest side of a picture.
        max_audio_s: the longest recording, in seconds.
        queue_size: requests admitted at once (running or waiting); more is 503.
        workers: threads that run model work.
        timeout_s: a request that waits longer for its answer gets 504.
        batch_window_s: how long work waits for others to join its batch while every worker
            is busy (0: no batching).
        max_batch: the most images in one batched library call.
        value_grid: the longest side of the map values sent for hovering.
        split_threads: with every model on the CPU, each worker runs torch on its share of
            the process's threads (:mod:`camlens.scale.lanes`), so concurrent calls divide
            the cores instead of each spreading over all of them.
    """

    max_upload_bytes: int = 16 * 1024 * 1024
    max_files: int = 16
    max_pixels: int = 16_000_000
    max_aspect: float = DEFAULT_MAX_ASPECT
    max_audio_s: float = 30.0
    queue_size: int = 32
    workers: int = 2
    timeout_s: float = 60.0
    batch_window_s: float = 0.02
    max_batch: int = 16
    value_grid: int = 128
    split_threads: bool = True

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_files", "max_pixels", "queue_size", "workers",
                     "max_batch", "value_grid"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("max_aspect", "max_audio_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.batch_window_s < 0:
            raise ValueError(f"batch_window_s must be 0 or more, got {self.batch_window_s!r}")
