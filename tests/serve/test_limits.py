"""Limits and safety: upload and pixel limits, the bounded queue (503), the timeout (504),
micro-batching that answers as single calls do, nothing on disk, no pickles, the page's
headers, and the model left as it was."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from serve_helpers import png_bytes
from torch import nn

import camlens


def make_client(catalog, **limits):
    from fastapi.testclient import TestClient

    from camlens.cli.serve import build_app
    from camlens.serve import Limits

    return TestClient(build_app(catalog, Limits(**limits)))


def post(client, files, **fields):
    return client.post("/api/explain", data={"model": "digits-gap", **fields},
                       files=[("image", (f"d{i}.png", data, "image/png"))
                              for i, data in enumerate(files)])


def test_a_body_over_the_upload_limit_is_413(catalog, digits):
    with make_client(catalog, max_upload_bytes=2000) as client:
        answer = post(client, [digits[0][1]] * 3)
    assert answer.status_code == 413
    assert "over the limit of 2,000" in answer.json()["error"]


def test_pictures_over_the_pixel_limit_and_too_many_files_are_refused(catalog, digits):
    with make_client(catalog, max_pixels=1000, max_files=2) as client:
        answer = post(client, [digits[0][1]])
        assert answer.status_code == 400
        assert answer.json()["error"] == ("d0.png: 64x64 = 4,096 pixels is over the limit of "
                                          "1,000 (raise it with --max-pixels if you trust the "
                                          "file)")
        answer = post(client, [digits[0][1]] * 3)
        assert answer.status_code == 400 and "Too many files" in answer.json()["error"]


class Blocking(nn.Module):
    """A GAP network whose forward waits while ``hold`` is clear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)
        self.hold = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.hold.wait(timeout=30)
        return self.fc(self.features(x).mean(dim=(2, 3)))


def blocking_catalog() -> tuple:
    from camlens.models import LoadedModel
    from camlens.serve import ModelCatalog, ServedModel
    from camlens.zoo import digit_canvas

    model = Blocking().eval()
    loaded = LoadedModel(model, "blocking", digit_canvas, ("a", "b", "c"), "features")
    return ModelCatalog([ServedModel(loaded, "image")]), model


