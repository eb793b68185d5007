"""``camlens explain-audio``: output, picture, and clear errors for bad files and options."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from camlens.cli.audio import explain_audio


@pytest.fixture(scope="module")
def recording():
    """A British English test recording from the data set, with its word stamps."""
    from camlens.data.speech import AccentRecordings

    return AccentRecordings(2, "test", "whole", seed=0).recording(0)


def write(path, samples: np.ndarray, rate: int, **options):
    soundfile.write(str(path), samples, rate, **options)
    return path


def run(*args: str):
    return CliRunner().invoke(explain_audio, [str(arg) for arg in args])


def test_stereo_wav_at_another_rate(tmp_path, recording):
    from scipy.signal import resample_poly

    mono = resample_poly(recording.waveform.numpy(), 441, 160)  # 16 kHz -> 44.1 kHz
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    path = write(tmp_path / "speech.wav", stereo, 44100)
    result = run(path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.match(r"accent: en-(gb|us) \(p = \d\.\d{3}\)$", lines[0])
    assert re.match(r"time span\s+time\s+attention\s+attn x grad\s+Grad-CAM\s+words$", lines[1])
    rows = [line for line in lines[2:] if re.match(r"^\s*\d+\.\d\d -", line)]
    duration = len(recording.waveform) / 16000
    assert len(rows) == int(np.ceil(duration / 0.5))  # no words known: 0.5 s spans
    assert (tmp_path / "out" / "speech_relevance.png").stat().st_size > 10_000
    record = json.loads((tmp_path / "out" / "speech_relevance.json").read_text())
    assert record["segments"][-1]["end_s"] == pytest.approx(duration, abs=1e-3)
    assert set(record["segments"][0]) == {"start_s", "end_s", "attention", "attention-gradient",
                                          "gradcam"}


def test_words_from_the_sidecar_make_the_rows(tmp_path, recording):
    path = write(tmp_path / "words.flac", recording.waveform.numpy(), 16000)
    (tmp_path / "words.json").write_text(json.dumps(recording.metadata()))
    result = run(path, "--out", tmp_path, "--cnn", "none")
    assert result.exit_code == 0, result.output
    assert "Grad-CAM" not in result.output
    for stamp in recording.words:
        assert re.search(rf"%\s+{stamp.word}$", result.output, flags=re.MULTILINE), stamp.word
    segments = run(path, "--out", tmp_path, "--spans", "segments", "--step", "1.0")
    assert segments.exit_code == 0
    assert len([line for line in segments.output.splitlines() if " s " in line]) == int(
        np.ceil(len(recording.waveform) / 16000))


def test_ogg_and_the_cnn_alone(tmp_path, recording):
    path = write(tmp_path / "speech.ogg", recording.waveform.numpy(), 16000, format="OGG",
                 subtype="VORBIS")
    result = run(path, "--model", "accent-cnn", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert re.search(r"time span\s+time\s+Grad-CAM\s+words", result.output)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"this is not a sound file at all" * 20, "cannot read"),
])
def test_unreadable_files_fail_with_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    result = run(path, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_too_short_silent_and_missing_files(tmp_path):
    short = write(tmp_path / "short.wav", 0.1 * np.random.default_rng(0).standard_normal(3000),
                  16000)
    result = run(short, "--out", tmp_path)
    assert result.exit_code == 1 and "at least 0.5 s is needed" in result.output
    silent = write(tmp_path / "silent.wav", np.zeros(16000), 16000)
    result = run(silent, "--out", tmp_path)
    assert result.exit_code == 1 and "silence" in result.output
    result = run(tmp_path / "nowhere.wav", "--out", tmp_path)
    assert result.exit_code == 1 and "no audio file" in result.output


def test_bad_options_are_usage_errors(tmp_path, recording):
    path = write(tmp_path / "speech.wav", recording.waveform.numpy(), 16000)
    result = run(path, "--model", "accent-atention", "--out", tmp_path)
    assert result.exit_code == 2 and "accent-attention" in result.output
    result = run(path, "--model", "digits-gap", "--out", tmp_path)
    assert result.exit_code == 2 and "not an audio model" in result.output
    (tmp_path / "words.json").write_text('{"words": [{"word": "x"}]}')
    result = run(path, "--words", tmp_path / "words.json", "--out", tmp_path)
    assert result.exit_code == 2 and "cannot read word stamps" in result.output
    result = run(path, "--spans", "words", "--out", tmp_path)
    assert result.exit_code == 2 and "needs word time stamps" in result.output
