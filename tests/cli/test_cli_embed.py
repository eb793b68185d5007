"""`camlens embed`: a PNG per layer and a JSON with coordinates, labels and probe accuracy;
bad layers, methods and a missing umap-learn are usage errors that say what is accepted."""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner
from PIL import Image

from camlens.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_embed_digits_writes_maps_coordinates_and_probes(tmp_path):
    result = run("embed", "-m", "digits-gap", "-l", "features.13", "-l", "classifier",
                 "--limit", 40, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "embedding.json").read_text())
    assert summary["count"] == 40 and len(summary["labels"]) == 40
    assert summary["method"] == "pca" and summary["class_names"][3] == "3"
    for layer in ("features.13", "classifier"):
        record = summary["layers"][layer]
        assert len(record["coordinates"]) == 40
        assert (tmp_path / record["figure"]).stat().st_size > 1000
        probe = record["probe"]
        assert probe["test_size"] == 10 and 0 <= probe["accuracy"] <= 1
    # The logits of a trained model separate the classes: its probe beats chance.
    assert summary["layers"]["classifier"]["probe"]["accuracy"] > 0.5


def test_embed_a_folder_of_class_sub_folders(tmp_path):
    data = tmp_path / "data"
    for name, value in (("dark", 20), ("light", 230)):
        (data / name).mkdir(parents=True)
        for index in range(8):
            Image.new("L", (64, 64), value + index).save(data / name / f"{index}.png")
    out = tmp_path / "out"
    result = run("embed", "-m", "digits-gap", "-l", "features.2", "--data", data,
                 "--limit", 16, "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "embedding.json").read_text())
    assert summary["class_names"] == ["dark", "light"]
    assert sorted(summary["labels"]) == [0] * 8 + [1] * 8


def test_bad_layer_method_and_missing_umap_are_usage_errors(tmp_path, monkeypatch):
    result = run("embed", "-m", "digits-gap", "-l", "featurs.13", "--out", tmp_path)
    assert result.exit_code == 2 and "features.13" in result.output
    result = run("embed", "-m", "digits-gap", "--method", "isomap", "--out", tmp_path)
    assert result.exit_code == 2 and "'isomap'" in result.output and "pca" in result.output
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    result = run("embed", "-m", "digits-gap", "--method", "umap", "--out", tmp_path)
    assert result.exit_code == 2 and "umap-learn" in result.output
    result = run("embed", "-m", "digits-gap", "--data", tmp_path / "nowhere", "--out", tmp_path)
    assert result.exit_code == 2 and "neither 'digits' nor a folder" in result.output
    assert not (tmp_path / "embedding.json").exists()
