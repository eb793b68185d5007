"""On a global-average-pooling + linear head, CAM, Grad-CAM, HiResCAM and XGrad-CAM are one map.

Grad-CAM: d y^c / d f_k(i,j) = w_k^c / Z at every position, so alpha_k^c = w_k^c / Z and the
Grad-CAM map is the CAM map divided by Z; HiResCAM and XGrad-CAM reduce to the same weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

import camlens

EQUIVALENT = ["cam", "gradcam", "hirescam", "xgradcam"]


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 160, 160)


@pytest.mark.parametrize("target", [None, 4, camlens.TopK(3)], ids=["top1", "class4", "top3"])
def test_resnet18_layer4_maps_agree(resnet18, batch, target):
    results = {m: camlens.explain(resnet18, batch, method=m, layer="layer4", target=target)
               for m in EQUIVALENT}
    reference = results["cam"]
    assert reference.maps.amax() == 1.0  # not a degenerate all-zero comparison
    assert (reference.raw > 0).sum() > reference.raw.shape[0]  # more than one lit position
    for method, exp in results.items():
        torch.testing.assert_close(exp.maps, reference.maps, rtol=0, atol=1e-5, msg=method)
        torch.testing.assert_close(exp.targets, reference.targets)
        torch.testing.assert_close(exp.scores, reference.scores)


def test_gradcam_raw_is_cam_raw_over_positions(resnet18, batch):
    cam = camlens.explain(resnet18, batch, method="cam", layer="layer4", target=2)
    gradcam = camlens.explain(resnet18, batch, method="gradcam", layer="layer4", target=2)
    positions = cam.raw.shape[-1] * cam.raw.shape[-2]
    torch.testing.assert_close(gradcam.raw * positions, cam.raw, rtol=1e-4, atol=1e-5)


def test_cam_all_classes_in_one_call(resnet18, batch):
    every = camlens.explain(resnet18, batch, method="cam", layer="layer4", target="all")
    assert every.raw.shape == (3, 10, 5, 5)
    single = camlens.explain(resnet18, batch, method="cam", layer="layer4", target=7)
    torch.testing.assert_close(every.maps[:, 7], single.maps)


def test_cam_refuses_a_flatten_head_and_suggests_gradcam(flatten_net, images):
    with pytest.raises(ValueError, match="global average pooling.*gradcam"):
        camlens.explain(flatten_net, images, method="cam", layer="features")
    exp = camlens.explain(flatten_net, images, method="gradcam", layer="features")
    assert exp.maps.shape == (2, 6, 6)


def test_cam_refuses_a_layer_that_does_not_feed_the_pooling(resnet18, batch):
    with pytest.raises(ValueError, match="layer3"):
        camlens.explain(resnet18, batch, method="cam", layer="layer3")


class PooledHead(torch.nn.Module):
    """conv -> ReLU -> pooling (mean, sum or max over positions) -> linear, output scaled."""

    def __init__(self, pooling: str, output_scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU())
        self.classifier = torch.nn.Linear(6, 4)
        self.pooling, self.output_scale = pooling, output_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        pooled = {"mean": features.mean(dim=(2, 3)), "sum": features.sum(dim=(2, 3)),
                  "max": features.amax(dim=(2, 3))}[self.pooling]
        return self.classifier(pooled) * self.output_scale


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_cam_accepts_mean_and_sum_pooling_heads(pooling):
    model, images = PooledHead(pooling).eval(), torch.randn(2, 3, 12, 12)
    cam = camlens.explain(model, images, method="cam", layer="features", target=1)
    gradcam = camlens.explain(model, images, method="gradcam", layer="features", target=1)
    torch.testing.assert_close(cam.maps, gradcam.maps, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model", [PooledHead("max"), PooledHead("mean", output_scale=2.0)],
                         ids=["max-pooling", "scaled-output"])
def test_cam_refuses_heads_that_only_look_like_gap_linear(model):
    # same shapes as a GAP + linear head; only the values tell them apart
    with pytest.raises(ValueError, match="global average pooling"):
        camlens.explain(model.eval(), torch.randn(2, 3, 12, 12), method="cam", layer="features")
