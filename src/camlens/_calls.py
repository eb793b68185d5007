"""Which explanation call is running on this thread, so hooks act for their own call only.

A forward hook on a shared module fires for every forward through it: another thread's call,
the user's own inference, or a call re-entered from inside a forward (a hook that explains).
Each call runs inside :func:`active_call`, which pushes a token on a thread-local stack; a hook
(or a replayed ``forward``) acts only when its token is on top of the stack of the thread that
runs the forward, and passes everything else through untouched. The check is one thread-local
lookup per hooked module call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CallToken", "active_call", "current", "is_current"]

_local = threading.local()


class CallToken:
    """Identifies one explanation call."""

    __slots__ = ()


def _stack() -> list[CallToken]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


@contextmanager
def active_call() -> Iterator[CallToken]:
    """Mark the body as one call on this thread (calls nest: the innermost is current)."""
    token = CallToken()
    stack = _stack()
    stack.append(token)
    try:
        yield token
    finally:
        stack.remove(token)


def is_current(token: CallToken | None) -> bool:
    """Whether ``token``'s call is the innermost call running on this thread (None: a hook
    that belongs to no call always acts)."""
    if token is None:
        return True
    stack: list[CallToken] | None = getattr(_local, "stack", None)
    return stack is not None and len(stack) > 0 and stack[-1] is token


def current() -> CallToken | None:
    """The innermost call running on this thread, or None outside any call."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None
