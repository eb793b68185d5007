"""The method options on the command line: --counterfactual, --eigen-smooth, --aug-smooth and
--smooth-samples reach the maps and the index, and an option a method cannot take is a usage
error naming it."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def digit(tmp_path):
    path = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
                    ).save(path)
    return path


def test_options_reach_the_maps_and_the_index(tmp_path):
    out = tmp_path / "out"
    result = run("explain", digit(tmp_path), "--model", "digits-gap", "--counterfactual",
                 "--smooth-samples", "2", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "explanations.json").read_text())[0]
    assert any(note.startswith("averaged over 2 noisy copies") for note in record["notes"])
    settings = json.loads((out / "explanations.jsonl").read_text().splitlines()[0])
    assert "counterfactual" in json.dumps(settings)


def test_an_option_a_method_cannot_take_is_a_usage_error(tmp_path):
    result = run("explain", digit(tmp_path), "--model", "digits-gap", "--method", "cam",
                 "--counterfactual", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "--counterfactual" in result.output and "cam uses none" in result.output
    eigen = run("explain", digit(tmp_path), "--model", "digits-gap", "--method", "eigencam",
                "--eigen-smooth", "--out", tmp_path / "out")
    assert eigen.exit_code == 2 and "--eigen-smooth" in eigen.output
