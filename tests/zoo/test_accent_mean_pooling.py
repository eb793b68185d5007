"""accent-mean: the accent model with mean pooling over the valid segments (issue 17)."""

from __future__ import annotations

import pytest
import torch

from camlens import zoo
from camlens.zoo.accent import AccentAttention, MeanPooling

RATE = 16000


def noise(seconds: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(int(seconds * RATE), generator=generator)


@pytest.fixture(scope="module")
def mean_model() -> AccentAttention:
    torch.manual_seed(0)
    return AccentAttention(channels=16, embedding=16, hidden=8, pooling="mean").eval()


def test_mean_pooling_averages_the_valid_states_and_passes_uniform_weights():
    pooling = MeanPooling()
    captured = []
    pooling.weights.register_forward_hook(lambda module, args, output: captured.append(output))
    states = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    pooled = pooling(states, mask)
    torch.testing.assert_close(pooled[0], states[0, :2].mean(dim=0))
    torch.testing.assert_close(pooled[1], states[1].mean(dim=0))
    torch.testing.assert_close(captured[0][:, 0], torch.tensor([[0.5, 0.5, 0, 0],
                                                                [0.25, 0.25, 0.25, 0.25]]))
    torch.testing.assert_close(pooling(states), states.mean(dim=1))  # no mask: every segment


def test_the_mean_model_is_the_attention_model_without_the_attention_parameters(mean_model):
    attention = AccentAttention(channels=16, embedding=16, hidden=8)
    own, other = set(mean_model.state_dict()), set(attention.state_dict())
    assert own < other
    assert other - own == {"attention.project.weight", "attention.project.bias",
                           "attention.context.weight"}
    with pytest.raises(ValueError, match="pooling must be one of"):
        AccentAttention(pooling="max")


def test_the_mean_model_leaves_padding_out(mean_model):
    short, long = noise(1.3, 1), noise(2.6, 2)
    batch = torch.zeros(2, len(long))
    batch[0, : len(short)], batch[1] = short, long
    with torch.no_grad():
        together = mean_model(batch, torch.tensor([len(short), len(long)]))
        alone = torch.cat([mean_model(short[None]), mean_model(long[None])])
    # as for the attention model, the last segment sees a frame or two of padding via the TDNN
    torch.testing.assert_close(together, alone, atol=2e-3, rtol=0)


def test_accent_mean_is_registered_with_the_attention_layer_name():
    weights = zoo.get_weights("accent-mean")
    model = weights.build()
    assert isinstance(model, AccentAttention) and model.pooling == "mean"
    assert weights.target_layer in dict(model.named_modules())
    assert weights.input_kind == "audio" and weights.class_names == ("en-gb", "en-us")
    if weights.file.is_file():  # the shipped weights: trained by the documented command
        assert weights.metadata["command"] == "camlens train accent-mean --seed 0"
        assert weights.metrics["test_accuracy"] >= 0.8
        zoo.load("accent-mean")
