"""The picture of an :class:`~camlens.audio.relevance.AudioRelevance`: the waveform shaded by
relevance, the log-mel spectrogram, each method's relevance over time, and the words written
under their spans. A ``matplotlib.figure.Figure`` made without pyplot (needs the ``viz`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from camlens.audio.relevance import METHOD_TITLES, AudioRelevance
from camlens.zoo.audio_features import SAMPLE_RATE, LogMel, waveform_input

__all__ = ["INFORMATIVE_COLOUR", "METHOD_COLOURS", "relevance_figure", "save_relevance_figure"]

METHOD_COLOURS = {"attention": "tab:red", "attention-gradient": "tab:purple",
                  "gradcam": "tab:blue"}
INFORMATIVE_COLOUR = "tab:green"


def _relevance_density(relevance: AudioRelevance, method: str) -> np.ndarray:
    """``(F,)`` relevance per second relative to uniform: 1 where a frame gets its share of the
    duration, 2 where it gets twice that."""
    widths = (relevance.frame_edges[1:] - relevance.frame_edges[:-1]).double()
    per_second = relevance.frame_relevance[method].double() / widths.clamp(min=1e-9)
    return (per_second * relevance.duration_s).where(widths > 0, torch.zeros_like(widths)).numpy()


def relevance_figure(
    relevance: AudioRelevance,
    audio,
    sample_rate: int | None = None,
    methods: Sequence[str] | None = None,
    shade: str | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (12.0, 7.5),
) -> Figure:
    """Waveform (shaded by ``shade``'s relevance, default the first method), log-mel
    spectrogram, and each method's relevance per second (1 = uniform), with the words under
    their spans (informative words in green, when known)."""
    waveform = waveform_input(audio, sample_rate)[0]
    methods = [relevance.check_method(method) for method in (methods or relevance.methods)]
    shade = relevance.check_method(shade or methods[0])
    duration = relevance.duration_s
    edges = relevance.frame_edges.numpy()

    figure = Figure(figsize=figsize, layout="constrained")
    wave_axes, mel_axes, relevance_axes = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, 1.2, 1.4]})

    times = np.arange(len(waveform)) / SAMPLE_RATE
    peak = max(float(waveform.abs().max()), 1e-6)
    density = _relevance_density(relevance, shade)
    # Uniform relevance (1) stays pale; the colour saturates at the recording's peak.
    wave_axes.pcolormesh(edges, [-peak, peak], density[None, :], cmap="Oranges", alpha=0.8,
                         vmin=0, vmax=max(float(density.max()), 3.0), shading="flat")
    step = max(1, len(waveform) // 20000)  # enough points for the eye, not a million
    wave_axes.plot(times[::step], waveform.numpy()[::step], color="black", linewidth=0.5)
    wave_axes.set_ylim(-peak, peak)
    wave_axes.set_ylabel("waveform")
    wave_axes.set_title(f"shading: {METHOD_TITLES.get(shade, shade)}", fontsize=9, loc="right")

    with torch.no_grad():
        logmel = LogMel()(waveform[None])[0].numpy()
    mel_axes.imshow(logmel, origin="lower", aspect="auto", cmap="magma",
                    extent=(0, duration, 0, logmel.shape[0]), interpolation="nearest")
    mel_axes.set_ylabel("mel band")

    for method in methods:
        values = _relevance_density(relevance, method)
        colour = METHOD_COLOURS.get(method)
        relevance_axes.stairs(values, edges, color=colour, linewidth=1.2,
                              label=METHOD_TITLES.get(method, method))
        relevance_axes.stairs(values, edges, color=colour, alpha=0.12, fill=True)
    relevance_axes.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    relevance_axes.set_ylabel("relevance / uniform")
    relevance_axes.set_xlim(0, duration)
    relevance_axes.legend(loc="upper right", fontsize=8, ncol=len(methods))
    relevance_axes.set_xlabel("time (s)", labelpad=22 if relevance.words else 4)

    label_transform = blended_transform_factory(relevance_axes.transData,
                                                relevance_axes.transAxes)
    for row, span in enumerate(relevance.words):
        informative = span.informative is True
        for axes in (wave_axes, mel_axes, relevance_axes):
            axes.axvspan(span.start_s, span.end_s, color=INFORMATIVE_COLOUR if informative
                         else "grey", alpha=0.10 if axes is relevance_axes else 0.0,
                         linewidth=0)
            axes.axvline(span.start_s, color="white" if axes is mel_axes else "grey",
                         linewidth=0.5, linestyle="--")
        relevance_axes.text((span.start_s + span.end_s) / 2, -0.08 - 0.07 * (row % 2),
                            span.word, transform=label_transform, ha="center", va="top",
                            fontsize=8, color=INFORMATIVE_COLOUR if informative else "black",
                            fontweight="bold" if informative else "normal", clip_on=False)
    figure.suptitle(title or relevance.summary())
    return figure


def save_relevance_figure(figure: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``figure`` as a PNG (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path
