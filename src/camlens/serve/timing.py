"""Where a request's time went, in the standard ``Server-Timing`` header (W3C Server Timing).

Every answer carries ``server-timing: total;dur=12.3`` (milliseconds from the request's arrival
to the start of its answer, as this process measured it); routes that do the work in phases add
one entry per phase, e.g. ``upload;dur=0.9, read;dur=0.2, prepare;dur=0.9, explain;dur=4.8,
encode;dur=2.1`` (``upload``: waiting for the request's body to arrive).
Browsers show them in their network panel, and ``benchmarks/bench_serve.py`` reads them to
separate the server's cost from the client's and the network's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["ServerTiming", "current_phases", "parse_server_timing", "phase"]

#: The phases of the request being answered (name -> seconds); None outside a request.
_PHASES: ContextVar[dict[str, float] | None] = ContextVar("camlens_serve_phases", default=None)


def current_phases() -> dict[str, float] | None:
    """The phase record of the request being answered, to hand to a worker thread (which does
    not see the request's context) as ``phase(name, into=...)``; None outside a request."""
    return _PHASES.get()


@contextmanager
def phase(name: str, into: dict[str, float] | None = None) -> Iterator[None]:
    """Adds the time spent in the block to the current request's phase ``name`` (a no-op outside
    a request), or to ``into`` (a record from :func:`current_phases`, on a worker thread). The
    block may await: the time is wall time, waiting included."""
    began = time.perf_counter()
    try:
        yield
    finally:
        phases = _PHASES.get() if into is None else into
        if phases is not None:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - began


def _header(phases: dict[str, float], total: float) -> bytes:
    entries = [f"{name};dur={1000 * seconds:.2f}" for name, seconds in phases.items()]
    return ", ".join([*entries, f"total;dur={1000 * total:.2f}"]).encode("ascii")


def parse_server_timing(header: str) -> dict[str, float]:
    """``{"read": 0.6, ..., "total": 12.3}`` (milliseconds) from a ``Server-Timing`` header."""
    timings = {}
    for entry in header.split(","):
        name, _, rest = entry.strip().partition(";")
        for parameter in rest.split(";"):
            key, _, value = parameter.strip().partition("=")
            if key == "dur":
                timings[name] = float(value)
    return timings


class ServerTiming:
    """ASGI middleware: starts the phase record of each HTTP request and writes the
    ``Server-Timing`` header when the answer starts."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        phases: dict[str, float] = {}
        token = _PHASES.set(phases)

        async def with_timing(message) -> None:
            if message["type"] == "http.response.start":
                header = _header(phases, time.perf_counter() - began)
                message["headers"] = [*message.get("headers", []), (b"server-timing", header)]
            await send(message)

        try:
            await self.app(scope, receive, with_timing)
        finally:
            _PHASES.reset(token)
