"""Read a user's sound file or waveform as a mono float32 waveform at the rate a model wants.

- :func:`load_audio`: any format libsndfile reads (WAV, FLAC, OGG, ...), channels averaged,
  resampled; a missing, empty, unreadable, too short or non-finite file is refused naming the file.
- :func:`read_waveform`: a path, or a 1-D array or tensor at a given rate, as a ``(1, T)`` batch.
- :func:`resample`: polyphase resampling (scipy's ``resample_poly``, Kaiser window, beta 5).

Needs the ``audio`` extra (``soundfile``, ``scipy``).
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path

import numpy as np
import torch

__all__ = ["MIN_DURATION_S", "load_audio", "read_waveform", "resample"]

#: Recordings shorter than this are refused (a model cannot say much about less).
MIN_DURATION_S = 0.5


@cache
def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter scipy's ``resample_poly`` designs for ``up/down``, made once."""
    from scipy.signal import firwin

    rate = max(up, down)
    return firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0)).astype(np.float32)


def resample(waveform: torch.Tensor, rate: int, target_rate: int) -> torch.Tensor:
    """``(T,)`` ``waveform`` from ``rate`` to ``target_rate`` Hz (polyphase, scipy).

    Args:
        waveform: a 1-D float tensor on the CPU.
        rate: its sample rate in Hz.
        target_rate: the rate wanted, in Hz.

    Returns:
        A 1-D float32 tensor of about ``T * target_rate / rate`` samples (``waveform`` itself when
        the rates agree).
    """
    if rate == target_rate:
        return waveform
    from scipy.signal import resample_poly

    divisor = math.gcd(rate, target_rate)
    up, down = target_rate // divisor, rate // divisor
    samples = waveform.numpy().astype(np.float32, copy=False)
    resampled = resample_poly(samples, up, down, window=_lowpass(up, down))
    return torch.from_numpy(np.ascontiguousarray(resampled, dtype=np.float32))


def load_audio(path: str | os.PathLike, target_rate: int | None = 16000,
               min_duration_s: float = MIN_DURATION_S) -> tuple[torch.Tensor, int]:
    """A sound file as a mono ``(T,)`` float32 waveform resampled to ``target_rate`` (kept as it
    is with ``None``), and its rate.

    Channels are averaged. Raises ``FileNotFoundError`` for a missing file and ``ValueError``,
    naming the file, for one that is empty, unreadable, shorter than ``min_duration_s`` or holds
    NaN or infinite samples.

    Example:
        >>> waveform, rate = load_audio("speech.wav", target_rate=16000)  # doctest: +SKIP
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as error:  # soundfile's LibsndfileError
        raise ValueError(f"cannot read {path} as audio ({error}); readable formats: "
                         f"{', '.join(sorted(soundfile.available_formats()))}") from error
    duration = len(samples) / rate
    if len(samples) == 0:
        raise ValueError(f"{path} holds no audio samples")
    if duration < min_duration_s:
        raise ValueError(f"{path} is {duration:.3f} s long; at least {min_duration_s} s is needed")
    if not np.isfinite(samples).all():
        raise ValueError(f"{path} holds NaN or infinite samples; camlens cannot explain them")
    waveform = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1)))
    if target_rate is None:
        return waveform, rate
    return resample(waveform, rate, target_rate), target_rate


def read_waveform(audio: str | os.PathLike | np.ndarray | torch.Tensor,
                  sample_rate: int | None = None, target_rate: int = 16000) -> torch.Tensor:
    """A ``(1, T)`` float waveform at ``target_rate`` from a path (see :func:`load_audio`) or a
    mono 1-D (or ``(1, T)``) array or tensor at ``sample_rate`` (``target_rate`` if not given).

    Example:
        >>> read_waveform(torch.zeros(8000), sample_rate=8000).shape
        torch.Size([1, 16000])
    """
    if isinstance(audio, (str, os.PathLike)):
        waveform, _ = load_audio(audio, target_rate=target_rate)
        return waveform[None]
    waveform = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(
        audio, torch.Tensor) else audio.detach().float().cpu())
    if waveform.ndim == 2 and waveform.shape[0] == 1:
        waveform = waveform[0]
    if waveform.ndim != 1:
        raise ValueError(f"expected a mono waveform (T,) or (1, T), got shape "
                         f"{tuple(waveform.shape)}")
    if not torch.isfinite(waveform).all():
        raise ValueError("the waveform holds NaN or infinite samples; camlens cannot explain them")
    if sample_rate is not None and sample_rate != target_rate:
        waveform = resample(waveform.contiguous(), sample_rate, target_rate)
    return waveform[None]
