"""`camlens audit` on a few biased-digit test images with the shipped models."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from camlens.cli.audit import audit
from camlens.zoo import weights_path


@pytest.mark.parametrize("model", ["digits-gap", "digits-biased"])
def test_audit_writes_the_report_and_the_summary(model, tmp_path):
    assert weights_path(model).stat().st_size <= 2_000_000
    out = tmp_path / "audit"
    result = CliRunner().invoke(audit, ["--model", model, "--size", "12", "--batch-size", "5",
                                        "--top", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == model and summary["overall"]["count"] == 12
    assert summary["regions"] == ["object", "mark"]
    variants = [v["name"] for v in summary["counterfactual"]["variants"]]
    assert len(variants) == 4 and variants[0].startswith("normal")
    assert summary["command"].startswith(f"camlens audit --model {model}")
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert "mark" in result.output and str((out / "report.html").resolve()) in result.output


@pytest.mark.parametrize(("arguments", "message"), [
    (["--model", "digits-gapp"], "did you mean digits-gap"),
    (["--model", "digits-gap", "--method", "gradcan"], "unknown method"),
    (["--model", "digits-gap", "--layer", "featurez"], "featurez"),
    (["--model", "digits-gap", "--data", "imagenet"], "biased-digits"),
])
def test_bad_names_exit_with_status_2(arguments, message, tmp_path):
    result = CliRunner().invoke(audit, [*arguments, "--size", "2", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "report.html").exists()


def test_the_recorded_command_keeps_every_option_that_decides_the_result(tmp_path):
    weights = weights_path("digits-gap")
    out = tmp_path / "audit"
    result = CliRunner().invoke(audit, [
        "--model", str(weights), "--arch", "digits-gap", "--weights", str(weights),
        "--size", "4", "--seed", "3", "--method", "layercam", "--layer", "features.9",
        "--target", "label", "--batch-size", "3", "--top", "1", "--device", "cpu",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    command = json.loads((out / "summary.json").read_text())["command"]
    for expected in ("--arch digits-gap", f"--weights {weights}", "--size 4", "--seed 3",
                     "--method layercam", "--layer features.9", "--target label",
                     "--batch-size 3", "--top 1", "--device cpu", f"--out {out}"):
        assert expected in command, expected
