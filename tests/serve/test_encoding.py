"""The hover values: one byte per cell, value = byte / 255, rounded half to even."""

from __future__ import annotations

import base64

import numpy as np
import torch

from camlens.serve.encoding import map_values


def test_hover_values_are_the_map_in_bytes_rounded_half_to_even():
    generator = torch.Generator().manual_seed(0)
    cases = [torch.rand(64, 64, generator=generator), torch.rand(7, 9, generator=generator),
             torch.tensor([[0.0, 0.5 / 255, 1.5 / 255, 1.0, 1.2, -0.1]])]
    for map_ in cases:
        found = map_values(map_, longest=64)
        cells = np.frombuffer(base64.b64decode(found["values"]), np.uint8)
        expected = (map_.clamp(0, 1) * 255).round().to(torch.uint8)  # torch's rounding
        assert found["value_shape"] == list(map_.shape)
        assert np.array_equal(cells.reshape(map_.shape), expected.numpy())
    assert list(np.frombuffer(base64.b64decode(map_values(cases[2], 64)["values"]), np.uint8)) \
        == [0, 0, 2, 255, 255, 0]  # 0.5 -> 0 and 1.5 -> 2: half to even


def test_a_large_map_is_shrunk_by_area_to_the_longest_side():
    found = map_values(torch.ones(128, 64), longest=32)
    assert found["value_shape"] == [32, 16]
    assert set(base64.b64decode(found["values"])) == {255}
