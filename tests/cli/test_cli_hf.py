"""`hf:FOLDER`: a Hugging Face transformers model saved locally, explained from the command line
with its image processor and class names; a hub name says the hub cannot be reached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-vit")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, num_labels=3,
                                    id2label={0: "cat", 1: "dog", 2: "fox"},
                                    label2id={"cat": 0, "dog": 1, "fox": 2})
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_a_saved_transformers_model_is_explained(saved_vit, tmp_path):
    picture = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
                    ).save(picture)
    out = tmp_path / "out"
    result = run("explain", picture, "--model", f"hf:{saved_vit}", "--target", "dog",
                 "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "explanations.json").read_text())[0]
    assert record["target_name"] == "dog" and record["target"] == 1
    assert record["layer"] != "vit.layernorm"  # detected: every patch reaches the class token
    assert Image.open(record["output"]).size == (32, 32)
    layers = run("layers", f"hf:{saved_vit}")
    assert layers.exit_code == 0 and "automatic" in layers.output and "tokens 4x4" in layers.output


def test_a_hub_name_says_the_hub_cannot_be_reached(tmp_path):
    result = run("explain", tmp_path, "--model", "hf:google/vit-base-patch16-224",
                 "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "cannot reach" in result.output and "save_pretrained" in result.output


def test_a_torchvision_detector_box_from_the_command_line(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    detector = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, box_score_thresh=0.0).eval()
    weights = tmp_path / "detector.safetensors"
    save_file({key: value.contiguous() for key, value in detector.state_dict().items()},
              str(weights))
    picture = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
                    ).save(picture)
    out = tmp_path / "out"
    result = run("explain", picture, "--model", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
                 "--weights", weights, "--target", "box:20,20,100,90", "--layer",
                 "backbone.body.12", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "explanations.json").read_text())[0]
    assert record["target_name"] == "box" and Image.open(record["output"]).size == (160, 120)
    from PIL import ImageColor

    from camlens.viz.overlay import BOX_COLORS

    drawn = np.asarray(Image.open(record["output"]))
    first = ImageColor.getrgb(BOX_COLORS[0]) if isinstance(BOX_COLORS[0], str) else BOX_COLORS[0]
    assert (drawn[40:80, 20] == first[:3]).all()  # the explained box's left edge, outlined
    bad = run("explain", picture, "--model", "digits-gap", "--target", "box:1,2,3",
              "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "box:x0,y0,x1,y1" in bad.output
