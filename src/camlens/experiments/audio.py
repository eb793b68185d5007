"""How good is the relevance? The accent models' explanations measured on held-out recordings.

``camlens reproduce audio --out docs/audio.md`` writes the tables (markdown) and the
deletion curves (PNG next to it) for the shipped ``accent-attention`` and ``accent-cnn``:

- accuracy of both models on mixed and whole test recordings (test split words, seed 0);
- relevance on informative words (mixed recordings): a recording's share of relevance on its
  accent-voice words divided by their share of its duration (1.0 = no better than uniform);
- silence and noise (mixed recordings): their share of relevance and of the duration;
- segment deletion: zero the most relevant 0.1 s blocks (by each method) until a fraction of
  the duration is masked, and the same number of blocks chosen at random; accuracy of the
  explained model for each fraction;
- whole recordings: the words that get the most relevance per second across the test set, and
  whether they are the words whose British and American pronunciations differ
  (:data:`camlens.data.speech.ACCENT_WORDS`).

Besides the three methods, a "loudness" baseline that only hears where there is sound
(relevance proportional to each frame's level above the floor) shows how much of a score comes
from preferring speech to gaps.

Every figure that is a statistic over recordings (or words) carries its 95% interval: the Wilson
score interval for a percentage of recordings, the percentile bootstrap over the recordings (or
words; 1000 resamples, seed 0) for a mean of a per-recording (per-word) figure
(:mod:`camlens.metrics.intervals`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from camlens.audio.relevance import (
    METHOD_TITLES,
    AudioRelevance,
    as_distribution,
    audio_relevance,
    overlap_fractions,
)
from camlens.experiments.audio_batches import RaggedWaveforms, predict
from camlens.metrics.intervals import bootstrap_interval, wilson_interval
from camlens.zoo.accent import ACCENTS
from camlens.zoo.audio_features import LogMel

__all__ = ["BASELINE", "BLOCK_S", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "FRACTIONS", "Figure",
           "RANDOM_REPEATS", "RecordingResult", "TITLES", "block_relevance", "blocks",
           "bootstrap_figure", "correct_predictions", "deletion_correct", "deletion_curve",
           "evaluate", "explain_test_set", "fmt", "gap_share_values", "gap_shares",
           "informative_shares", "informative_word_ratios", "masked_waveform", "number_cell",
           "percent_cell", "random_ranking", "relevance_ranking", "span_union_share",
           "wilson_figure", "word_ranking", "word_ratio_figures"]

BLOCK_S = 0.1
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
RANDOM_REPEATS = 3
BASELINE = "loudness"
TITLES = {**METHOD_TITLES, BASELINE: "loudness (baseline)"}
KINDS = ("mixed", "whole")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0

#: A figure with its 95% interval: ``(value, low, high)``.
Figure = tuple[float, float, float]


# --- intervals ---------------------------------------------------------------------------------


def wilson_figure(successes: int, total: int, value: float | None = None) -> Figure:
    """``(value, low, high)``: the proportion ``successes / total`` (or ``value``, the same
    proportion as a table computed it) with its Wilson score 95% interval."""
    low, high = wilson_interval(int(successes), int(total))
    return (successes / total if value is None else value), low, high


def bootstrap_figure(values: Sequence[float] | np.ndarray | torch.Tensor,
                     value: float | None = None) -> Figure:
    """``(value, low, high)``: the mean of the per-item ``values`` (or ``value``, the same mean
    as a table computed it) with its percentile bootstrap 95% interval over the items
    (:data:`BOOTSTRAP_RESAMPLES` resamples, seed :data:`BOOTSTRAP_SEED`)."""
    data = np.asarray(values, dtype=np.float64)
    low, high = bootstrap_interval(torch.from_numpy(data), BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    return (float(np.mean(data)) if value is None else value), low, high


def percent_cell(figure: Figure, digits: int = 1) -> str:
    """A proportion as ``96.0% [93.6, 97.5]`` (the interval in percent too)."""
    value, low, high = figure
    return f"{value:.{digits}%} [{100 * low:.{digits}f}, {100 * high:.{digits}f}]"


def number_cell(figure: Figure, digits: int = 2) -> str:
    """A figure as ``2.34 [2.21, 2.47]``."""
    value, low, high = figure
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _loudness_relevance(relevance: AudioRelevance, waveform: torch.Tensor) -> torch.Tensor:
    """``(F,)`` a relevance that only hears sound: each frame's mean log-mel level above the
    floor, as a distribution."""
    with torch.no_grad():
        level = (LogMel()(waveform.reshape(1, -1))[0] + 1.0).mean(dim=0)
    return as_distribution(level[: len(relevance.frame_edges) - 1])


def span_union_share(spans: Sequence[tuple[float, float]], duration_s: float) -> float:
    """The share of ``[0, duration_s)`` covered by the union of ``spans``."""
    covered, end_so_far = 0.0, 0.0
    for start, end in sorted(spans):
        start, end = max(start, end_so_far), min(end, duration_s)
        if end > start:
            covered += end - start
            end_so_far = end
    return covered / duration_s


@dataclass
class RecordingResult:
    """One test recording: its relevance by method (the baseline included) and ground truth."""

    kind: str
    label: int
    words: list[dict]
    gaps: list[dict]
    relevance: AudioRelevance  # frame relevance of every method, incl. the baseline
    predicted: dict[str, int] = field(default_factory=dict)  # by model name


def explain_test_set(attention: nn.Module, cnn: nn.Module, dataset, kind: str,
                     progress: bool = False) -> tuple[list[RecordingResult], RaggedWaveforms]:
    """Relevance of every recording of ``dataset`` by the three methods and the baseline."""
    results, waveforms = [], []
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"explaining {kind} recordings", leave=False)
    for index in indices:
        recording = dataset.recording(index)
        waveform = recording.waveform
        by_attention = audio_relevance(attention, waveform, words=recording.words,
                                       methods=("attention", "attention-gradient"),
                                       layer="attention.weights", class_names=ACCENTS)
        # Grad-CAM of the CNN's own prediction
        by_cnn = audio_relevance(cnn, waveform, methods=("gradcam",), layer="features",
                                 class_names=ACCENTS)
        by_attention = by_attention.merge(by_cnn)
        by_attention.frame_relevance[BASELINE] = _loudness_relevance(by_attention, waveform)
        results.append(RecordingResult(
            kind, recording.label, [stamp._asdict() for stamp in recording.words],
            [gap._asdict() for gap in recording.gaps], by_attention,
            {"accent-attention": by_attention.predicted, "accent-cnn": by_cnn.predicted}))
        waveforms.append(waveform)
    return results, RaggedWaveforms(waveforms)


# --- relevance on informative words, silence and noise -----------------------------------------


def informative_word_ratios(results: Sequence[RecordingResult], method: str) -> np.ndarray:
    """Per recording: relevance share on informative words / their share of the duration."""
    ratios = []
    for result in results:
        spans = [(w["start_s"], w["end_s"]) for w in result.words if w["informative"]]
        if not spans:
            continue
        time = span_union_share(spans, result.relevance.duration_s)
        ratios.append(result.relevance.span_mask_relevance(spans, method) / time)
    return np.array(ratios)


def informative_shares(results: Sequence[RecordingResult], method: str) -> np.ndarray:
    """Per recording: the share of relevance on its informative words (0 where it has none)."""
    return np.array([result.relevance.span_mask_relevance(
        [(w["start_s"], w["end_s"]) for w in result.words if w["informative"]], method)
        for result in results])


def gap_share_values(results: Sequence[RecordingResult], method: str, gap_kind: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(share of relevance, share of duration) on the gaps of ``gap_kind`` of each recording
    that has such a gap."""
    relevance_shares, time_shares = [], []
    for result in results:
        spans = [(g["start_s"], g["end_s"]) for g in result.gaps if g["kind"] == gap_kind]
        if not spans:
            continue
        relevance_shares.append(result.relevance.span_mask_relevance(spans, method))
        time_shares.append(span_union_share(spans, result.relevance.duration_s))
    return np.array(relevance_shares), np.array(time_shares)


