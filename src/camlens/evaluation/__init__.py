"""Evaluation of explanation methods on the user's own annotated data: the localization,
faithfulness and ROAD table of ``camlens reproduce localization``, one row per method."""

from __future__ import annotations

__all__: list[str] = []
