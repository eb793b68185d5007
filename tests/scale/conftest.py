"""Fixtures of the data-set tests: a folder of digit scenes and the digits-gap model."""

from __future__ import annotations

import pytest
from PIL import Image

from camlens.data import ClutteredDigits


@pytest.fixture(scope="session")
def digit_scenes(tmp_path_factory):
    """12 cluttered-digit PNGs (64x64, gray) in a folder."""
    folder = tmp_path_factory.mktemp("scenes")
    data = ClutteredDigits(12, "test", seed=5)
    for index in range(12):
        Image.fromarray((data[index]["image"][0] * 255).byte().numpy()).save(
            folder / f"s{index:02d}.png")
    return folder


@pytest.fixture(scope="session")
def same_npz_maps():
    """``check(a, b, count, rtol, atol)``: the npz runs in folders ``a`` and ``b`` hold the same
    ``count`` files, their raw maps and scores within the tolerances."""
    import numpy as np

    def maps(folder):
        data = np.load(folder / "maps" / "part-00000.npz")
        return {str(name): (raw, score) for name, raw, score in
                zip(data["file"], data["raw"], data["score"], strict=True)}

    def check(a, b, count: int, rtol: float, atol: float) -> None:
        first, second = maps(a), maps(b)
        assert first.keys() == second.keys() and len(first) == count
        for name, (raw, score) in first.items():
            np.testing.assert_allclose(second[name][0], raw, rtol=rtol, atol=atol)
            assert second[name][1] == pytest.approx(score, rel=rtol / 10)

    return check


@pytest.fixture(scope="session")
def digits_gap():
    from camlens.models import load_model

    return load_model("digits-gap")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for one test module (``ray.init(num_cpus=2)``, no cluster)."""
    import signal

    ray = pytest.importorskip("ray")
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    for number, handler in handlers.items():  # ray.init installs its own; later tests check
        signal.signal(number, handler)
