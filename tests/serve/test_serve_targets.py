"""Box and detection targets on a served detector and text prompts on a served CLIP folder,
against the library; text prompts without a tokenizer and a detector's targets on a classifier
refused with the accepted forms."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from serve_helpers import png_bytes
from test_api import model_input, post_images
from toy_models import save_tiny_clip

import camlens


@pytest.fixture(scope="module")
def scene():
    from camlens.data import DigitScenes

    item = DigitScenes(1, "test", seed=5)[0]
    return png_bytes(item["image"])


def test_detections_give_one_map_per_detected_digit(client, catalog, scene):
    from camlens.score_targets import BoxesTarget, dense_detections

    assert {m["name"]: m["detector"] for m in client.get("/api/models").json()["models"]}[
        "digits-detector"] and not {m["name"]: m["detector"] for m in client.get(
            "/api/models").json()["models"]}["digits-gap"]
    answer = post_images(client, [scene], model="digits-detector", method="layercam",
                         target="detections:0.5")
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["images"][0]["explanations"]
    model = catalog.models["digits-detector"].loaded.model
    image = model_input(catalog, "digits-detector", scene)
    with torch.no_grad():
        found = dense_detections(model(image))[0]
    target = BoxesTarget.from_detections(found)
    exp = camlens.explain(model, image, method="layercam", layer="neck", target=target)
    assert row["layer"] == "neck" and len(row["maps"]) == exp.raw.shape[1] >= 2
    for k, cell in enumerate(row["maps"]):
        np.testing.assert_allclose(cell["raw"], exp.raw[0, k].numpy(), rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(cell["box"], target.boxes[k].tolist(), atol=0.01)
        label = str(int(target.labels[k]))
        assert cell["class_name"] == f"{label} {float(found['scores'][k]):.2f}"


def test_a_drawn_box_is_explained_as_the_library_explains_it(client, catalog, scene):
    from camlens.score_targets import BoxTarget

    answer = post_images(client, [scene], model="digits-detector", method="layercam",
                         target="box:0,20,40,64")
    assert answer.status_code == 200, answer.text
    (cell,) = answer.json()["images"][0]["explanations"][0]["maps"]
    model = catalog.models["digits-detector"].loaded.model
    exp = camlens.explain(model, model_input(catalog, "digits-detector", scene),
                          method="layercam", layer="neck", target=BoxTarget([0, 20, 40, 64]))
    np.testing.assert_allclose(cell["raw"], exp.raw[0].numpy(), rtol=1e-3, atol=1e-6)
    assert cell["box"] == [0, 20, 40, 64]


@pytest.mark.parametrize(("model", "target", "words"), [
    ("digits-detector", "text:a cat|a dog", "text prompts"),
    ("digits-detector", "detections:2", "the score must be a number in [0, 1]"),
    ("digits-gap", "detections", "needs a detector"),
    ("digits-detector", "box:1,2,3", "box:x0,y0,x1,y1"),
    ("digits-detector", "text:" + "|".join(["a"] * 17), "at most 16 per request"),
])
def test_targets_the_model_cannot_take_are_refused_clearly(client, digits, model, target,
                                                           words):
    answer = post_images(client, [digits[0][1]], model=model, target=target)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]


def test_text_prompts_give_one_map_per_prompt_with_the_models_own_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    from fastapi.testclient import TestClient
    from PIL import Image

    from camlens.cli.serve import build_app
    from camlens.serve import ModelCatalog

    folder = save_tiny_clip(transformers, tmp_path / "clip")
    catalog = ModelCatalog.load([f"hf:{folder}"], zoo=False)
    (name,) = catalog.models
    photo = png_bytes(torch.rand(3, 40, 48))
    with TestClient(build_app(catalog)) as clip_client:
        answer = post_images(clip_client, [photo], model=name, method="gradcam",
                             target="text:a photo of a cat|a dog")
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["images"][0]["explanations"]
    assert [cell["class_name"] for cell in row["maps"]] == ["a photo of a cat", "a dog"]
    assert row["layer"].startswith("vision_model.")
    model = transformers.CLIPModel.from_pretrained(folder).eval()
    tokens = transformers.AutoTokenizer.from_pretrained(folder)(
        ["a photo of a cat", "a dog"], padding=True, return_tensors="pt")
    pixels = transformers.CLIPImageProcessor.from_pretrained(folder)(
        images=Image.open(io.BytesIO(photo)).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(**tokens, pixel_values=pixels).logits_per_image[0]
    assert [cell["score"] for cell in row["maps"]] == pytest.approx(expected.tolist(), abs=1e-4)
    exp = camlens.explain(model, (tokens["input_ids"], pixels, tokens["attention_mask"]),
                          method="gradcam", layer=row["layer"], target="all", input_index=1)
    for k, cell in enumerate(row["maps"]):
        np.testing.assert_allclose(cell["raw"], exp.raw[0, k].numpy(), rtol=1e-3, atol=1e-6)
