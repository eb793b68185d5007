"""Log-mel features and fixed-length segments, in torch only (no torchaudio).

- :class:`LogMel`: ``torch.stft`` (25 ms Hann window, 10 ms hop, centred frames) -> power
  spectrum -> a triangular mel filterbank built here (HTK mel scale, :func:`mel_filterbank`) ->
  decibels relative to the recording's loudest bin, floored ``top_db`` below it and scaled to
  [-1, 1]. The reference is per recording, so the gain of a recording does not matter, and zero
  padding or zeroed (masked) stretches read as the floor, like silence.
- :class:`FrameGrid`: where frame ``k`` sits in time (its cell is ``[(k - 1/2) hop, (k + 1/2) hop)``
  clipped to the recording) and which frames segment ``s`` covers (``[s H, s H + L)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FrameGrid", "LogMel", "LogMelConfig", "SAMPLE_RATE", "mel_filterbank",
           "padded_frames", "segment_count", "waveform_input"]

SAMPLE_RATE = 16000


def _hz_to_mel(frequency: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(frequency, dtype=torch.float64) / 700.0)


def _mel_to_hz(mel: torch.Tensor | float) -> torch.Tensor:
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def _mel_points(n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """The ``n_mels + 2`` edge and centre frequencies (Hz) of the triangular filters, equally
    spaced in mel."""
    low, high = float(_hz_to_mel(f_min)), float(_hz_to_mel(f_max))
    return _mel_to_hz(torch.linspace(low, high, n_mels + 2))


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float
                   ) -> torch.Tensor:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters: filter m rises from point m to point m + 1
    and falls to point m + 2 (:func:`_mel_points`), with peak 1 at its centre frequency."""
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= {sample_rate / 2} Hz, got f_min={f_min}, "
                         f"f_max={f_max}")
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    points = _mel_points(n_mels, f_min, f_max)
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 7600.0
    top_db: float = 80.0

    @property
    def frame_s(self) -> float:
        return self.hop_length / self.sample_rate

    def frame_count(self, samples: int) -> int:
        """Frames of a recording of ``samples`` (centred STFT)."""
        return samples // self.hop_length + 1

    def band_centres(self) -> torch.Tensor:
        """``(n_mels,)`` centre frequency of each mel band, in Hz."""
        return _mel_points(self.n_mels, self.f_min, self.f_max)[1:-1].float()


class LogMel(nn.Module):
    """Waveform ``(B, T)`` (or ``(T,)``) at ``config.sample_rate`` -> log-mel ``(B, n_mels, F)``
    in [-1, 1] with ``F = T // hop + 1``: ``-1`` is ``top_db`` or more below the recording's
    loudest time-frequency bin, ``1`` is that bin. No parameters (the window and filterbank are
    non-persistent buffers, so they are not saved with the weights)."""

    def __init__(self, config: LogMelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LogMelConfig()
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        filterbank = mel_filterbank(config.n_fft, config.n_mels, config.sample_rate,
                                    config.f_min, config.f_max)
        self.register_buffer("filterbank", filterbank, persistent=False)

    def power_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Mel power ``(B, n_mels, F)`` before the logarithm."""
        config = self.config
        if waveform.ndim == 1:
            waveform = waveform[None]
        spectrum = torch.stft(waveform, config.n_fft, hop_length=config.hop_length,
                              win_length=config.win_length, window=self.window, center=True,
                              pad_mode="constant", return_complex=True)
        return torch.matmul(self.filterbank, spectrum.abs() ** 2)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        decibels = 10.0 * torch.log10(self.power_mel(waveform).clamp(min=1e-10))
        reference = decibels.amax(dim=(1, 2), keepdim=True)
        top_db = self.config.top_db
        relative = torch.clamp(decibels - reference, min=-top_db)
        return relative / (top_db / 2) + 1.0


@dataclass(frozen=True)
class FrameGrid:
    """Frames and segments of one recording of ``samples`` at ``config``'s rate.

    Segment ``s`` covers frames ``[s hop_frames, s hop_frames + segment_frames)``; there are
    enough segments for the last to reach the last frame (frames past the end are padding)."""

    samples: int
    config: LogMelConfig
    segment_frames: int
    hop_frames: int

    @property
    def duration_s(self) -> float:
        return self.samples / self.config.sample_rate

    @property
    def frames(self) -> int:
        return self.config.frame_count(self.samples)

    @property
    def segments(self) -> int:
        return segment_count(self.frames, self.segment_frames, self.hop_frames)

    def frame_edges(self) -> torch.Tensor:
        """``(F + 1,)`` cell boundaries in seconds: frame k is centred at ``k hop``, so its cell is
        ``[(k - 1/2) hop, (k + 1/2) hop)``, clipped to ``[0, duration]`` (the last cell runs to
        the end)."""
        frame_s = self.config.frame_s
        edges = (torch.arange(self.frames + 1, dtype=torch.float64) - 0.5) * frame_s
        edges[0], edges[-1] = 0.0, self.duration_s
        return edges.clamp(max=self.duration_s)

    def segment_frame_ranges(self) -> torch.Tensor:
        """``(S, 2)`` first and one-past-last frame of each segment, clipped to the frames."""
        starts = torch.arange(self.segments) * self.hop_frames
        ends = (starts + self.segment_frames).clamp(max=self.frames)
        return torch.stack([starts, ends], dim=1)

    def segment_spans(self) -> torch.Tensor:
        """``(S, 2)`` start and end of each segment in seconds: the first starts at 0 and the last
        ends at the recording's end."""
        return self.frame_edges()[self.segment_frame_ranges()].float()


def segment_count(frames: int, segment_frames: int, hop_frames: int) -> int:
    """Segments of ``segment_frames`` every ``hop_frames`` needed to cover ``frames``."""
    if frames <= segment_frames:
        return 1
    return math.ceil((frames - segment_frames) / hop_frames) + 1


def padded_frames(frames: int, segment_frames: int, hop_frames: int) -> int:
    """Frames after padding so that every segment is whole."""
    return (segment_count(frames, segment_frames, hop_frames) - 1) * hop_frames + segment_frames


def waveform_input(audio, sample_rate: int | None = None) -> torch.Tensor:
    """A ``(1, T)`` float waveform at 16 kHz, the input of the accent models, from a path
    (any format libsndfile reads: resampled, channels averaged) or a 1-D array or tensor (at
    ``sample_rate``, 16 kHz if not given). See :func:`camlens.io.audio.read_waveform`."""
    from camlens.io.audio import read_waveform

    return read_waveform(audio, sample_rate, target_rate=SAMPLE_RATE)