def gap_shares(results: Sequence[RecordingResult], method: str, gap_kind: str
               ) -> tuple[float, float]:
    """(mean share of relevance, mean share of duration) on gaps of ``gap_kind``, over the
    recordings that have such a gap."""
    relevance_shares, time_shares = gap_share_values(results, method, gap_kind)
    return float(np.mean(relevance_shares)), float(np.mean(time_shares))


# --- segment deletion --------------------------------------------------------------------------


def blocks(duration_s: float, block_s: float = BLOCK_S) -> torch.Tensor:
    """``(K, 2)`` back-to-back blocks of ``block_s`` covering ``[0, duration_s)``."""
    starts = torch.arange(0.0, duration_s - 1e-9, block_s, dtype=torch.float64)
    return torch.stack([starts, (starts + block_s).clamp(max=duration_s)], dim=1)


def block_relevance(relevance: AudioRelevance, method: str, spans: torch.Tensor) -> torch.Tensor:
    """``(K,)`` each block's share of ``method``'s relevance."""
    frames = relevance.frame_relevance[method].double()
    return torch.stack([(frames * overlap_fractions(relevance.frame_edges, float(start),
                                                    float(end))).sum()
                        for start, end in spans.tolist()])


def masked_waveform(waveform: torch.Tensor, spans: torch.Tensor, order: torch.Tensor,
                    fraction: float, sample_rate: int = 16000) -> torch.Tensor:
    """``waveform`` with the blocks ``spans[order[:n]]`` zeroed, ``n`` the fewest blocks whose
    duration reaches ``fraction`` of the recording."""
    masked = waveform.clone()
    if fraction <= 0:
        return masked
    durations = (spans[:, 1] - spans[:, 0])[order]
    target = fraction * float(spans[-1, 1])
    count = int(torch.searchsorted(durations.cumsum(0), torch.tensor(target - 1e-9,
                                                                      dtype=torch.float64))) + 1
    for start, end in spans[order[:count]].tolist():
        masked[round(start * sample_rate) : round(end * sample_rate)] = 0.0
    return masked


