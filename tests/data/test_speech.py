"""The offline accent recordings: eSpeak NG synthesis, exact word stamps, caching."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from camlens.data import speech
from camlens.data.speech import (
    ACCENTS,
    ESPEAK_VOICES,
    NEUTRAL_VOICE,
    AccentRecordings,
    default_cache_dir,
    synthesizer,
    word_lists,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("speech-cache")


@pytest.fixture(scope="module")
def mixed(cache):
    return AccentRecordings(24, kind="mixed", seed=5, cache_dir=cache)


@pytest.fixture(scope="module")
def whole(cache):
    return AccentRecordings(12, kind="whole", seed=5, cache_dir=cache)


def rms(waveform: torch.Tensor, start_s: float, end_s: float, rate: int = 16000) -> float:
    piece = waveform[round(start_s * rate) : round(end_s * rate)].double()
    return float(piece.pow(2).mean().sqrt())


def test_same_seed_gives_identical_audio_and_seeds_differ(mixed, tmp_path):
    # A second, fresh cache: synthesized again, in another order, after other eSpeak calls.
    again = AccentRecordings(4, kind="mixed", seed=5, cache_dir=tmp_path / "again")
    for index in reversed(range(4)):
        item, repeat = mixed[index], again[index]
        assert torch.equal(item["waveform"], repeat["waveform"])
        assert item["words"] == repeat["words"] and item["gaps"] == repeat["gaps"]
    other = AccentRecordings(4, kind="mixed", seed=6, cache_dir=tmp_path / "other")
    assert not any(torch.equal(mixed[i]["waveform"], other[i]["waveform"]) for i in range(4))


def test_items_have_the_documented_shape(mixed):
    item = mixed[0]
    assert item["waveform"].dtype == torch.float32 and item["waveform"].ndim == 1
    assert item["sample_rate"] == 16000
    assert item["label"].dtype == torch.long and item["label"].ndim == 0
    assert set(item["words"][0]) == {"word", "start_s", "end_s", "informative", "voice"}
    assert item["waveform"].abs().max() <= 1.0


def test_words_and_gaps_tile_the_recording_in_order(mixed, whole):
    for dataset in (mixed, whole):
        for index in range(len(dataset)):
            recording = dataset.recording(index)
            spans = sorted([(w.start_s, w.end_s) for w in recording.words] +
                           [(g.start_s, g.end_s) for g in recording.gaps])
            assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(recording.duration_s)
            for (_, end), (start, _) in pairwise(spans):
                assert start == pytest.approx(end)  # no overlap, no hole
            starts = [w.start_s for w in recording.words]
            assert starts == sorted(starts) and all(w.end_s > w.start_s for w in recording.words)
            assert 5 <= len(recording.words) <= 10


def test_words_are_loud_silence_is_silent_and_noise_is_in_between(mixed):
    silence, noise, words = [], [], []
    for index in range(len(mixed)):
        recording = mixed.recording(index)
        waveform = recording.waveform
        words += [rms(waveform, w.start_s, w.end_s) for w in recording.words]
        silence += [rms(waveform, g.start_s, g.end_s) for g in recording.gaps
                    if g.kind in ("silence", "pause")]
        noise += [rms(waveform, g.start_s, g.end_s) for g in recording.gaps if g.kind == "noise"]
    assert silence and noise, "24 mixed recordings should hold both silence and noise gaps"
    assert min(words) > 50 * max(silence)
    assert min(noise) > 10 * max(silence)
    assert np.median(noise) < np.median(words)


def test_mixed_recordings_have_two_to_four_informative_words(mixed):
    kinds = set()
    for index in range(len(mixed)):
        recording = mixed.recording(index)
        informative = [w for w in recording.words if w.informative]
        assert 2 <= len(informative) <= 4
        assert all(w.voice == recording.accent for w in informative)
        assert all(w.voice == NEUTRAL_VOICE for w in recording.words if not w.informative)
        kinds |= {gap.kind for gap in recording.gaps}
    assert kinds == {"pause", "silence", "noise"}


def test_whole_recordings_are_all_in_the_accent_voice(whole):
    for index in range(len(whole)):
        recording = whole.recording(index)
        assert all(w.informative and w.voice == recording.accent for w in recording.words)
        assert {gap.kind for gap in recording.gaps} == {"pause"}
        assert all(g.end_s - g.start_s <= 0.3 + 1e-9 for g in recording.gaps)


def test_labels_alternate_so_classes_are_balanced(mixed):
    labels = [int(mixed[index]["label"]) for index in range(len(mixed))]
    assert labels.count(0) == labels.count(1) == len(mixed) // 2
    assert all(mixed.recording(i).accent == ACCENTS[label] for i, label in enumerate(labels))


def test_train_and_test_use_disjoint_words(tmp_path):
    train_accent, train_common = word_lists("train")
    test_accent, test_common = word_lists("test")
    assert not set(train_accent + train_common) & set(test_accent + test_common)
    assert len(train_accent) + len(train_common) + len(test_accent) + len(test_common) >= 250
    test = AccentRecordings(6, split="test", cache_dir=tmp_path)
    spoken = {w["word"] for index in range(6) for w in test[index]["words"]}
    assert spoken <= set(test_accent + test_common)


@pytest.mark.parametrize("word", ["tomato", "water", "big", "ten"])
def test_the_two_accents_sound_different_on_the_same_word(word):
    engine = synthesizer()
    british, american = (engine.synthesize(word, ESPEAK_VOICES[accent], "Denis", 175, 50)
                         for accent in ACCENTS)
    assert british.abs().max() > 0.05 and american.abs().max() > 0.05
    length = min(len(british), len(american))
    assert len(british) != len(american) or not torch.allclose(
        british[:length], american[:length], atol=1e-3)


def test_synthesis_is_repeatable_whatever_came_before():
    engine = synthesizer()
    first = engine.synthesize("schedule", "en-us", "michel", 160, 45, seed=7)
    engine.synthesize("a long other sentence to move the state on", "en", "shelby", 190, 60)
    assert torch.equal(first, engine.synthesize("schedule", "en-us", "michel", 160, 45, seed=7))


def test_unknown_voice_is_refused_by_name():
    with pytest.raises(ValueError, match="no-such-voice"):
        synthesizer().synthesize("hello", "no-such-voice")


def test_cache_hit_does_not_synthesize(tmp_path, monkeypatch):
    first = AccentRecordings(3, kind="mixed", seed=9, cache_dir=tmp_path)
    items = [first[index] for index in range(3)]
    assert len(list((first.folder).glob("*.flac"))) == 3

    def refuse():
        raise AssertionError("a cached item was synthesized again")

    monkeypatch.setattr(speech, "synthesizer", refuse)
    again = AccentRecordings(3, kind="mixed", seed=9, cache_dir=tmp_path)
    for index, item in enumerate(items):
        cached = again[index]
        assert torch.equal(cached["waveform"], item["waveform"])
        assert cached["words"] == item["words"] and cached["gaps"] == item["gaps"]
    with pytest.raises(AssertionError, match="synthesized again"):
        AccentRecordings(4, kind="mixed", seed=9, cache_dir=tmp_path)[3]


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CAMLENS_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert AccentRecordings(2).folder.is_relative_to(tmp_path / "mine")
    monkeypatch.delenv("CAMLENS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "camlens"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"size": 0}, "size"), ({"kind": "partial"}, "'partial'"), ({"split": "dev"}, "'dev'")],
)
def test_bad_arguments_are_refused(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        AccentRecordings(**{"cache_dir": tmp_path, **arguments})


def test_index_out_of_range(mixed):
    with pytest.raises(IndexError, match="24"):
        mixed[24]


def test_span_mask_marks_informative_words(mixed):
    assert [int(mixed[index]["label"]) for index in (0, 1)] == [0, 1]
    recording = mixed.recording(0)
    mask = recording.span_mask()
    informative_seconds = sum(w.end_s - w.start_s for w in recording.words if w.informative)
    assert int(mask.sum()) == pytest.approx(informative_seconds * 16000, abs=len(recording.words))
    assert not (mask & recording.span_mask(informative=False)).any()
