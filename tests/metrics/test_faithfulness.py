"""RISE deletion/insertion and Grad-CAM++ average drop/increase on models with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from toy_models import GapNet

from camlens.metrics import average_drop_increase, deletion_insertion, gaussian_blur
from camlens.metrics.faithfulness import gaussian_kernel


class QuadrantModel(nn.Module):
    """Two classes: logit 0 = the sum of the top-left quadrant of the image, logit 1 = 0, so
    p(class 0) = sigmoid(sum of the top-left quadrant). Records the batch sizes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        height, width = x.shape[-2:]
        quadrant = x[:, :, : height // 2, : width // 2].sum(dim=(1, 2, 3)) * self.scale
        return torch.stack([quadrant, torch.zeros_like(quadrant)], dim=1)


class BlindModel(nn.Module):
    """Ignores its input entirely."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, -1.2, 2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def trapezoid(curve: list[float]) -> float:
    return (sum(curve) - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1)


@pytest.fixture
def quadrant_setup():
    """4x4 images of ones; the right map marks the top-left quadrant, the wrong one puts it
    last."""
    images = torch.ones(1, 1, 4, 4)
    right = torch.zeros(1, 4, 4)
    right[:, :2, :2] = 1.0
    wrong = torch.full((1, 4, 4), 0.5)
    wrong[:, 2:, 2:] = 1.0
    wrong[:, :2, :2] = 0.0
    return QuadrantModel(), images, right, wrong


def test_deletion_curves_and_auc_by_hand(quadrant_setup):
    model, images, right, wrong = quadrant_setup
    right_result = deletion_insertion(model, images, right, steps=16, mode="deletion")
    wrong_result = deletion_insertion(model, images, wrong, steps=16, mode="deletion")
    # one pixel per step; the quadrant holds 4 ones
    right_curve = [sigmoid(4 - min(i, 4)) for i in range(17)]
    wrong_curve = [sigmoid(4 if i <= 12 else 4 - (i - 12)) for i in range(17)]
    torch.testing.assert_close(right_result.curves[0], torch.tensor(right_curve).double())
    torch.testing.assert_close(wrong_result.curves[0], torch.tensor(wrong_curve).double())
    assert right_result.auc.item() == pytest.approx(trapezoid(right_curve), abs=1e-6)
    assert right_result.auc.item() < wrong_result.auc.item()
    torch.testing.assert_close(right_result.fractions, torch.arange(17) / 16)
    assert right_result.targets.tolist() == [0]


def test_insertion_curves_and_auc_by_hand(quadrant_setup):
    model, images, right, wrong = quadrant_setup
    right_result = deletion_insertion(model, images, right, steps=16, mode="insertion", substrate=0)
    wrong_result = deletion_insertion(model, images, wrong, steps=16, mode="insertion", substrate=0)
    right_curve = [sigmoid(min(i, 4)) for i in range(17)]
    torch.testing.assert_close(right_result.curves[0], torch.tensor(right_curve).double())
    assert right_result.auc.item() == pytest.approx(trapezoid(right_curve), abs=1e-6)
    assert right_result.auc.item() > wrong_result.auc.item()


def test_default_insertion_starts_from_the_blurred_image():
    model = QuadrantModel()
    images = torch.zeros(1, 1, 12, 12)
    images[..., 5, 5] = 8.0  # inside the top-left quadrant, at its corner
    saliency = torch.rand(1, 12, 12)
    result = deletion_insertion(model, images, saliency, steps=4, mode="insertion")
    blurred_quadrant = gaussian_blur(images)[..., :6, :6].sum().item()
    assert blurred_quadrant < 7.0  # the blur spread mass out of the quadrant
    assert result.curves[0, 0].item() == pytest.approx(sigmoid(blurred_quadrant), abs=1e-6)
    assert result.curves[0, -1].item() == pytest.approx(sigmoid(8.0), abs=1e-6)


def test_steps_that_do_not_divide_the_pixels(quadrant_setup):
    model, images, right, _ = quadrant_setup
    result = deletion_insertion(model, images, right, steps=3)
    torch.testing.assert_close(result.fractions, torch.tensor([0, 5, 10, 16]) / 16)
    expected = [sigmoid(4), sigmoid(0), sigmoid(0), sigmoid(0)]
    torch.testing.assert_close(result.curves[0], torch.tensor(expected).double())


def test_low_resolution_maps_are_upsampled(quadrant_setup):
    model, images, right, _ = quadrant_setup
    coarse = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    fine = deletion_insertion(model, images, right, steps=16)
    upsampled = deletion_insertion(model, images, coarse, steps=16)
    torch.testing.assert_close(upsampled.curves, fine.curves)


def test_batches_are_bounded_and_do_not_change_the_result():
    model = QuadrantModel()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 2, 6, 6, generator=generator)
    maps = torch.rand(3, 6, 6, generator=generator)
    small = deletion_insertion(model, images, maps, steps=9, mode="insertion", batch_size=4)
    assert max(model.batch_sizes) <= 4
    assert sum(model.batch_sizes) == 3 + 3 * 10  # the predictions, then every curve point
    model.batch_sizes.clear()
    large = deletion_insertion(model, images, maps, steps=9, mode="insertion", batch_size=100)
    assert max(model.batch_sizes) == 30
    torch.testing.assert_close(small.curves, large.curves)
    torch.testing.assert_close(small.auc, large.auc)


def test_default_targets_are_the_predicted_classes_and_explicit_ones_are_used():
    model = QuadrantModel()
    images = torch.stack([torch.ones(1, 4, 4), -torch.ones(1, 4, 4)])
    maps = torch.rand(2, 4, 4)
    result = deletion_insertion(model, images, maps, steps=4)
    assert result.targets.tolist() == [0, 1]
    # the first point is the probability of the predicted class on the untouched image
    torch.testing.assert_close(result.curves[:, 0],
                               torch.tensor([sigmoid(4), sigmoid(4)]).double())
    forced = deletion_insertion(model, images, maps, targets=0, steps=4)
    assert forced.targets.tolist() == [0, 0]
    assert forced.curves[1, 0].item() == pytest.approx(sigmoid(-4), abs=1e-6)
    with pytest.raises(IndexError, match="out of range"):
        deletion_insertion(model, images, maps, targets=[0, 5], steps=4)


def test_the_model_is_left_as_found_and_runs_in_eval_mode():
    model = GapNet().train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    images = torch.randn(2, 3, 6, 6)
    maps = torch.rand(2, 6, 6)
    first = deletion_insertion(model, images, maps, steps=6, batch_size=5)
    second = deletion_insertion(model, images, maps, steps=6, batch_size=3)
    drop = average_drop_increase(model, images, maps, batch_size=1)
    assert model.training and all(module.training for module in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics untouched
    assert all(parameter.grad is None for parameter in model.parameters())
    torch.testing.assert_close(first.curves, second.curves)  # no dropout: eval mode
    assert not first.curves.requires_grad and not drop["drop"].requires_grad
    assert torch.is_grad_enabled()


def test_bad_arguments_are_refused(quadrant_setup):
    model, images, right, _ = quadrant_setup
    with pytest.raises(ValueError, match="mode"):
        deletion_insertion(model, images, right, mode="removal")
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, images, right, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        deletion_insertion(model, images, right, batch_size=0)
    with pytest.raises(ValueError, match="one map per image"):
        deletion_insertion(model, images, right[None], steps=2)
    with pytest.raises(ValueError, match="broadcast"):
        deletion_insertion(model, images, right, substrate=torch.zeros(3, 3))


# --- Gaussian blur ------------------------------------------------------------------------------


def test_gaussian_kernel_and_blur_of_a_delta():
    kernel = gaussian_kernel(11, 5.0)
    offsets = torch.arange(11.0) - 5
    expected = torch.exp(-(offsets**2) / 50)
    torch.testing.assert_close(kernel, expected / expected.sum())
    delta = torch.zeros(1, 2, 21, 21)
    delta[:, :, 10, 10] = 1.0
    blurred = gaussian_blur(delta)
    window = torch.outer(kernel, kernel)
    torch.testing.assert_close(blurred[0, 1, 5:16, 5:16], window)
    assert blurred[0, 1].sum().item() == pytest.approx(1.0, abs=1e-6)


def test_blur_keeps_a_constant_image_constant():
    flat = torch.full((1, 3, 5, 7), 0.7)  # smaller than the kernel: replicate padding
    torch.testing.assert_close(gaussian_blur(flat), flat)


# --- average drop / increase --------------------------------------------------------------------


def test_a_model_that_ignores_the_mask_has_no_drop_and_no_increase():
    images = torch.randn(4, 3, 5, 5)
    result = average_drop_increase(BlindModel(), images, torch.rand(4, 5, 5))
    assert result["average_drop"] == 0.0
    assert result["increase_in_confidence"] == 0.0
    torch.testing.assert_close(result["confidence"], result["masked_confidence"])


def test_average_drop_and_increase_by_hand():
    model = QuadrantModel()
    images = torch.stack([torch.ones(1, 4, 4), -torch.ones(1, 4, 4)])
    half = torch.full((2, 4, 4), 0.5)
    result = average_drop_increase(model, images, half, targets=0)
    # image 0: Y = sigmoid(4), O = sigmoid(2): a drop; image 1: Y = sigmoid(-4) < O = sigmoid(-2)
    drop = (sigmoid(4) - sigmoid(2)) / sigmoid(4)
    assert result["drop"].tolist() == pytest.approx([drop, 0.0], abs=1e-6)
    assert result["increased"].tolist() == [False, True]
    assert result["average_drop"] == pytest.approx(100 * drop / 2, abs=1e-4)
    assert result["increase_in_confidence"] == pytest.approx(50.0)
    assert result["targets"].tolist() == [0, 0]


def test_average_drop_uses_the_predicted_class_by_default():
    model = QuadrantModel()
    images = torch.stack([torch.ones(1, 4, 4), -torch.ones(1, 4, 4)])
    result = average_drop_increase(model, images, torch.full((2, 4, 4), 0.5))
    assert result["targets"].tolist() == [0, 1]
    # class 1 of image 1: Y = 1 - sigmoid(-4) = sigmoid(4), O = sigmoid(2): the same drop
    torch.testing.assert_close(result["drop"][0], result["drop"][1])
    assert result["increase_in_confidence"] == 0.0


def test_inference_mode_is_fine_and_an_empty_batch_is_refused(quadrant_setup):
    model, images, right, _ = quadrant_setup
    with torch.inference_mode():
        inside = deletion_insertion(model, images, right, steps=16)
    outside = deletion_insertion(model, images, right, steps=16)
    torch.testing.assert_close(inside.auc, outside.auc)
    with pytest.raises(ValueError, match="empty batch"):
        average_drop_increase(model, images[:0], right[:0])


class Confident(torch.nn.Module):
    """Logits (30 * mean pixel, 0): float32 softmax of the first class is exactly 1.0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = 30 * x.mean(dim=(1, 2, 3))
        return torch.stack([first, torch.zeros_like(first)], dim=1)


def test_confidence_is_computed_in_float64_so_it_does_not_saturate():
    images = torch.full((1, 1, 4, 4), 1.0)
    assert float(torch.tensor([30.0, 0.0]).softmax(0)[0]) == 1.0  # float32 saturates
    maps = torch.full((1, 4, 4), 0.99)  # masking lowers the logit a little: 30 -> 29.7
    result = average_drop_increase(Confident(), images, maps, targets=0)
    assert result["confidence"].dtype == torch.float64
    assert float(result["confidence"][0]) < 1.0
    assert result["drop"][0] > 0  # visible in float64, zero in float32


def test_ties_are_broken_at_random_with_a_seed_not_in_raster_order():
    torch.manual_seed(0)
    images = torch.rand(1, 1, 8, 8)
    sparse = torch.zeros(1, 8, 8)
    sparse[0, 5, 5] = 1.0  # one salient pixel; 63 tied zeros

    class Corner(torch.nn.Module):  # scores only the top-left corner's pixels
        def forward(self, x):
            corner = x[:, 0, :2, :2].mean(dim=(1, 2))
            return torch.stack([corner, -corner], dim=1)

    seeds = [deletion_insertion(Corner(), images, sparse, targets=0, steps=8,
                                mode="insertion", seed=seed).auc for seed in (0, 1, 2)]
    assert len({round(float(auc), 6) for auc in seeds}) > 1  # the order of the ties matters
    again = deletion_insertion(Corner(), images, sparse, targets=0, steps=8, mode="insertion",
                               seed=1).auc
    torch.testing.assert_close(again, seeds[1])  # and is fixed by the seed
    distinct = torch.arange(64.0).reshape(1, 8, 8)
    fixed = [deletion_insertion(Corner(), images, distinct, targets=0, steps=8, seed=seed).auc
             for seed in (0, 5)]
    torch.testing.assert_close(fixed[0], fixed[1])  # no ties: the seed changes nothing
