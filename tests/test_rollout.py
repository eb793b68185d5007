"""Attention rollout and gradient-weighted rollout: the rules by hand, and a timm ViT explained
with its fused attention switched off for the call only."""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens.methods.rollout import rollout


def test_rollout_by_hand():
    first = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]])  # (B=1, H=1, N=2, N)
    second = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    # 0.5 A + 0.5 I: [[0.75, 0.25], [0, 1]] then [[1, 0], [0.25, 0.75]]; R = second @ first.
    expected = torch.tensor([[[0.75, 0.25], [0.1875, 0.8125]]])
    torch.testing.assert_close(rollout([first, second]), expected)


def test_gradient_rollout_by_hand():
    attention = torch.tensor([[[[0.5, 0.5], [0.25, 0.75]]]])
    gradient = torch.tensor([[[[[2.0, -1.0], [0.0, 4.0]]]]])  # (B, K=1, H, N, N)
    # (grad * A)^+ = [[1, 0], [0, 3]]; R = I + that @ I.
    expected = torch.tensor([[[[2.0, 0.0], [0.0, 4.0]]]])
    torch.testing.assert_close(rollout([attention], [gradient]), expected)
    # A second block: R <- R + A2 R.
    second = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    ones = torch.ones(1, 1, 1, 2, 2)
    expected_two = expected + torch.eye(2) @ expected
    torch.testing.assert_close(rollout([attention, second], [gradient, ones]), expected_two)


@pytest.fixture(scope="module")
def vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                             patch_size=8, num_classes=4, depth=3).eval()


def test_a_timm_vit_is_explained_and_its_fused_attention_restored(vit):
    images = torch.randn(2, 3, 32, 32)
    plain = camlens.explain(vit, images, "rollout", target=camlens.TopK(2))
    assert plain.raw.shape == (2, 2, 4, 4) and plain.layer.endswith("blocks.2.attn.attn_drop")
    torch.testing.assert_close(plain.raw[:, 0], plain.raw[:, 1])  # class-agnostic
    weighted = camlens.explain(vit, images, "gradient-rollout", target=[[0, 1], [0, 1]])
    assert not torch.allclose(weighted.raw[:, 0], weighted.raw[:, 1])  # class-specific
    assert all(module.fused_attn for module in vit.modules() if hasattr(module, "fused_attn"))
    with torch.no_grad():
        torch.testing.assert_close(weighted.scores, vit(images)[:, :2])  # the same model


def test_rollout_needs_attention_layers(vit):
    with pytest.raises(ValueError, match="not attention probabilities"):
        camlens.explain(vit, torch.randn(1, 3, 32, 32), "rollout", layer=["blocks.0.mlp"])
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    plain(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="needs the attention probabilities"):
        camlens.explain(plain.eval(), torch.randn(1, 3, 8, 8), "rollout")


def test_overlapping_calls_share_the_unfused_attention(vit):
    import threading

    from camlens.methods.rollout import unfused_attention

    images = torch.randn(2, 3, 32, 32)
    alone = camlens.explain(vit, images, "gradient-rollout", target=1)
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with unfused_attention(vit):
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(10)
    # Another call starts and ends while the first still holds the change.
    during = camlens.explain(vit, images, "gradient-rollout", target=1)
    assert not any(module.fused_attn for module in vit.modules() if hasattr(module, "fused_attn"))
    release.set()
    holder.join()
    torch.testing.assert_close(during.raw, alone.raw)
    assert all(module.fused_attn for module in vit.modules() if hasattr(module, "fused_attn"))
