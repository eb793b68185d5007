"""--device: where the commands run the model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main
from camlens.data import ClutteredDigits, materialize


@pytest.fixture(scope="module")
def digit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "digit.png"
    image = materialize(ClutteredDigits(1, "test"))["image"][0, 0]
    Image.fromarray((image * 255).byte().numpy()).save(path)
    return path


def explain(digit_file, out, *device):
    return CliRunner().invoke(main, ["explain", str(digit_file), "--model", "digits-gap",
                                     "--out", str(out), *device])


def test_cpu_and_auto_give_the_same_maps(tmp_path, digit_file):
    auto = explain(digit_file, tmp_path / "auto")
    cpu = explain(digit_file, tmp_path / "cpu", "--device", "cpu")
    assert auto.exit_code == 0 and cpu.exit_code == 0, auto.output + cpu.output
    records = [json.loads((tmp_path / name / "explanations.json").read_text())[0]
               for name in ("auto", "cpu")]
    assert records[0]["score"] == pytest.approx(records[1]["score"], rel=1e-4)


@pytest.mark.parametrize(("device", "message"), [
    ("gpu", "unknown device 'gpu'; use cpu, cuda, cuda:N, mps or auto"),
    ("cuda:99", "'cuda:99' is not available on this machine"),
])
def test_bad_devices_are_usage_errors(tmp_path, digit_file, device, message):
    result = explain(digit_file, tmp_path / "bad", "--device", device)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "bad" / "explanations.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA")
def test_cuda_without_a_gpu_says_so(tmp_path, digit_file):
    result = explain(digit_file, tmp_path / "cuda", "--device", "cuda")
    assert result.exit_code == 2 and "not available on this machine" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_commands_run_on_cuda(tmp_path, digit_file):
    on_gpu = explain(digit_file, tmp_path / "gpu", "--device", "cuda")
    on_cpu = explain(digit_file, tmp_path / "cpu", "--device", "cpu")
    assert on_gpu.exit_code == 0 and on_cpu.exit_code == 0, on_gpu.output
    gpu, cpu = (json.loads((tmp_path / name / "explanations.json").read_text())[0]
                for name in ("gpu", "cpu"))
    assert gpu["score"] == pytest.approx(cpu["score"], rel=1e-3)
    scene = tmp_path / "scene.png"
    from camlens.data import DigitScenes

    image = materialize(DigitScenes(1, "test"))["image"][0, 0]
    Image.fromarray((image * 255).byte().numpy()).save(scene)
    caption = CliRunner().invoke(main, ["caption", str(scene), "--device", "cuda",
                                        "--out", str(tmp_path / "caption")])
    assert caption.exit_code == 0, caption.output
    audit = CliRunner().invoke(main, ["audit", "--model", "digits-biased", "--size", "40",
                                      "--device", "cuda", "--out", str(tmp_path / "audit")])
    assert audit.exit_code == 0, audit.output
