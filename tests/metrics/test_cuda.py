"""Every metric gives the same answer on CUDA tensors as on CPU tensors."""

from __future__ import annotations

import pytest
import torch
from toy_models import GapNet

from camlens import metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_map_metrics_agree_with_cpu():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 17, 19, generator=generator) ** 3
    boxes = torch.tensor([[2, 3, 9, 12]] * 6)
    cuda_maps, cuda_boxes = maps.cuda(), boxes.cuda()
    cpu_boxes = metrics.largest_component_boxes(maps)
    gpu_boxes = metrics.largest_component_boxes(cuda_maps)
    assert gpu_boxes.device.type == "cuda"
    assert torch.equal(gpu_boxes.cpu(), cpu_boxes)
    torch.testing.assert_close(
        metrics.box_iou(cuda_boxes, gpu_boxes).cpu(), metrics.box_iou(boxes, cpu_boxes)
    )
    assert torch.equal(
        metrics.pointing_game(cuda_maps, cuda_boxes, 3).cpu(), metrics.pointing_game(maps, boxes, 3)
    )
    torch.testing.assert_close(
        metrics.energy_pointing_game(cuda_maps, cuda_boxes).cpu(),
        metrics.energy_pointing_game(maps, boxes),
    )
    torch.testing.assert_close(
        metrics.spearman(cuda_maps, cuda_maps.flip(-1)).cpu(), metrics.spearman(maps, maps.flip(-1))
    )


def test_model_metrics_agree_with_cpu():
    torch.manual_seed(0)
    model = GapNet().eval()
    images = torch.randn(2, 3, 8, 8)
    maps = torch.rand(2, 8, 8)
    cpu = metrics.deletion_insertion(model, images, maps, steps=8, mode="insertion")
    cpu_drop = metrics.average_drop_increase(model, images, maps)
    model.cuda()
    gpu = metrics.deletion_insertion(model, images.cuda(), maps.cuda(), steps=8, mode="insertion")
    gpu_drop = metrics.average_drop_increase(model, images.cuda(), maps.cuda())
    assert gpu.curves.device.type == "cuda"
    torch.testing.assert_close(gpu.curves.cpu(), cpu.curves, atol=1e-4, rtol=1e-4)
    assert gpu_drop["average_drop"] == pytest.approx(cpu_drop["average_drop"], abs=1e-2)
    results = metrics.cascading_randomization(model, images.cuda(), layer="features")
    assert len(results) == 4
    assert all(-1.0 <= rho <= 1.0 for _, rho in results)
