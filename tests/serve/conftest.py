"""One explorer app shared by the serve tests: the shipped digit, caption and accent models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_helpers import free_port, png_bytes, served  # noqa: F401 - the tests' helpers

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
    pytest.importorskip("uvicorn")
    with served(app) as url:
        yield url
