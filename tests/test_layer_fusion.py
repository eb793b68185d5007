"""layer=[...]: one map per layer from one forward and one backward pass, and their fusion."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import camlens
from camlens.explanation import Explanation, fuse_layers


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5).eval()


class TwoBranches(nn.Module):
    """Two convolutions side by side (neither feeds the other) and a shared head."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 5, padding=2)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        return self.head(pooled.mean(dim=(2, 3)))


def count_forwards(model: nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls: list[int] = []
    return calls, model.register_forward_hook(lambda *args: calls.append(1))


@pytest.mark.parametrize("method", ["gradcam", "layercam", "hirescam", "gradcam++", "eigencam",
                                    # one masked forward per channel of three layers: ~20 s
                                    pytest.param("scorecam", marks=pytest.mark.slow)])
def test_each_layers_map_equals_its_own_call(resnet, method):
    images = torch.randn(2, 3, 64, 64)
    layers = ["layer2", "layer3", "layer4"]
    fused = camlens.explain(resnet, images, method, layer=layers, target=camlens.TopK(2))
    assert list(fused.per_layer) == layers
    for name in layers:
        alone = camlens.explain(resnet, images, method, layer=name, target=camlens.TopK(2))
        torch.testing.assert_close(fused.per_layer[name].raw, alone.raw, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fused.per_layer[name].scores, alone.scores)
    assert fused.raw.shape == (2, 2, 8, 8)  # the finest grid: layer2's at 64 px
    assert fused.layer == "layer2+layer3+layer4"
    assert fused.maps.shape == (2, 2, 64, 64)


def test_several_layers_cost_one_forward(resnet):
    images = torch.randn(2, 3, 64, 64)
    calls, handle = count_forwards(resnet)
    try:
        camlens.explain(resnet, images, "gradcam", layer=["layer3", "layer4"],
                        target=camlens.TopK(3))
    finally:
        handle.remove()
    assert len(calls) == 1


def test_layers_side_by_side_and_nested_get_their_own_gradients(resnet):
    model = TwoBranches().eval()
    images = torch.randn(3, 3, 12, 12)
    fused = camlens.explain(model, images, "gradcam", layer=["left", "right"], target="all")
    for name in ("left", "right"):
        alone = camlens.explain(model, images, "gradcam", layer=name, target="all")
        torch.testing.assert_close(fused.per_layer[name].raw, alone.raw)
    # layer4.1 and layer4 output the same tensor: the outer hook sees the inner one's output.
    same = torch.randn(1, 3, 64, 64)
    nested = camlens.explain(resnet, same, "gradcam", layer=["layer4.1", "layer4", "layer4.0"],
                             target=1)
    for name in ("layer4.1", "layer4", "layer4.0"):
        alone = camlens.explain(resnet, same, "gradcam", layer=name, target=1)
        torch.testing.assert_close(nested.per_layer[name].raw, alone.raw, atol=1e-5, rtol=1e-4)
        assert float(alone.raw.amax()) > 0


def test_the_fusion_rule_by_hand():
    def layer(raw: list[list[float]]) -> Explanation:
        return Explanation(raw=torch.tensor([raw]), scores=torch.tensor([1.0]),
                           targets=torch.tensor([0]), method="gradcam", layer="x",
                           input_size=(4, 4))

    coarse = layer([[2.0, 0.0], [0.0, 0.0]])  # scaled: [[1, 0], [0, 0]]
    fine = layer([[0.0, 0.0, 0.0, 4.0], [0.0, 2.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    empty = layer([[0.0, 0.0], [0.0, 0.0]])
    fused = fuse_layers({"coarse": coarse, "fine": fine, "empty": empty}, "max")
    # Upsampling [[1, 0], [0, 0]] from 2x2 to 4x4 (bilinear, align_corners=False) gives
    # 1, 0.75, 0.25, 0 along the first row and column.
    up = torch.tensor([[1.0, 0.75, 0.25, 0.0], [0.75, 0.5625, 0.1875, 0.0],
                       [0.25, 0.1875, 0.0625, 0.0], [0.0, 0.0, 0.0, 0.0]])
    fine_scaled = fine.raw[0] / 4.0
    torch.testing.assert_close(fused.raw[0], torch.maximum(up, fine_scaled))
    mean = fuse_layers({"coarse": coarse, "fine": fine, "empty": empty}, "mean")
    torch.testing.assert_close(mean.raw[0], (up + fine_scaled) / 3)
    assert "4x4 grid of 'fine'" in fused.notes[0]
    assert fused.layer == "coarse+fine+empty"


def test_bad_layer_lists_are_refused(resnet):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"layer=\[\] names no layer"):
        camlens.explain(resnet, images, layer=[])
    with pytest.raises(ValueError, match="listed twice"):
        camlens.explain(resnet, images, layer=["layer4", resnet.layer4])
    with pytest.raises(ValueError, match="None .* works only on its own"):
        camlens.explain(resnet, images, layer=["layer4", None])
    with pytest.raises(ValueError, match="unknown layer 'layer9'"):
        camlens.explain(resnet, images, layer=["layer4", "layer9"])
    with pytest.raises(ValueError, match="fuse must be one of max, mean, got 'sum'"):
        camlens.explain(resnet, images, layer=["layer3", "layer4"], fuse="sum")


def test_maps_with_different_spatial_axes_are_not_fused():
    flat = Explanation(raw=torch.ones(1, 4), scores=torch.ones(1), targets=None,
                       method="gradcam", layer="a", input_size=(8,))
    square = Explanation(raw=torch.ones(1, 2, 2), scores=torch.ones(1), targets=None,
                         method="gradcam", layer="b", input_size=(8, 8))
    with pytest.raises(ValueError, match="different numbers of spatial axes: a"):
        fuse_layers({"a": flat, "b": square})


def test_the_model_is_untouched_by_a_multi_layer_call(resnet):
    before = {name: tensor.clone() for name, tensor in resnet.state_dict().items()}
    camlens.explain(resnet, torch.randn(2, 3, 64, 64), "layercam", layer=["layer3", "layer4"])
    assert not resnet.training
    assert all(not module._forward_hooks for module in resnet.modules())
    assert all(parameter.grad is None for parameter in resnet.parameters())
    for name, tensor in resnet.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_a_method_without_one_pass_runs_per_layer_and_says_so(resnet):
    images = torch.randn(1, 3, 64, 64)
    fused = camlens.explain(resnet, images, "ablationcam", layer=["layer3", "layer4"])
    assert "ablationcam ran once per layer (2 runs)" in fused.notes[0]
    alone = camlens.explain(resnet, images, "ablationcam", layer="layer4")
    torch.testing.assert_close(fused.per_layer["layer4"].raw, alone.raw)


def test_detector_fpn_levels_are_fused(tmp_path):
    torch.manual_seed(0)
    detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, box_score_thresh=0.0,
        min_size=128, max_size=128).eval()
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        found = detector(image)[0]
    box = camlens.BoxTarget(found["boxes"][0].tolist(), label=int(found["labels"][0]))
    levels = [f"backbone.fpn.layer_blocks.{level}" for level in range(4)]
    fused = camlens.explain(detector, image, "gradcam", layer=levels, target=box)
    grids = {name: tuple(exp.raw.shape[1:]) for name, exp in fused.per_layer.items()}
    assert grids == {levels[0]: (32, 32), levels[1]: (16, 16), levels[2]: (8, 8),
                     levels[3]: (4, 4)}
    assert fused.raw.shape == (1, 32, 32)
    for name in levels[:2]:
        alone = camlens.explain(detector, image, "gradcam", layer=name, target=box)
        torch.testing.assert_close(fused.per_layer[name].raw, alone.raw, atol=1e-5, rtol=1e-4)
