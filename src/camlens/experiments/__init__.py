"""The project's own experiments: training recipes for the shipped weights (``training``), the
reproductions behind docs/results.md and docs/audio.md (``localization``, ``captioning``,
``audio``: ``camlens reproduce NAME``) and the demo page (``demo``).

Not part of the library API: these modules use every layer below them and change with the
documents they produce.
"""
