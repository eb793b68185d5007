"""The JSON API against the library: same maps, scores and classes, the library's messages for
bad input, and the limits."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from serve_helpers import png_bytes

import camlens


def decode_png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def model_input(catalog, name: str, png: bytes) -> torch.Tensor:
    """What the server feeds the model for ``png``: the picture in RGB, preprocessed."""
    loaded = catalog.models[name].loaded
    return loaded.preprocess(Image.open(io.BytesIO(png)).convert("RGB"))


def post_images(client, files, **fields):
    return client.post("/api/explain", data=fields,
                       files=[("image", (f"d{i}.png", data, "image/png"))
                              for i, data in enumerate(files)])


def test_models_and_methods_are_listed(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["digits-gap"]["kind"] == "image"
    assert models["digits-captioner"]["kind"] == "caption"
    assert models["digits-captioner"]["default_layer"] == "encoder.7"  # its word layer
    assert models["accent-attention"]["kind"] == "audio"
    assert models["digits-gap"]["class_names"] == [str(d) for d in range(10)]
    methods = {m["name"]: m for m in client.get("/api/methods").json()["methods"]}
    assert set(methods) == set(camlens.methods.METHODS)
    assert methods["gradcam"]["uses_gradients"] and not methods["cam"]["uses_gradients"]
    assert methods["attention"]["kinds"] == ["audio"]


def test_layers_mark_the_automatic_choice_and_the_reach(client, catalog):
    answer = client.get("/api/models/digits-fc/layers").json()
    rows = {row["name"]: row for row in answer["layers"]}
    automatic = [name for name, row in rows.items() if row["automatic"]]
    assert automatic == [answer["automatic"]]
    exp = camlens.explain(catalog.models["digits-fc"].loaded.model, torch.zeros(1, 1, 64, 64),
                          method="gradcam", layer=None)
    assert answer["automatic"] == exp.layer
    assert rows["features"]["model_layer"] and rows["features"]["shape"][0] == 1
    assert rows["features"]["reach"] == "136/256"  # through digits-fc's max pooling
    assert rows["features"]["layout"] == "channels first 16x16"


def test_explain_gives_the_library_maps_scores_and_overlays(client, catalog, digits):
    from camlens.viz import overlay, to_pil

    model = catalog.models["digits-gap"].loaded.model
    answer = post_images(client, [digits[0][1], digits[1][1]], model="digits-gap",
                         method="gradcam,cam", target="top2", heatmap="true")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["methods"] == ["gradcam", "cam"] and body["layers"] == ["features"]
    for position, record in enumerate(body["images"]):
        image = model_input(catalog, "digits-gap", digits[position][1])
        for row in record["explanations"]:
            exp = camlens.explain(model, image, method=row["method"], layer="features",
                                  target=camlens.TopK(2))
            assert row["raw_shape"] == [2, 16, 16]
            assert [cell["class"] for cell in row["maps"]] == exp.targets[0].tolist()
            assert [cell["class_name"] for cell in row["maps"]] == [
                str(c) for c in exp.targets[0].tolist()]
            np.testing.assert_allclose([cell["score"] for cell in row["maps"]],
                                       exp.scores[0].tolist(), rtol=1e-5)
            for k, cell in enumerate(row["maps"]):
                expected = np.asarray(overlay(to_pil(image[0]), exp.maps[0, k]))
                # Batched maps differ in float rounding: a pixel may fall one colormap step off.
                difference = np.abs(decode_png(cell["overlay"]).astype(int) - expected)
                assert (difference <= 1).mean() > 0.995 and difference.max() <= 6
                values = np.frombuffer(base64.b64decode(cell["values"]), dtype=np.uint8)
                assert cell["value_shape"] == [64, 64]
                assert np.abs(values.reshape(64, 64) / 255 - exp.maps[0, k].numpy()).max() < 0.01
                np.testing.assert_allclose(cell["raw"], exp.raw[0, k].numpy(), rtol=1e-3,
                                           atol=1e-6)
                assert decode_png(cell["heatmap"]).shape == (64, 64, 3)


def test_classes_separated_by_commas_and_class_names(client, digits):
    body = post_images(client, [digits[0][1]], model="digits-gap", target="3,7").json()
    assert [cell["class"] for cell in body["images"][0]["explanations"][0]["maps"]] == [3, 7]


def test_raw_maps_as_npy_and_npz(client, catalog, digits):
    model = catalog.models["digits-gap"].loaded.model
    answer = post_images(client, [digits[2][1]], model="digits-gap", format="npy")
    assert answer.status_code == 200
    raw = np.load(io.BytesIO(answer.content), allow_pickle=False)
    exp = camlens.explain(model, model_input(catalog, "digits-gap", digits[2][1]),
                          method="gradcam", layer="features")
    np.testing.assert_allclose(raw, exp.raw[0].numpy(), rtol=1e-5, atol=1e-7)
    answer = post_images(client, [digits[2][1], digits[3][1]], model="digits-gap",
                         method="gradcam,layercam", format="npz")
    archive = np.load(io.BytesIO(answer.content), allow_pickle=False)
    assert sorted(archive.files) == ["image0_gradcam", "image0_layercam", "image1_gradcam",
                                     "image1_layercam"]
    refused = post_images(client, [digits[2][1], digits[3][1]], model="digits-gap",
                          format="npy")
    assert refused.status_code == 400 and "format=npz" in refused.json()["error"]


def test_the_overlay_alone_as_png(client, app, digits, monkeypatch):
    """format=png: the overlay of one image, method, layer and target as the answer itself, the
    same bytes as the JSON answer's overlay, its class, score and layer in headers."""
    import base64

    fields = {"model": "digits-gap", "layer": "features", "target": "7"}
    cell = post_images(client, [digits[1][1]], **fields).json()[
        "images"][0]["explanations"][0]["maps"][0]
    answer = post_images(client, [digits[1][1]], format="png", **fields)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content == base64.b64decode(cell["overlay"].split(",", 1)[1])
    assert answer.headers["x-camlens-class"] == "7"
    assert answer.headers["x-camlens-class-name"] == "7"
    assert answer.headers["x-camlens-layer"] == "features"
    assert float(answer.headers["x-camlens-score"]) == pytest.approx(cell["score"], rel=1e-5)
    # the same answer where the request is batched (every worker busy): not on one worker
    batcher = type(app.state.server.batcher)
    monkeypatch.setattr(batcher, "idle", property(lambda self: False))
    batched = post_images(client, [digits[1][1]], format="png", **fields)
    assert batched.content == answer.content and batched.headers["x-camlens-class"] == "7"
    monkeypatch.undo()
    for refused, message in (
            (post_images(client, [digits[1][1], digits[2][1]], format="png", **fields),
             "format=png is one overlay: one image, one method and one layer (got 2 images"),
            (post_images(client, [digits[1][1]], format="png", method="gradcam,layercam",
                         model="digits-gap"), "(got 1 images and 2 maps each)"),
            (post_images(client, [digits[1][1]], format="png", model="digits-gap",
                         target="top3"), "the target 'top3' gives 3 maps; use format=json")):
        assert refused.status_code == 400 and message in refused.json()["error"]


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"model": "digits-gapp"}, 404, "unknown model 'digits-gapp'; did you mean digits-gap"),
    ({"model": "digits-gap", "method": "gradcm"}, 400, "unknown method 'gradcm'"),
    ({"model": "digits-gap", "layer": "featres"}, 400, "unknown layer 'featres'; closest names: "
                                                       "features"),
    ({"model": "digits-gap", "target": "12"}, 400, "class index 12 is out of range"),
    ({"model": "digits-gap", "target": "top11"}, 400, "TopK(11) asks for more than the 10"),
    ({"model": "digits-fc", "method": "cam"}, 400, "CAM needs the target layer"),
    ({"model": "digits-gap", "alpha": "2"}, 400, "alpha must be from 0 to 1"),
    ({"model": "digits-gap", "colormap": "jett"}, 400, "unknown colormap 'jett'"),
    ({"model": "accent-cnn"}, 400, "accent-cnn is an audio model"),
])
def test_bad_input_is_4xx_json_with_the_library_message(client, digits, fields, status,
                                                        message):
    answer = post_images(client, [digits[0][1]], **fields)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert message in answer.json()["error"]


