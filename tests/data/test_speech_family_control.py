"""The voice control of issue 17: ``kind="mixed-family"`` recordings are the mixed recordings
with their neutral words spoken by a sibling of the accent voices, balanced over the classes."""

from __future__ import annotations

import pytest
import torch

from camlens.data.speech import (
    ACCENTS,
    FAMILY_NEUTRAL_VOICES,
    KINDS,
    NEUTRAL_VOICE,
    AccentRecordings,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cache = tmp_path_factory.mktemp("speech-family")
    return (AccentRecordings(8, "test", "mixed", seed=3, cache_dir=cache),
            AccentRecordings(8, "test", "mixed-family", seed=3, cache_dir=cache))


def test_the_control_is_a_kind_with_its_own_cache_folder(pair):
    mixed, family = pair
    assert "mixed-family" in KINDS
    assert mixed.folder != family.folder


def test_same_words_speaker_and_gaps_as_the_mixed_item_only_the_neutral_voice_differs(pair):
    mixed, family = pair
    for index in range(len(family)):
        original, control = mixed.recording(index), family.recording(index)
        assert control.label == original.label == index % 2
        assert control.speaker == original.speaker
        assert ([(w.word, w.informative) for w in control.words]
                == [(w.word, w.informative) for w in original.words])
        assert [g.kind for g in control.gaps] == [g.kind for g in original.gaps]
        for before, after in zip(original.gaps, control.gaps, strict=True):  # same gap lengths
            assert after.end_s - after.start_s == pytest.approx(before.end_s - before.start_s,
                                                                abs=1e-4)
        neutral = {w.voice for w in control.words if not w.informative}
        assert neutral == {FAMILY_NEUTRAL_VOICES[(index // 2) % 2]}
        assert NEUTRAL_VOICE not in neutral
        assert all(w.voice == control.accent for w in control.words if w.informative)
        assert {w.voice for w in original.words if not w.informative} == {NEUTRAL_VOICE}
        assert not torch.equal(original.waveform[: len(control.waveform)],
                               control.waveform[: len(original.waveform)])


def test_each_class_hears_each_sibling_voice_equally_often(pair):
    _, family = pair
    counts: dict[tuple[str, str], int] = {}
    for index in range(len(family)):
        recording = family.recording(index)
        voice = next(w.voice for w in recording.words if not w.informative)
        counts[(recording.accent, voice)] = counts.get((recording.accent, voice), 0) + 1
    assert counts == {(accent, voice): 2 for accent in ACCENTS for voice in FAMILY_NEUTRAL_VOICES}
    # the siblings belong to the two accents' families: one British, one American
    assert [voice[:5] for voice in FAMILY_NEUTRAL_VOICES] == list(ACCENTS)
