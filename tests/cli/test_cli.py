"""The command line: help everywhere, clear errors with exit status 2 for unknown names."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import camlens
from camlens.cli import main


def test_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("methods", "train", "reproduce"):
        assert command in result.output


def test_methods_lists_every_method_with_a_line():
    result = CliRunner().invoke(main, ["methods"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == camlens.available_methods()
    assert all(len(line.split()) > 2 for line in lines)
    # Every method names its paper, with a year.
    assert all(any(str(year) in line for year in range(2009, 2027)) for line in lines), lines


def test_train_unknown_model_exits_2_with_the_closest_name():
    result = CliRunner().invoke(main, ["train", "digits-gapp"])
    assert result.exit_code == 2
    assert "digits-gap" in result.output and "Traceback" not in result.output


def test_train_refuses_a_bias_for_a_model_without_marks():
    result = CliRunner().invoke(main, ["train", "digits-gap", "--bias", "0.5"])
    assert result.exit_code == 2 and "--bias applies to models trained on the biased digits" \
        in result.output
    assert CliRunner().invoke(main, ["train", "digits-biased", "--bias", "1.5"]).exit_code == 2


@pytest.mark.slow
def test_reproduce_small(tmp_path):
    out = tmp_path / "results.md"
    result = CliRunner().invoke(main, ["reproduce", "localization", "--test-size", "12",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    for row in ("digits-gap cam", "digits-gap gradcam", "digits-fc gradcam", "random map",
                "centred box", "full image", "guided-backprop"):
        assert row in text
    assert "digits-fc cam | refused" in text


def test_reproduce_seeds_reach_the_tables_that_train_and_are_refused_elsewhere(monkeypatch):
    import camlens.experiments.transfer as transfer

    seen = {}

    def fake_table(out=None, progress=False, log=None, *, seeds=(0, 1, 2)):
        seen["seeds"] = tuple(seeds)
        return "table"

    monkeypatch.setattr(transfer, "transfer_table", fake_table)
    result = CliRunner().invoke(main, ["reproduce", "transfer", "--seeds", "3,5"])
    assert result.exit_code == 0, result.output
    assert seen["seeds"] == (3, 5)
    for bad in ("3,x", "1,1", "-1"):
        result = CliRunner().invoke(main, ["reproduce", "transfer", "--seeds", bad])
        assert result.exit_code == 2 and "--seeds" in result.output, (bad, result.output)
    result = CliRunner().invoke(main, ["reproduce", "localization", "--seeds", "1"])
    assert result.exit_code == 2 and "trains no models" in result.output


def test_reproduce_model_seeds_trained_only_scores_without_training(monkeypatch):
    import camlens.experiments.model_seeds as model_seeds

    seen = {}

    def fake_table(out=None, progress=False, log=None, *, train_missing=True, **sizes):
        seen["train_missing"] = train_missing
        return "table"

    monkeypatch.setattr(model_seeds, "model_seeds_table", fake_table)
    result = CliRunner().invoke(main, ["reproduce", "model-seeds", "--trained-only"])
    assert result.exit_code == 0, result.output
    assert seen == {"train_missing": False}
    result = CliRunner().invoke(main, ["reproduce", "gap-fc", "--trained-only"])
    assert result.exit_code == 2 and "applies to model-seeds" in result.output
