"""What the commands refuse up front, in one line that names the file: weights that are not
safetensors or do not fit, an output folder that cannot be written, a recording with NaN, and
a caption picture of another shape (said, not silently squashed)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from camlens.cli import main
from camlens.zoo import load


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(path)
    return path


def test_a_pickle_or_garbage_as_zoo_weights_names_the_file(digit, tmp_path):
    pickled = tmp_path / "weights.pt"
    torch.save(load("digits-gap").state_dict(), pickled)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    for path in (pickled, garbage):
        result = run("explain", digit, "--model", "digits-gap", "--weights", path,
                     "--out", tmp_path / "out")
        assert result.exit_code == 2, result.output
        assert str(path) in result.output and "not a safetensors weights file" in result.output
        assert "Traceback" not in result.output


def test_weights_of_another_shape_name_the_first_key_in_one_line(digit, tmp_path):
    state = load("digits-gap").state_dict()
    state["classifier.weight"] = torch.zeros(3, 128)
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong))
    result = run("explain", digit, "--model", "digits-gap", "--weights", wrong,
                 "--out", tmp_path / "out")
    assert result.exit_code == 2
    message = [line for line in result.output.splitlines() if "wrong.safetensors" in line]
    assert len(message) == 1
    assert "classifier.weight has shape (3, 128) where the model has (10, 128)" in message[0]
    fewer = tmp_path / "fewer.safetensors"
    save_file({key: value for key, value in load("digits-gap").state_dict().items()
               if not key.startswith("classifier")}, str(fewer))
    result = run("explain", digit, "--model", "digits-gap", "--weights", fewer,
                 "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no weights for classifier.weight" in result.output


def test_an_unwritable_out_is_refused_before_the_audit(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a folder")
    ran = []
    monkeypatch.setattr("camlens.audit.core.audit", lambda *a, **k: ran.append(1))
    result = run("audit", "--model", "digits-biased", "--size", "4", "--out", blocked / "audit")
    assert result.exit_code == 2 and "cannot write to" in result.output
    assert not ran


def test_explain_audio_refuses_nan_before_anything_else(tmp_path):
    samples = np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    samples[100] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    result = run("explain-audio", path, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "nan.wav holds NaN or infinite samples" in result.output
    assert "p = nan" not in result.output and not (tmp_path / "out").exists()


def test_caption_says_when_a_picture_is_squashed(tmp_path):
    square = tmp_path / "square.png"
    Image.fromarray(np.zeros((100, 100), dtype=np.uint8)).save(square)
    result = run("caption", square, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "square.png is 100x100; digits-captioner reads 128x64" in result.output
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((50, 100), dtype=np.uint8)).save(wide)
    assert "squashed" not in run("caption", wide, "--out", tmp_path / "out2").output
