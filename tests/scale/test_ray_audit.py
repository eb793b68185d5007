"""`camlens.scale.audit(..., engine="ray")` on a local Ray (``ray.init(num_cpus=2)``): the same
summary, per-input shares and kept worst cases as the local audit."""

from __future__ import annotations

import pytest
import torch

from camlens.data import BiasedDigits
from camlens.scale import audit
from camlens.zoo import load

ray = pytest.importorskip("ray")
pytest.importorskip("safetensors")


@pytest.mark.slow
def test_ray_audit_equals_the_local_audit(local_ray):
    model = load("digits-biased")
    data = BiasedDigits(20, "test", seed=3, mark="random")
    settings = {"regions": {"object": "box", "mark": "mark_box"}, "cue_key": "mark_class",
                "batch_size": 6, "keep": 3, "layer": "features",
                "counterfactuals": {"no mark": BiasedDigits(20, "test", seed=3, mark="none")}}
    local = audit(model, data, **settings)
    distributed = audit(model, data, engine="ray", actors=2, **settings)
    torch.testing.assert_close(distributed.shares, local.shares, rtol=1e-4, atol=1e-7,
                               equal_nan=True)
    assert torch.equal(distributed.predictions, local.predictions)
    assert torch.equal(distributed.cues, local.cues)
    assert distributed.summary()["accuracy"] == local.summary()["accuracy"]
    # every figure and its 95% interval (accuracy, mean shares, lifts; overall, per class,
    # by cue), identical on both engines
    for key in ("overall", "per_class", "by_cue"):
        assert distributed.to_dict()[key] == local.to_dict()[key], key
    assert distributed.summary()["regions"]["mark"]["lift_interval"] is not None
    for region in ("object", "mark"):
        assert [e.index for e in distributed.examples[region]] == [
            e.index for e in local.examples[region]]
    assert distributed.counterfactual.to_dict() == local.counterfactual.to_dict()
    assert any("on Ray" in note for note in distributed.notes)


def test_bad_engine_and_actor_counts_are_refused():
    with pytest.raises(ValueError, match="unknown engine 'dask'; choose one of local, ray"):
        audit(None, [], {}, engine="dask")
    with pytest.raises(ValueError, match="actors must be a positive int"):
        audit(None, [], {}, engine="ray", actors=0)


@pytest.mark.slow
def test_the_audit_command_on_ray_writes_the_local_summary(local_ray, tmp_path):
    import json

    from click.testing import CliRunner

    from camlens.cli import main

    summaries = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        result = CliRunner().invoke(main, ["audit", "--model", "digits-biased", "--size", "12",
                                           "--batch-size", "5", "--engine", engine,
                                           "--actors", "2", "--out", str(out)])
        assert result.exit_code == 0, result.output
        summaries[engine] = json.loads((out / "summary.json").read_text())
    local, distributed = summaries["local"], summaries["ray"]
    for key in ("overall", "per_class", "by_cue", "counterfactual"):
        assert json.dumps(distributed[key], sort_keys=True) == json.dumps(local[key],
                                                                          sort_keys=True), key
    assert [e["index"] for e in distributed["top"]["mark"]] == [
        e["index"] for e in local["top"]["mark"]]
