"""Which stretches of a recording an audio classifier's decision rests on.

:func:`audio_relevance` explains one recording with up to three methods and returns an
:class:`AudioRelevance`: the segments (start and end in seconds), each method's relevance per
segment and per 10 ms frame, and, where word time stamps are given, per word.

- ``attention``: the attention weights ``alpha_t`` of the attention-pooling model (Padi, Mohan
  and Ganapathy, TASLP 2020): ``u_t = tanh(W h_t + b)``, ``alpha_t = softmax_t(c^T u_t)``.
- ``attention-gradient``: attention times gradient, ``ReLU(alpha_t * d s / d alpha_t)`` with
  ``s`` the explained score. Since ``e = sum_t alpha_t h_t``,
  ``d s / d alpha_t = (d s / d e) . h_t``: a segment counts when it is attended to *and* its
  state pushes the score up. It is HiResCAM at
  the ``attention.weights`` layer, computed by the core engine.
- ``gradcam``: 1-D Grad-CAM (Selvaraju et al. 2017) of the convolutional model along time, at its
  ``features`` layer, brought to the frames by linear interpolation and to the segments by
  averaging over each segment's frames.

The explained score ``s`` is the log-odds of the target class, ``y_c - logsumexp_{k != c} y_k``
(for two classes the logit margin), so relevance is evidence for that accent *against* the other.
The target is the attention model's predicted class unless given; the convolutional model
explains the same class.

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

from camlens.audio.features import FrameGrid, LogMelConfig, waveform_input
from camlens.audio.models import ACCENTS, SEGMENT_HOP_S, SEGMENT_S
from camlens.explanation import upsample
from camlens.model_state import preserved_model_state

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
    class_names: tuple[str, ...] = ACCENTS
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

    def summary(self) -> str:
        """One line: the predicted class and its probability, and the explained class."""
        predicted = self.predicted
        line = (f"accent: {self.class_name(predicted)} "
                f"(p = {float(self.probabilities[predicted]):.3f})")
        if predicted != self.target:
            line += f"; explaining {self.class_name()}"
        return line

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


def time_share(start_s: float, end_s: float, duration_s: float) -> float:
    return max(min(end_s, duration_s) - max(start_s, 0.0), 0.0) / duration_s


def is_attention_model(model: nn.Module) -> bool:
    attention = getattr(model, "attention", None)
    return attention is not None and hasattr(attention, "weights") and hasattr(model, "frame_grid")


def attention_weights(model: nn.Module, waveform: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits ``(B, C)``, attention weights ``(B, S)``) from one forward pass without autograd;
    the model is left as it was (mode, flags) and the hook is removed after."""
    captured: list[torch.Tensor] = []
    handle = model.attention.weights.register_forward_hook(
        lambda module, args, output: captured.append(output.detach()))
    try:
        with preserved_model_state(model), torch.no_grad():
            logits = model(waveform)
    finally:
        handle.remove()
    return logits, captured[-1][:, 0]


def audio_relevance(
    model: nn.Module,
    audio: Any,
    sample_rate: int | None = None,
    *,
    cnn: nn.Module | None = None,
    methods: Sequence[str] | None = None,
    words: Iterable[Any] | None = None,
    target: int | None = None,
    class_names: Sequence[str] | None = None,
) -> AudioRelevance:
    """Relevance over time of ``audio`` (a path, or a mono waveform at ``sample_rate``, 16 kHz
    if not given) for ``model``.

    ``model``: an attention model (:class:`camlens.audio.models.AccentAttention`, or any model
    with ``attention.weights`` and ``frame_grid``), or a convolutional model alone (then only
    ``gradcam``). ``cnn``: the convolutional model for ``gradcam`` next to the attention methods.
    ``methods``: a subset of :data:`METHODS` (default: all that the models given allow).
    ``words``: word time stamps (see :func:`word_spans`) for the word-level merge.
    ``target``: the class to explain (default: the first model's prediction).
    The models are left exactly as they were found.
    """
    import camlens

    waveform = waveform_input(audio, sample_rate)
    attention_model = model if is_attention_model(model) else None
    cnn = cnn if attention_model is not None else model
    available = (["attention", "attention-gradient"] if attention_model is not None else []) + (
        ["gradcam"] if cnn is not None else [])
    methods = list(methods) if methods is not None else available
    for method in methods:
        if method not in available:
            raise ValueError(f"method {method!r} is not available with the models given; "
                             f"available: {', '.join(available)} (of {', '.join(METHODS)}; "
                             "gradcam needs cnn=...)")
    if not methods:
        raise ValueError("no method to run; pass at least one of " + ", ".join(available))
    names = tuple(class_names or getattr(model, "class_names", None) or ACCENTS)
    samples = waveform.shape[-1]
    if attention_model is not None:
        grid = attention_model.frame_grid(samples)
    else:
        # No segments of its own: the table uses the attention model's 0.3 s / 0.1 s grid.
        config = cnn.logmel.config if hasattr(cnn, "logmel") else LogMelConfig()
        grid = FrameGrid(samples, config, round(SEGMENT_S / config.frame_s),
                         round(SEGMENT_HOP_S / config.frame_s))
    ranges = grid.segment_frame_ranges()
    segment_relevance: dict[str, torch.Tensor] = {}
    frame_relevance: dict[str, torch.Tensor] = {}
    notes: list[str] = []

    if attention_model is not None:
        logits, alpha = attention_weights(attention_model, waveform)
    else:
        with preserved_model_state(cnn), torch.no_grad():
            logits = cnn(waveform)
    probabilities = logits[0].softmax(dim=0).detach()
    target = int(probabilities.argmax()) if target is None else int(target)
    if not 0 <= target < len(probabilities):
        raise IndexError(f"target {target} is out of range for {len(probabilities)} classes")
    score = log_odds(target)

    for method in methods:
        if method == "attention":
            segment_relevance[method] = as_distribution(alpha[0])
        elif method == "attention-gradient":
            explanation = camlens.explain(attention_model, waveform, method="hirescam",
                                          layer="attention.weights", target=score)
            values = as_distribution(explanation.raw.reshape(-1))
            if float(values.sum()) == 0:
                notes.append("attention-gradient: every segment pushes the score down (all "
                             "zero after the ReLU)")
            segment_relevance[method] = values
        else:
            layer = getattr(cnn, "target_layer", None) or "features"
            explanation = camlens.explain(cnn, waveform, method="gradcam", layer=layer,
                                          target=score)
            frames = as_distribution(upsample(explanation.raw.reshape(1, -1).double(),
                                              (grid.frames,))[0])
            if float(frames.sum()) == 0:
                notes.append("gradcam: the map is zero everywhere (no positive evidence)")
            frame_relevance[method] = frames
            segment_relevance[method] = frames_to_segments(frames, ranges)
        if method not in frame_relevance:
            frame_relevance[method] = segments_to_frames(segment_relevance[method], ranges,
                                                         grid.frames)
    return AudioRelevance(
        duration_s=grid.duration_s, frame_edges=grid.frame_edges(),
        segments=grid.segment_spans(), segment_relevance=segment_relevance,
        frame_relevance={method: frame_relevance[method] for method in methods},
        target=target, probabilities=probabilities, class_names=names,
        words=word_spans(words), notes=notes,
    )


__all__ = ["METHODS", "AudioRelevance", "WordSpan", "audio_relevance", "log_odds", "word_spans"]
