"""The pieces of the relevance evaluation, on hand-built examples; the 95% intervals of every
figure of docs/audio.md."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from camlens.audio.relevance import AudioRelevance
from camlens.experiments import audio
from camlens.experiments.audio import (
    BASELINE,
    FRACTIONS,
    METHODS,
    RecordingResult,
    block_relevance,
    blocks,
    bootstrap_figure,
    deletion_correct,
    deletion_curve,
    gap_shares,
    informative_word_ratios,
    masked_waveform,
    number_cell,
    percent_cell,
    random_ranking,
    span_union_share,
    wilson_figure,
    word_ranking,
    word_ratio_figures,
)
from camlens.experiments.audio_batches import RaggedWaveforms
from camlens.metrics.intervals import bootstrap_interval, wilson_interval

PAGE = Path(__file__).resolve().parents[2] / "docs" / "audio.md"
#: ``value [low, high]``, the value a percentage or a plain number.
WITH_INTERVAL = re.compile(r"^(-?[\d.]+)%? \[(-?[\d.]+), (-?[\d.]+)\]$")


def result_with(frames, words, gaps=()) -> RecordingResult:
    frames = torch.as_tensor(frames, dtype=torch.float64)
    count = len(frames)
    relevance = AudioRelevance(
        duration_s=count * 0.1, frame_edges=torch.linspace(0, count * 0.1, count + 1,
                                                           dtype=torch.float64),
        segments=torch.tensor([[0.0, count * 0.1]]), segment_relevance={"m": torch.ones(1)},
        frame_relevance={"m": frames}, target=0, probabilities=torch.tensor([1.0, 0.0]))
    return RecordingResult("mixed", 0, [dict(w) for w in words], [dict(g) for g in gaps],
                           relevance)


def word(text, start, end, informative=False):
    return {"word": text, "start_s": start, "end_s": end, "informative": informative}


def test_span_union_share_counts_overlaps_once():
    assert span_union_share([(0.0, 0.4), (0.2, 0.6), (0.8, 2.0)], 1.0) == pytest.approx(0.8)


def test_informative_ratio_is_relevance_share_over_time_share():
    # 1 s, informative word on the first 0.2 s holding half the relevance: ratio 0.5 / 0.2
    frames = [0.25, 0.25] + [0.5 / 8] * 8
    result = result_with(frames, [word("tomato", 0.0, 0.2, True), word("sun", 0.3, 0.6)])
    uniform = result_with([0.1] * 10, [word("tomato", 0.0, 0.2, True)])
    assert informative_word_ratios([result, uniform], "m") == pytest.approx([2.5, 1.0])


def test_gap_shares():
    result = result_with([0.0] * 5 + [0.2] * 5, [], gaps=[
        {"kind": "silence", "start_s": 0.0, "end_s": 0.5},
        {"kind": "noise", "start_s": 0.5, "end_s": 0.7}])
    assert gap_shares([result], "m", "silence") == pytest.approx((0.0, 0.5))
    assert gap_shares([result], "m", "noise") == pytest.approx((0.4, 0.2))


def test_blocks_cover_and_masking_removes_the_asked_duration():
    spans = blocks(1.05)
    assert len(spans) == 11 and spans[0, 0] == 0 and spans[-1, 1] == pytest.approx(1.05)
    waveform = torch.ones(16800)  # 1.05 s
    order = torch.arange(len(spans)).flip(0)  # last blocks first
    masked = masked_waveform(waveform, spans, order, 0.3)
    zeroed = int((masked == 0).sum())
    assert 0.3 * 16800 <= zeroed <= 0.3 * 16800 + 1600  # whole blocks, at most one extra
    assert masked[: 16800 - zeroed].eq(1).all()  # the last blocks, nothing else
    assert torch.equal(masked_waveform(waveform, spans, order, 0.0), waveform)


def test_block_relevance_and_word_ranking():
    result = result_with([0.5, 0.5] + [0.0] * 8, [word("car", 0.0, 0.2, True),
                                                   word("sun", 0.2, 1.0)])
    torch.testing.assert_close(block_relevance(result.relevance, "m", blocks(1.0)),
                               torch.tensor([0.5, 0.5] + [0.0] * 8, dtype=torch.float64))
    ranked = word_ranking([result] * 3, "m")
    assert [w for w, _, _ in ranked] == ["car", "sun"]
    assert ranked[0][1] == pytest.approx(5.0) and ranked[0][2] == 3


# --- 95% intervals -----------------------------------------------------------------------------


def assert_interval_around(cell: str) -> None:
    """``cell`` is ``value [low, high]`` with ``low <= value <= high``."""
    match = WITH_INTERVAL.match(cell.strip())
    assert match, f"no interval in {cell!r}"
    value, low, high = (float(group) for group in match.groups())
    assert low <= value <= high, cell


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of the body rows (below the ``|---`` line) of every markdown table in
    ``lines``."""
    rows, in_body = [], False
    for line in lines:
        if in_body and line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        in_body = line.startswith("|---") or (in_body and line.startswith("|"))
    return rows


