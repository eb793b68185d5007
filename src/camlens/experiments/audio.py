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
from camlens.zoo.accent import ACCENTS
from camlens.zoo.audio_features import LogMel

__all__ = ["BASELINE", "BLOCK_S", "FRACTIONS", "RANDOM_REPEATS", "RecordingResult", "TITLES",
           "block_relevance", "blocks", "deletion_curve", "evaluate", "explain_test_set", "fmt",
           "gap_shares", "informative_word_ratios", "masked_waveform", "random_ranking",
           "relevance_ranking", "span_union_share", "word_ranking"]

BLOCK_S = 0.1
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
RANDOM_REPEATS = 3
BASELINE = "loudness"
TITLES = {**METHOD_TITLES, BASELINE: "loudness (baseline)"}


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


def gap_shares(results: Sequence[RecordingResult], method: str, gap_kind: str
               ) -> tuple[float, float]:
    """(mean share of relevance, mean share of duration) on gaps of ``gap_kind``, over the
    recordings that have such a gap."""
    relevance_shares, time_shares = [], []
    for result in results:
        spans = [(g["start_s"], g["end_s"]) for g in result.gaps if g["kind"] == gap_kind]
        if not spans:
            continue
        relevance_shares.append(result.relevance.span_mask_relevance(spans, method))
        time_shares.append(span_union_share(spans, result.relevance.duration_s))
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


def deletion_curve(model: nn.Module, results: Sequence[RecordingResult],
                   waveforms: RaggedWaveforms, ranking: Callable[[int, torch.Tensor],
                                                                 torch.Tensor],
                   fractions: Sequence[float] = FRACTIONS) -> list[float]:
    """Accuracy of ``model`` after masking each fraction of every recording's duration, blocks
    taken in the order ``ranking(row, block_spans)`` gives (most relevant first)."""
    labels = torch.tensor([result.label for result in results])
    orders = []
    for row, result in enumerate(results):
        spans = blocks(result.relevance.duration_s)
        orders.append((spans, ranking(row, spans)))
    accuracies = []
    for fraction in fractions:
        masked = [masked_waveform(waveforms.recording(row), spans, order, fraction)
                  for row, (spans, order) in enumerate(orders)]
        predicted = predict(model, RaggedWaveforms(masked)).argmax(dim=1)
        accuracies.append(float((predicted == labels).float().mean()))
    return accuracies


def relevance_ranking(results: Sequence[RecordingResult], method: str, seed: int = 0):
    """Blocks by decreasing relevance (ties in random order)."""
    generator = torch.Generator().manual_seed(seed)

    def ranking(row: int, spans: torch.Tensor) -> torch.Tensor:
        values = block_relevance(results[row].relevance, method, spans)
        tie_break = torch.rand(len(values), generator=generator, dtype=torch.float64) * 1e-12
        return torch.argsort(values + tie_break, descending=True)

    return ranking


def random_ranking(seed: int):
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


