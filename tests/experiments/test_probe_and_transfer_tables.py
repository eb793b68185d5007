"""`camlens reproduce probes` and `camlens reproduce transfer` at toy sizes: every row, the
figures and the JSON are written (the shipped docs come from the full runs)."""

from __future__ import annotations

import json

import pytest

from camlens.experiments.probes import PROBED_LAYERS, probes_table
from camlens.experiments.transfer import transfer_table
from camlens.representations.transfer import CONDITIONS, TransferRecipe


@pytest.mark.slow
def test_probes_table_has_a_row_per_layer_and_writes_its_figure(tmp_path):
    out = tmp_path / "probes.md"
    table = probes_table(out, test_size=60, train_size=80, validation_size=40, figure_size=40)
    for name, layers in PROBED_LAYERS.items():
        for layer in layers:
            assert f"| {name} | `{layer}` |" in table
    assert (tmp_path / "probes.png").stat().st_size > 1000
    found = json.loads((tmp_path / "probes.json").read_text())
    assert found["digits-gap"]["control"]["shuffled_labels"] is True


@pytest.mark.slow
def test_transfer_table_has_every_depth_and_condition(tmp_path):
    out = tmp_path / "transfer.md"
    table = transfer_table(out, test_size=100, train_size=200, seeds=(0, 1),
                           recipe=TransferRecipe(epochs=1))
    assert "| n | " + " | ".join(CONDITIONS) + " |" in table
    assert all(f"\n| {n} | " in table for n in range(1, 6))
    assert (tmp_path / "transfer.png").stat().st_size > 1000
    records = json.loads((tmp_path / "transfer.json").read_text())["records"]
    assert len(records) == 2 * (3 + 5 * len(CONDITIONS))