def correct_predictions(model: nn.Module, results: Sequence[RecordingResult],
                        waveforms: RaggedWaveforms) -> torch.Tensor:
    """``(N,)`` bool: whether ``model`` gives each recording its accent."""
    labels = torch.tensor([result.label for result in results])
    return predict(model, waveforms).argmax(dim=1) == labels


def deletion_correct(model: nn.Module, results: Sequence[RecordingResult],
                     waveforms: RaggedWaveforms, ranking: Callable[[int, torch.Tensor],
                                                                   torch.Tensor],
                     fractions: Sequence[float] = FRACTIONS) -> torch.Tensor:
    """``(len(fractions), N)`` bool: whether ``model`` still gives each recording its accent
    after masking each fraction of its duration, blocks taken in the order
    ``ranking(row, block_spans)`` gives (most relevant first)."""
    orders = []
    for row, result in enumerate(results):
        spans = blocks(result.relevance.duration_s)
        orders.append((spans, ranking(row, spans)))
    correct = []
    for fraction in fractions:
        masked = [masked_waveform(waveforms.recording(row), spans, order, fraction)
                  for row, (spans, order) in enumerate(orders)]
        correct.append(correct_predictions(model, results, RaggedWaveforms(masked)))
    return torch.stack(correct)


def deletion_curve(model: nn.Module, results: Sequence[RecordingResult],
                   waveforms: RaggedWaveforms, ranking: Callable[[int, torch.Tensor],
                                                                 torch.Tensor],
                   fractions: Sequence[float] = FRACTIONS) -> list[float]:
    """Accuracy of ``model`` after masking each fraction of every recording's duration
    (:func:`deletion_correct` averaged over the recordings)."""
    return [float(row.float().mean())
            for row in deletion_correct(model, results, waveforms, ranking, fractions)]


def relevance_ranking(results: Sequence[RecordingResult], method: str, seed: int = 0
                      ) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """Blocks by decreasing relevance (ties in random order)."""
    generator = torch.Generator().manual_seed(seed)

    def ranking(row: int, spans: torch.Tensor) -> torch.Tensor:
        values = block_relevance(results[row].relevance, method, spans)
        tie_break = torch.rand(len(values), generator=generator, dtype=torch.float64) * 1e-12
        return torch.argsort(values + tie_break, descending=True)

    return ranking


