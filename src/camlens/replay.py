"""Run the part of a network before a layer once, and replay its results in later forwards.

Ablation-CAM runs the network many times on the same input with only the target layer's output
changed. What ran before that layer gives the same results each time, so the first forward records
the outputs of the module calls that finished before the layer started (the largest such calls:
``layer1``, not its convolutions), and later forwards get those outputs back without computing them.
The recorded modules' ``forward`` is replaced by an instance attribute, a dispatcher shared by
the calls that replay through that module at the same time (threads of a server): it hands back
the recorded output only to the call that recorded it (:mod:`camlens._calls`) and runs the
module's own ``forward`` for everything else. The last call out puts the module back as found.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from camlens._calls import CallToken, current, is_current

__all__ = ["PrefixRecord", "record_prefix", "replay_prefix"]


@dataclass
class PrefixRecord:
    """The outputs of the outermost module calls that completed before the target layer ran."""

    outputs: dict[nn.Module, dict[int, object]] = field(default_factory=lambda: defaultdict(dict))
    usable: bool = False


@contextmanager
def record_prefix(model: nn.Module, target: nn.Module) -> Iterator[PrefixRecord]:
    """Record, during the body's forward pass, what :func:`replay_prefix` can hand back later."""
    record = PrefixRecord()
    stack: list[tuple[nn.Module, int]] = []
    calls: dict[nn.Module, int] = defaultdict(int)
    finished: list[tuple[nn.Module, int, object, tuple[nn.Module, int] | None]] = []
    open_at_target: set[tuple[nn.Module, int]] = set()
    target_calls = 0
    token = current()

    def before(module: nn.Module, args: tuple) -> None:
        nonlocal target_calls
        if not is_current(token):  # another thread's (or an inner call's) forward
            return
        call = (module, calls[module])
        calls[module] += 1
        if module is target:
            target_calls += 1
            if target_calls == 1:
                open_at_target.update(stack)
        stack.append(call)

    def after(module: nn.Module, args: tuple, output: object) -> None:
        if not is_current(token):
            return
        module_call = stack.pop()
        if target_calls == 0:
            caller = stack[-1] if stack else None
            finished.append((module, module_call[1], output, caller))

    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
        yield record
    finally:
        for handle in handles:
            handle.remove()
    for module, ordinal, output, caller in finished:
        if caller in open_at_target:
            record.outputs[module][ordinal] = output
    record.usable = target_calls == 1 and bool(record.outputs)


class _Dispatcher:
    """The ``forward`` of a module while calls replay through it: each call's recorded outputs
    for that call, the module's own ``forward`` for everyone else."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.own_forward = module.__dict__.get("forward")  # an instance attribute, if any
        self.original: Callable[..., Any] = module.forward
        self.plans: dict[CallToken | None, tuple[PrefixRecord, dict[nn.Module, int]]] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        plan = self.plans.get(current())
        if plan is not None:
            record, counters = plan
            ordinal = counters[self.module]
            counters[self.module] += 1
            if ordinal in record.outputs[self.module]:
                return record.outputs[self.module][ordinal]
        return self.original(*args, **kwargs)

    def restore(self) -> None:
        if self.own_forward is None:
            del self.module.forward
        else:
            self.module.forward = self.own_forward


_DISPATCHERS: dict[nn.Module, _Dispatcher] = {}
_DISPATCH_LOCK = threading.Lock()


@contextmanager
def replay_prefix(record: PrefixRecord) -> Iterator[None]:
    """For the body, the recorded module calls return their recorded outputs without running,
    in this call only."""
    token = current()
    counters: dict[nn.Module, int] = defaultdict(int)
    modules = list(record.outputs)
    with _DISPATCH_LOCK:
        for module in modules:
            dispatcher = _DISPATCHERS.get(module)
            if dispatcher is None:
                dispatcher = _DISPATCHERS[module] = _Dispatcher(module)
                module.forward = dispatcher
            dispatcher.plans[token] = (record, counters)
    try:
        yield
    finally:
        with _DISPATCH_LOCK:
            for module in modules:
                dispatcher = _DISPATCHERS[module]
                del dispatcher.plans[token]
                if not dispatcher.plans:
                    del _DISPATCHERS[module]
                    dispatcher.restore()
