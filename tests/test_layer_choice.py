"""Automatic choices on today's models: the layer and the layout are detected, and what camlens
cannot decide or cannot stand behind is refused or flagged (issue 11, section 1 and 2)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from toy_models import GapNet

import camlens
from camlens.layer_choice import LayerChoiceError


def maps_without_warnings(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", camlens.ExplanationWarning)
        return camlens.explain(*args, **kwargs)


@pytest.fixture(scope="module")
def vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5).eval()


def test_timm_vit_gets_a_layer_whose_patches_reach_the_class_token(vit):
    images = torch.randn(2, 3, 32, 32)
    exp = maps_without_warnings(vit, images)
    assert exp.layer.startswith("blocks.1.") and exp.layer != "norm"
    assert exp.raw.shape == (2, 4, 4) and bool((exp.raw.flatten(1).amax(dim=1) > 0).all())
    assert "later layers refused: norm" in exp.notes[0] or "norm (2, 17, 32)" in exp.notes[0]
    with pytest.warns(camlens.ExplanationWarning, match="zero everywhere"):
        flagged = camlens.explain(vit, images, layer="norm")  # only the class token reaches
    assert any("zero everywhere" in note for note in flagged.notes)


def test_timm_swin_is_read_channels_last_from_its_shapes():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    swin = timm.models.swin_transformer.SwinTransformer(
        img_size=64, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
        num_classes=5).eval()
    images = torch.randn(2, 3, 64, 64)
    detected = camlens.explain(swin, images, layer="norm")  # (B, 8, 8, 32)
    told = camlens.explain(swin, images, layer="norm", channels_last=True)
    assert detected.raw.shape == (2, 8, 8)
    torch.testing.assert_close(detected.raw, told.raw)
    wrong = camlens.explain(swin, images, layer="norm", channels_last=False)  # the stripes
    assert wrong.raw.shape == (2, 8, 32)
    automatic = camlens.explain(swin, images)
    assert automatic.raw.shape[1:] == (8, 8) and "channels last" in automatic.notes[0]


def test_hugging_face_vit_and_swin():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3)).eval()
    images = torch.randn(2, 3, 32, 32)
    exp = maps_without_warnings(vit, images)
    assert exp.layer != "vit.layernorm" and exp.raw.shape == (2, 4, 4)
    with pytest.warns(camlens.ExplanationWarning):
        camlens.explain(vit, images, layer="vit.layernorm")
    swin = transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
        window_size=4, num_labels=3)).eval()
    exp = camlens.explain(swin, images)
    assert exp.layer != "swin.pooler" and exp.maps.shape == (2, 32, 32)
    assert len(exp.raw.shape) == 3 and exp.raw.shape[1] == exp.raw.shape[2]  # a square grid


def test_segmentation_with_a_region_target_does_not_pick_the_head():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3).eval()
    images = torch.randn(1, 3, 96, 96)
    region = torch.zeros(96, 96, dtype=torch.bool)
    region[20:50, 30:70] = True

    def region_score(logits):
        return (logits[:, 1] * region).sum(dim=(1, 2))

    exp = camlens.explain(model, images, target=region_score, output_fn=lambda out: out["out"])
    assert not exp.layer.startswith("classifier.4") and exp.layer != "classifier"
    assert exp.maps.shape == (1, 96, 96)


def test_a_detectors_per_box_features_are_refused():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3).eval()
    images = torch.rand(2, 3, 128, 128)

    def total_score(outputs):
        return torch.stack([output["scores"].sum() for output in outputs])

    with pytest.raises(ValueError, match=r"first axis \(\d+\) is not the batch of 2"):
        camlens.explain(model, images, layer="roi_heads.box_roi_pool", target=total_score)


class TinyYolo(nn.Module):
    """A YOLO-style dense head: conv trunk -> Detect conv -> (B, anchors * h * w, 5 + classes)."""

    def __init__(self, classes: int = 4, anchors: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.detect = nn.Conv2d(16, anchors * (5 + classes), 1)
        self.anchors, self.width = anchors, 5 + classes
        self.flatten = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.detect(self.backbone(x))
        batch, _, height, width = raw.shape
        boxes = raw.view(batch, self.anchors, self.width, height, width).permute(0, 1, 3, 4, 2)
        return self.flatten(boxes.reshape(batch, -1, self.width))


def test_a_yolo_style_head_is_not_read_as_tokens():
    torch.manual_seed(0)
    model = TinyYolo().eval()
    images = torch.randn(2, 3, 32, 32)

    def best_box(output):
        return output[..., 4].amax(dim=1)

    exp = camlens.explain(model, images, target=best_box)
    assert exp.layer in ("detect", "backbone", "backbone.3", "backbone.2")
    assert exp.raw.shape == (2, 8, 8)
    assert "flatten" in exp.notes[0] or exp.layer == "detect"


class TinyClip(nn.Module):
    """Two towers: text (token ids) and image (pixels); the output is their similarity."""

    def __init__(self) -> None:
        super().__init__()
        self.text = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16))
        self.image = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, input_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        text = self.text(input_ids).mean(dim=1)
        image = self.image(pixels).mean(dim=(2, 3))
        return text @ image.T


def test_a_clip_style_model_explains_the_input_it_is_told():
    torch.manual_seed(0)
    model = TinyClip().eval()
    ids, pixels = torch.randint(0, 50, (2, 7)), torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="input_index="):
        camlens.explain(model, (ids, pixels), target=0)
    exp = camlens.explain(model, (ids, pixels), target=0, input_index=1)
    assert exp.layer.startswith("image") and exp.raw.shape == (2, 8, 8)
    assert exp.maps.shape == (2, 16, 16)


class SpeechLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frontend = nn.Conv1d(4, 8, 3, padding=1)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.frontend(x).transpose(1, 2))
        return self.head(states.mean(dim=1))


def test_an_lstm_is_explained_over_time_not_over_its_hidden_units():
    torch.manual_seed(0)
    model = SpeechLSTM().eval()
    series = torch.randn(2, 4, 20)
    exp = camlens.explain(model, series, layer="lstm", target=1)
    assert exp.raw.shape == (2, 20) and exp.maps.shape == (2, 20)  # 20 time steps, 6 units
    automatic = camlens.explain(model, series, target=1)
    assert automatic.raw.shape == (2, 20)


def test_a_score_that_depends_on_no_layer_is_refused_or_flagged(gap_net, images):
    constant = lambda output: torch.ones(output.shape[0])  # noqa: E731
    with pytest.raises(LayerChoiceError, match="does not depend on any layer"):
        camlens.explain(gap_net, images, target=constant)
    with pytest.warns(camlens.ExplanationWarning, match="does not depend on this layer"):
        exp = camlens.explain(gap_net, images, layer="features", target=constant)
    assert "does not depend" in exp.notes[-1]
    detached = lambda output: output[:, 0].detach()  # noqa: E731
    with pytest.warns(camlens.ExplanationWarning):
        camlens.explain(gap_net, images, layer="features", target=detached)


def test_a_zero_initialised_head_is_flagged(images):
    torch.manual_seed(0)
    model = GapNet().eval()
    nn.init.zeros_(model.fc.weight)
    with pytest.warns(camlens.ExplanationWarning, match="zero-initialised head"):
        exp = camlens.explain(model, images, layer="features")
    assert float(exp.raw.abs().sum()) == 0 and "zero everywhere" in exp.notes[-1]


@pytest.mark.parametrize("where", ["input", "activation"])
def test_nan_is_refused_naming_where(gap_net, images, where):
    images = images.clone()
    if where == "input":
        images[0, 0, 0, 0] = float("nan")
        match = "input 0 holds NaN"
    else:
        gap_net = GapNet().eval()
        with torch.no_grad():
            gap_net.features[0].bias[0] = float("inf")
        match = "output of layer 'features' holds NaN"
    for method in ("gradcam", "cam"):
        with pytest.raises(ValueError, match=match):
            camlens.explain(gap_net, images, method=method, layer="features")


def test_finite_values_whose_sum_overflows_are_not_refused():
    from camlens.methods.base import check_finite

    huge = torch.full((4,), 3e38)  # finite, but their float32 sum is infinite
    check_finite({"huge": huge})
    huge[2] = float("-inf")
    with pytest.raises(ValueError, match="huge holds NaN or infinite"):
        check_finite({"huge": huge})


def test_one_image_without_its_batch_axis_says_so(gap_net, images):
    with pytest.raises(ValueError, match=r"\(3, 6, 6\): one input without its batch axis"):
        camlens.explain(gap_net, images[0], layer="features")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_eigencam_in_half_precision(gap_net, images, dtype):
    model = GapNet().eval()
    model.load_state_dict(gap_net.state_dict())
    reference = camlens.explain(model, images, method="eigencam", layer="features")
    try:
        half = camlens.explain(model.to(dtype), images.to(dtype), method="eigencam",
                               layer="features")
    except RuntimeError as error:  # a CPU without this dtype's convolutions
        pytest.skip(f"no {dtype} convolution here: {error}")
    assert half.raw.dtype == dtype
    torch.testing.assert_close(half.maps.float(), reference.maps, atol=0.05, rtol=0)
