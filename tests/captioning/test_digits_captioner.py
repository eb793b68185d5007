"""The shipped digits-captioner: accuracy on record, maps that point at the digits they name."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main
from camlens.data import DigitScenes, materialize
from camlens.experiments.captioning import evaluate_captioner
from camlens.zoo import get_weights, load, weights_path


@pytest.fixture(scope="module")
def model():
    return load("digits-captioner")


@pytest.fixture(scope="module")
def scenes():
    return materialize(DigitScenes(60, "test", seed=5))


def test_shipped_weights_and_accuracy_on_record(model):
    assert weights_path("digits-captioner").stat().st_size <= 2_000_000
    weights = get_weights("digits-captioner")
    assert weights.metrics["test_accuracy"] >= 0.9
    assert weights.target_layer == "encoder" and weights.class_names[10] == "<end>"


def test_caption_maps_point_at_the_digits(model, scenes):
    # Measured on 500 scenes of another seed (docs/results.md): LayerCAM at the captioner's word
    # layer points inside its own digit for 96% of the words, Grad-CAM at the last layer for
    # 79% (10% land on another copy of the same digit), Grad-CAM on log-probabilities for 48%.
    gradcam = evaluate_captioner(model, scenes)
    assert gradcam["exact_caption_accuracy"] >= 0.9
    assert gradcam["tokens_pointed"] >= 100
    assert gradcam["inside_outside"] > 2.0  # the whole caption's map sits on the digits
    assert gradcam["token_pointing"] >= 0.65
    assert gradcam["token_pointing_strict"] <= gradcam["token_pointing"]
    logprob = evaluate_captioner(model, scenes, score="logprob")
    assert logprob["token_pointing"] < gradcam["token_pointing"] - 0.1
    fine = evaluate_captioner(model, scenes, method="layercam", layer=model.word_layer)
    assert fine["token_pointing_strict"] >= 0.85
    assert fine["token_pointing_same_digit"] < gradcam["token_pointing_same_digit"] + 0.02


def test_the_decoders_attention_is_a_distribution_that_finds_the_digits(model, scenes):
    from camlens.captioning import caption_tokens
    from camlens.zoo.captioner import END, MAX_TOKENS, START

    images = scenes["image"][:8]
    inputs, _ = caption_tokens(model.generate(images), END, START, MAX_TOKENS)
    attention = model.attention(images, inputs)
    assert attention.shape == (8, inputs.shape[1], 16, 32)
    torch.testing.assert_close(attention.sum(dim=(2, 3)), torch.ones(8, inputs.shape[1]))
    own = evaluate_captioner(model, {key: value[:40] for key, value in scenes.items()},
                             method="attention")
    assert own["token_pointing"] >= 0.5  # the attention of a 97%-accurate captioner
    assert 0 < own["energy_inside"] <= 1 and own["no_mass_inside"] == 0.0
    low, high = own["token_pointing_interval"]
    assert low <= own["token_pointing"] <= high


def test_beam_search_is_at_least_as_likely_as_greedy(model, scenes):
    images = scenes["image"][:10]
    greedy, beam = model.generate(images), model.generate(images, beam_size=4)
    assert sum(g == b for g, b in zip(greedy, beam, strict=True)) >= 8


def test_caption_command_writes_a_strip(tmp_path, scenes):
    source = tmp_path / "scene.png"
    Image.fromarray((scenes["image"][0, 0] * 255).byte().numpy()).save(source)
    result = CliRunner().invoke(main, ["caption", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "scene_caption.json").read_text())
    truth = " ".join(str(d) for d in scenes["caption"][0, : int(scenes["count"][0])].tolist())
    assert record["caption"] == truth and f"caption: {truth}" in result.output
    assert record["tokens"][-1] == "<end>" and record["layer"] == "encoder.7"
    assert record["method"] == "layercam" and min(record["token_probabilities"]) > 0.5
    assert Image.open(record["strip"]).size[0] > 400
    not_a_captioner = CliRunner().invoke(main, ["caption", str(source), "--model", "digits-gap",
                                                "--out", str(tmp_path / "x")])
    assert not_a_captioner.exit_code == 2 and "captioning" in not_a_captioner.output
    bad_layer = CliRunner().invoke(main, ["caption", str(source), "--layer", "encoder.77",
                                          "--out", str(tmp_path / "y")])
    assert bad_layer.exit_code == 2 and "encoder.7" in bad_layer.output
    paper = CliRunner().invoke(main, ["caption", str(source), "--method", "gradcam", "--layer",
                                      "encoder", "--out", str(tmp_path / "paper")])
    assert paper.exit_code == 0, paper.output
    record = json.loads((tmp_path / "paper" / "scene_caption.json").read_text())
    assert (record["method"], record["layer"]) == ("gradcam", "encoder")
