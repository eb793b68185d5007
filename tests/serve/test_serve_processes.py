"""``camlens serve --processes 2``: two server processes share the port, answer as the library
does, and stop with the command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import camlens

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as stream:
                found |= {int(child) for child in stream.read().split()}
        except FileNotFoundError:  # a thread that ended while the tasks were listed
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_two_processes_share_the_port_answer_as_the_library_and_stop_with_it():
    from camlens.models import load_model
    from camlens.serve import Limits
    from camlens.serve.samples import SampleShelf
    from camlens.serve.uploads import Upload, read_picture

    port = _free_port()
    command = Path(sys.executable).with_name("camlens")
    server = subprocess.Popen([str(command), "serve", "--processes", "2", "--no-zoo", "-m",
                               "digits-gap", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/api/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not answer within a minute")
        workers = [pid for pid in _children(server.pid)  # uvicorn's spawned server processes
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2

        pictures = [sample.data for sample in SampleShelf().pictures()
                    if sample.extra.get("for") == "image"][:4]

        def ask(data: bytes) -> dict:
            answer = httpx.post(f"{url}/api/explain", timeout=60,
                                data={"model": "digits-gap", "method": "gradcam"},
                                files={"image": ("d.png", data, "image/png")})
            assert answer.status_code == 200, answer.text
            return answer.json()["images"][0]["explanations"][0]["maps"][0]

        with ThreadPoolExecutor(8) as clients:
            cells = list(clients.map(ask, pictures * 4))
        loaded = load_model("digits-gap")
        model = loaded.model.eval()
        for data, cell in zip(pictures * 4, cells, strict=True):
            tensor = loaded.preprocess(read_picture(Upload("d.png", data), Limits()))
            exp = camlens.explain(model, tensor, method="gradcam", layer="features")
            assert cell["class"] == int(exp.targets[0])
            assert cell["score"] == pytest.approx(float(exp.scores[0]), rel=1e-4)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            pytest.fail("the server did not stop on Ctrl-C")
    assert not any(Path(f"/proc/{pid}").exists() and "zombie" not in
                   Path(f"/proc/{pid}/status").read_text() for pid in workers)

