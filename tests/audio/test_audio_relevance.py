"""The relevance API: spans, the three methods, the word-level merge, the table, model state."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import camlens
from camlens.audio import AudioRelevance, WordSpan, audio_relevance
from camlens.audio.relevance import log_odds, segments_to_frames, word_spans
from camlens.zoo.accent import AccentAttention, AccentCNN

RATE = 16000


@pytest.fixture(scope="module")
def models() -> tuple[AccentAttention, AccentCNN]:
    torch.manual_seed(0)
    return AccentAttention().eval(), AccentCNN().eval()


@pytest.fixture(scope="module")
def waveform() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    samples = int(2.37 * RATE)
    envelope = (torch.sin(torch.arange(samples) / RATE * 9.0) > 0.2).float()
    return 0.2 * envelope * torch.randn(samples, generator=generator)


def hand_built(words=None) -> AudioRelevance:
    """Ten 0.1 s frames over 1 s with known relevance."""
    frames = torch.tensor([0, 0, 0.1, 0.1, 0.4, 0.2, 0.1, 0.1, 0, 0], dtype=torch.float64)
    return AudioRelevance(
        duration_s=1.0, frame_edges=torch.linspace(0, 1, 11, dtype=torch.float64),
        segments=torch.tensor([[0.0, 0.5], [0.5, 1.0]]),
        segment_relevance={"attention": torch.tensor([0.6, 0.4])},
        frame_relevance={"attention": frames}, target=1,
        probabilities=torch.tensor([0.2, 0.8]),
        words=word_spans(words if words is not None else [
            ("gamma", 0.6, 1.0), {"word": "alpha", "start_s": 0.2, "end_s": 0.4,
                                  "informative": True}, WordSpan("beta", 0.45, 0.6)]),
    )


def test_word_level_merge_by_hand():
    relevance = hand_built()
    rows = relevance.word_relevance()
    assert [row["word"] for row in rows] == ["alpha", "beta", "gamma"]  # sorted by start
    assert [row["attention"] for row in rows] == pytest.approx([0.2, 0.4, 0.2])
    assert [row["time_share"] for row in rows] == pytest.approx([0.2, 0.15, 0.4])
    assert rows[0]["informative"] is True and rows[1]["informative"] is None
    assert relevance.span_relevance(0.0, 1.0) == pytest.approx(1.0)
    assert relevance.span_relevance(0.45, 0.5) == pytest.approx(0.2)  # half of a 0.4 frame
    # overlapping spans count once
    assert relevance.span_mask_relevance([(0.2, 0.4), (0.3, 0.5)], "attention") == \
        pytest.approx(0.6)


def test_table_text_format():
    table = hand_built().table()
    lines = table.splitlines()
    assert re.match(r"time span\s+time\s+attention\s+words$", lines[0])
    row = re.compile(r"^\s*(\d+\.\d\d) -\s+(\d+\.\d\d) s\s+(\d+\.\d)%\s+(\d+\.\d)%\s+(\S+)$")
    parsed = [row.match(line).groups() for line in lines[1:]]
    assert [(start, end, words) for start, end, _, _, words in parsed] == [
        ("0.00", "0.20", "-"), ("0.20", "0.40", "alpha"), ("0.40", "0.45", "-"),
        ("0.45", "0.60", "beta"), ("0.60", "1.00", "gamma")]
    assert [float(share) for *_, share, _ in parsed] == [0.0, 20.0, 20.0, 40.0, 20.0]
    assert sum(float(time) for _, _, time, _, _ in parsed) == pytest.approx(100.0)
    segments = hand_built().table(spans="segments", step_s=0.5).splitlines()
    assert len(segments) == 3 and segments[1].endswith("alpha beta")
    with pytest.raises(ValueError, match="needs word time stamps"):
        hand_built(words=[]).table(spans="words")


def test_segments_to_frames_keeps_the_total():
    frames = segments_to_frames(torch.tensor([0.5, 0.5]), torch.tensor([[0, 4], [2, 6]]), 6)
    torch.testing.assert_close(frames, torch.tensor([0.125, 0.125, 0.25, 0.25, 0.125, 0.125],
                                                    dtype=torch.float64))


ATTENTION = {"methods": ("attention", "attention-gradient"), "layer": "attention.weights"}
GRADCAM = {"methods": ("gradcam",), "layer": "features"}


def both(models, waveform, **keywords) -> AudioRelevance:
    """The three methods of the accent evaluation, the CNN explaining the attention model's
    class."""
    attention_model, cnn = models
    first = audio_relevance(attention_model, waveform, **ATTENTION, **keywords)
    return first.merge(audio_relevance(cnn, waveform, **GRADCAM, target=first.target))


def test_spans_cover_the_recording_and_every_method_sums_to_one(models, waveform):
    attention_model, cnn = models
    # For two classes one target's attention-gradient is the other's negated: take the one
    # with positive evidence (a random model may have none for its predicted class).
    relevance = max((both(models, waveform, target=target) for target in (0, 1)),
                    key=lambda r: float(r.segment_relevance["attention-gradient"].sum()))
    assert relevance.methods == ["attention", "attention-gradient", "gradcam"]
    segments = relevance.segments
    assert segments[0, 0] == 0.0
    assert float(segments[-1, 1]) == pytest.approx(len(waveform) / RATE)
    assert (segments[1:, 0] <= segments[:-1, 1]).all()  # no hole between segments
    assert (segments[:, 1] > segments[:, 0]).all()
    frames = attention_model.logmel.config.frame_count(len(waveform))
    for method in relevance.methods:
        assert relevance.frame_relevance[method].shape == (frames,)
        assert relevance.segment_relevance[method].shape == (len(segments),)
        assert float(relevance.frame_relevance[method].sum()) == pytest.approx(1.0)
        assert float(relevance.segment_relevance[method].sum()) == pytest.approx(1.0)
        assert (relevance.frame_relevance[method] >= 0).all()
    assert relevance.table("segments").count("\n") == 5  # header and five 0.5 s rows


def test_attention_gradient_by_hand(models, waveform):
    """alpha_t * (d s / d e) . h_t, with h_t read from the BLSTM and e = sum_t alpha_t h_t."""
    attention_model = models[0]
    captured = {}
    handles = [attention_model.blstm.register_forward_hook(
        lambda module, args, output: captured.__setitem__("states", output[0].detach())),
        attention_model.attention.weights.register_forward_hook(
        lambda module, args, output: captured.__setitem__("alpha", output.detach()[:, 0]))]
    try:
        with torch.no_grad():
            attention_model(waveform[None])
    finally:
        for handle in handles:
            handle.remove()
    states, alpha = captured["states"][0], captured["alpha"][0]
    pooled = (alpha[:, None] * states).sum(dim=0).requires_grad_(True)
    score = log_odds(1)(attention_model.classifier(pooled[None]))
    (gradient,) = torch.autograd.grad(score.sum(), pooled)
    contribution = alpha * (states @ gradient)
    # the log-odds of class 0 are those of class 1 negated: take the class with positive parts
    target = 1 if float(torch.relu(contribution).sum()) > 0 else 0
    expected = torch.relu(contribution if target == 1 else -contribution)
    assert float(expected.sum()) > 0
    expected = expected / expected.sum()
    relevance = audio_relevance(attention_model, waveform, methods=["attention-gradient"],
                                layer="attention.weights", target=target)
    torch.testing.assert_close(relevance.segment_relevance["attention-gradient"].float(),
                               expected, atol=1e-5, rtol=1e-4)


def hook_count(model: nn.Module) -> int:
    return sum(len(module._forward_hooks) + len(module._forward_pre_hooks)
               + len(module._backward_hooks) for module in model.modules())


def test_models_are_left_as_they_were(waveform):
    torch.manual_seed(1)
    attention_model, cnn = AccentAttention().train(), AccentCNN()
    cnn.eval()
    cnn.features[0].weight.requires_grad_(False)
    marker = torch.ones_like(attention_model.classifier[1].weight)
    attention_model.classifier[1].weight.grad = marker
    states = [{key: value.clone() for key, value in m.state_dict().items()}
              for m in (attention_model, cnn)]
    relevance = both((attention_model, cnn), waveform)
    assert len(relevance.methods) == 3
    assert attention_model.training and all(m.training for m in attention_model.modules())
    assert not cnn.training
    assert not cnn.features[0].weight.requires_grad
    assert attention_model.classifier[1].weight.grad is marker
    assert all(p.grad is None for n, p in attention_model.named_parameters()
               if n != "classifier.1.weight")
    assert all(p.grad is None for p in cnn.parameters())
    assert hook_count(attention_model) == 0 and hook_count(cnn) == 0
    for model, before in zip((attention_model, cnn), states, strict=True):
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key  # BatchNorm statistics included


def test_bad_requests_name_what_is_accepted(models, waveform):
    attention_model, cnn = models
    with pytest.raises(TypeError, match="merge"):
        audio_relevance(attention_model, waveform, cnn=cnn)  # the old two-model call
    with pytest.raises(ValueError, match="unknown method 'attentoin'"):
        audio_relevance(cnn, waveform, methods=["attentoin"], layer="features")
    with pytest.raises(ValueError, match="no spatial or token axis"):
        audio_relevance(cnn, waveform, methods=["gradcam"], layer="classifier")
    with pytest.raises(IndexError, match="out of range"):
        audio_relevance(attention_model, waveform, target=2, **ATTENTION)
    with pytest.raises(ValueError, match="one class per input"):
        audio_relevance(attention_model, waveform, target=camlens.TopK(2), **ATTENTION)
    first = audio_relevance(attention_model, waveform, **ATTENTION)
    with pytest.raises(ValueError, match="both results have method"):
        first.merge(first)
    with pytest.raises(ValueError, match="ends"):
        word_spans([("late", 1.0, 0.5)])
    with pytest.raises(ValueError, match="no relevance from method"):
        hand_built().span_relevance(0, 1, "gradcam")


def test_a_model_without_a_frame_grid_gets_ten_millisecond_frames(waveform):
    """A user's model: a 1-D CNN over the waveform itself; its map is spread over 10 ms frames
    and the class names default to indices (no accent names assumed)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Unflatten(1, (1, -1)), nn.Conv1d(1, 4, 400, stride=160),
                          nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))
    relevance = audio_relevance(model.eval(), waveform, methods=("gradcam", "layercam"),
                                layer="2")
    frames = len(waveform) // 160 + 1
    assert relevance.frame_relevance["gradcam"].shape == (frames,)
    assert relevance.class_names == ("0", "1", "2")
    assert relevance.summary().startswith(f"predicted: {relevance.predicted} (p = ")
