"""Targets for detectors, segmentation and embeddings (issue 12, targets part): by hand, and
on torchvision models with every method family."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from toy_models import tiny_clip_config

import camlens
from camlens import BoxTarget, RegionTarget, SimilarityTarget


def detections(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(scores, requires_grad=True), "labels": torch.tensor(labels)}


def test_box_target_picks_the_best_matching_box_of_the_class():
    output = [detections([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.9, 0.6, 0.8],
                         [1, 2, 1]),
              detections([[40, 40, 70, 70]], [0.7], [1])]
    target = BoxTarget((1, 1, 11, 11))  # any class: the exact box
    assert target(output).tolist() == pytest.approx([0.6, 0.0])  # image 2: no overlap -> 0
    assert BoxTarget((1, 1, 11, 11), label=1)(output).tolist() == pytest.approx([0.9, 0.0])
    per_image = BoxTarget(torch.tensor([[0, 0, 10, 10], [45, 45, 70, 70]]), label=1)
    assert per_image(output).tolist() == pytest.approx([0.9, 0.7])
    assert BoxTarget((0, 0, 10, 10), label=1)(output).requires_grad  # on the graph


def test_box_target_reads_dense_yolo_outputs():
    # two anchors: (cx, cy, w, h, class scores...)
    output = torch.tensor([[[5.0, 5.0, 10.0, 10.0, 0.1, 0.8],
                            [30.0, 30.0, 10.0, 10.0, 0.9, 0.2]]])
    assert BoxTarget((0, 0, 10, 10))(output).tolist() == pytest.approx([0.8])
    assert BoxTarget((0, 0, 10, 10), label=0)(output).tolist() == pytest.approx([0.1])
    with_objectness = torch.tensor([[[5.0, 5.0, 10.0, 10.0, 0.5, 0.1, 0.8]]])
    assert BoxTarget((0, 0, 10, 10), objectness=True)(with_objectness).tolist() == \
        pytest.approx([0.4])
    with pytest.raises(ValueError, match="x1 <= x0"):
        BoxTarget((10, 0, 5, 10))
    with pytest.raises(TypeError, match="list of"):
        BoxTarget((0, 0, 1, 1))({"boxes": 1})


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, box_score_thresh=0.0).eval()


@pytest.mark.parametrize(("method", "layer", "count"), [
    ("gradcam", "backbone.body.12", 2), ("layercam", "backbone.body.12", 2),
    ("ablationcam", "backbone.body.3", 1),  # 24 channels: 25 copies of the detector
])
def test_a_torchvision_detectors_box_is_explained_by_every_family(detector, method, layer,
                                                                  count):
    images = torch.rand(count, 3, 160, 160)
    with torch.no_grad():
        found = detector(images)
    box = found[0]["boxes"][0].tolist()
    target = BoxTarget(box, label=int(found[0]["labels"][0]))
    exp = camlens.explain(detector, images, method=method, layer=layer, target=target)
    assert exp.raw.shape[0] == count and exp.raw.ndim == 3
    assert float(exp.scores[0]) == pytest.approx(float(found[0]["scores"][0]), abs=1e-5)


def test_segmentation_dicts_are_read_and_regions_scored():
    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=False).eval()
    images = torch.randn(1, 3, 64, 64)
    mask = torch.zeros(64, 64)
    mask[10:30, 20:40] = 1
    target = RegionTarget(2, mask)
    with torch.no_grad():
        expected = (model(images)["out"][:, 2] * mask).sum()
    for method in ("gradcam", "ablationcam"):  # ablationcam failed on dict outputs before
        exp = camlens.explain(model, images, method=method, layer="backbone.16", target=target)
        assert float(exp.scores[0]) == pytest.approx(float(expected), rel=1e-4)
        assert exp.maps.shape == (1, 64, 64)
    whole = camlens.explain(model, images, layer="backbone.16", target=RegionTarget(1))
    assert whole.raw.shape == (1, 4, 4)
    with pytest.raises(ValueError, match="give the mask at the output's size"):
        camlens.explain(model, images, layer="backbone.16",
                        target=RegionTarget(1, torch.ones(8, 8)))


def test_similarity_gives_one_map_per_reference():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 4)).eval()
    images = torch.randn(2, 3, 8, 8)
    prompts = torch.randn(3, 4)
    exp = camlens.explain(encoder, images, layer="1",
                          target=SimilarityTarget(prompts, per_reference=True))
    assert exp.raw.shape == (2, 3, 8, 8) and exp.scores.shape == (2, 3)
    with torch.no_grad():
        expected = torch.nn.functional.cosine_similarity(encoder(images)[:, None], prompts[None],
                                                         dim=2)
    torch.testing.assert_close(exp.scores, expected)
    one = camlens.explain(encoder, images, layer="1", target=SimilarityTarget(prompts[0]))
    torch.testing.assert_close(one.scores, expected[:, 0])


def test_hugging_face_clip_gives_one_map_per_prompt():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tiny_clip_config(transformers)
    model = transformers.CLIPModel(config).eval()
    prompts, pixels = torch.randint(2, 99, (3, 7)), torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="input_index"):
        camlens.explain(model, (prompts, pixels), target="all")
    exp = camlens.explain(model, (prompts, pixels), target="all", input_index=1)
    assert exp.layer.startswith("vision_model.") and exp.maps.shape == (2, 3, 32, 32)
    with torch.no_grad():
        expected = model(input_ids=prompts, pixel_values=pixels).logits_per_image
    torch.testing.assert_close(exp.scores, expected)


@pytest.mark.parametrize("builder", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_one_stage_detectors_read_the_same_way(builder):
    torch.manual_seed(0)
    model = getattr(torchvision.models.detection, builder)(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128,
        score_thresh=0.0).eval()
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        found = model(images)[0]
    sizes = found["boxes"][:, 2:] - found["boxes"][:, :2]
    first = int(torch.nonzero((sizes > 1).all(dim=1))[0])  # random weights: skip empty boxes
    target = BoxTarget(found["boxes"][first].tolist(), label=int(found["labels"][first]))
    exp = camlens.explain(model, images, layer="backbone.body.layer3", target=target)
    assert float(exp.scores[0]) >= float(found["scores"][first]) - 1e-5  # the best match
    assert exp.raw.shape == (1, 8, 8)


def test_ssd_reads_the_same_way():
    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, score_thresh=0.0).eval()
    images = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        found = model(images)[0]
    target = BoxTarget(found["boxes"][0].tolist(), label=int(found["labels"][0]))
    exp = camlens.explain(model, images, "layercam", layer="backbone.features.0", target=target)
    assert float(exp.scores[0]) >= float(found["scores"][0]) - 1e-5
    assert exp.raw.shape == (1, 20, 20)  # SSD resizes to 320: stride 16


def test_every_detection_above_a_score_gets_its_own_map(detector):
    image = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        found = detector(image)[0]
    threshold = float(found["scores"][9])
    every = camlens.BoxesTarget.from_detections(found, score_threshold=threshold, max_boxes=5)
    exp = camlens.explain(detector, image, layer="backbone.body.12", target=every)
    assert exp.raw.shape[:2] == (1, 5) and exp.raw.ndim == 4 and exp.scores.shape == (1, 5)
    torch.testing.assert_close(exp.scores[0], found["scores"][:5], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no detection scores 2"):
        camlens.BoxesTarget.from_detections(found, score_threshold=2.0)


def test_dense_outputs_become_detections_after_suppression():
    from camlens.score_targets import dense_detections

    # cx, cy, w, h, then 2 class scores; cells 0 and 1 overlap (IoU 0.6), cell 2 is class 1.
    output = torch.tensor([[[20.0, 20.0, 10.0, 10.0, 0.9, 0.0],
                            [22.5, 20.0, 10.0, 10.0, 0.8, 0.1],
                            [21.0, 20.0, 10.0, 10.0, 0.1, 0.7],
                            [60.0, 60.0, 10.0, 10.0, 0.3, 0.2]]])
    found = dense_detections(output, score_threshold=0.5)[0]
    torch.testing.assert_close(found["scores"], torch.tensor([0.9, 0.7]))
    assert found["labels"].tolist() == [0, 1]  # suppression is per class
    torch.testing.assert_close(found["boxes"][0], torch.tensor([15.0, 15.0, 25.0, 25.0]))
    everything = dense_detections(output, score_threshold=0.25, iou_threshold=0.7)[0]
    assert everything["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.3])
    with pytest.raises(ValueError, match=r"\(B, N, 4 \+ classes\)"):
        dense_detections(torch.zeros(1, 3, 4))
