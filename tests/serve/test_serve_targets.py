"""Box and detection targets on a served detector, against the library; text prompts and a
detector's targets on a classifier refused with the accepted forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serve_helpers import png_bytes
from test_api import model_input, post_images

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
])
def test_targets_the_model_cannot_take_are_refused_clearly(client, digits, model, target,
                                                           words):
    answer = post_images(client, [digits[0][1]], model=model, target=target)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]
