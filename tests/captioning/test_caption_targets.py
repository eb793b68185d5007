"""Explaining captions: whole-caption and per-token targets under teacher forcing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens.captioning import (
    CaptionTarget,
    caption_tokens,
    energy_inside_share,
    explain_caption,
    inside_outside_ratio,
)
from camlens.data import DigitScenes, materialize
from camlens.zoo.captioner import END, MAX_TOKENS, START, DigitsCaptioner, teacher_forcing_tokens


@pytest.fixture(scope="module")
def captioner() -> DigitsCaptioner:
    torch.manual_seed(0)
    return DigitsCaptioner().eval()


@pytest.fixture(scope="module")
def scenes() -> dict[str, torch.Tensor]:
    return materialize(DigitScenes(3, "test"))


def test_teacher_forcing_tokens():
    captions = torch.tensor([[3, 1, -1, -1], [7, 7, 2, 9]])
    inputs, targets = teacher_forcing_tokens(captions, torch.tensor([2, 4]))
    assert inputs.tolist() == [[START, 3, 1, END, END], [START, 7, 7, 2, 9]]
    assert targets.tolist() == [[3, 1, END, -1, -1], [7, 7, 2, 9, END]]
    again_inputs, scored = caption_tokens([[3, 1], [7, 7, 2, 9]], END, START, MAX_TOKENS)
    assert torch.equal(again_inputs, inputs) and torch.equal(scored, targets)


def test_whole_caption_score_is_the_sum_of_token_scores(captioner, scenes):
    inputs, scored = teacher_forcing_tokens(scenes["caption"], scenes["count"])
    with torch.no_grad():
        logits = captioner(scenes["image"], inputs)
    per_token = CaptionTarget(scored, per_token=True, score="logprob")(logits)
    whole = CaptionTarget(scored)(logits)
    torch.testing.assert_close(whole, per_token.sum(dim=1))
    assert (per_token[scored < 0] == 0).all() and (per_token[scored >= 0] < 0).all()
    expected = torch.log_softmax(logits, dim=-1)[0, 0, scored[0, 0]]
    torch.testing.assert_close(per_token[0, 0], expected)


def test_per_token_default_is_the_logit_and_the_caption_default_the_log_probability(
        captioner, scenes):
    inputs, scored = teacher_forcing_tokens(scenes["caption"], scenes["count"])
    with torch.no_grad():
        logits = captioner(scenes["image"], inputs)
    per_token = CaptionTarget(scored, per_token=True)(logits)
    torch.testing.assert_close(per_token[1, 2], logits[1, 2, scored[1, 2]])
    assert (per_token[scored < 0] == 0).all()
    summed_logits = CaptionTarget(scored, score="logit")(logits)
    torch.testing.assert_close(summed_logits, per_token.sum(dim=1))
    with pytest.raises(ValueError, match=r"one of \('logit', 'logprob'\), got 'prob'"):
        CaptionTarget(scored, score="prob")


def test_per_token_maps_in_one_call_equal_one_call_per_token(captioner, scenes):
    inputs, scored = teacher_forcing_tokens(scenes["caption"], scenes["count"])
    exp = explain_caption(captioner, scenes["image"], inputs, scored)
    assert exp.maps.shape == (3, MAX_TOKENS, 64, 128)
    for position in range(MAX_TOKENS):
        only = torch.full_like(scored, -1)
        only[:, position] = scored[:, position]
        single = explain_caption(captioner, scenes["image"], inputs, only, per_token=False,
                                 score="logit")
        torch.testing.assert_close(exp.maps[:, position], single.maps, atol=1e-5, rtol=1e-4)
    padded = scored < 0
    assert (exp.maps[padded] == 0).all()  # padding explains nothing


def test_whole_caption_map(captioner, scenes):
    inputs, scored = teacher_forcing_tokens(scenes["caption"], scenes["count"])
    exp = explain_caption(captioner, scenes["image"], inputs, scored, per_token=False)
    assert exp.maps.shape == (3, 64, 128) and exp.layer == "encoder"


def test_adapter_for_a_users_captioning_model(scenes):
    class HubStyle(nn.Module):
        """A captioner returning a dict of per-step log-probabilities, not logits."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.inner = DigitsCaptioner()

        def forward(self, images, tokens):
            return {"scores": self.inner(images, tokens).log_softmax(-1)}

    model = HubStyle().eval()
    inputs, scored = teacher_forcing_tokens(scenes["caption"], scenes["count"])
    # log_softmax leaves log-probabilities unchanged, so the log-probability maps agree
    target = CaptionTarget(scored, per_token=True, score="logprob",
                           output_fn=lambda out: out["scores"])
    exp = camlens.explain(model, (scenes["image"], inputs), layer="inner.encoder", target=target,
                          output_fn=lambda out: out)
    direct = explain_caption(model.inner, scenes["image"], inputs, scored, score="logprob")
    torch.testing.assert_close(exp.maps, direct.maps)
    logit_maps = explain_caption(model.inner, scenes["image"], inputs, scored)
    assert not torch.allclose(logit_maps.maps, direct.maps)


def test_wrong_shapes_are_named(captioner, scenes):
    inputs, scored = teacher_forcing_tokens(scenes["caption"], scenes["count"])
    with pytest.raises(ValueError, match=r"caption scores must be \(B, T, V\).*\(3, 4\)"):
        explain_caption(captioner, scenes["image"], inputs, scored[:, :4])


def test_inside_outside_ratio_of_a_uniform_map_is_one(scenes):
    uniform = torch.ones(3, 64, 128)
    ratio = inside_outside_ratio(uniform, scenes["boxes"], scenes["count"])
    torch.testing.assert_close(ratio, torch.ones(3))
    focused = torch.zeros(3, 64, 128)
    x0, y0, x1, y1 = scenes["boxes"][0, 0].int().tolist()
    focused[0, y0:y1, x0:x1] = 1
    assert inside_outside_ratio(focused, scenes["boxes"], scenes["count"])[0] > 1e6


def test_energy_inside_share_is_the_area_share_for_a_uniform_map(scenes):
    uniform = torch.ones(3, 64, 128)
    x0, y0, x1, y1 = scenes["boxes"][0, 0].int().tolist()
    focused = torch.zeros(3, 64, 128)
    focused[0, y0:y1, x0:x1] = 1
    focused[1, 0, 0] = 1  # a corner only: nothing inside any box
    shares = energy_inside_share(focused, scenes["boxes"], scenes["count"])
    assert shares.tolist() == [1.0, 0.0, 0.0]  # the third map is zero everywhere: share 0
    area = energy_inside_share(uniform, scenes["boxes"], scenes["count"])
    assert ((area > 0) & (area < 1)).all()


def test_greedy_and_beam_decoding_agree_in_form(captioner, scenes):
    greedy = captioner.generate(scenes["image"])
    beam = captioner.generate(scenes["image"], beam_size=3)
    assert len(greedy) == len(beam) == 3
    assert all(all(0 <= token < 10 for token in words) and len(words) <= MAX_TOKENS
               for words in greedy + beam)


def test_the_old_logits_option_still_works_with_a_deprecation(scenes):
    inputs, scored = teacher_forcing_tokens(scenes["caption"], scenes["count"])
    pick = lambda out: out["scores"]  # noqa: E731
    with pytest.warns(DeprecationWarning, match="output_fn"):
        target = CaptionTarget(scored, per_token=True, logits=pick)
    assert target.output_fn is pick
