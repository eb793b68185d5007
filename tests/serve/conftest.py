"""One explorer app shared by the serve tests: the shipped digit, caption and accent models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from serve_helpers import free_port, png_bytes  # noqa: F401 - the tests' helpers

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install "
                    "'camlens[serve]')")


@pytest.fixture(scope="session")
def catalog():
    from camlens.serve import ModelCatalog

    return ModelCatalog.load(["digits-gap", "digits-fc", "digits-captioner", "accent-attention",
                              "accent-cnn", "digits-detector"], zoo=False)


@pytest.fixture(scope="session")
def app(catalog):
    from camlens.cli.serve import build_app

    return build_app(catalog)


@pytest.fixture(scope="session")
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def digits():
    """Six cluttered test digits (1, 64, 64) and their PNG bytes."""
    from camlens.data import ClutteredDigits

    items = [ClutteredDigits(6, "test", seed=11)[index] for index in range(6)]
    return [(item["image"], png_bytes(item["image"])) for item in items]


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[str]:
    """The app on uvicorn in a thread, on a free port of 127.0.0.1; its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
