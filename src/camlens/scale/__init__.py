"""Data sets, not images: the streaming pipeline and the Ray engine.

- :func:`explain_dataset`: explain every image of a folder, list or Parquet table into Parquet
  or npz shards (or overlay PNGs) with an index written as it goes; ``engine="local"`` (threads
  on this machine) or ``"ray"`` (an actor pool on a Ray cluster), resumable;
- :func:`audit`: a bias audit (:mod:`camlens.audit`) with its per-batch work on an actor pool
  (``engine="ray"``), reduced into the same result and report; :func:`evaluate_rows`: the
  per-image rows of ``camlens evaluate`` on either engine;
- :mod:`~camlens.scale.sources` (inputs), :mod:`~camlens.scale.work` (the per-batch work every
  engine maps: :func:`explain_batch`), :mod:`~camlens.scale.pipeline` (the local engine),
  :mod:`~camlens.scale.ray_engine`, :mod:`~camlens.scale.writers`, :mod:`~camlens.scale.index`.

Names load on first use (Ray and pyarrow only when asked for).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RunCounts", "WorkSpec", "audit", "evaluate_rows", "explain_batch", "explain_dataset",
           "read_inputs"]

_HOMES = {"RunCounts": "runs", "explain_dataset": "runs", "WorkSpec": "work",
          "explain_batch": "work", "read_inputs": "sources", "audit": "audit_engine",
          "evaluate_rows": "evaluation_engine"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"camlens.scale.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'camlens.scale' has no attribute {name!r}")
