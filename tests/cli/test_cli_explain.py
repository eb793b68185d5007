"""`camlens explain` and `camlens layers` as a new user runs them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main
from camlens.data import ClutteredDigits


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    data = ClutteredDigits(3, "test")
    (folder / "nested").mkdir()
    for index in range(3):
        pixels = (data[index]["image"][0] * 255).byte().numpy()
        target = folder / ("nested" if index == 2 else "") / f"digit{index}.png"
        Image.fromarray(pixels).save(target)
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_explain_a_folder_writes_pngs_and_json(digit_folder, tmp_path):
    out = tmp_path / "out"
    result = run("explain", digit_folder, "--model", "digits-gap", "--out", out)
    assert result.exit_code == 0, result.output
    records = json.loads((out / "explanations.json").read_text())
    assert len(records) == 3
    for record in records:
        assert record["method"] == "gradcam" and record["layer"] == "features"
        assert record["target_name"] == str(record["target"])
        picture = Image.open(record["output"])
        assert picture.size == (64, 64) and picture.mode == "RGB"


def test_several_methods_and_class_targets_write_a_grid(digit_folder, tmp_path):
    out = tmp_path / "out"
    result = run("explain", digit_folder / "digit0.png", "--model", "digits-gap", "--method",
                 "cam", "--method", "gradcam", "--target", "top2", "--out", out)
    assert result.exit_code == 0, result.output
    records = json.loads((out / "explanations.json").read_text())
    maps = [r for r in records if "method" in r]
    assert len(maps) == 4 and {r["method"] for r in maps} == {"cam", "gradcam"}
    assert any("grid" in r for r in records)
    named = run("explain", digit_folder / "digit0.png", "--model", "digits-gap", "--target", "7",
                "--out", tmp_path / "seven")
    assert named.exit_code == 0
    assert json.loads((tmp_path / "seven" / "explanations.json").read_text())[0]["target"] == 7


def test_bad_files_are_reported_and_the_others_explained(digit_folder, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    result = run("explain", broken, digit_folder / "digit1.png", empty, tmp_path / "missing.png",
                 "--model", "digits-gap", "--out", out)
    assert result.exit_code == 1
    assert "broken.png" in result.output and "empty file" in result.output
    assert "no such file" in result.output and "Traceback" not in result.output
    assert "explained 1, failed 3, skipped 0 (done before) of 4" in result.output
    assert len(json.loads((out / "explanations.json").read_text())) == 1


def test_image_modes_are_converted(tmp_path):
    base = np.zeros((40, 40), dtype=np.uint8)
    base[10:30, 15:25] = 255
    Image.fromarray(base).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(base.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(base).save(tmp_path / "gray.png")
    result = run("explain", tmp_path, "--model", "digits-gap", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "out" / "explanations.json").read_text())) == 3


def test_oversized_images_are_refused(tmp_path):
    Image.new("L", (300, 300)).save(tmp_path / "big.png")
    result = run("explain", tmp_path / "big.png", "--model", "digits-gap", "--max-pixels",
                 "10000", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "over the limit" in result.output


def test_inputs_are_never_overwritten(digit_folder, tmp_path):
    source = tmp_path / "digit0_gradcam.png"
    Image.open(digit_folder / "digit0.png").save(source)
    (tmp_path / "digit0.png").write_bytes((digit_folder / "digit0.png").read_bytes())
    before = source.read_bytes()
    result = run("explain", tmp_path / "digit0.png", source, "--model", "digits-gap", "--out",
                 tmp_path)
    assert result.exit_code == 0, result.output
    assert source.read_bytes() == before
    assert (tmp_path / "digit0_gradcam-2.png").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--model", "digits-gapp"], "digits-gap"),
    (["--model", "digits-gap", "--layer", "featurez"], "features"),
    (["--model", "digits-gap", "--method", "gradcamm"], "gradcam"),
    (["--model", "digits-gap", "--target", "seven"], "the model's classes: 0, 1, 2"),
    (["--model", "digits-gap", "--target", "12"], "out of range"),
    (["--model", "torchvision:resnet1"], "resnet18"),
])
def test_unknown_names_exit_2_with_the_closest(digit_folder, tmp_path, args, expected):
    result = run("explain", digit_folder / "digit0.png", *args, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_torchvision_without_network_says_how_to_pass_weights(digit_folder, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    result = run("explain", digit_folder / "digit0.png", "--model", "torchvision:resnet18",
                 "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "--weights" in result.output


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    folder = tmp_path_factory.mktemp("weights")
    save_file(model.state_dict(), str(folder / "r18.safetensors"))
    torch.save(model.state_dict(), folder / "r18.pth")
    torch.save(model, folder / "r18_pickled.pt")
    torch.jit.script(model.eval()).save(str(folder / "r18_script.pt"))
    return folder


def test_local_safetensors_with_arch_and_a_fine_tuned_head(digit_folder, resnet_weights, tmp_path):
    for weights in ("r18.safetensors", "r18.pth"):
        out = tmp_path / weights
        result = run("explain", digit_folder / "digit0.png", "--model", "torchvision:resnet18",
                     "--weights", resnet_weights / weights, "--layer", "layer4", "--out", out)
        assert result.exit_code == 0, result.output
        record = json.loads((out / "explanations.json").read_text())[0]
        assert 0 <= record["target"] < 4 and record["layer"] == "layer4"
        assert Image.open(record["output"]).size == (224, 224)
    via_file = run("explain", digit_folder / "digit0.png", "--model",
                   resnet_weights / "r18.safetensors", "--arch", "torchvision:resnet18",
                   "--out", tmp_path / "via-file")
    assert via_file.exit_code == 0, via_file.output


def test_pickled_checkpoint_needs_trust(digit_folder, resnet_weights, tmp_path):
    refused = run("explain", digit_folder / "digit0.png", "--model",
                  resnet_weights / "r18_pickled.pt", "--out", tmp_path / "a")
    assert refused.exit_code == 2 and "--trust-checkpoint" in refused.output
    trusted = run("explain", digit_folder / "digit0.png", "--model",
                  resnet_weights / "r18_pickled.pt", "--trust-checkpoint", "--layer", "layer4",
                  "--out", tmp_path / "b")
    assert trusted.exit_code == 0, trusted.output


def test_torchscript_loads_and_explains_with_a_clear_error(digit_folder, resnet_weights,
                                                           tmp_path):
    result = run("layers", resnet_weights / "r18_script.pt")
    assert result.exit_code == 2 and "TorchScript" in result.output
    explained = run("explain", digit_folder / "digit0.png", "--model",
                    resnet_weights / "r18_script.pt", "--out", tmp_path / "c")
    assert explained.exit_code == 1 and "TorchScript" in explained.output


def test_layers_lists_candidates_with_shapes():
    result = run("layers", "digits-gap")
    assert result.exit_code == 0, result.output
    assert "features" in result.output and "(1, 128, 16, 16)" in result.output
    assert "<- model's layer, automatic" in result.output
    features = next(line for line in result.output.splitlines() if line.startswith("features "))
    assert "channels first 16x16" in features and "all 256/256" in features
    fc = run("layers", "digits-fc").output  # max pooling: not every position reaches the score
    assert re.search(r"^features .* (\d+)/256 ", fc, re.M) and "all 64/64  <- automatic" in fc
    assert "classifier" not in result.output
    assert "classifier" in run("layers", "digits-gap", "--all").output


def test_timm_model_with_local_weights_and_offline_message(digit_folder, tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("resnet18", pretrained=False, num_classes=3).state_dict(),
              str(tmp_path / "timm_r18.safetensors"))
    result = run("explain", digit_folder / "digit0.png", "--model", "timm:resnet18", "--weights",
                 tmp_path / "timm_r18.safetensors", "--target", "top2", "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "t" / "explanations.json").read_text())
    assert {r["layer"] for r in records if "layer" in r} == {"layer4"}
    offline = run("explain", digit_folder / "digit0.png", "--model", "timm:resnet18",
                  "--out", tmp_path / "u")
    assert offline.exit_code == 2 and "--weights" in offline.output


def test_layer_without_spatial_axis_exits_2_before_any_work(digit_folder, tmp_path):
    result = run("explain", digit_folder, "--model", "digits-gap", "--layer", "classifier",
                 "--out", tmp_path / "out")
    assert result.exit_code == 2 and "features" in result.output
    assert not (tmp_path / "out").exists()


def test_verbose_shows_the_traceback(digit_folder, tmp_path, monkeypatch):

    def broken(*args, **kwargs):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr("camlens.io.images.find_images", broken)
    quiet = run("explain", digit_folder, "--model", "digits-gap", "--out", tmp_path / "a")
    assert quiet.exit_code == 1 and "something unexpected" in quiet.output
    assert "Traceback" not in quiet.output and "--verbose" in quiet.output
    loud = CliRunner().invoke(main, ["--verbose", "explain", str(digit_folder), "--model",
                                     "digits-gap", "--out", str(tmp_path / "b")])
    assert isinstance(loud.exception, RuntimeError)
    # the sub-command's own --verbose (and -v) means the same
    for flag in ("--verbose", "-v"):
        after = CliRunner().invoke(main, ["explain", str(digit_folder), "--model", "digits-gap",
                                          "--out", str(tmp_path / "c"), flag])
        assert isinstance(after.exception, RuntimeError), after.output


@pytest.mark.slow  # the whole demo (20-50 s); tests/experiments/test_demo.py covers its parts
def test_demo_writes_a_page_with_its_pictures(tmp_path):
    result = run("demo", "--out", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "demo" / "index.html").read_text()
    assert "CAM and Grad-CAM" in page and "One map per class" in page
    images = re.findall(r'src="([^"]+)"', page)
    assert len(images) >= 20 and all((tmp_path / "demo" / name).is_file() for name in images)
    difference = float(re.search(r"at most <b>([0-9.e+-]+)</b>", page).group(1))
    assert difference < 1e-5


def test_an_unreachable_hub_is_offline_for_the_load_only(monkeypatch):
    """Loading timm:NAME without --weights on an offline machine reads the local cache only,
    for that call: HF_HUB_OFFLINE is not left set for the rest of the process."""
    import os

    import huggingface_hub.constants
    import timm

    from camlens import models

    seen = []

    def create_model(name, pretrained=False, **kwargs):
        seen.append((os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE))
        raise OSError("no network")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    monkeypatch.setattr(models, "host_reachable", lambda host, timeout=2.0: False)
    monkeypatch.setattr(timm, "create_model", create_model)
    with pytest.raises(models.ModelLoadError, match="offline"):
        models.load_model("timm:resnet18")
    assert seen == [("1", True)]  # offline during the load
    assert "HF_HUB_OFFLINE" not in os.environ  # and not after it
    assert before == huggingface_hub.constants.HF_HUB_OFFLINE
