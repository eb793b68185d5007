"""The pieces of the relevance evaluation, on hand-built examples."""

from __future__ import annotations

import pytest
import torch

from camlens.audio.relevance import AudioRelevance
from camlens.experiments.audio import (
    RecordingResult,
    block_relevance,
    blocks,
    gap_shares,
    informative_word_ratios,
    masked_waveform,
    span_union_share,
    word_ranking,
)


def result_with(frames, words, gaps=()) -> RecordingResult:
    frames = torch.tensor(frames, dtype=torch.float64)
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
