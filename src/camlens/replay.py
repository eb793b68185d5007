"""Run the part of a network before a layer once, and replay its results in later forwards.

Ablation-CAM runs the network many times on the same input with only the target layer's output
changed. What ran before that layer gives the same results each time, so the first forward records
the outputs of the module calls that finished before the layer started (the largest such calls:
``layer1``, not its convolutions), and later forwards get those outputs back without computing them.
The recorded modules' ``forward`` is replaced by an instance attribute for the replay only and
restored in ``finally``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn


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

    def before(module: nn.Module, args: tuple) -> None:
        nonlocal target_calls
        call = (module, calls[module])
        calls[module] += 1
        if module is target:
            target_calls += 1
            if target_calls == 1:
                open_at_target.update(stack)
        stack.append(call)

    def after(module: nn.Module, args: tuple, output: object) -> None:
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


@contextmanager
def replay_prefix(record: PrefixRecord) -> Iterator[None]:
    """For the body, the recorded module calls return their recorded outputs without running."""
    counters: dict[nn.Module, int] = defaultdict(int)
    patched: list[tuple[nn.Module, Callable[..., Any] | None]] = []

    def replaying(module: nn.Module, original):
        def forward(*args, **kwargs):
            ordinal = counters[module]
            counters[module] += 1
            if ordinal in record.outputs[module]:
                return record.outputs[module][ordinal]
            return original(*args, **kwargs)

        return forward

    try:
        for module in record.outputs:
            patched.append((module, module.__dict__.get("forward")))
            module.forward = replaying(module, module.forward)
        yield
    finally:
        for module, own_forward in patched:
            if own_forward is None:
                del module.forward
            else:
                module.forward = own_forward