def test_library_and_server_name_an_unknown_method_alike(client, digits):
    with pytest.raises(ValueError) as raised:
        camlens.methods.get_method("gradcm")
    answer = post_images(client, [digits[0][1]], model="digits-gap", method="gradcm")
    assert answer.json()["error"] == str(raised.value)


def test_files_that_are_not_pictures_are_refused_by_name(client):
    not_form = client.post("/api/explain", data={"model": "digits-gap"})
    assert not_form.status_code == 400
    assert "expected a multipart/form-data body" in not_form.json()["error"]
    answer = post_images(client, [b"not a picture"], model="digits-gap")
    assert answer.status_code == 400
    assert answer.json()["error"] == "d0.png: not an image Pillow can read"
    missing = client.post("/api/explain", data={"model": "digits-gap"},
                          files=[("picture", ("d.png", b"...", "image/png"))])
    assert missing.status_code == 400 and "no file in field 'image'" in missing.json()["error"]


def test_caption_gives_the_library_maps_per_word(client, catalog):
    from camlens.captioning import caption_tokens, explain_caption
    from camlens.data import DigitScenes
    from camlens.zoo.captioner import END, MAX_TOKENS, START

    png = png_bytes(DigitScenes(1, "test", seed=3, digits=(2, 2))[0]["image"])
    scene = model_input(catalog, "digits-captioner", png)[0]
    answer = client.post("/api/caption", files=[("image", ("s.png", png, "image/png"))])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    model = catalog.models["digits-captioner"].loaded.model
    words = model.generate(scene[None])[0]
    inputs, scored = caption_tokens([words], END, START, MAX_TOKENS)
    per_word = explain_caption(model, scene[None], inputs, scored, "layercam", "encoder.7")
    assert body["caption"] == " ".join(str(w) for w in words)
    assert [w["word"] for w in body["words"]] == [*(str(w) for w in words), "<end>"]
    assert body["layer"] == "encoder.7" and body["method"] == "layercam"
    for step, word in enumerate(body["words"]):
        values = np.frombuffer(base64.b64decode(word["values"]), dtype=np.uint8)
        assert np.abs(values.reshape(word["value_shape"]) / 255
                      - per_word.maps[0, step].numpy()).max() < 0.01
        assert word["logit"] == pytest.approx(float(per_word.scores[0, step]), abs=1e-3)
    assert not any("zero everywhere" in note for note in body["notes"])  # padding only


