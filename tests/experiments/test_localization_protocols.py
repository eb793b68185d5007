"""The protocols of ``camlens reproduce localization-protocols`` on hand-built maps."""

from __future__ import annotations

import pytest
import torch

from camlens.cli.experiments import TABLES
from camlens.experiments import localization_protocols as protocols
from camlens.explanation import upsample


def halo_maps() -> torch.Tensor:
    """Two 8x8 pre-ReLU maps: a -0.5 halo over rows/columns 0-5 on a -1 background, the
    object (1.0) at rows/columns 2-3; the second map's maximum sits in the halo instead."""
    raw = torch.full((2, 8, 8), -1.0)
    raw[:, 0:6, 0:6] = -0.5
    raw[:, 2:4, 2:4] = 1.0
    raw[1, 0, 0] = 2.0
    return raw


def test_protocol_values_on_hand_built_maps():
    raw = halo_maps()
    maps = raw.clamp_min(0) / raw.clamp_min(0).amax(dim=(1, 2), keepdim=True)
    boxes = torch.tensor([[2.0, 2.0, 4.0, 4.0], [2.0, 2.0, 4.0, 4.0]])
    ink = torch.zeros(2, 8, 8, dtype=torch.bool)
    ink[:, 2, 2] = True  # the stroke: one pixel of the box
    labels = torch.tensor([1, 1])
    predicted = torch.tensor([1, 0])  # the second prediction is wrong
    values = protocols.protocol_values(maps, raw, maps, raw, boxes, ink, predicted, labels)
    # relu-max at 20% boxes the object, min-max the halo; a wrong class never hits
    assert values["hit@relu-max@0.20"].tolist() == [True, False]
    assert values["hit@min-max@0.20"].tolist() == [False, False]
    assert values["hit@library@0.20"].tolist() == [True, False]
    # MaxBoxAcc ignores the class; on map 2 the object (1.0) is the largest component above
    # tau * 2 for tau in (0, 0.5] under relu-max; under min-max, S = (M + 1) / 3, the halo
    # (S = 1/6) goes at tau > 1/6 and the object (S = 2/3) stays up to tau = 0.66
    thresholds = torch.tensor(protocols.metrics.BOX_ACCURACY_THRESHOLDS)
    relu_taus = thresholds[values["boxhits@relu-max"][1]]
    minmax_taus = thresholds[values["boxhits@min-max"][1]]
    assert (relu_taus.min().item(), relu_taus.max().item()) == pytest.approx((0.01, 0.50))
    assert len(relu_taus) == 50
    assert (minmax_taus.min().item(), minmax_taus.max().item()) == pytest.approx((0.17, 0.66))
    assert len(minmax_taus) == 50
    # map 1 peaks at (2, 2), on the ink; map 2 at (0, 0): 2.83 px from the box
    assert values["box@4"].tolist() == [True, True]
    assert values["box@2"].tolist() == [True, False]
    assert values["box@0"].tolist() == [True, False]
    assert values["ink@0"].tolist() == [True, False]


def test_the_summary_gives_errors_maxboxacc_and_class_means_with_intervals():
    hits = torch.tensor([True] * 8 + [False] * 2)
    labels = torch.tensor([0] * 5 + [1] * 5)
    boxhits = torch.zeros(10, 100, dtype=torch.bool)
    boxhits[:6, 30] = True
    boxhits[:4, 50] = True
    row = protocols._summarize({"hit@relu-max@0.20": hits, "boxhits@relu-max": boxhits,
                                "box@0": hits}, labels)
    error = row["error@relu-max@0.20"]
    assert error["value"] == pytest.approx(20.0) and error["low"] < 20 < error["high"]
    assert row["maxboxacc@relu-max"]["value"] == pytest.approx(60.0)
    assert row["maxboxacc@relu-max"]["threshold"] == pytest.approx(0.30)
    assert row["box@0"]["value"] == pytest.approx(80.0)
    # class 0: 5 of 5, class 1: 3 of 5 -> 80 as well; the interval comes from the bootstrap
    mean = row["box@0@class-mean"]
    assert mean["value"] == pytest.approx(80.0) and mean["low"] <= 80 <= mean["high"]


def test_the_pre_relu_map_is_recorded(gap_net, images):
    """CAM before its ReLU is sum_k w_k^c A^k, which has negative values on a random net."""
    maps, raw = protocols._method_maps(gap_net, images, "cam", torch.tensor([0, 2]))
    activations = gap_net.features(images)
    expected = torch.einsum("bkhw,bk->bhw", activations, gap_net.fc.weight[[0, 2]])
    torch.testing.assert_close(raw, upsample(expected, tuple(images.shape[-2:])))
    assert (raw < 0).any()
    torch.testing.assert_close(maps.amax(dim=(1, 2)), torch.ones(2))


def test_render_and_registration():
    assert TABLES["localization-protocols"] == (
        "camlens.experiments.localization_protocols", "localization_protocols_table")
    figure = {"value": 10.0, "low": 5.0, "high": 15.0}
    figures = {f"{kind}@{convention}@{t:.2f}": figure for kind in ("error",)
               for convention in ("relu-max", "min-max", "library") for t in (0.20, 0.15)}
    figures |= {f"maxboxacc@{c}": {**figure, "threshold": 0.3} for c in ("relu-max", "min-max")}
    for key in ("box@4", "box@2", "box@0", "ink@2", "ink@0"):
        figures[key] = figures[key + "@class-mean"] = figure
    record = {"test_size": 10, "seconds": 61.0, "ink_share_of_box": 0.4,
              "classification": {"digits-gap": figure},
              "rows": [{"model": "digits-gap", "method": "gradcam", "figures": figures,
                        "negative_share": 50.0},
                       {"model": "digits-fc", "method": "cam", "refused": "CAM needs GAP"}]}
    page = protocols.render(record, "camlens reproduce localization-protocols")
    assert "| digits-gap | gradcam | 10.0 [5.0, 15.0] |" in page
    assert "10.0 [5.0, 15.0] (0.30)" in page
    assert "refused: CAM needs GAP" in page
    assert "1 min 1 s" in page and "40% of the box" in page
    assert page.count("| model | method | box 4 px |") == 2
