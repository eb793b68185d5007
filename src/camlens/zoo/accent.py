"""The two accent classifiers (British vs American English) of the zoo.

:class:`AccentAttention` (``accent-attention``) follows the end-to-end variant of Padi, Mohan and
Ganapathy (TASLP 2020): frame-level TDNN -> statistics over short overlapping segments ->
BLSTM -> attention pooling -> classifier::

    waveform (B, T) -> log-mel (B, 40, F), 10 ms frames
      -> frames: TDNN (dilated 1-D convolutions), (B, C, F)
      -> segments: mean and standard deviation over 0.3 s windows every 0.1 s, then a linear
         layer: one embedding x_t per segment, (B, S, D)
      -> blstm: h_t, (B, S, 2H)
      -> attention: u_t = tanh(W h_t + b), alpha_t = softmax_t(c^T u_t), e = sum_t alpha_t h_t
      -> classifier: e -> logits (B, 2)

The attention weights ``alpha`` pass through ``attention.weights`` (an identity module) as a
``(B, 1, S)`` tensor, so a hook there reads them, and the core engine differentiates to them:
HiResCAM at that layer is attention times gradient, ``ReLU(alpha_t d y / d alpha_t)``.

``AccentAttention(pooling="mean")`` (``accent-mean``) is the same network with uniform pooling
over the valid segments, ``e = (1/S) sum_t h_t`` (:class:`MeanPooling`): the control for the
attention layer (issue 17). Its uniform weights ``1/S`` pass through ``attention.weights`` too,
so the same layer name works for both models.

:class:`AccentCNN` (``accent-cnn``): log-mel -> 1-D convolutions over time with the mel bands as
channels (``features``, the Grad-CAM layer, ``(B, 128, F / 4)``) -> average over time -> linear.

Both take ``forward(waveform, lengths=None)``: a batch zero-padded to the longest recording with
``lengths`` its true sample counts (padding is then left out of the pooling and the BLSTM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from camlens.zoo.audio_features import FrameGrid, LogMel, LogMelConfig, padded_frames, segment_count
from camlens.zoo.module import ZooModule

__all__ = ["ACCENTS", "AccentAttention", "AccentCNN", "AttentionPooling", "MeanPooling",
           "POOLINGS", "SEGMENT_HOP_S", "SEGMENT_S"]

ACCENTS = ("en-gb", "en-us")
SEGMENT_S = 0.3
SEGMENT_HOP_S = 0.1
POOLINGS = ("attention", "mean")


def _conv1d_block(in_channels: int, out_channels: int, kernel: int, dilation: int = 1
                 ) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2
    return [nn.Conv1d(in_channels, out_channels, kernel, padding=padding, dilation=dilation,
                      bias=False), nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True)]


class AttentionPooling(nn.Module):
    """Attention pooling of Padi et al. (TASLP 2020, after Yang et al. 2016):
    ``u_t = tanh(W h_t + b)``, ``alpha_t = softmax_t(c^T u_t)``, ``e = sum_t alpha_t h_t``.

    ``forward(h (B, S, D), mask (B, S) or None) -> e (B, D)``; ``alpha`` ``(B, 1, S)`` passes
    through ``self.weights`` (masked positions get weight 0)."""

    def __init__(self, dim: int, attention_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(dim, attention_dim)  # W, b
        self.context = nn.Linear(attention_dim, 1, bias=False)  # c
        self.weights = nn.Identity()

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.context(torch.tanh(self.project(states))).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        alpha = self.weights(logits.softmax(dim=1)[:, None, :])
        return torch.bmm(alpha, states).squeeze(1)


class MeanPooling(nn.Module):
    """Uniform pooling over the valid segments, ``e = (1/S) sum_t h_t``: attention pooling with
    every ``alpha_t = 1/S`` (S: the recording's segment count), the "uniform use of the
    information" that Padi et al. (TASLP 2020) compare attention against.

    Same interface as :class:`AttentionPooling`; the uniform ``alpha`` ``(B, 1, S)`` passes
    through ``self.weights`` (masked positions get weight 0). No parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Identity()

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        valid = mask.to(states.dtype)
        alpha = self.weights((valid / valid.sum(dim=1, keepdim=True).clamp(min=1))[:, None, :])
        return torch.bmm(alpha, states).squeeze(1)


class AccentAttention(ZooModule):
    """Log-mel -> TDNN -> segment statistics -> BLSTM -> attention pooling -> classifier.

    ``pooling="mean"``: :class:`MeanPooling` instead of :class:`AttentionPooling` (the
    ``accent-mean`` control); everything else is the same."""

    def __init__(self, num_classes: int = len(ACCENTS), channels: int = 96, embedding: int = 96,
                 hidden: int = 64, attention_dim: int = 64, segment_s: float = SEGMENT_S,
                 segment_hop_s: float = SEGMENT_HOP_S, dropout: float = 0.2,
                 pooling: str = "attention") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.logmel = LogMel()
        config = self.logmel.config
        self.segment_frames = round(segment_s / config.frame_s)
        self.hop_frames = round(segment_hop_s / config.frame_s)
        self.frames = nn.Sequential(
            *_conv1d_block(config.n_mels, channels, 5),
            *_conv1d_block(channels, channels, 3, dilation=2),
            *_conv1d_block(channels, channels, 1),
        )
        self.segments = nn.Sequential(nn.Linear(2 * channels, embedding), nn.ReLU(inplace=True))
        self.blstm = nn.LSTM(embedding, hidden, batch_first=True, bidirectional=True)
        self.attention: AttentionPooling | MeanPooling = (
            AttentionPooling(2 * hidden, attention_dim) if pooling == "attention"
            else MeanPooling())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, 64),
                                        nn.ReLU(inplace=True), nn.Linear(64, num_classes))

    def frame_grid(self, samples: int) -> FrameGrid:
        """Frames and segments (with their time spans) of a recording of ``samples``."""
        return FrameGrid(samples, self.logmel.config, self.segment_frames, self.hop_frames)

    def segment_counts(self, lengths: torch.Tensor) -> torch.Tensor:
        config = self.logmel.config
        return torch.tensor([segment_count(config.frame_count(int(length)), self.segment_frames,
                                           self.hop_frames) for length in lengths.tolist()],
                            device=lengths.device)

    def segment_embeddings(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, S, D)``: one embedding per segment (mean and standard deviation of the frame
        features over the segment, then a linear layer)."""
        features = self.logmel(waveform)
        total = padded_frames(features.shape[-1], self.segment_frames, self.hop_frames)
        features = F.pad(features, (0, total - features.shape[-1]), value=-1.0)  # the floor
        frames = self.frames(features)
        mean = F.avg_pool1d(frames, self.segment_frames, self.hop_frames)
        square = F.avg_pool1d(frames * frames, self.segment_frames, self.hop_frames)
        spread = torch.sqrt((square - mean * mean).clamp(min=1e-6))
        return self.segments(torch.cat([mean, spread], dim=1).transpose(1, 2))

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> torch.Tensor:
        embeddings = self.segment_embeddings(waveform)
        mask = None
        if lengths is None:
            states, _ = self.blstm(embeddings)
        else:
            counts = self.segment_counts(lengths).clamp(max=embeddings.shape[1])
            packed = pack_padded_sequence(embeddings, counts.cpu(), batch_first=True,
                                          enforce_sorted=False)
            states, _ = pad_packed_sequence(self.blstm(packed)[0], batch_first=True,
                                            total_length=embeddings.shape[1])
            mask = torch.arange(embeddings.shape[1], device=counts.device)[None] < counts[:, None]
        return self.classifier(self.attention(states, mask))


class AccentCNN(ZooModule):
    """Log-mel -> 1-D convolutions over time (``features``: ``(B, 128, F / 4)``) -> average over
    time -> linear. Global average pooling then one linear layer: CAM applies, and equals
    Grad-CAM."""

    def __init__(self, num_classes: int = len(ACCENTS), channels: int = 96) -> None:
        super().__init__()
        self.logmel = LogMel(LogMelConfig())
        n_mels = self.logmel.config.n_mels
        self.features = nn.Sequential(
            *_conv1d_block(n_mels, channels, 5),
            nn.MaxPool1d(2),
            *_conv1d_block(channels, channels, 5),
            nn.MaxPool1d(2),
            *_conv1d_block(channels, channels, 3),
            *_conv1d_block(channels, 128, 3),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> torch.Tensor:
        features = self.features(self.logmel(waveform))
        if lengths is None:
            pooled = features.mean(dim=2)
        else:
            config = self.logmel.config
            frames = torch.tensor([config.frame_count(int(n)) for n in lengths.tolist()],
                                  device=features.device)
            valid = torch.div(frames, 4, rounding_mode="floor").clamp(min=1, max=features.shape[2])
            mask = (torch.arange(features.shape[2], device=features.device)[None]
                    < valid[:, None]).to(features.dtype)
            pooled = (features * mask[:, None]).sum(dim=2) / valid[:, None].to(features.dtype)
        return self.classifier(pooled)
