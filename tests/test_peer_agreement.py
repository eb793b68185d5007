"""camlens' maps agree with pytorch-grad-cam's where both implement a method or option, and
differ only for the reasons benchmarks/compare_peers.py states (grad-cam is in the dev extra,
so `make test` and CI run it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed (the dev extra has "
                                               "it: pip install -e '.[dev]')")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_peers.py"


def load_script():
    spec = importlib.util.spec_from_file_location("compare_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_maps_agree_with_pytorch_grad_cam_or_differ_as_stated():
    rows = {row.name: row for row in load_script().agreements()}
    for name in ("gradcam", "shapleycam (ReST)", "finercam"):
        assert min(rows[name].correlations) > 0.9999, rows[name]
        assert rows[name].max_difference < 1e-4, rows[name]
    for name in ("gradcam eigen_smooth", "eigengradcam"):
        # The same map, or the complementary one where pytorch-grad-cam's SVD sign points
        # against the evidence (a negative correlation).
        assert all(value > 0.9999 or value < 0 for value in rows[name].correlations), rows[name]
        assert max(rows[name].correlations) > 0.9999
    assert min(rows["gradcam aug_smooth"].correlations) > 0.98
    assert min(rows["fullgrad"].correlations) > 0.85
    assert min(rows["layercam layer=[layer2, layer3, layer4]"].correlations) > 0.85
