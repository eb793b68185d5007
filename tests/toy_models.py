"""Small models with known structure, shared by the tests (imported by name: the test folders
are not packages, and a module called ``conftest`` would be whichever folder's conftest pytest
imported last)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FlattenNet", "GapNet", "LinearHead", "save_tiny_clip", "tiny_clip_config"]


class GapNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> global average pooling -> linear: the CAM architecture."""

    def __init__(self, channels: int = 6, classes: int = 5, inplace: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(8, channels, 3, padding=1),
            nn.ReLU(inplace=inplace),
        )
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3))
        return self.fc(self.dropout(pooled))


class FlattenNet(nn.Module):
    """conv -> ReLU -> flatten -> linear: Grad-CAM works, CAM must refuse."""

    def __init__(self, channels: int = 4, size: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(channels * size * size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class LinearHead(nn.Module):
    """An identity 'layer' that exposes the input as the activation, then a linear head on the
    flattened activation: the gradient d y^c / d A equals the head's weights, so every formula can
    be computed by hand."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.layer = nn.Identity()
        classes = weight.shape[0]
        self.head = nn.Linear(weight[0].numel(), classes)
        with torch.no_grad():
            self.head.weight.copy_(weight.reshape(classes, -1))
            self.head.bias.copy_(torch.zeros(classes) if bias is None else bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x).flatten(1))


def tiny_clip_config(transformers, vocab_size: int = 99, max_positions: int = 16,
                     vision_layers: int = 1):
    """A transformers ``CLIPConfig`` small enough for a test: 16-wide towers, 32x32 images in
    8x8 patches, token ids 0 (start) and 1 (end and padding)."""
    return transformers.CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 16, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 32,
                     "max_position_embeddings": max_positions, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 16,
                       "num_hidden_layers": vision_layers, "num_attention_heads": 2,
                       "intermediate_size": 32},
        projection_dim=8)


def save_tiny_clip(transformers, folder):
    """A CLIP model from a small config (two vision layers), with a character-level tokenizer
    and its image processor (32x32), saved into ``folder`` as ``save_pretrained`` does."""
    import json
    import string

    torch.manual_seed(0)
    config = tiny_clip_config(transformers, vocab_size=60, max_positions=32, vision_layers=2)
    transformers.CLIPModel(config).eval().save_pretrained(folder)
    letters = string.ascii_lowercase
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(f"{c}</w>" for c in letters)]
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    vocab.write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    merges.write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(str(vocab), str(merges)).save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                    crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