def test_figures_are_the_interval_functions():
    assert wilson_figure(8, 10) == (0.8, *wilson_interval(8, 10))
    assert wilson_figure(8, 10, value=0.75) == (0.75, *wilson_interval(8, 10))
    values = [0.2, 1.4, 2.5, 3.1, 0.7]
    assert bootstrap_figure(values) == pytest.approx(
        (float(np.mean(values)), *bootstrap_interval(torch.tensor(values), 1000, 0)))
    assert bootstrap_figure(np.array(values), value=1.5)[0] == 1.5


def test_cells_keep_the_figure_and_add_the_interval():
    assert percent_cell((0.96, 0.9364, 0.9751)) == "96.0% [93.6, 97.5]"
    assert percent_cell((0.5, 0.45, 0.55), 0) == "50% [45, 55]"
    assert number_cell((2.344, 2.21, 2.468)) == "2.34 [2.21, 2.47]"


def varied_results(count: int = 12) -> list[RecordingResult]:
    """Mixed recordings of 1 s with every method's relevance, an informative word and gaps of
    every kind, the relevance differing between recordings."""
    results = []
    generator = torch.Generator().manual_seed(3)
    for index in range(count):
        frames = {method: torch.rand(10, generator=generator, dtype=torch.float64)
                  for method in [*METHODS, BASELINE]}
        frames = {method: values / values.sum() for method, values in frames.items()}
        result = result_with(frames["attention"], [
            word("tomato", 0.0, 0.2 + 0.05 * (index % 3), True), word("sun", 0.3, 0.6)], gaps=[
            {"kind": "silence", "start_s": 0.6, "end_s": 0.8},
            {"kind": "noise", "start_s": 0.8, "end_s": 0.9},
            {"kind": "pause", "start_s": 0.25, "end_s": 0.3}])
        result.relevance.frame_relevance = frames
        results.append(result)
    return results


def test_informative_section_gives_each_figure_its_interval():
    results = varied_results()
    rows = table_rows(audio._informative_section(results))
    assert [row[0] for row in rows] == [audio.TITLES[m] for m in [*METHODS, BASELINE]]
    for row, method in zip(rows, [*METHODS, BASELINE], strict=True):
        _, _, mean_ratio, median, above, share = row
        for cell in (mean_ratio, above, share):
            assert_interval_around(cell)
        assert "[" not in median  # a median stays without
        ratios = informative_word_ratios(results, method)
        assert mean_ratio == number_cell((ratios.mean(), *bootstrap_interval(
            torch.from_numpy(ratios), 1000, 0)))
        above_two = int((ratios >= 2).sum())
        assert above == percent_cell((above_two / len(ratios),
                                      *wilson_interval(above_two, len(ratios))), 0)


def test_gap_section_gives_each_share_its_interval():
    results = varied_results()
    rows = table_rows(audio._gap_section(results))
    assert len(rows) == len(METHODS) + 1
    for row in rows:
        assert len(row) == 7
        for cell in row[1:]:
            assert_interval_around(cell)
    silence = [r.relevance.span_mask_relevance([(0.6, 0.8)], "attention") for r in results]
    assert rows[0][1] == percent_cell(bootstrap_figure(silence))
    assert float(rows[0][1].split("%")[0]) == pytest.approx(
        100 * gap_shares(results, "attention", "silence")[0], abs=0.05)


class FirstSampleModel(nn.Module):
    """Says accent 0 when a recording's first sample is not zero (masked), accent 1 when it
    is."""

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        first = (waveforms[:, 0] != 0).float()
        return torch.stack([first, 1 - first], dim=1)


