"""`camlens explain` loses nothing: the index as it goes, --resume, failed writes, SIGTERM, and
inputs refused before any work."""

from __future__ import annotations

import importlib
import json
import os
import signal

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main
from camlens.data import ClutteredDigits

explain_module = importlib.import_module("camlens.cli.explain")  # the module, not the command


@pytest.fixture(scope="module")
def five_digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("five")
    data = ClutteredDigits(5, "test", seed=3)
    for index in range(5):
        Image.fromarray((data[index]["image"][0] * 255).byte().numpy()).save(
            folder / f"d{index}.png")
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def index_lines(out):
    return [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]


def stop_on(count: int, monkeypatch, how):
    """Make the run stop with ``how()`` when the ``count``-th file is about to be indexed (as a
    Ctrl-C or SIGTERM arriving then: that file's line is not written)."""
    original = explain_module.RunIndex.add
    seen = []

    def add(self, file, records, error=None):
        seen.append(file)
        if len(seen) == count:
            how()
        return original(self, file, records, error)

    monkeypatch.setattr(explain_module.RunIndex, "add", add)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_an_interrupted_run_keeps_its_index_and_resumes(five_digits, tmp_path, monkeypatch,
                                                        stop):
    out = tmp_path / "out"

    def interrupt():
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)

    stop_on(3, monkeypatch, interrupt)
    first = run("explain", five_digits, "--model", "digits-gap", "--out", out)
    assert first.exit_code == 130, first.output
    assert "--resume" in first.output
    lines = index_lines(out)
    # the two files before the interrupt, and those whose writes were under way then
    done_before = len(lines) - 1
    assert "settings" in lines[0] and 2 <= done_before <= 4
    assert all(line["status"] == "explained" for line in lines[1:])
    assert str(five_digits / "d2.png") not in {line["file"] for line in lines[1:]}
    done = json.loads((out / "explanations.json").read_text())
    assert len(done) == done_before and all(os.path.isfile(record["output"]) for record in done)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back

    monkeypatch.undo()
    again = run("explain", five_digits, "--model", "digits-gap", "--out", out, "--resume")
    assert again.exit_code == 0, again.output
    assert f"explained {5 - done_before}, failed 0, skipped {done_before}" in again.output
    records = json.loads((out / "explanations.json").read_text())
    assert sorted(record["file"] for record in records) == sorted(
        str(five_digits / f"d{index}.png") for index in range(5))
    assert len({record["output"] for record in records}) == 5  # nothing overwritten


def test_a_cut_last_line_is_redone_on_resume(five_digits, tmp_path):
    out = tmp_path / "out"
    assert run("explain", five_digits, "--model", "digits-gap", "--out", out).exit_code == 0
    text = (out / "explanations.jsonl").read_text()
    (out / "explanations.jsonl").write_text(text[: len(text) - 40])  # killed mid-write
    again = run("explain", five_digits, "--model", "digits-gap", "--out", out, "--resume")
    assert again.exit_code == 0, again.output
    assert "explained 1, failed 0, skipped 4" in again.output
    assert len(json.loads((out / "explanations.json").read_text())) == 5


def test_resume_with_other_settings_is_refused(five_digits, tmp_path):
    out = tmp_path / "out"
    assert run("explain", five_digits, "--model", "digits-gap", "--out", out).exit_code == 0
    other = run("explain", five_digits, "--model", "digits-gap", "--method", "layercam",
                "--out", out, "--resume")
    assert other.exit_code == 2 and "other settings" in other.output


def test_a_fresh_run_never_leaves_a_stale_index(five_digits, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "explanations.json").write_text('[{"file": "from an earlier run"}]')
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = run("explain", broken, "--model", "digits-gap", "--out", out)
    assert result.exit_code == 1
    assert json.loads((out / "explanations.json").read_text()) == []
    assert index_lines(out)[1]["status"] == "failed"


def test_a_picture_that_cannot_be_written_is_reported_and_the_run_goes_on(five_digits, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "d1_gradcam.png").mkdir()  # where d1's overlay would go: a folder, not a file
    result = run("explain", five_digits, "--model", "digits-gap", "--out", out)
    assert result.exit_code == 1
    assert "d1.png: cannot write its pictures" in result.output
    assert "explained 4, failed 1, skipped 0" in result.output
    statuses = {line["file"]: line["status"] for line in index_lines(out)[1:]}
    assert statuses[str(five_digits / "d1.png")] == "failed"


@pytest.mark.parametrize(("target", "message"), [("top11", "top11 does not fit a model with 10"),
                                                  ("12", "out of range")])
def test_a_target_the_model_cannot_give_is_refused_before_any_work(five_digits, tmp_path,
                                                                    target, message):
    out = tmp_path / "out"
    result = run("explain", five_digits, "--model", "digits-gap", "--target", target,
                 "--out", out)
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()


def test_a_class_index_on_a_model_without_class_names(five_digits, tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 5))
    torch.save(model, tmp_path / "model.pt")
    result = run("explain", five_digits, "--model", tmp_path / "model.pt", "--trust-checkpoint",
                 "--target", "7", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "class index 7 does not fit a model with 5" in result.output
    assert not (tmp_path / "out").exists()


def test_an_empty_folder_warns_and_exits_1(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("explain", tmp_path / "empty", "--model", "digits-gap", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "no image files" in result.output


def test_extreme_aspect_ratios_are_refused_before_resizing(five_digits, tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("L", (12000, 1)).save(strip)
    assert strip.stat().st_size < 1000
    result = run("explain", strip, five_digits / "d0.png", "--model", "digits-gap",
                 "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "strip.png: 12000x1" in result.output and "--max-aspect" in result.output
    assert "explained 1, failed 1" in result.output


def test_photos_are_read_as_a_viewer_shows_them(tmp_path):
    from camlens.io.images import read_image

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white when upright
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = read_image(tmp_path / "rotated.jpg")
    assert upright.size == (20, 40)  # portrait, as a viewer shows it
    assert np.asarray(upright)[:20].mean() > 200 and np.asarray(upright)[20:].mean() < 50

    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    grey = np.asarray(read_image(tmp_path / "f.tif"))
    assert abs(int(grey.mean()) - 128) <= 1  # not black


def test_an_empty_map_is_a_note_on_the_console_and_in_the_index(five_digits, tmp_path):
    """A map camlens cannot stand behind is said, per image, not buried in a warning."""
    zero = tmp_path / "zero.safetensors"
    from safetensors.torch import save_file

    from camlens.zoo import load

    state = load("digits-gap").state_dict()
    state["classifier.weight"] = torch.zeros_like(state["classifier.weight"])
    save_file(state, str(zero))
    out = tmp_path / "out"
    result = run("explain", five_digits / "d0.png", "--model", "digits-gap", "--weights", zero,
                 "--out", out)
    assert result.exit_code == 0, result.output
    assert "note: " in result.output and "d0.png: 1 of 1 gradcam maps" in result.output
    record = json.loads((out / "explanations.json").read_text())[0]
    assert any("zero everywhere" in note for note in record["notes"])
