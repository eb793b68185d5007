"""The permutation test (Jain and Wallace 2019), uniform weights (Wiegreffe and Pinter 2019) and
attention mass on words, on hand-built cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from camlens.experiments.attention_permutation import (
    PooledRecording,
    permutation_test,
    pooled_states,
    random_orders,
    total_variation,
    word_attention_mass,
)
from camlens.experiments.audio_batches import RaggedWaveforms, predict
from camlens.zoo.accent import AccentAttention


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_total_variation_known_answers():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    q = torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.6, 0.4]])
    torch.testing.assert_close(total_variation(p, q), torch.tensor([0.0, 1.0, 0.4]))


def test_permutation_test_on_a_hand_built_recording():
    # logits = e = sum_t w_t h_t; alpha puts everything on the first segment
    recording = PooledRecording(states=torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.1, 0.0]]),
                                alpha=torch.tensor([1.0, 0.0, 0.0]), logits=torch.zeros(2))
    orders = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    result = permutation_test(recording, lambda pooled: pooled, orders)
    original = sigmoid(2.0)  # p(class 0) with e = (2, 0)
    swapped = original - sigmoid(-2.0)  # e = (0, 2): the other class
    third = original - sigmoid(0.1)  # e = (0.1, 0): still class 0
    assert result.max_tvd == pytest.approx(swapped, abs=1e-6)
    assert result.median_tvd == pytest.approx(third, abs=1e-6)
    assert result.survival == pytest.approx(2 / 3)
    # uniform weights: e = (2.1 / 3, 2 / 3), still class 0
    assert result.uniform_tvd == pytest.approx(original - sigmoid(0.1 / 3), abs=1e-6)
    assert result.uniform_survives


def test_identical_states_make_every_weighting_the_same():
    recording = PooledRecording(states=torch.tensor([[1.0, -1.0]] * 5),
                                alpha=torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1]),
                                logits=torch.zeros(2))
    orders = random_orders(5, 50, torch.Generator().manual_seed(0))
    result = permutation_test(recording, lambda pooled: pooled, orders)
    assert result.median_tvd == result.max_tvd == pytest.approx(0.0, abs=1e-7)
    assert result.survival == 1.0 and result.uniform_tvd == pytest.approx(0.0, abs=1e-7)


def test_orders_must_be_permutations_of_the_valid_segments():
    orders = random_orders(7, 30, torch.Generator().manual_seed(1))
    assert orders.shape == (30, 7)
    assert torch.equal(orders.sort(dim=1).values, torch.arange(7).expand(30, 7))
    assert len({tuple(row) for row in orders.tolist()}) > 20  # not one order repeated
    recording = PooledRecording(torch.zeros(3, 2), torch.full((3,), 1 / 3), torch.zeros(2))
    with pytest.raises(ValueError, match="permutation"):
        permutation_test(recording, lambda pooled: pooled, torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match=r"\(P, 3\)"):
        permutation_test(recording, lambda pooled: pooled, torch.tensor([[0, 1]]))


def test_word_attention_mass_spreads_each_segment_over_its_span():
    spans = torch.tensor([[0.0, 1.0], [1.0, 2.0]])
    words = [{"start_s": 0.0, "end_s": 1.0, "informative": True},
             {"start_s": 1.0, "end_s": 1.5, "informative": False}]
    mass = word_attention_mass(torch.tensor([0.75, 0.25]), spans, words)
    assert mass.informative == pytest.approx(0.75)
    assert mass.neutral == pytest.approx(0.125)
    assert mass.uniform_informative == pytest.approx(0.5)
    assert mass.uniform_neutral == pytest.approx(0.25)
    with pytest.raises(ValueError, match="weights for"):
        word_attention_mass(torch.ones(3) / 3, spans, words)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_pooled_states_give_back_the_models_own_output(pooling):
    torch.manual_seed(0)
    model = AccentAttention(channels=16, embedding=16, hidden=8, attention_dim=8,
                            pooling=pooling).eval()
    generator = torch.Generator().manual_seed(3)
    waveforms = RaggedWaveforms([0.3 * torch.randn(n, generator=generator)
                                 for n in (24000, 9000, 17000)])
    pooled = pooled_states(model, waveforms, batch_size=2)
    logits = predict(model, waveforms, batch_size=2)
    for row, item in enumerate(pooled):
        assert len(item.alpha) == model.frame_grid(int(waveforms.lengths[row])).segments
        assert float(item.alpha.sum()) == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(item.logits, logits[row], atol=1e-5, rtol=0)
        with torch.no_grad():  # the permutation test's recomputation is the model's pooling
            torch.testing.assert_close(model.classifier(item.alpha @ item.states), item.logits,
                                       atol=1e-5, rtol=0)
    if pooling == "mean":
        assert all(torch.allclose(item.alpha, torch.full_like(item.alpha, 1 / len(item.alpha)))
                   for item in pooled)
