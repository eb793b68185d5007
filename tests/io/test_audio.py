"""Reading users' audio: formats, channels, rates, and files that must be refused."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from camlens.io.audio import load_audio


def tone(seconds: float, rate: int, frequency: float = 440.0) -> np.ndarray:
    return np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate).astype(np.float32)


def test_load_audio_resamples_44k_stereo_to_16k_mono(tmp_path):
    path = tmp_path / "stereo.wav"
    left = 0.5 * tone(1.0, 44100)
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 44100)
    waveform, rate = load_audio(path)
    assert rate == 16000 and waveform.shape == (16000,) and waveform.dtype == torch.float32
    assert float(waveform[1000:-1000].abs().max()) == pytest.approx(0.25, abs=0.01)  # averaged
    spectrum = torch.fft.rfft(waveform).abs()
    assert int(spectrum.argmax()) == pytest.approx(440, abs=2)  # 1 s of audio: bin = Hz


@pytest.mark.parametrize("audio_format", ["FLAC", "OGG"])
def test_load_audio_reads_flac_and_ogg(tmp_path, audio_format):
    if audio_format not in soundfile.available_formats():
        pytest.skip(f"this libsndfile cannot write {audio_format}")
    path = tmp_path / f"tone.{audio_format.lower()}"
    soundfile.write(path, 0.5 * tone(0.8, 22050), 22050, format=audio_format)
    waveform, rate = load_audio(path)
    assert rate == 16000 and abs(len(waveform) - 12800) <= 2


def test_load_audio_keeps_the_rate_when_asked(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.6, 8000), 8000)
    waveform, rate = load_audio(path, target_rate=None)
    assert rate == 8000 and len(waveform) == 4800


def test_load_audio_names_the_bad_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.wav"):
        load_audio(empty)
    short = tmp_path / "short.wav"
    soundfile.write(short, tone(0.2, 16000), 16000)
    with pytest.raises(ValueError, match=r"short\.wav.*0\.5"):
        load_audio(short)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(ValueError, match="garbage.wav"):
        load_audio(garbage)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
