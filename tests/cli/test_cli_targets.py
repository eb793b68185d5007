"""`--target` forms beyond classes on the command line: text prompts of a CLIP model (one map and
one panel per prompt), a segmentation class with its predicted region outlined, several
`--layer`s fused, and the usage errors of each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from toy_models import save_tiny_clip

from camlens.cli import main

transformers = pytest.importorskip("transformers")


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def picture(path, size=(40, 48), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
                    ).save(path)
    return path


@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory):
    return save_tiny_clip(transformers, tmp_path_factory.mktemp("hf-clip"))


def test_one_map_per_text_prompt(saved_clip, tmp_path):
    photo = picture(tmp_path / "photo.png")
    out = tmp_path / "out"
    result = run("explain", photo, "--model", f"hf:{saved_clip}",
                 "--target", "text:a photo of a cat|a dog", "--out", out)
    assert result.exit_code == 0, result.output
    records = json.loads((out / "explanations.json").read_text())
    maps = [record for record in records if "output" in record]
    assert [record["target_name"] for record in maps] == ["a photo of a cat", "a dog"]
    assert maps[0]["layer"].startswith("vision_model.")
    assert any("grid" in record for record in records)
    # The scores are the model's own image-text logits for these prompts.
    model = transformers.CLIPModel.from_pretrained(saved_clip).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(saved_clip)
    processor = transformers.CLIPImageProcessor.from_pretrained(saved_clip)
    tokens = tokenizer(["a photo of a cat", "a dog"], padding=True, return_tensors="pt")
    pixels = processor(images=Image.open(photo).convert("RGB"),
                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(**tokens, pixel_values=pixels).logits_per_image[0]
    assert [record["score"] for record in maps] == pytest.approx(expected.tolist(), abs=1e-5)


def test_text_prompts_need_a_tokenizer_and_a_prompt(tmp_path):
    photo = picture(tmp_path / "photo.png")
    empty = run("explain", photo, "--model", "digits-gap", "--target", "text:a cat||",
                "--out", tmp_path / "out")
    assert empty.exit_code == 2 and "empty prompt" in empty.output
    untokenized = run("explain", photo, "--model", "digits-gap", "--target", "text:a cat",
                      "--out", tmp_path / "out")
    assert untokenized.exit_code == 1 and "no tokenizer" in untokenized.output


def test_several_layers_give_a_fused_map(tmp_path):
    photo = picture(tmp_path / "digit.png", size=(64, 64))
    out = tmp_path / "out"
    result = run("explain", photo, "--model", "digits-gap", "--layer", "features.6",
                 "--layer", "features", "--fuse", "mean", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "explanations.json").read_text())[0]
    assert record["layer"] == "features.6+features"
    assert any("then the mean" in note for note in record["notes"])
    twice = run("explain", photo, "--model", "digits-gap", "--layer", "features",
                "--layer", "features", "--out", tmp_path / "twice")
    assert twice.exit_code == 2 and "given twice" in twice.output
    flat = run("explain", photo, "--model", "digits-gap", "--layer", "features",
               "--layer", "pool", "--out", tmp_path / "flat")
    assert flat.exit_code == 2 and "'pool'" in flat.output


def test_a_segmentation_class_is_outlined(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    segmenter = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=False).eval()
    with torch.no_grad():  # a head that reads the features, so the classes share the picture
        segmenter.classifier[4].weight.normal_(0.0, 1.0)
        segmenter.classifier[4].bias.zero_()
    weights = tmp_path / "deeplab.safetensors"
    save_file({key: value.contiguous() for key, value in segmenter.state_dict().items()},
              str(weights))
    photo = picture(tmp_path / "scan.png", size=(96, 112), seed=3)
    spec = "torchvision:deeplabv3_mobilenet_v3_large"
    from camlens.models import load_model

    loaded = load_model(spec, weights=weights)
    with torch.no_grad():
        predicted = loaded.model(loaded.preprocess(Image.open(photo).convert("RGB")))["out"]
    shares = torch.stack([(predicted[0].argmax(0) == k).float().mean() for k in range(3)])
    label = int((shares - 0.5).abs().argmin())  # the class whose region has the most border
    assert 0.02 < float(shares[label]) < 0.98, shares
    out = tmp_path / "out"
    result = run("explain", photo, "--model", spec, "--weights", weights, "--target",
                 f"class:{label}", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "explanations.json").read_text())[0]
    assert record["target_name"] == f"region_{label}"
    drawn = np.asarray(Image.open(record["output"]).convert("RGB"))
    white = (drawn == 255).all(axis=2)
    assert white.any(), "the class's region is outlined in white"
    assert white.mean() < 0.5  # an outline, not a fill
