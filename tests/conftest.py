"""Fixtures with the small models of toy_models.py."""

from __future__ import annotations

import pytest
import torch
from toy_models import FlattenNet, GapNet, LinearHead  # noqa: F401 - fixtures below


@pytest.fixture
def gap_net() -> GapNet:
    torch.manual_seed(0)
    return GapNet().eval()


@pytest.fixture
def flatten_net() -> FlattenNet:
    torch.manual_seed(0)
    return FlattenNet().eval()


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 6, 6)