def deletion_setup(count: int = 8):
    waveforms = RaggedWaveforms([torch.ones(16000 + 1600 * row) for row in range(count)])
    results = [result_with([0.1] * (10 + row), []) for row in range(count)]
    for result in results:
        frames = result.relevance.frame_relevance["m"]
        result.relevance.frame_relevance = {method: frames for method in METHODS}
    return FirstSampleModel(), results, waveforms


def test_deletion_correct_is_per_recording_and_the_curve_its_mean():
    model, results, waveforms = deletion_setup()
    first_block_first = lambda row, spans: torch.arange(len(spans))  # noqa: E731
    correct = deletion_correct(model, results, waveforms, first_block_first, (0.0, 0.3))
    assert correct.shape == (2, 8) and correct.dtype == torch.bool
    assert correct[0].all() and not correct[1].any()
    assert deletion_curve(model, results, waveforms, first_block_first, (0.0, 0.3)) == [1.0, 0.0]


def test_random_deletion_is_the_mean_of_the_draws_with_a_bootstrap_over_recordings():
    model, results, waveforms = deletion_setup()
    figures = audio._random_deletion(model, results, waveforms)
    draws = torch.stack([deletion_correct(model, results, waveforms, random_ranking(seed))
                         for seed in range(audio.RANDOM_REPEATS)])
    per_recording = draws.double().mean(dim=0)
    curves = [deletion_curve(model, results, waveforms, random_ranking(seed))
              for seed in range(audio.RANDOM_REPEATS)]
    assert len(figures) == len(FRACTIONS)
    for position, (value, low, high) in enumerate(figures):
        assert value == pytest.approx(np.mean([curve[position] for curve in curves]))
        assert (low, high) == pytest.approx(bootstrap_interval(per_recording[position], 1000, 0))
        assert low <= value <= high


def test_deletion_table_gives_each_accuracy_its_interval():
    model, results, waveforms = deletion_setup()
    curves = {method: audio._relevance_deletion(model, results, waveforms, method)
              for method in METHODS}
    curves.update({f"random:{name}": audio._random_deletion(model, results, waveforms)
                   for name in ("accent-attention", "accent-cnn")})
    rows = table_rows(audio._deletion_table("mixed", curves))
    assert [row[0] for row in rows] == [f"{fraction:.0%}" for fraction in FRACTIONS]
    for row in rows:
        assert len(row) == len(METHODS) + 3
        for cell in row[1:]:
            assert_interval_around(cell)
    assert rows[0][1] == percent_cell((1.0, *wilson_interval(8, 8)))


def test_word_ratio_figures_bootstrap_over_the_words():
    ranked = [("car", 3.0, 4), ("park", 2.0, 3), ("sun", 0.5, 5), ("pen", 1.0, 3),
              ("bath", 2.5, 3)]
    accent, other = word_ratio_figures(ranked, {"car", "park", "bath"})
    assert accent == pytest.approx((2.5, *bootstrap_interval(torch.tensor([3.0, 2.0, 2.5]),
                                                              1000, 0)))
    assert other == pytest.approx((0.75, *bootstrap_interval(torch.tensor([0.5, 1.0]),
                                                             1000, 0)))


def test_the_page_gives_every_figure_over_recordings_its_interval():
    lines = PAGE.read_text().splitlines()
    sections = "\n".join(lines).split("\n## ")
    by_title = {section.splitlines()[0]: section.splitlines() for section in sections[1:]}
    accuracy = table_rows(by_title["Accuracy"])
    assert [row[0] for row in accuracy] == ["accent-attention", "accent-cnn"]
    cells = [cell for row in accuracy for cell in row[1:4]]
    informative = table_rows(by_title["Relevance on informative words (mixed recordings)"])
    cells += [cell for row in informative for cell in (row[2], row[4], row[5])]
    gaps = table_rows(by_title["Silence and noise (mixed recordings)"])
    cells += [cell for row in gaps for cell in row[1:]]
    deletion = table_rows(by_title["Segment deletion"])
    assert len(deletion) == 2 * len(FRACTIONS)
    cells += [cell for row in deletion for cell in row[1:]]
    words = table_rows(by_title["Which words get the most relevance (whole recordings)"])
    cells += [cell for row in words[:len(METHODS) + 1] for cell in row[1:3]]
    assert len(cells) == 6 + 12 + 24 + 60 + 8
    for cell in cells:
        assert_interval_around(cell)
