"""The accent models: attention weights, padding, 1-D Grad-CAM, the zoo entries."""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens import zoo
from camlens.zoo.accent import AccentAttention, AccentCNN

RATE = 16000


@pytest.fixture(scope="module")
def attention_model() -> AccentAttention:
    torch.manual_seed(0)
    return AccentAttention().eval()


@pytest.fixture(scope="module")
def cnn() -> AccentCNN:
    torch.manual_seed(0)
    return AccentCNN().eval()


def speechlike(seconds: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    samples = int(seconds * RATE)
    envelope = (torch.sin(torch.arange(samples) / RATE * 6.0) > 0).float()
    return 0.3 * envelope * torch.randn(samples, generator=generator)


def attention_weights(model: AccentAttention, waveform: torch.Tensor) -> torch.Tensor:
    """The engine's ``attention`` method: the weights ``(B, S)`` at ``attention.weights``."""
    return camlens.explain(model, waveform, method="attention", layer="attention.weights").raw


def test_attention_weights_are_a_distribution_over_the_segments(attention_model):
    waveform = speechlike(2.34)[None]
    explanation = camlens.explain(attention_model, waveform, method="attention",
                                  layer="attention.weights", target=camlens.TopK(2))
    assert explanation.scores.shape == (1, 2)
    segments = attention_model.frame_grid(waveform.shape[1]).segments
    assert explanation.raw.shape == (1, 2, segments)  # the same map for both classes
    torch.testing.assert_close(explanation.raw[:, 0], explanation.raw[:, 1])
    alpha = explanation.raw[:, 0]
    assert (alpha >= 0).all()
    assert float(alpha.sum()) == pytest.approx(1.0, abs=1e-5)


def test_padding_is_left_out(attention_model, cnn):
    short, long = speechlike(1.2, seed=1), speechlike(2.5, seed=2)
    batch = torch.zeros(2, len(long))
    batch[0, : len(short)], batch[1] = short, long
    lengths = torch.tensor([len(short), len(long)])
    for model in (attention_model, cnn):
        with torch.no_grad():
            together = model(batch, lengths)
            alone = torch.cat([model(short[None]), model(long[None])])
        # the attention model's last segment sees a frame or two of padding through the TDNN
        torch.testing.assert_close(together, alone, atol=2e-3, rtol=0)
    captured = []
    handle = attention_model.attention.weights.register_forward_hook(
        lambda module, args, output: captured.append(output))
    try:
        with torch.no_grad():
            attention_model(batch, lengths)
    finally:
        handle.remove()
    alpha = captured[0][:, 0]
    segments_short = attention_model.frame_grid(len(short)).segments
    assert (alpha[0, segments_short:] == 0).all()
    alone_alpha = attention_weights(attention_model, short[None])
    torch.testing.assert_close(alpha[0, :segments_short], alone_alpha[0], atol=2e-3, rtol=0)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(2))


def test_grad_cam_of_the_cnn_is_one_dimensional_with_the_recording_length(cnn):
    waveform = speechlike(1.7)[None]
    explanation = camlens.explain(cnn, waveform, method="gradcam", layer="features")
    frames = cnn.logmel.config.frame_count(waveform.shape[1])
    assert explanation.raw.shape == (1, frames // 4)
    assert explanation.maps.shape == (1, waveform.shape[1])
    assert float(explanation.maps.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["accent-attention", "accent-cnn"])
def test_shipped_weights_load_are_small_and_record_their_accuracy(name):
    path = zoo.weights_path(name)
    assert path.stat().st_size <= 2 * 1024 * 1024
    model = zoo.load(name)
    weights = zoo.get_weights(name)
    assert not model.training and weights.class_names == ("en-gb", "en-us")
    assert weights.input_kind == "audio"
    assert weights.metrics["test_accuracy"] >= 0.9
    assert weights.metadata["command"] == f"camlens train {name} --seed 0"
    layer = dict(model.named_modules())[weights.target_layer]
    assert layer is not None
