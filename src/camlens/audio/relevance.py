"""Which stretches of a recording an audio classifier's decision rests on.

:func:`audio_relevance` explains one recording with one model and any engine methods at one
layer, and returns an :class:`AudioRelevance`: the segments (start and end in seconds), each
method's relevance per segment and per 10 ms frame, and, where word time stamps are given, per
word. Relevance of several models goes in one table with :meth:`AudioRelevance.merge`.

The maps come from the engine (:func:`camlens.explain`), 1-D over the layer's positions:

- ``attention``: the attention weights ``alpha_t`` of an attention-pooling layer (Padi, Mohan and
  Ganapathy, TASLP 2020), ``alpha_t = softmax_t(c^T tanh(W h_t + b))``;
- ``attention-gradient``: ``ReLU(alpha_t * d s / d alpha_t)``, attention times gradient: a
  segment counts when it is attended to *and* its state pushes the score up;
- ``gradcam`` (or any CAM method): 1-D Grad-CAM (Selvaraju et al. 2017) along time.

Where the positions are in time: a model that has ``frame_grid(samples) -> FrameGrid`` says it
(the accent models: overlapping 0.3 s segments every 0.1 s); a map with one value per segment of
that grid is read per segment, any other map is spread evenly over the recording's 10 ms frames
by linear interpolation and averaged over each segment's frames.

The explained score ``s`` of a class ``c`` is its log-odds, ``y_c - logsumexp_{k != c} y_k``
(for two classes the logit margin), so relevance is evidence for that class *against* the others;
``target`` is read as everywhere in camlens (None: the predicted class, an int, ``TopK(1)``; a
callable scores the logits itself).

Each method's relevance is a distribution: it sums to 1 over the frames and over the segments.
Segment relevance is spread evenly over the segment's frames and overlapping segments add up;
a span's relevance is the sum over the frames it covers (partly covered frames in proportion).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens.api import explain
from camlens.explanation import upsample
from camlens.io.audio import read_waveform
from camlens.model_state import preserved_model_state
from camlens.targets import Target, TopK, adapt_output, class_logits, one_class_per_input
from camlens.zoo.audio_features import FrameGrid, LogMelConfig

__all__ = ["METHODS", "AudioRelevance", "WordSpan", "audio_relevance", "log_odds", "word_spans"]

METHODS = ("attention", "attention-gradient", "gradcam")
METHOD_TITLES = {"attention": "attention", "attention-gradient": "attn x grad",
                 "gradcam": "Grad-CAM"}


@dataclass(frozen=True)
class WordSpan:
    """A word and where it is spoken; ``informative`` when known (the accent data sets)."""

    word: str
    start_s: float
    end_s: float
    informative: bool | None = None


def word_spans(words: Iterable[Any] | None) -> list[WordSpan]:
    """Words from :class:`WordSpan`, ``camlens.data.speech.WordStamp``, dicts with ``word``,
    ``start_s`` and ``end_s`` (``informative`` optional) or ``(word, start_s, end_s)`` tuples,
    sorted by start."""
    spans = []
    for item in words or ():
        if isinstance(item, WordSpan):
            spans.append(item)
        elif isinstance(item, dict):
            spans.append(WordSpan(str(item["word"]), float(item["start_s"]), float(item["end_s"]),
                                  item.get("informative")))
        elif hasattr(item, "word") and hasattr(item, "start_s"):
            spans.append(WordSpan(item.word, float(item.start_s), float(item.end_s),
                                  getattr(item, "informative", None)))
        else:
            word, start_s, end_s = item
            spans.append(WordSpan(str(word), float(start_s), float(end_s)))
    for span in spans:
        if not span.end_s > span.start_s:
            raise ValueError(f"word {span.word!r} ends ({span.end_s} s) before it starts "
                             f"({span.start_s} s)")
    return sorted(spans, key=lambda span: span.start_s)


def overlap_fractions(edges: torch.Tensor, start_s: float, end_s: float) -> torch.Tensor:
    """``(F,)`` the part of each frame cell ``[edges[k], edges[k + 1])`` inside
    ``[start_s, end_s)``."""
    lows, highs = edges[:-1], edges[1:]
    overlap = (torch.minimum(highs, torch.tensor(end_s, dtype=edges.dtype))
               - torch.maximum(lows, torch.tensor(start_s, dtype=edges.dtype))).clamp(min=0)
    widths = highs - lows
    return torch.where(widths > 0, overlap / widths.clamp(min=1e-12), torch.zeros_like(widths))


def as_distribution(values: torch.Tensor) -> torch.Tensor:
    """``values`` (non-negative) scaled to sum to 1; all zero stays all zero."""
    values = values.clamp(min=0).double()
    total = values.sum()
    return values / total if total > 0 else values


def segments_to_frames(segment_relevance: torch.Tensor, ranges: torch.Tensor, frames: int
                       ) -> torch.Tensor:
    """``(F,)`` frame relevance: each segment's relevance spread evenly over its frames
    ``ranges[s] = [first, one past last)``; overlapping segments add up, so the total is kept."""
    timeline = torch.zeros(frames, dtype=torch.float64)
    for value, (first, last) in zip(segment_relevance.tolist(), ranges.tolist(), strict=True):
        timeline[first:last] += value / max(last - first, 1)
    return timeline


def frames_to_segments(frame_relevance: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
    """``(S,)`` the mean frame relevance over each segment, as a distribution."""
    means = torch.stack([frame_relevance[first:last].mean() for first, last in ranges.tolist()])
    return as_distribution(means)


def log_odds(target: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The score ``y_c - logsumexp_{k != c} y_k`` of class ``target`` (the log-odds of its
    softmax probability), as a target callable for :func:`camlens.explain`."""

    def score(logits: torch.Tensor) -> torch.Tensor:
        others = torch.cat([logits[:, :target], logits[:, target + 1 :]], dim=1)
        return logits[:, target] - others.logsumexp(dim=1)

    return score