def test_caption_refuses_a_model_that_does_not_caption(client, digits):
    answer = client.post("/api/caption", data={"model": "digits-gap"},
                         files=[("image", ("d.png", digits[0][1], "image/png"))])
    assert answer.status_code == 400
    assert "digits-gap is an image model, not a caption model" in answer.json()["error"]


def wav_bytes(waveform: np.ndarray, rate: int = 16000) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_audio_gives_the_library_relevance(client, catalog):
    from camlens.audio.relevance import audio_relevance

    rng = np.random.default_rng(0)
    time = np.arange(int(1.5 * 16000)) / 16000
    waveform = (0.3 * np.sin(2 * np.pi * 220 * time) * (time > 0.5)
                + 0.01 * rng.standard_normal(len(time))).astype(np.float32)
    words = [{"word": "tone", "start_s": 0.5, "end_s": 1.5}]
    answer = client.post("/api/explain-audio", data={"words": json.dumps(words)},
                         files=[("audio", ("tone.wav", wav_bytes(waveform), "audio/wav"))])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    attention, cnn = catalog.models["accent-attention"], catalog.models["accent-cnn"]
    expected = audio_relevance(attention.loaded.model, torch.from_numpy(waveform),
                               methods=("attention", "attention-gradient"),
                               layer="attention.weights", words=words,
                               class_names=attention.class_names)
    expected = expected.merge(audio_relevance(
        cnn.loaded.model, torch.from_numpy(waveform), methods=("gradcam",), layer="features",
        words=words, class_names=cnn.class_names, target=expected.target))
    reference = expected.to_dict()
    for key in ("target", "predicted", "probabilities", "segments", "words", "duration_s"):
        assert body[key] == reference[key], key
    assert body["methods"] == ["attention", "attention-gradient", "gradcam"]
    for method in body["methods"]:
        assert sum(body["frame_relevance"][method]) == pytest.approx(1.0, abs=1e-3)
        assert len(body["frame_relevance"][method]) == len(body["frame_edges"]) - 1
    only = client.post("/api/explain-audio", data={"method": "attention"},
                       files=[("audio", ("tone.wav", wav_bytes(waveform), "audio/wav"))])
    assert only.json()["methods"] == ["attention"]


