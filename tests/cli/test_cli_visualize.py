"""`camlens visualize` and `camlens invert` as a user runs them: pictures, a summary that says
what rose and what fell, and one-line errors for bad units, layers and files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main
from camlens.data import ClutteredDigits


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    pixels = (ClutteredDigits(1, "test", seed=0)[0]["image"][0] * 255).byte().numpy()
    Image.fromarray(pixels).save(path)
    return path


def test_visualize_classes_and_channels_in_one_run(tmp_path):
    out = tmp_path / "vis"
    result = run("visualize", "digits-gap", "--unit", "class:3", "--layer", "features",
                 "--unit", "c:5-6", "--unit", "n:2,8,8", "--steps", 12, "--lr", 0.1, "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    labels = [picture["unit"] for picture in summary["pictures"]]
    assert labels == ["class 3", "channel 5 of features", "channel 6 of features",
                      "neuron 2 at (8, 8) of features"]
    for picture in summary["pictures"]:
        assert picture["final"] > picture["start"], picture
        assert Image.open(out / picture["file"]).size == (192, 192)
    assert summary["pictures"][0]["assigned_class"] == "3"
    assert len(summary["trajectory"]) == 12
    assert (out / "grid.png").is_file()
    assert "1 channel: identity" in summary["notes"][0]


def test_visualize_diversity_writes_variants(tmp_path):
    out = tmp_path / "div"
    result = run("visualize", "digits-gap", "--unit", "7", "--steps", 2, "--diversity", 2,
                 "--param", "pixel", "--out", out)
    assert result.exit_code == 0, result.output
    files = sorted(path.name for path in out.glob("unit*.png"))
    assert files == ["unit00_class-7_v0.png", "unit00_class-7_v1.png"]
    assert json.loads((out / "summary.json").read_text())["settings"]["diversity_layer"] == \
        "features"


@pytest.mark.parametrize("args, message", [
    (["--unit", "class:12"], "class 12 is out of range: the model outputs 10 classes"),
    (["--layer", "features", "--unit", "c:128"],
     "channel 128 is out of range: layer 'features' has 128 channels"),
    (["--unit", "c:3"], "give --layer"),
    (["--unit", "x:3"], "unknown unit form 'x:3'; accepted: class:K"),
    (["--unit", "class:seven"], "unknown class 'seven'"),
    (["--layer", "featurs", "--unit", "1"], "closest names: features"),
    (["--layer", "features", "--unit", "n:1,2"], "expected 1 or 3 non-negative integer"),
])
def test_visualize_refuses_bad_units(tmp_path, args, message):
    result = run("visualize", "digits-gap", *args, "--steps", 1, "--out", tmp_path / "bad")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_invert_writes_reconstructions_and_errors(digit_png, tmp_path):
    out = tmp_path / "inv"
    result = run("invert", digit_png, "--model", "digits-gap", "--layer", "features.2",
                 "--layer", "classifier", "--steps", 8, "--lr", 0.1, "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["layer"] for entry in summary["layers"]] == ["features.2", "classifier"]
    for entry in summary["layers"]:
        assert entry["representation_error"] < entry["start_error"]
        assert entry["trajectory"][-1] < entry["trajectory"][0]
        assert (out / entry["file"]).is_file()
    assert summary["pixel_error"] == "RMSE in [0, 1] pixels"
    assert (out / "input.png").is_file() and (out / "row.png").is_file()


def test_invert_refuses_bad_layers_and_files(digit_png, tmp_path):
    result = run("invert", digit_png, "--model", "digits-gap", "--layer", "clasifier",
                 "--out", tmp_path / "x")
    assert result.exit_code == 2 and "closest names: classifier" in result.output
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    result = run("invert", broken, "--model", "digits-gap", "--layer", "features",
                 "--out", tmp_path / "y")
    assert result.exit_code == 2 and "broken.png" in result.output