def random_ranking(seed: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """Blocks in a random order, from a generator seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return lambda row, spans: torch.randperm(len(spans), generator=generator)


# --- words of whole recordings -----------------------------------------------------------------


def word_ranking(results: Sequence[RecordingResult], method: str, min_count: int = 3
                 ) -> list[tuple[str, float, int]]:
    """(word, mean relevance per second relative to the recording's average, occurrences) for
    every word spoken at least ``min_count`` times, most relevant first."""
    ratios: dict[str, list[float]] = defaultdict(list)
    for result in results:
        duration = result.relevance.duration_s
        for word in result.words:
            share = result.relevance.span_relevance(word["start_s"], word["end_s"], method)
            ratios[word["word"]].append(share / ((word["end_s"] - word["start_s"]) / duration))
    ranked = [(word, float(np.mean(values)), len(values)) for word, values in ratios.items()
              if len(values) >= min_count]
    return sorted(ranked, key=lambda item: -item[1])


def word_ratio_figures(ranked: Sequence[tuple[str, float, int]], accent_words: set[str]
                       ) -> tuple[Figure, Figure]:
    """The mean ratio of the accent words and of the other words of a :func:`word_ranking`,
    each with its bootstrap interval over the words."""
    accent = [ratio for word, ratio, _ in ranked if word in accent_words]
    other = [ratio for word, ratio, _ in ranked if word not in accent_words]
    return bootstrap_figure(accent), bootstrap_figure(other)


# --- the report --------------------------------------------------------------------------------

METHODS = ("attention", "attention-gradient", "gradcam")
EXPLAINED_BY = {"attention": "accent-attention", "attention-gradient": "accent-attention",
                "gradcam": "accent-cnn"}
INTERVALS_TEXT = (
    "Each figure over recordings (or words) with its 95% interval [low, high]: the Wilson score "
    "interval for the percentages of recordings (accuracies, recordings >= 2, deletion "
    "accuracies of the relevance orders), the percentile bootstrap (1000 resamples, seed 0) "
    "over the recordings for the means of a per-recording figure (ratios, shares of relevance "
    "and of time, random-deletion accuracies) and over the words for the word ratios. Medians, "
    "counts of words and the example are shown without.")


def fmt(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals."""
    return f"{value:.{digits}f}"


def _informative_spans(result: RecordingResult) -> list[tuple[float, float]]:
    return [(w["start_s"], w["end_s"]) for w in result.words if w["informative"]]


def _accuracy_section(models: dict[str, nn.Module], results: dict[str, list[RecordingResult]],
                      waveforms: dict[str, RaggedWaveforms],
                      files: dict[str, str | Path | None]) -> list[str]:
    """The accuracy table: each model on mixed, whole and all test recordings (Wilson)."""
    from camlens import zoo

    lines = ["## Accuracy", "",
             "Training time: the wall time of `camlens train NAME --seed 0` stored with the "
             "weights (2-core CPU; it includes synthesizing the 3,200 recordings when they are "
             "not cached). Intervals: Wilson score over the recordings (all: over the mixed and "
             "whole recordings together).", "",
             "| model | mixed | whole | all | weights (training) |", "|---|---:|---:|---:|---|"]
    for name, model in models.items():
        correct = {kind: correct_predictions(model, results[kind], waveforms[kind])
                   for kind in KINDS}
        accuracy = {kind: float(values.float().mean()) for kind, values in correct.items()}
        pooled = torch.cat([correct[kind] for kind in KINDS])
        cells = [percent_cell(wilson_figure(int(correct[kind].sum()), correct[kind].numel(),
                                            accuracy[kind])) for kind in KINDS]
        cells.append(percent_cell(wilson_figure(int(pooled.sum()), pooled.numel(), (
            accuracy["mixed"] + accuracy["whole"]) / 2)))
        metadata = zoo.registry.file_metadata(files[name] or zoo.weights_path(name))
        trained = (f"seed {metadata.get('seed', '?')}, {metadata.get('epochs', '?')} epochs, "
                   f"{metadata.get('train_seconds', '?')} s")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {trained} |")
    return [*lines, ""]


def _informative_section(mixed: Sequence[RecordingResult]) -> list[str]:
    """Relevance on the informative words of the mixed recordings, per method."""
    informative_time = bootstrap_figure([span_union_share(
        _informative_spans(r), r.relevance.duration_s) for r in mixed])
    lines = ["## Relevance on informative words (mixed recordings)", "",
             "Share of relevance on the accent-voice words divided by their share of the "
             "duration, per recording (1.0 = uniform; the most a recording allows is 1 / its "
             "informative share of time, on average "
             f"{percent_cell(informative_time)} of the duration). "
             "Target for the attention model: >= 2. Intervals: bootstrap over the recordings "
             "for the mean ratio and the share of relevance, Wilson score for the recordings "
             ">= 2.", "",
             "| method | model | mean ratio | median | recordings >= 2 | share of relevance |",
             "|---|---|---:|---:|---:|---:|"]
    for method in [*METHODS, BASELINE]:
        ratios = informative_word_ratios(mixed, method)
        above = wilson_figure(int((ratios >= 2).sum()), len(ratios), float(np.mean(ratios >= 2)))
        lines.append(f"| {TITLES[method]} | {EXPLAINED_BY.get(method, 'none')} | "
                     f"{number_cell(bootstrap_figure(ratios, ratios.mean()))} | "
                     f"{fmt(float(np.median(ratios)))} | {percent_cell(above, 0)} | "
                     f"{percent_cell(bootstrap_figure(informative_shares(mixed, method)))} |")
    return [*lines, ""]


def _gap_section(mixed: Sequence[RecordingResult]) -> list[str]:
    """Relevance and time on silence, noise and pauses of the mixed recordings, per method."""
    lines = ["## Silence and noise (mixed recordings)", "",
             "Mean share of relevance on long gaps of silence and of low-level white or pink "
             "noise (0.2-1 s between words), and the mean share of the duration they take, over "
             "the recordings that have such a gap; short pauses between words too. Intervals: "
             "bootstrap over those recordings.", "",
             "| method | silence: relevance | silence: time | noise: relevance | noise: time | "
             "pauses: relevance | pauses: time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for method in [*METHODS, BASELINE]:
        cells = []
        for gap_kind in ("silence", "noise", "pause"):
            relevance_shares, time_shares = gap_share_values(mixed, method, gap_kind)
            cells += [percent_cell(bootstrap_figure(relevance_shares)),
                      percent_cell(bootstrap_figure(time_shares))]
        lines.append(f"| {TITLES[method]} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _relevance_deletion(model: nn.Module, results: Sequence[RecordingResult],
                        waveforms: RaggedWaveforms, method: str) -> list[Figure]:
    """The deletion accuracies of ``method``'s order, each with its Wilson interval."""
    correct = deletion_correct(model, results, waveforms, relevance_ranking(results, method))
    return [wilson_figure(int(row.sum()), row.numel(), float(row.float().mean()))
            for row in correct]


def _random_deletion(model: nn.Module, results: Sequence[RecordingResult],
                     waveforms: RaggedWaveforms) -> list[Figure]:
    """The deletion accuracies of random orders (mean of :data:`RANDOM_REPEATS` draws), each
    with its bootstrap interval over the recordings of their share of correct draws."""
    draws = torch.stack([deletion_correct(model, results, waveforms, random_ranking(seed))
                         for seed in range(RANDOM_REPEATS)])  # (draws, fractions, N)
    accuracies = np.mean([[float(row.float().mean()) for row in draw] for draw in draws], axis=0)
    per_recording = draws.double().mean(dim=0)  # (fractions, N)
    return [bootstrap_figure(per_recording[position], float(accuracies[position]))
            for position in range(len(FRACTIONS))]


def _deletion_curves(models: dict[str, nn.Module], results: Sequence[RecordingResult],
                     waveforms: RaggedWaveforms) -> dict[str, list[Figure]]:
    """The deletion curves of one kind of recording: each method's order on the model it
    explains (by method), random orders on each model (by ``random:MODEL``)."""
    curves = {method: _relevance_deletion(models[EXPLAINED_BY[method]], results, waveforms,
                                          method) for method in METHODS}
    for model_name, model in models.items():
        curves[f"random:{model_name}"] = _random_deletion(model, results, waveforms)
    return curves


def _deletion_table(kind: str, curves: dict[str, list[Figure]]) -> list[str]:
    """The markdown table of one kind's deletion curves."""
    header = "| masked | " + " | ".join(
        f"{TITLES[m]} ({EXPLAINED_BY[m]})" for m in METHODS) + " | random (accent-attention)"\
        " | random (accent-cnn) |"
    lines = [f"**{kind} recordings**", "", header, "|---:" * (len(METHODS) + 3) + "|"]
    for position, fraction in enumerate(FRACTIONS):
        cells = [percent_cell(curve[position]) for curve in curves.values()]
        lines.append(f"| {fraction:.0%} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _deletion_section(models: dict[str, nn.Module], results: dict[str, list[RecordingResult]],
                      waveforms: dict[str, RaggedWaveforms], out: Path,
                      log: Callable[[str], None]) -> list[str]:
    """Segment deletion on both kinds of recording: the tables and the figure."""
    lines = ["## Segment deletion", "",
             f"Each recording is cut into {BLOCK_S} s blocks; the most relevant blocks (by the "
             "method) are zeroed until the given fraction of the duration is masked, or the "
             f"same number of blocks chosen at random (mean of {RANDOM_REPEATS} draws). "
             "Accuracy of the explained model; lower is better for the relevance order "
             "(below 50%: the masked recordings are taken for the other accent). Intervals: "
             "Wilson score over the recordings for the relevance orders; for the random orders, "
             "the percentile bootstrap over the recordings of each recording's share of the "
             f"{RANDOM_REPEATS} draws classified correctly (the draws of one recording are not "
             "independent, so a Wilson interval on the pooled draws would be too narrow).", ""]
    curves: dict[str, dict[str, list[Figure]]] = {}
    for kind in KINDS:
        curves[kind] = _deletion_curves(models, results[kind], waveforms[kind])
        log(f"deletion curves on {kind} recordings done")
        lines += _deletion_table(kind, curves[kind])
    deletion_path = out.parent / "audio_deletion.png"
    from camlens.audio.plot import save_relevance_figure

    save_relevance_figure(_deletion_figure(curves), deletion_path)
    return [*lines, f"![deletion curves]({deletion_path.name})", ""]


def _words_section(whole: Sequence[RecordingResult]) -> list[str]:
    """The words of the whole recordings that get the most relevance, per method."""
    from camlens.data.speech import ACCENT_WORDS, word_lists

    accent_set = set(ACCENT_WORDS)
    test_accent, test_common = word_lists("test")
    lines = ["## Which words get the most relevance (whole recordings)", "",
             "For each word spoken at least 3 times across the whole test recordings: its mean "
             "relevance per second relative to its recording's average (1.0 = average). "
             "Marked `*`: words on the list whose British and American pronunciations differ "
             f"(`ACCENT_WORDS`; {len(test_accent)} of the {len(test_accent) + len(test_common)}"
             " test split words). Intervals of the mean ratios: bootstrap over the words.", ""]
    rankings = {method: word_ranking(whole, method) for method in [*METHODS, BASELINE]}
    lines += ["| method | accent words: mean ratio | other words: mean ratio | "
              "accent words in top 20 | accent words among ranked words |",
              "|---|---:|---:|---:|---:|"]
    for method, ranked in rankings.items():
        accent, other = word_ratio_figures(ranked, accent_set)
        top = ranked[:20]
        accent_count = sum(word in accent_set for word, _, _ in ranked)
        lines.append(f"| {TITLES[method]} | {number_cell(accent)} | {number_cell(other)} | "
                     f"{sum(word in accent_set for word, _, _ in top)} of {len(top)} | "
                     f"{accent_count} of {len(ranked)} |")
    baseline_top = sum(word in accent_set for word, _, _ in rankings[BASELINE][:20])
    lines += ["", f"Loudness alone puts {baseline_top} accent words in its top 20 (the list is "
              "rich in long stressed vowels: car, card, park), so the top-20 count says little "
              "by itself; the mean ratios of accent words against other words are the test.",
              "", "| rank | " + " | ".join(TITLES[m] for m in METHODS) + " |",
              "|---:" + "|---" * len(METHODS) + "|"]
    for rank in range(15):
        cells = []
        for method in METHODS:
            word, ratio, count = rankings[method][rank]
            cells.append(f"{word}{'*' if word in accent_set else ''} {ratio:.2f} ({count})")
        lines.append(f"| {rank + 1} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _example_section(mixed: Sequence[RecordingResult], waveforms: RaggedWaveforms,
                     out: Path) -> list[str]:
    """One mixed recording the model gets right: its figure and its table."""
    from camlens.audio.plot import relevance_figure, save_relevance_figure

    example = next(r for r in mixed if r.relevance.predicted == r.label and len(r.words) >= 6)
    row = mixed.index(example)
    example_path = out.parent / "audio_example.png"
    shown = AudioRelevance(**{**example.relevance.__dict__, "frame_relevance": {
        m: example.relevance.frame_relevance[m] for m in METHODS}})
    save_relevance_figure(relevance_figure(shown, waveforms.recording(row)), example_path)
    return ["## An example (mixed test recording "
            f"{row}; informative words in green)", "",
            f"![example]({example_path.name})", "", "```", shown.summary(label="accent"),
            shown.table(), "```", "",
            "Informative words of this recording: "
            + ", ".join(w["word"] for w in example.words if w["informative"]) + ".", ""]


def evaluate(out: str | Path, test_size: int = 400, progress: bool = False,
             log: Callable[[str], None] = print, command: str | None = None,
             attention_weights: str | Path | None = None,
             cnn_weights: str | Path | None = None) -> str:
    """Run the whole evaluation on ``test_size`` mixed and ``test_size`` whole test recordings
    (seed 0) with the shipped models (or the weights given); write the markdown to ``out`` and
    the figures next to it (``audio_deletion.png``, ``audio_example.png``). Returns the
    markdown."""
    from camlens import zoo
    from camlens.data.speech import AccentRecordings
    from camlens.experiments.training import TEST_SEED

    started = time.perf_counter()
    out = Path(out)
    attention = zoo.load("accent-attention", weights=attention_weights)
    cnn = zoo.load("accent-cnn", weights=cnn_weights)
    models = {"accent-attention": attention, "accent-cnn": cnn}
    results: dict[str, list[RecordingResult]] = {}
    waveforms: dict[str, RaggedWaveforms] = {}
    for kind in KINDS:
        dataset = AccentRecordings(test_size, "test", kind, TEST_SEED).prepare(progress)
        results[kind], waveforms[kind] = explain_test_set(attention, cnn, dataset, kind, progress)
        log(f"explained {test_size} {kind} test recordings")

    weights = "the shipped weights" if attention_weights is None and cnn_weights is None \
        else f"weights {attention_weights or 'shipped'} and {cnn_weights or 'shipped'}"
    lines = ["# Accent relevance: evaluation", "",
             f"Produced by `{command or 'camlens reproduce audio --out ' + str(out)}`"
             f" with {weights}, on {test_size} mixed and {test_size} whole test "
             "recordings (`AccentRecordings(..., split='test', seed=0)`: test split words, "
             "none of which any training recording contains). " + INTERVALS_TEXT, ""]
    files = {"accent-attention": attention_weights, "accent-cnn": cnn_weights}
    lines += _accuracy_section(models, results, waveforms, files)
    lines += _informative_section(results["mixed"])
    lines += _gap_section(results["mixed"])
    lines += _deletion_section(models, results, waveforms, out, log)
    lines += _words_section(results["whole"])
    lines += _example_section(results["mixed"], waveforms["mixed"], out)
    lines.append(f"Evaluation time: {time.perf_counter() - started:.0f} s on this machine "
                 f"({torch.get_num_threads()} torch thread"
                 f"{'' if torch.get_num_threads() == 1 else 's'}).")
    markdown = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    return markdown


def _deletion_figure(curves: dict[str, dict[str, list[Figure]]]):
    """Accuracy against the masked fraction, with its 95% interval shaded: one panel per kind
    of recording."""
    from matplotlib.figure import Figure as PlotFigure

    from camlens.audio.plot import METHOD_COLOURS

    figure = PlotFigure(figsize=(10, 4), layout="constrained")
    percent = [100 * fraction for fraction in FRACTIONS]
    for axes, (kind, by_method) in zip(figure.subplots(1, 2, sharey=True), curves.items(),
                                       strict=True):
        for method, curve in by_method.items():
            values, lows, highs = (list(column) for column in zip(*curve, strict=True))
            if method.startswith("random:"):
                model_name = method.split(":", 1)[1]
                colour = "grey" if model_name == "accent-attention" else "black"
                axes.plot(percent, values, linestyle="--", marker=".", color=colour,
                          label=f"random ({model_name})")
            else:
                colour = METHOD_COLOURS.get(method)
                axes.plot(percent, values, marker="o", color=colour,
                          label=f"{TITLES[method]} ({EXPLAINED_BY[method]})")
            axes.fill_between(percent, lows, highs, color=colour, alpha=0.15, linewidth=0)
        axes.set_title(f"{kind} test recordings")
        axes.set_xlabel("duration masked (%), most relevant 0.1 s blocks first")
        axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.axes[0].set_ylabel("accuracy (shaded: 95% interval)")
    return figure
