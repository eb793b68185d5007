"""`camlens reproduce gap-fc` at toy sizes: its structure, the JSON and figure, reuse of recorded
runs, the McNemar and t-interval arithmetic (against scipy), and that its networks are trained
exactly as `camlens train` trains them (the shipped page comes from the full run)."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import binomtest
from scipy.stats import t as student_t

from camlens.data.digits import materialize
from camlens.experiments.gap_fc import gap_fc_table, paired_summary, train_head
from camlens.experiments.training import TrainingRecipe, datasets, train
from camlens.zoo.digits import DigitsFC
from camlens.zoo.registry import read_weights

TOY = {"seeds": (0, 1), "widths": (0.125, 0.25), "test_size": 24, "train_size": 16,
       "epochs": 1, "sweep_train_size": 16, "sweep_epochs": 1}


def _run(head: str, seed: int, correct: str) -> dict:
    return {"part": "full", "head": head, "width": 1.0, "train_size": 16, "epochs": 1,
            "seed": seed, "test_size": len(correct), "test_errors": correct.count("0"),
            "correct": correct}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gap_fc") / "gap_fc.md"
    messages: list[str] = []
    table = gap_fc_table(out, log=messages.append, **TOY)
    return out, table, messages


@pytest.mark.slow
def test_table_has_both_parts_every_width_and_writes_json_and_figure(toy_run):
    out, table, _ = toy_run
    assert "## (a) Full recipe, per seed" in table and "## (b) Capacity sweep" in table
    assert "Partial" not in table and out.read_text() == table
    for seed in TOY["seeds"]:
        assert f"\n| {seed} | " in table
    for width in ("0.125", "0.25"):
        assert f"\n| {width} | " in table
    assert "| 0.25 (" in table  # GAP at 0.25 against FC at 0.125: equal-parameter row
    assert out.with_suffix(".png").stat().st_size > 1000
    found = json.loads(out.with_suffix(".json").read_text())
    assert found["complete"] is True
    runs = found["runs"]
    # Per seed: 2 heads on the full recipe + 2 heads x 2 widths in the sweep.
    assert len(runs) == len(TOY["seeds"]) * (2 + 2 * 2)
    for run in runs:
        assert len(run["correct"]) == TOY["test_size"]
        assert run["test_errors"] == run["correct"].count("0")
        assert run["test_error"] == pytest.approx(100 * run["test_errors"] / TOY["test_size"],
                                                  abs=1e-3)


def test_paired_arithmetic_matches_scipy():
    generator = torch.Generator().manual_seed(0)
    runs = []
    for seed in range(3):
        for head, rate in (("digits-gap", 0.9), ("digits-fc", 0.8)):
            hits = (torch.rand(200, generator=generator) < rate).tolist()
            runs.append(_run(head, seed, "".join("1" if hit else "0" for hit in hits)))
    summary = paired_summary(runs)
    differences = []
    for row in summary["seeds"]:
        gap, fc = (next(run for run in runs if run["seed"] == row["seed"] and run["head"] == head)
                   for head in ("digits-gap", "digits-fc"))
        b = sum(g == "1" and f == "0" for g, f in zip(gap["correct"], fc["correct"], strict=True))
        c = sum(g == "0" and f == "1" for g, f in zip(gap["correct"], fc["correct"], strict=True))
        assert (row["only_gap_right"], row["only_fc_right"]) == (b, c)
        assert b + c > 0
        assert row["p"] == pytest.approx(binomtest(b, b + c).pvalue)
        differences.append(100 * (gap["test_errors"] - fc["test_errors"]) / 200)
        assert row["difference"] == pytest.approx(differences[-1])
    mean = sum(differences) / len(differences)
    sem = torch.tensor(differences, dtype=torch.float64).std().item() / len(differences) ** 0.5
    low, high = student_t.interval(0.95, len(differences) - 1, loc=mean, scale=sem)
    # camlens's t table has three decimals: 4.303 for two degrees of freedom.
    assert summary["difference"] == pytest.approx((mean, low, high), abs=1e-3 * sem + 1e-9)
    assert mean < 0  # GAP was made the more accurate


def test_paired_summary_leaves_out_seeds_with_one_head_and_needs_two_for_an_interval():
    runs = [_run("digits-gap", 0, "1101"), _run("digits-fc", 0, "0111"),
            _run("digits-gap", 1, "1111")]
    summary = paired_summary(runs)
    assert [row["seed"] for row in summary["seeds"]] == [0]
    assert summary["seeds"][0]["only_gap_right"] == summary["seeds"][0]["only_fc_right"] == 1
    assert summary["difference"] is None


@pytest.mark.slow
def test_a_rerun_reuses_the_recorded_runs(toy_run):
    out, table, _ = toy_run
    messages: list[str] = []
    again = gap_fc_table(out, log=messages.append, **TOY)
    assert messages and all("reused" in message for message in messages)
    assert again.split("## (a)")[1] == table.split("## (a)")[1]


def test_networks_are_trained_as_camlens_train_trains_them(tmp_path):
    recipe = TrainingRecipe(epochs=1, train_size=8, test_size=10, batch_size=4)
    summary = train("digits-fc", seed=3, recipe=recipe, out=tmp_path / "fc.safetensors",
                    progress=False)
    data = materialize(datasets("cluttered", 8, 10, 3)[0], keys=("image", "label"))
    model = train_head("digits-fc", 1.0, data, recipe, seed=3)
    shipped_way = read_weights(summary["path"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, shipped_way[key]), key


def test_only_the_shipped_recipe_and_seed_are_scored_from_the_shipped_weights():
    from camlens.experiments.gap_fc import _shipped

    model, train_error = _shipped("digits-fc", TrainingRecipe(), 0)
    assert isinstance(model, DigitsFC) and 0 <= train_error < 5
    assert _shipped("digits-gap", TrainingRecipe(), 1) is None
    assert _shipped("digits-gap", TrainingRecipe(epochs=1), 0) is None