# --- the report --------------------------------------------------------------------------------


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def evaluate(out: str | Path, test_size: int = 400, progress: bool = False,
             log: Callable[[str], None] = print, command: str | None = None,
             attention_weights: str | Path | None = None,
             cnn_weights: str | Path | None = None) -> str:
    """Run the whole evaluation on ``test_size`` mixed and ``test_size`` whole test recordings
    (seed 0) with the shipped models (or the weights given); write the markdown to ``out`` and
    the figures next to it (``audio_deletion.png``, ``audio_example.png``). Returns the
    markdown."""
    from camlens import zoo
    from camlens.audio.plot import relevance_figure, save_relevance_figure
    from camlens.data.speech import ACCENT_WORDS, AccentRecordings, word_lists
    from camlens.experiments.training import TEST_SEED

    started = time.perf_counter()
    out = Path(out)
    attention = zoo.load("accent-attention", weights=attention_weights)
    cnn = zoo.load("accent-cnn", weights=cnn_weights)
    models = {"accent-attention": attention, "accent-cnn": cnn}
    methods = ["attention", "attention-gradient", "gradcam"]
    explained_by = {"attention": "accent-attention", "attention-gradient": "accent-attention",
                    "gradcam": "accent-cnn"}
    results: dict[str, list[RecordingResult]] = {}
    waveforms: dict[str, RaggedWaveforms] = {}
    for kind in ("mixed", "whole"):
        dataset = AccentRecordings(test_size, "test", kind, TEST_SEED).prepare(progress)
        results[kind], waveforms[kind] = explain_test_set(attention, cnn, dataset, kind, progress)
        log(f"explained {test_size} {kind} test recordings")

    lines = ["# Accent relevance: evaluation", ""]
    weights = "the shipped weights" if attention_weights is None and cnn_weights is None \
        else f"weights {attention_weights or 'shipped'} and {cnn_weights or 'shipped'}"
    lines += [f"Produced by `{command or 'camlens reproduce audio --out ' + str(out)}`"
              f" with {weights}, on {test_size} mixed and {test_size} whole test "
              "recordings (`AccentRecordings(..., split='test', seed=0)`: test split words, "
              "none of which any training recording contains).", ""]

    # accuracy
    lines += ["## Accuracy", "",
              "Training time: the wall time of `camlens train NAME --seed 0` stored with the "
              "weights (2-core CPU; it includes synthesizing the 3,200 recordings when they are "
              "not cached).", "",
              "| model | mixed | whole | all | weights (training) |", "|---|---:|---:|---:|---|"]
    files = {"accent-attention": attention_weights, "accent-cnn": cnn_weights}
    for name, model in models.items():
        accuracy = {}
        for kind in ("mixed", "whole"):
            labels = torch.tensor([result.label for result in results[kind]])
            predicted = predict(model, waveforms[kind]).argmax(dim=1)
            accuracy[kind] = float((predicted == labels).float().mean())
        metadata = zoo.registry.file_metadata(files[name] or zoo.weights_path(name))
        trained = (f"seed {metadata.get('seed', '?')}, {metadata.get('epochs', '?')} epochs, "
                   f"{metadata.get('train_seconds', '?')} s")
        lines.append(f"| {name} | {accuracy['mixed']:.1%} | {accuracy['whole']:.1%} | "
                     f"{(accuracy['mixed'] + accuracy['whole']) / 2:.1%} | {trained} |")
    lines.append("")

    # informative words
    mixed = results["mixed"]
    informative_time = np.mean([span_union_share(
        [(w["start_s"], w["end_s"]) for w in r.words if w["informative"]],
        r.relevance.duration_s) for r in mixed])
    lines += ["## Relevance on informative words (mixed recordings)", "",
              "Share of relevance on the accent-voice words divided by their share of the "
              "duration, per recording (1.0 = uniform; the most a recording allows is 1 / its "
              f"informative share of time, on average {informative_time:.1%} of the duration). "
              "Target for the attention model: >= 2.", "",
              "| method | model | mean ratio | median | recordings >= 2 | share of relevance |",
              "|---|---|---:|---:|---:|---:|"]
    for method in [*methods, BASELINE]:
        ratios = informative_word_ratios(mixed, method)
        shares = [r.relevance.span_mask_relevance(
            [(w["start_s"], w["end_s"]) for w in r.words if w["informative"]], method)
            for r in mixed]
        model_name = explained_by.get(method, "none")
        lines.append(f"| {TITLES[method]} | {model_name} | {fmt(ratios.mean())} | "
                     f"{fmt(float(np.median(ratios)))} | {np.mean(ratios >= 2):.0%} | "
                     f"{np.mean(shares):.1%} |")
    lines.append("")

    # silence and noise
    lines += ["## Silence and noise (mixed recordings)", "",
              "Mean share of relevance on long gaps of silence and of low-level white or pink "
              "noise (0.2-1 s between words), and the mean share of the duration they take, over "
              "the recordings that have such a gap; short pauses between words too.", "",
              "| method | silence: relevance | silence: time | noise: relevance | noise: time | "
              "pauses: relevance | pauses: time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for method in [*methods, BASELINE]:
        cells = []
        for gap_kind in ("silence", "noise", "pause"):
            relevance_share, time_share = gap_shares(mixed, method, gap_kind)
            cells += [f"{relevance_share:.1%}", f"{time_share:.1%}"]
        lines.append(f"| {TITLES[method]} | " + " | ".join(cells) + " |")
    lines.append("")

    # deletion
    lines += ["## Segment deletion", "",
              f"Each recording is cut into {BLOCK_S} s blocks; the most relevant blocks (by the "
              "method) are zeroed until the given fraction of the duration is masked, or the "
              f"same number of blocks chosen at random (mean of {RANDOM_REPEATS} draws). "
              "Accuracy of the explained model; lower is better for the relevance order "
              "(below 50%: the masked recordings are taken for the other accent).", ""]
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for kind in ("mixed", "whole"):
        curves[kind] = {}
        for method in methods:
            model_name = explained_by[method]
            curves[kind][method] = {"relevant": deletion_curve(
                models[model_name], results[kind], waveforms[kind],
                relevance_ranking(results[kind], method))}
        for model_name, model in models.items():
            draws = [deletion_curve(model, results[kind], waveforms[kind],
                                    random_ranking(seed)) for seed in range(RANDOM_REPEATS)]
            curves[kind][f"random:{model_name}"] = {"random": list(np.mean(draws, axis=0))}
        log(f"deletion curves on {kind} recordings done")
        header = "| masked | " + " | ".join(
            f"{TITLES[m]} ({explained_by[m]})" for m in methods) + " | random (accent-attention)"\
            " | random (accent-cnn) |"
        lines += [f"**{kind} recordings**", "", header, "|---:" * (len(methods) + 3) + "|"]
        for position, fraction in enumerate(FRACTIONS):
            cells = [f"{curves[kind][m]['relevant'][position]:.1%}" for m in methods]
            cells += [f"{curves[kind][f'random:{name}']['random'][position]:.1%}"
                      for name in models]
            lines.append(f"| {fraction:.0%} | " + " | ".join(cells) + " |")
        lines.append("")
    deletion_path = out.parent / "audio_deletion.png"
    save_relevance_figure(_deletion_figure(curves, explained_by), deletion_path)
    lines += [f"![deletion curves]({deletion_path.name})", ""]

    # words of whole recordings
    whole = results["whole"]
    accent_set = set(ACCENT_WORDS)
    test_accent, test_common = word_lists("test")
    lines += ["## Which words get the most relevance (whole recordings)", "",
              "For each word spoken at least 3 times across the whole test recordings: its mean "
              "relevance per second relative to its recording's average (1.0 = average). "
              "Marked `*`: words on the list whose British and American pronunciations differ "
              f"(`ACCENT_WORDS`; {len(test_accent)} of the {len(test_accent) + len(test_common)}"
              " test split words).", ""]
    rankings = {method: word_ranking(whole, method) for method in [*methods, BASELINE]}
    lines += ["| method | accent words: mean ratio | other words: mean ratio | "
              "accent words in top 20 | accent words among ranked words |",
              "|---|---:|---:|---:|---:|"]
    for method, ranked in rankings.items():
        accent_ratios = [ratio for word, ratio, _ in ranked if word in accent_set]
        other_ratios = [ratio for word, ratio, _ in ranked if word not in accent_set]
        top = ranked[:20]
        lines.append(f"| {TITLES[method]} | {fmt(float(np.mean(accent_ratios)))} | "
                     f"{fmt(float(np.mean(other_ratios)))} | "
                     f"{sum(word in accent_set for word, _, _ in top)} of {len(top)} | "
                     f"{len(accent_ratios)} of {len(ranked)} |")
    baseline_top = sum(word in accent_set for word, _, _ in rankings[BASELINE][:20])
    lines += ["", f"Loudness alone puts {baseline_top} accent words in its top 20 (the list is "
              "rich in long stressed vowels: car, card, park), so the top-20 count says little "
              "by itself; the mean ratios of accent words against other words are the test.",
              "", "| rank | " + " | ".join(TITLES[m] for m in methods) + " |",
              "|---:" + "|---" * len(methods) + "|"]
    for rank in range(15):
        cells = []
        for method in methods:
            word, ratio, count = rankings[method][rank]
            cells.append(f"{word}{'*' if word in accent_set else ''} {ratio:.2f} ({count})")
        lines.append(f"| {rank + 1} | " + " | ".join(cells) + " |")
    lines.append("")

    # one example
    example = next(r for r in mixed if r.relevance.predicted == r.label and len(r.words) >= 6)
    row = mixed.index(example)
    example_path = out.parent / "audio_example.png"
    shown = AudioRelevance(**{**example.relevance.__dict__, "frame_relevance": {
        m: example.relevance.frame_relevance[m] for m in methods}})
    save_relevance_figure(relevance_figure(shown, waveforms["mixed"].recording(row)),
                          example_path)
    lines += ["## An example (mixed test recording "
              f"{row}; informative words in green)", "",
              f"![example]({example_path.name})", "", "```", shown.summary(label="accent"),
              shown.table(), "```", "",
              "Informative words of this recording: "
              + ", ".join(w["word"] for w in example.words if w["informative"]) + ".", ""]
    lines.append(f"Evaluation time: {time.perf_counter() - started:.0f} s on this machine "
                 f"({torch.get_num_threads()} threads).")
    markdown = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    return markdown


def _deletion_figure(curves, explained_by):
    """Accuracy against the masked fraction: one panel per kind of recording."""
    from matplotlib.figure import Figure

    from camlens.audio.plot import METHOD_COLOURS

    figure = Figure(figsize=(10, 4), layout="constrained")
    for axes, (kind, by_method) in zip(figure.subplots(1, 2, sharey=True), curves.items(),
                                       strict=True):
        percent = [100 * fraction for fraction in FRACTIONS]
        for method, curve in by_method.items():
            if method.startswith("random:"):
                model_name = method.split(":", 1)[1]
                axes.plot(percent, curve["random"], linestyle="--", marker=".",
                          color="grey" if model_name == "accent-attention" else "black",
                          label=f"random ({model_name})")
            else:
                axes.plot(percent, curve["relevant"], marker="o",
                          color=METHOD_COLOURS.get(method),
                          label=f"{TITLES[method]} ({explained_by[method]})")
        axes.set_title(f"{kind} test recordings")
        axes.set_xlabel("duration masked (%), most relevant 0.1 s blocks first")
        axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.axes[0].set_ylabel("accuracy")
    return figure
