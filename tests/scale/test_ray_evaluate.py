"""`camlens evaluate --engine ray` on a local Ray (``ray.init(num_cpus=2)``): the same table as
the local engine, intervals included, and a retried image counted once."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from camlens.cli import main
from camlens.data.export import export_cluttered_digits

ray = pytest.importorskip("ray")

QUICK = ["--skip", "deletion", "--skip", "insertion", "--skip", "road", "--resamples", "50",
         "--method", "gradcam", "--method", "layercam", "--batch-size", "3"]


@pytest.mark.slow
def test_ray_gives_the_local_engines_table(local_ray, tmp_path):
    folder = tmp_path / "cluttered"
    export_cluttered_digits(folder, size=7, seed=2)
    tables = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.json"
        result = CliRunner().invoke(main, [
            "evaluate", "--model", "digits-gap", "--images", str(folder / "images"),
            "--boxes", str(folder / "boxes.json"), *QUICK, "--engine", engine, "--actors", "2",
            "--out", str(out)])
        assert result.exit_code == 0, result.output
        tables[engine] = json.loads(out.read_text())
    local, distributed = tables["local"]["rows"], tables["ray"]["rows"]
    assert [row["method"] for row in local] == [row["method"] for row in distributed]
    for mine, theirs in zip(local, distributed, strict=True):
        assert mine["images"] == theirs["images"] == 7
        assert mine["values"].keys() == theirs["values"].keys()
        for key, cell in mine["values"].items():
            other = theirs["values"][key]
            for part in ("value", "low", "high"):
                # float32 rounding: an image's batch mates differ between the engines
                assert cell[part] == pytest.approx(other[part], rel=1e-5, abs=1e-6), (
                    mine["method"], key)
    assert "--engine ray" in tables["ray"]["settings"]["command"]


def test_an_unknown_engine_and_actor_count_are_refused():
    from camlens.evaluation import EvaluationSpec
    from camlens.scale.evaluation_engine import evaluate_rows

    with pytest.raises(ValueError, match="unknown engine 'spark'; choose one of local, ray"):
        evaluate_rows(None, EvaluationSpec(), [], engine="spark")
    with pytest.raises(ValueError, match="actors must be a positive int"):
        evaluate_rows(None, EvaluationSpec(), [], engine="ray", actors=0)
