"""Log-mel features in torch and the frame / segment grid."""

from __future__ import annotations

import math

import pytest
import torch

from camlens.zoo.audio_features import (
    FrameGrid,
    LogMel,
    LogMelConfig,
    mel_filterbank,
    segment_count,
    waveform_input,
)

RATE = 16000


def tone(frequency: float, seconds: float = 1.0, amplitude: float = 0.5,
         rate: int = RATE) -> torch.Tensor:
    time = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * frequency * time)).float()


@pytest.mark.parametrize("frequency", [330.0, 1000.0, 3000.0])
def test_a_tone_lights_the_mel_band_centred_on_it(frequency):
    logmel = LogMel()
    features = logmel(tone(frequency))[0]  # (40, F)
    centres = logmel.config.band_centres()
    loudest_band = int(features.mean(dim=1).argmax())
    assert loudest_band == int((centres - frequency).abs().argmin())
    # every frame's loudest bin is the tone's band (or its neighbour, for a tone between two)
    per_frame = features[:, 2:-2].argmax(dim=0)
    assert ((per_frame - loudest_band).abs() <= 1).all()
    # far bands are near the floor: more than 40 dB below the tone
    far = (torch.arange(len(centres)) - loudest_band).abs() > 6
    assert features[far].mean() < 0.0


def test_log_mel_shape_range_and_gain_invariance():
    logmel = LogMel()
    signal = tone(440.0, 0.73) + 0.01 * torch.randn(int(0.73 * RATE))
    features = logmel(signal[None])
    assert features.shape == (1, 40, int(0.73 * RATE) // 160 + 1)
    assert features.max() == pytest.approx(1.0) and features.min() >= -1.0
    torch.testing.assert_close(logmel(0.05 * signal), features, atol=1e-4, rtol=0)


def test_log_mel_has_no_weights_to_save():
    assert LogMel().state_dict() == {}


def test_filterbank_triangles_peak_at_one_and_cover_the_range():
    bank = mel_filterbank(512, 40, RATE, 20.0, 7600.0)
    assert bank.shape == (40, 257)
    assert (bank >= 0).all() and bank.max() <= 1.0 + 1e-6
    assert (bank.sum(dim=1) > 0).all()  # no empty filter
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(512, 40, RATE, 20.0, 9000.0)


def test_segments_of_one_second():
    grid = FrameGrid(RATE, LogMelConfig(), segment_frames=30, hop_frames=10)
    assert grid.frames == 101
    assert grid.segments == 9  # 0, 10, ..., 80: the last reaches frame 100
    spans = grid.segment_spans()
    assert spans[0, 0] == 0.0 and spans[-1, 1] == pytest.approx(1.0)
    assert spans[1, 0] == pytest.approx(0.095)  # frame 10's cell starts half a frame early
    torch.testing.assert_close(spans[2:, 0] - spans[1:-1, 0], torch.full((7,), 0.1))
    torch.testing.assert_close(spans[1:-1, 1] - spans[1:-1, 0], torch.full((7,), 0.3))
    edges = grid.frame_edges()
    assert len(edges) == 102 and edges[0] == 0 and edges[-1] == pytest.approx(1.0)
    assert (edges[1:] >= edges[:-1]).all()
    assert edges[1] == pytest.approx(0.005)  # frame 0 is centred at t = 0


def test_segment_count_edges():
    assert segment_count(10, 30, 10) == 1
    assert segment_count(30, 30, 10) == 1
    assert segment_count(31, 30, 10) == 2
    assert segment_count(101, 30, 10) == 9


def test_waveform_input_resamples_and_checks_shape():
    signal = tone(440.0, 0.5, rate=8000)
    assert waveform_input(signal, sample_rate=8000).shape == (1, 8000)
    assert waveform_input(signal[None]).shape == (1, 4000)
    with pytest.raises(ValueError, match="mono"):
        waveform_input(torch.zeros(2, 100))
