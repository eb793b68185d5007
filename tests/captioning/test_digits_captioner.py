"""The shipped digits-captioner: accuracy on record, maps that point at the digits they name."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from camlens.captioning import evaluate_captioner
from camlens.cli import main
from camlens.data import DigitScenes, materialize
from camlens.zoo import load, weights_path


@pytest.fixture(scope="module")
def model():
    return load("digits-captioner")


@pytest.fixture(scope="module")
def scenes():
    return materialize(DigitScenes(60, "test", seed=5))


def test_shipped_weights_and_accuracy_on_record(model):
    assert weights_path("digits-captioner").stat().st_size <= 2_000_000
    assert float(model.metadata["test_accuracy"]) >= 0.9
    assert model.target_layer == "encoder" and model.class_names[10] == "<end>"


def test_caption_maps_point_at_the_digits(model, scenes):
    # Measured on 1,000 scenes (docs/results.md): Grad-CAM's per-token maps point at their own
    # digit for only about half of the tokens, LayerCAM's for about 72%: below the 85%
    # target, which stays open. These bounds guard what the maps do achieve.
    gradcam = evaluate_captioner(model, scenes)
    assert gradcam["exact_caption_accuracy"] >= 0.9
    assert gradcam["tokens_pointed"] >= 100
    assert gradcam["inside_outside"] > 2.0  # the whole caption's map sits on the digits
    layercam = evaluate_captioner(model, scenes, method="layercam")
    assert layercam["token_pointing"] >= 0.6
    assert layercam["token_pointing"] > gradcam["token_pointing"]


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
    assert record["tokens"][-1] == "<end>"
    assert Image.open(record["strip"]).size[0] > 400
    not_a_captioner = CliRunner().invoke(main, ["caption", str(source), "--model", "digits-gap",
                                                "--out", str(tmp_path / "x")])
    assert not_a_captioner.exit_code == 2 and "captioning" in not_a_captioner.output