def test_a_full_queue_is_503_and_a_slow_answer_504_until_the_work_ends(digits):
    catalog, model = blocking_catalog()
    with make_client(catalog, queue_size=1, timeout_s=0.5, workers=1) as client:
        first: dict = {}
        thread = threading.Thread(target=lambda: first.setdefault(
            "answer", post(client, [digits[0][1]], model="blocking")))
        thread.start()
        deadline = time.monotonic() + 10
        while client.get("/api/status").json()["queue"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = post(client, [digits[0][1]], model="blocking")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "the limit is 1" in busy.json()["error"]
        thread.join(timeout=10)
        assert first["answer"].status_code == 504
        assert "no answer within 0.5 s" in first["answer"].json()["error"]
        # The work still runs: it holds the queue until it ends.
        assert client.get("/api/status").json()["queue"] == 1
        assert post(client, [digits[0][1]], model="blocking").status_code == 503
        model.hold.set()
        while client.get("/api/status").json()["queue"] == 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert post(client, [digits[0][1]], model="blocking").status_code == 200


def test_batched_calls_equal_single_calls(catalog, digits):
    from camlens.serve.images import Payload, explain_payloads, target_factory

    served = catalog.models["digits-gap"]
    for target in (None, 3, camlens.TopK(2), [1, 7]):
        factory = target_factory(target)[0]
        payloads = [Payload(served, "gradcam", "features", factory, image[None])
                    for image, _ in digits]
        batched = explain_payloads("key", payloads)
        for payload, answer in zip(payloads, batched, strict=True):
            alone = camlens.explain(served.loaded.model, payload.inputs, method="gradcam",
                                    layer="features", target=factory(1))
            assert torch.equal(answer.targets, alone.targets)
            torch.testing.assert_close(answer.raw, alone.raw, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(answer.scores, alone.scores, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(answer.maps, alone.maps, rtol=1e-4, atol=1e-5)
            assert answer.notes == alone.notes


def test_a_bad_payload_in_a_batch_gets_its_own_error(catalog, digits):
    from camlens.serve.images import Payload, explain_payloads, target_factory

    served = catalog.models["digits-gap"]
    good = Payload(served, "gradcam", "features", target_factory(None)[0], digits[0][0][None])
    bad = Payload(served, "gradcam", "features", target_factory(None)[0], torch.zeros(1, 3, 8))
    answers = explain_payloads("key", [good, bad])
    assert isinstance(answers[1], Exception) and not isinstance(answers[0], Exception)


def test_requests_arriving_while_the_worker_is_busy_are_batched_and_answer_as_alone(
        catalog, digits):
    from camlens.serve import Limits, ModelCatalog
    from camlens.serve.uploads import Upload, read_picture

    blocking, model = blocking_catalog()
    served = catalog.models["digits-gap"]
    both = ModelCatalog([blocking.models["blocking"], served])
    answers: dict[int, object] = {}
    with make_client(both, batch_window_s=30, max_batch=8, workers=1) as client:
        status = lambda: client.get("/api/status").json()  # noqa: E731
        busy = threading.Thread(target=lambda: post(client, [digits[0][1]], model="blocking"))
        busy.start()
        deadline = time.monotonic() + 20
        while status()["queue"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        threads = [threading.Thread(target=lambda i=i: answers.setdefault(
            i, post(client, [digits[i][1]], format="npy"))) for i in range(6)]
        for thread in threads:
            thread.start()
        while status()["batches"]["waiting"] < 6 and time.monotonic() < deadline:
            time.sleep(0.01)  # all six wait for the one worker
        model.hold.set()
        for thread in [busy, *threads]:
            thread.join(timeout=60)
        stats = status()["batches"]
    assert stats == {"calls": 2, "requests": 7, "waiting": 0, "largest": 6,
                     "sizes": {"1": 1, "6": 1}}
    for i, answer in answers.items():
        assert answer.status_code == 200
        raw = np.load(io.BytesIO(answer.content), allow_pickle=False)
        picture = read_picture(Upload("d.png", digits[i][1]), Limits())
        alone = camlens.explain(served.loaded.model, served.loaded.preprocess(picture),
                                method="gradcam", layer="features")
        np.testing.assert_allclose(raw, alone.raw[0].numpy(), rtol=1e-4, atol=1e-6)


def test_a_request_to_an_idle_server_runs_whole_and_answers_as_the_batched_path(catalog,
                                                                                  digits):
    """Alone, a request does its decoding, library call and encoding in one worker trip; while
    the worker is busy it takes the batched path; both answers are the same."""
    from camlens.serve import ModelCatalog

    blocking, model = blocking_catalog()
    both = ModelCatalog([blocking.models["blocking"], catalog.models["digits-gap"]])
    with make_client(both, batch_window_s=30, max_batch=8, workers=1) as client:
        status = lambda: client.get("/api/status").json()  # noqa: E731
        alone = post(client, [digits[2][1], digits[3][1]], method="gradcam,layercam")
        assert status()["batches"]["calls"] == 1  # two pictures, two methods: one trip
        busy = threading.Thread(target=lambda: post(client, [digits[0][1]], model="blocking"))
        busy.start()
        deadline = time.monotonic() + 20
        while status()["queue"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        answers = {}
        waiting = threading.Thread(target=lambda: answers.setdefault("batched", post(
            client, [digits[2][1], digits[3][1]], method="gradcam,layercam")))
        waiting.start()
        while status()["batches"]["waiting"] < 4 and time.monotonic() < deadline:
            time.sleep(0.01)  # 2 pictures x 2 methods wait for the worker
        model.hold.set()
        for thread in (busy, waiting):
            thread.join(timeout=60)
    batched = answers["batched"]
    assert alone.status_code == batched.status_code == 200
    for one, other in zip(alone.json()["images"], batched.json()["images"], strict=True):
        assert one["input"] == other["input"]
        for row, twin in zip(one["explanations"], other["explanations"], strict=True):
            assert row["method"] == twin["method"]
            for cell, double in zip(row["maps"], twin["maps"], strict=True):
                assert cell["class"] == double["class"]
                assert cell["score"] == pytest.approx(double["score"], rel=1e-5)
                np.testing.assert_allclose(cell["raw"], double["raw"], rtol=1e-3, atol=1e-5)


def test_the_input_picture_is_left_out_when_asked(client, digits):
    answer = post(client, [digits[0][1]], input="false")
    assert answer.status_code == 200 and answer.json()["images"][0]["input"] is None
    assert post(client, [digits[0][1]]).json()["images"][0]["input"].startswith(
        "data:image/png;base64,")
    answer = post(client, [digits[0][1]], input="maybe")
    assert answer.status_code == 400
    assert answer.json()["error"] == "input must be true or false, got 'maybe'"


def test_the_model_is_left_as_it_was(catalog, client, digits):
    from camlens.zoo import load

    model = catalog.models["digits-gap"].loaded.model
    for method in ("gradcam", "scorecam", "guided-gradcam", "ablationcam"):
        assert post(client, [digits[0][1]], method=method).status_code == 200
    fresh = load("digits-gap")
    for key, value in fresh.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not any(module.training for module in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not any(module._forward_hooks or module._forward_pre_hooks or
                   module._backward_hooks for module in model.modules())


def test_uploads_never_roll_over_to_disk(client, monkeypatch):
    import tempfile

    def refuse(self):
        raise AssertionError("an upload was spooled to disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", refuse)
    noise = torch.rand(3, 700, 700, generator=torch.Generator().manual_seed(0))
    data = png_bytes(noise)
    assert len(data) > 1024 * 1024  # past Starlette's own 1 MB spool
    answer = post(client, [data])
    assert answer.status_code == 200, answer.text
    assert answer.json()["images"][0]["size"] == [700, 700]


def test_pickled_checkpoints_are_refused(tmp_path):
    from camlens.models import ModelLoadError
    from camlens.serve import ModelCatalog

    path = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), path)
    with pytest.raises(ModelLoadError, match="pickled Python objects"):
        ModelCatalog.load([str(path)], zoo=False)


def test_the_command_offers_no_way_to_unpickle(tmp_path):
    from click.testing import CliRunner

    from camlens.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["serve", "--help"]).exit_code == 0
    refused = runner.invoke(main, ["serve", "--trust-checkpoint"])
    assert refused.exit_code == 2 and "No such option" in refused.output
    nothing = runner.invoke(main, ["serve", "--no-zoo"])
    assert nothing.exit_code == 2 and "--no-zoo leaves nothing to serve" in nothing.output


def test_the_page_loads_nothing_from_elsewhere_and_never_uses_inner_html(client):
    from camlens.serve.app import STATIC

    page = client.get("/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "innerHTML" not in text and "outerHTML" not in text, path.name
        assert "http://" not in text and "https://" not in text, path.name
        assert client.get(f"/static/{path.name}").status_code == 200


def test_a_hostile_file_name_comes_back_as_plain_data(client, digits):
    name = "<img src=x onerror=alert(1)>.png"
    answer = client.post("/api/explain", data={"model": "digits-gap"},
                         files=[("image", (name, digits[0][1], "image/png"))])
    assert answer.json()["images"][0]["name"] == name


def test_cpu_workers_share_out_torchs_threads_and_leave_the_process_count(catalog):
    """Two workers on a CPU each run torch on half the process's threads (OpenMP's count is
    per thread), so concurrent calls divide the cores; the main thread keeps its count."""
    from camlens.scale.lanes import lane_threads, lanes_unavailable

    before = torch.get_num_threads()
    split = make_client(catalog, workers=2).app.state.server.pool
    whole = make_client(catalog, workers=2, split_threads=False).app.state.server.pool
    assert whole.threads_each is None
    if lanes_unavailable("cpu") is not None:
        assert split.threads_each is None
        return
    assert split.threads_each == lane_threads(2)
    assert split.executor.submit(torch.get_num_threads).result() == lane_threads(2)
    assert whole.executor.submit(torch.get_num_threads).result() == before
    assert torch.get_num_threads() == before
    split.close()
    whole.close()


def test_the_overlays_are_left_out_when_asked(client, digits):
    """overlay=false (the page draws the heatmap over the input itself): no overlay PNG per
    map, the rest of the answer as with them."""
    full = post(client, [digits[0][1]], heatmap="true").json()["images"][0]
    lean = post(client, [digits[0][1]], heatmap="true", overlay="false").json()["images"][0]
    cell, twin = full["explanations"][0]["maps"][0], lean["explanations"][0]["maps"][0]
    assert cell["overlay"].startswith("data:image/png;base64,") and twin["overlay"] is None
    assert {key: value for key, value in cell.items() if key != "overlay"} == {
        key: value for key, value in twin.items() if key != "overlay"}
    assert lean["input"] == full["input"]
    answer = post(client, [digits[0][1]], overlay="nope")
    assert answer.status_code == 400
    assert answer.json()["error"] == "overlay must be true or false, got 'nope'"