@dataclass(eq=False)
class AudioRelevance:
    """Relevance over time of one recording.

    - ``segments``: ``(S, 2)`` start and end of each segment in seconds (overlapping; the first
      starts at 0 and the last ends at ``duration_s``).
    - ``segment_relevance[method]``: ``(S,)``, sums to 1.
    - ``frame_relevance[method]``: ``(F,)`` per 10 ms frame cell (``frame_edges``, ``(F + 1,)``
      seconds), sums to 1.
    - ``target``: the explained class; ``probabilities``: ``(C,)`` of the attention model (or
      of the only model); ``class_names``.
    - ``words``: the word spans given, if any; ``notes``: what was decided along the way.
    """

    duration_s: float
    frame_edges: torch.Tensor
    segments: torch.Tensor
    segment_relevance: dict[str, torch.Tensor]
    frame_relevance: dict[str, torch.Tensor]
    target: int
    probabilities: torch.Tensor
    class_names: tuple[str, ...] = ()
    words: list[WordSpan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(self.frame_relevance)

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    def class_name(self, index: int | None = None) -> str:
        index = self.target if index is None else index
        return self.class_names[index] if index < len(self.class_names) else str(index)

    def check_method(self, method: str) -> str:
        if method not in self.frame_relevance:
            raise ValueError(f"no relevance from method {method!r}; this result has "
                             f"{', '.join(self.methods)}")
        return method

    def span_relevance(self, start_s: float, end_s: float, method: str | None = None) -> float:
        """The share of ``method``'s relevance (default: the first) in ``[start_s, end_s)``."""
        method = self.check_method(method or self.methods[0])
        fractions = overlap_fractions(self.frame_edges, start_s, end_s)
        return float((self.frame_relevance[method].double() * fractions).sum())

    def span_mask_relevance(self, spans: Iterable[tuple[float, float]], method: str) -> float:
        """The share of relevance in the union of ``spans`` (overlaps counted once)."""
        covered = torch.zeros(len(self.frame_edges) - 1, dtype=torch.float64)
        for start_s, end_s in spans:
            covered = torch.maximum(covered, overlap_fractions(self.frame_edges, start_s, end_s))
        return float((self.frame_relevance[self.check_method(method)].double() * covered).sum())

    def word_relevance(self) -> list[dict[str, Any]]:
        """One row per word: ``word``, ``start_s``, ``end_s``, ``informative``, ``time_share``
        (its share of the duration) and each method's share of relevance."""
        rows = []
        for span in self.words:
            row: dict[str, Any] = {"word": span.word, "start_s": span.start_s,
                                   "end_s": span.end_s, "informative": span.informative,
                                   "time_share": time_share(span.start_s, span.end_s,
                                                            self.duration_s)}
            for method in self.methods:
                row[method] = self.span_relevance(span.start_s, span.end_s, method)
            rows.append(row)
        return rows

    def spans(self, kind: str = "auto", step_s: float = 0.5) -> list[tuple[float, float, str]]:
        """Time spans ``(start, end, words)`` for the table. ``"words"``: each word and each gap
        between words (needs words); ``"segments"``: back-to-back spans of ``step_s`` seconds
        with the words they overlap; ``"auto"``: words when known, else segments."""
        if kind not in ("auto", "words", "segments"):
            raise ValueError(f"spans must be 'auto', 'words' or 'segments', got {kind!r}")
        if kind == "words" and not self.words:
            raise ValueError("spans='words' needs word time stamps; pass words=... or use "
                             "spans='segments'")
        if kind == "words" or (kind == "auto" and self.words):
            return self.word_and_gap_spans()
        if not step_s > 0:
            raise ValueError(f"step_s must be positive, got {step_s}")
        spans, start = [], 0.0
        while start < self.duration_s - 1e-9:
            end = min(start + step_s, self.duration_s)
            spans.append((start, end, " ".join(self.words_in(start, end))))
            start = end
        return spans

    def word_and_gap_spans(self) -> list[tuple[float, float, str]]:
        spans, cursor = [], 0.0
        for span in self.words:
            start, end = max(span.start_s, cursor), min(span.end_s, self.duration_s)
            if start - cursor > 1e-6:
                spans.append((cursor, start, ""))
            if end > start:
                spans.append((start, end, span.word))
            cursor = max(cursor, end)
        if self.duration_s - cursor > 1e-6:
            spans.append((cursor, self.duration_s, ""))
        return spans

    def words_in(self, start_s: float, end_s: float, min_overlap_s: float = 0.05) -> list[str]:
        """Words that overlap ``[start_s, end_s)`` by ``min_overlap_s`` or by half their length."""
        chosen = []
        for span in self.words:
            overlap = min(span.end_s, end_s) - max(span.start_s, start_s) + 1e-9
            if overlap >= min(min_overlap_s, 0.5 * (span.end_s - span.start_s)) > 0:
                chosen.append(span.word)
        return chosen

    def table(self, spans: str = "auto", step_s: float = 0.5,
              methods: Sequence[str] | None = None) -> str:
        """The time-span table as text: one row per span with its share of the duration, each
        method's share of relevance (percent) and the words spoken there."""
        methods = [self.check_method(method) for method in (methods or self.methods)]
        titles = [METHOD_TITLES.get(method, method) for method in methods]
        widths = [max(len(title), 7) for title in titles]
        header = f"{'time span':<17} {'time':>6}  " + "  ".join(
            f"{title:>{width}}" for title, width in zip(titles, widths, strict=True)) + "  words"
        lines = [header]
        for start, end, words in self.spans(spans, step_s):
            cells = [f"{100 * self.span_relevance(start, end, method):>{width - 1}.1f}%"
                     for method, width in zip(methods, widths, strict=True)]
            share = 100 * time_share(start, end, self.duration_s)
            lines.append(f"{start:6.2f} - {end:6.2f} s {share:>5.1f}%  " + "  ".join(cells)
                         + (f"  {words}" if words else "  -"))
        return "\n".join(lines)

    def summary(self, label: str = "predicted") -> str:
        """One line: ``label``, the predicted class and its probability, and the explained
        class when it is another."""
        predicted = self.predicted
        line = (f"{label}: {self.class_name(predicted)} "
                f"(p = {float(self.probabilities[predicted]):.3f})")
        if predicted != self.target:
            line += f"; explaining {self.class_name()}"
        return line

    def merge(self, other: AudioRelevance) -> AudioRelevance:
        """This result with ``other``'s methods added (another model on the same recording):
        the target, probabilities and words stay this one's; a method both have is refused."""
        if abs(other.duration_s - self.duration_s) > 1e-6 or not torch.equal(
                other.frame_edges, self.frame_edges):
            raise ValueError(f"cannot merge relevance of a {other.duration_s:.3f} s recording "
                             f"into one of {self.duration_s:.3f} s (or with other frames)")
        shared = set(self.frame_relevance) & set(other.frame_relevance)
        if shared:
            raise ValueError(f"both results have method(s) {', '.join(sorted(shared))}")
        segment_relevance = dict(self.segment_relevance)
        if torch.equal(other.segments, self.segments):
            segment_relevance.update(other.segment_relevance)
        else:  # the other model's segments differ: read its frames on these segments
            ranges = _segment_ranges(self)
            for method, frames in other.frame_relevance.items():
                segment_relevance[method] = frames_to_segments(frames, ranges)
        notes = list(self.notes)
        if other.target != self.target:
            notes.append(f"merged methods {', '.join(other.methods)} explain class "
                         f"{other.class_name()}, not {self.class_name()}")
        return AudioRelevance(
            duration_s=self.duration_s, frame_edges=self.frame_edges, segments=self.segments,
            segment_relevance=segment_relevance,
            frame_relevance={**self.frame_relevance, **other.frame_relevance},
            target=self.target, probabilities=self.probabilities,
            class_names=self.class_names, words=self.words, notes=notes + other.notes)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON."""
        return {
            "duration_s": round(self.duration_s, 4),
            "target": self.class_name(), "predicted": self.class_name(self.predicted),
            "probabilities": {self.class_name(index): round(float(value), 5)
                              for index, value in enumerate(self.probabilities)},
            "segments": [
                {"start_s": round(float(start), 4), "end_s": round(float(end), 4),
                 **{method: round(float(self.segment_relevance[method][index]), 5)
                    for method in self.methods}}
                for index, (start, end) in enumerate(self.segments.tolist())
            ],
            "words": [{key: (round(value, 5) if isinstance(value, float) else value)
                       for key, value in row.items()} for row in self.word_relevance()],
            "notes": list(self.notes),
        }


def _segment_ranges(relevance: AudioRelevance) -> torch.Tensor:
    """``(S, 2)`` frame ranges of ``relevance``'s segments, from their times."""
    edges = relevance.frame_edges
    starts = torch.searchsorted(edges, relevance.segments[:, 0].double(), right=True) - 1
    ends = torch.searchsorted(edges, relevance.segments[:, 1].double(), right=False)
    return torch.stack([starts.clamp(min=0), ends.clamp(max=len(edges) - 1)], dim=1)


def time_share(start_s: float, end_s: float, duration_s: float) -> float:
    return max(min(end_s, duration_s) - max(start_s, 0.0), 0.0) / duration_s


def _explained_score(target: Target, logits: torch.Tensor
                     ) -> tuple[int, Callable[[torch.Tensor], torch.Tensor], list[str]]:
    """(class, score function, notes) for ``target`` read through :mod:`camlens.targets`."""
    if callable(target) and not isinstance(target, (torch.Tensor, TopK)):
        return int(logits.argmax()), target, ["target: a custom score function"]
    index = int(one_class_per_input(target, logits, 1, "audio_relevance")[0])
    return index, log_odds(index), []


def audio_relevance(
    model: nn.Module,
    audio: Any,
    sample_rate: int | None = None,
    *,
    methods: Sequence[str] = ("gradcam",),
    layer: str | nn.Module | None = None,
    target: Target = None,
    words: Iterable[Any] | None = None,
    class_names: Sequence[str] | None = None,
    target_rate: int = 16000,
    segment_s: float = 0.3,
    segment_hop_s: float = 0.1,
    **options: Any,
) -> AudioRelevance:
    """Relevance over time of ``audio`` for ``model``'s decision.

    Args:
        model: takes a ``(1, T)`` waveform at ``target_rate``; left exactly as it was found.
        audio: a path (WAV, FLAC, OGG, ...; resampled, channels averaged) or a mono waveform
            at ``sample_rate`` (``target_rate`` if not given).
        methods: engine methods (:func:`camlens.available_methods`) whose maps are 1-D over
            time at ``layer``, e.g. ``("attention", "attention-gradient")`` at an attention
            layer or ``("gradcam",)`` at a convolution over time.
        layer: the layer to explain (None: the engine's automatic choice).
        target: the class (None: predicted) or a callable score of the logits.
        words: word time stamps (see :func:`word_spans`) for the per-word rows.
        class_names: names of the classes (default: their indices).
        target_rate: the model's sample rate in Hz.
        segment_s, segment_hop_s: the table's segments when the model has no ``frame_grid``.
        options: go to the methods (``output_fn``, ...).

    Returns:
        An :class:`AudioRelevance`.

    Example:
        >>> attention = audio_relevance(model, "speech.wav", methods=("attention",),
        ...                             layer="attention.weights")  # doctest: +SKIP
        >>> print(attention.table())  # doctest: +SKIP
    """
    if isinstance(methods, str):
        methods = (methods,)
    if not methods:
        raise ValueError("no method to run; pass at least one, e.g. methods=('gradcam',)")
    if "cnn" in options:
        raise TypeError("audio_relevance(cnn=...) is gone: explain each model with its own "
                        "methods and layer, then merge, e.g. audio_relevance(attention_model, "
                        "audio, methods=('attention',), layer='attention.weights').merge("
                        "audio_relevance(cnn, audio, methods=('gradcam',), layer='features'))")
    waveform = read_waveform(audio, sample_rate, target_rate)
    samples = waveform.shape[-1]
    grid = _frame_grid(model, samples, target_rate, segment_s, segment_hop_s)
    ranges = grid.segment_frame_ranges()
    with preserved_model_state(model), torch.no_grad():
        logits = class_logits(adapt_output(model(waveform), options.get("output_fn")))
    if not torch.isfinite(logits).all():
        raise ValueError("the model's scores for this recording are NaN or infinite; camlens "
                         "cannot explain them")
    probabilities = logits[0].double().softmax(dim=0).float()
    index, score, notes = _explained_score(target, logits)

    segment_relevance: dict[str, torch.Tensor] = {}
    frame_relevance: dict[str, torch.Tensor] = {}
    for method in methods:
        explanation = explain(model, waveform, method=method, layer=layer, target=score,
                              **options)
        if explanation.raw.ndim != 2:
            raise ValueError(f"{method} at layer {explanation.layer!r} gave maps of shape "
                             f"{tuple(explanation.raw.shape)}; audio relevance needs one 1-D "
                             "map over time per recording (choose a layer over time)")
        raw = explanation.raw.reshape(-1).double()
        if float(raw.sum()) == 0:
            notes.append(f"{method}: the map is zero everywhere (no positive evidence)")
        if hasattr(model, "frame_grid") and len(raw) == grid.segments:
            segment_relevance[method] = as_distribution(raw)
            frame_relevance[method] = segments_to_frames(segment_relevance[method], ranges,
                                                         grid.frames)
        else:
            frames = as_distribution(upsample(raw[None], (grid.frames,))[0])
            frame_relevance[method] = frames
            segment_relevance[method] = frames_to_segments(frames, ranges)
    names = tuple(class_names) if class_names is not None else tuple(
        str(position) for position in range(len(probabilities)))
    return AudioRelevance(
        duration_s=grid.duration_s, frame_edges=grid.frame_edges(),
        segments=grid.segment_spans(), segment_relevance=segment_relevance,
        frame_relevance=frame_relevance, target=index, probabilities=probabilities,
        class_names=names, words=word_spans(words), notes=notes,
    )


def _frame_grid(model: nn.Module, samples: int, rate: int, segment_s: float,
                segment_hop_s: float) -> FrameGrid:
    """The model's own frame grid, else 10 ms frames and the given segments."""
    if hasattr(model, "frame_grid"):
        return model.frame_grid(samples)
    config = LogMelConfig(sample_rate=rate, win_length=round(0.025 * rate),
                          hop_length=round(0.01 * rate), n_fft=max(512, round(0.025 * rate)),
                          f_max=min(7600.0, rate / 2))
    return FrameGrid(samples, config, max(round(segment_s / config.frame_s), 1),
                     max(round(segment_hop_s / config.frame_s), 1))


_REPLACED = {
    "attention_weights": "camlens.explain(model, waveform, method='attention', "
                         "layer='attention.weights')",
    "is_attention_model": "the engine's 'attention' method at the model's attention layer",
}


def __getattr__(name: str) -> Any:
    if name in _REPLACED:
        raise AttributeError(f"camlens.audio.relevance.{name} was replaced by "
                             f"{_REPLACED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