@pytest.mark.parametrize(("data", "fields", "message"), [
    (b"", {}, "tone.wav is empty"),
    (b"RIFF nonsense", {}, "cannot read tone.wav as audio"),
    (None, {"method": "scorecam"}, "method 'scorecam' is not available with accent-attention"),
    (None, {"words": "[{"}, "words is not JSON"),
    (None, {"model": "digits-gap"}, "digits-gap is an image model, not an audio model"),
])
def test_bad_recordings_are_refused(client, data, fields, message):
    if data is None:
        data = wav_bytes(np.full(16000, 0.1, dtype=np.float32))
    answer = client.post("/api/explain-audio", data=fields,
                         files=[("audio", ("tone.wav", data, "audio/wav"))])
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_sample_pictures_are_pngs(client):
    samples = client.get("/api/samples").json()["samples"]
    assert {s["for"] for s in samples} == {"image", "caption"}
    picture = Image.open(io.BytesIO(client.get(samples[0]["url"]).content))
    assert picture.size == (64, 64)
    assert client.get("/api/samples/digit-99").status_code == 404
    assert client.get("/api/samples?kind=video").status_code == 400


def test_openapi_lists_the_endpoints_and_docs_are_served_here(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/models", "/api/methods", "/api/models/{name}/layers", "/api/explain",
                 "/api/explain-audio", "/api/caption"):
        assert path in spec["paths"]
    form = spec["paths"]["/api/explain"]["post"]["requestBody"]["content"]
    assert "image" in form["multipart/form-data"]["schema"]["properties"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text


def test_several_layers_give_a_column_each(client, catalog, digits):
    model = catalog.models["digits-gap"].loaded.model
    body = post_images(client, [digits[0][1]], model="digits-gap", method="gradcam,layercam",
                       layer="features,features.3").json()
    rows = body["images"][0]["explanations"]
    assert body["layers"] == ["features", "features.3"]
    assert [(row["method"], row["layer"]) for row in rows] == [
        ("gradcam", "features"), ("gradcam", "features.3"), ("layercam", "features"),
        ("layercam", "features.3")]
    image = model_input(catalog, "digits-gap", digits[0][1])
    shallow = camlens.explain(model, image, method="layercam", layer="features.3")
    assert rows[3]["raw_shape"] == list(shallow.raw.shape[1:])
    np.testing.assert_allclose(rows[3]["maps"][0]["raw"], shallow.raw[0].numpy(), rtol=1e-3,
                               atol=1e-6)
    archive = np.load(io.BytesIO(post_images(
        client, [digits[0][1]], model="digits-gap", layer="features,auto",
        format="npz").content), allow_pickle=False)
    assert sorted(archive.files) == ["image0_gradcam_auto", "image0_gradcam_features"]


def test_answers_say_where_the_time_went(client, digits):
    from camlens.serve.timing import parse_server_timing

    answer = post_images(client, [digits[0][1]], model="digits-gap", method="gradcam")
    assert answer.status_code == 200, answer.text
    timing = parse_server_timing(answer.headers["server-timing"])
    assert set(timing) == {"upload", "read", "prepare", "explain", "encode", "total"}
    assert all(value >= 0 for value in timing.values())
    assert timing["total"] >= sum(timing[name] for name in ("upload", "read", "prepare",
                                                            "explain"))
    assert "total" in parse_server_timing(client.get("/api/models").headers["server-timing"])
