"""`camlens reproduce sanity` at toy sizes, and the permuted-label training of the data
randomization test (Adebayo et al. 2018)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from camlens.cli import main
from camlens.experiments.sanity import METRICS, method_maps, sanity_table
from camlens.experiments.training import TrainingRecipe, fit, permuted_labels
from camlens.zoo import load


def test_permuted_labels_keep_the_labels_and_change_their_order():
    labels = torch.arange(200) % 10
    data = {"image": torch.zeros(200, 1, 4, 4), "label": labels}
    first = permuted_labels(data, "cluttered", seed=0)
    assert torch.equal(first.sort().values, labels.sort().values)  # same class counts
    assert (first != labels).float().mean() > 0.5
    assert torch.equal(first, permuted_labels(data, "cluttered", seed=0))
    assert not torch.equal(first, permuted_labels(data, "cluttered", seed=1))
    with pytest.raises(ValueError, match="classification"):
        permuted_labels(data, "scenes", seed=0)


@pytest.mark.slow
def test_a_permuted_label_model_says_so_in_its_summary():
    recipe = TrainingRecipe(epochs=1, train_size=32, test_size=10, batch_size=16,
                            permuted_labels=True)
    model, summary = fit("digits-gap", seed=3, recipe=recipe, progress=False)
    assert summary["permuted_labels"] is True
    assert summary["command"] == "camlens train digits-gap --seed 3 --permuted-labels"
    assert not model.training


def test_train_refuses_permuted_labels_without_out():
    result = CliRunner().invoke(main, ["train", "digits-gap", "--permuted-labels"])
    assert result.exit_code == 2
    assert "--out" in result.output


def test_signed_and_absolute_maps():
    model = load("digits-gap")
    images = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 2, 3])
    signed, absolute = method_maps(model, images, "gradient", targets)
    assert signed.shape == absolute.shape == (3, 64, 64)
    assert torch.equal(absolute, signed.abs())
    assert (signed < 0).any()
    cam_signed, cam_absolute = method_maps(model, images, "gradcam", targets, batch=2)
    assert torch.equal(cam_signed, cam_absolute)
    # each map scaled to a maximum of 1, or zero everywhere (no positive evidence: the engine
    # warns; random pictures can give one)
    peaks = cam_signed.amax(dim=(1, 2))
    assert cam_signed.min() >= 0 and (peaks.eq(1) | peaks.eq(0)).all() and peaks.eq(1).any()


def test_the_cascade_tables_have_every_step_and_metric():
    page = sanity_table(None, test_size=10, models=("digits-gap",), methods=("gradient",),
                        independent=False, data=False, resamples=20, log=lambda _: None)
    for heading in METRICS.values():
        assert f"digits-gap, cascading randomization, {heading}" in page
    assert page.count("| randomised | gradient |") == len(METRICS)
    rows = [line for line in page.splitlines() if line.startswith("| features.0 (Conv2d) | ")]
    assert len(rows) == len(METRICS)
    assert "Data randomization" not in page


@pytest.mark.slow
def test_the_page_has_every_step_method_and_metric(tmp_path):
    out = tmp_path / "sanity.md"
    methods = ("gradcam", "guided-backprop", "gradient")
    page = sanity_table(out, test_size=12, models=("digits-gap",), methods=methods,
                        independent=False, resamples=50,
                        data_recipe=TrainingRecipe(epochs=1, train_size=16, test_size=10,
                                                   batch_size=16), log=lambda _: None)
    steps = ["classifier (Linear)", "features.12 (BatchNorm2d)", "features.0 (Conv2d)"]
    for heading in METRICS.values():
        assert f"digits-gap, cascading randomization, {heading}" in page
    assert all(f"\n| {step} | " in page for step in steps)
    assert page.count("| randomised | gradcam | guided-backprop | gradient |") == len(METRICS)
    for pair in ("true vs permuted", "shipped vs permuted", "shipped vs true"):
        assert f"Maps of {pair}" in page
    assert "| permuted labels |" in page
    record = json.loads((tmp_path / "sanity.json").read_text())
    cascade = record["digits-gap"]["cascading"]
    assert len(cascade["steps"]) == 9
    first = cascade["results"]["gradcam"][0]
    assert set(first) == set(METRICS)
    assert first["ssim"]["low"] <= first["ssim"]["mean"] <= first["ssim"]["high"]
    assert record["data_randomization"]["summaries"]["permuted"]["permuted_labels"] is True
    for name in ("sanity-cascade-digits-gap.png", "sanity-data.png"):
        assert (tmp_path / name).stat().st_size > 5000
        assert f"]({name})" in page
