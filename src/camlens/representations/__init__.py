"""What the layers learned: activation maximization, input reconstruction from a hidden layer,
representation maps with linear probes, and the transferability of representations (one module
per technique)."""

from __future__ import annotations

__all__: list[str] = []
