"""The sample inputs one click away in the page, made in memory from camlens's generated data
sets: cluttered digits and two-digit scenes (pictures), accent recordings (synthesized with
eSpeak NG on first use, never written to the speech cache)."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AUDIO_SAMPLES", "IMAGE_SAMPLES", "Sample", "SampleShelf"]

#: How many samples of each kind the page offers.
IMAGE_SAMPLES = 6
AUDIO_SAMPLES = 4


@dataclass(frozen=True)
class Sample:
    """One sample: ``id`` (``digit-0``, ``scene-2``, ``speech-1``), what it shows, its bytes."""

    id: str
    kind: str  # "image" or "audio"
    label: str
    media_type: str
    data: bytes
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "label": self.label,
                "url": f"/api/samples/{self.id}", "media_type": self.media_type, **self.extra}


def _png(tensor) -> bytes:
    from camlens.viz import to_pil

    buffer = io.BytesIO()
    to_pil(tensor).save(buffer, format="PNG")
    return buffer.getvalue()


class SampleShelf:
    """The samples, made once on first use and kept in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pictures: list[Sample] | None = None
        self._recordings: list[Sample] | None = None

    def pictures(self) -> list[Sample]:
        """Cluttered digits (``digit-N``) and two-digit scenes (``scene-N``), labelled."""
        from camlens.data import ClutteredDigits, DigitScenes

        with self._lock:
            if self._pictures is None:
                samples = []
                digits = ClutteredDigits(IMAGE_SAMPLES, "test", seed=7)
                for index in range(IMAGE_SAMPLES):
                    item = digits[index]
                    samples.append(Sample(f"digit-{index}", "image",
                                          f"digit {int(item['label'])}", "image/png",
                                          _png(item["image"]), {"for": "image"}))
                scenes = DigitScenes(IMAGE_SAMPLES, "test", seed=3, digits=(2, 3))
                for index in range(IMAGE_SAMPLES):
                    item = scenes[index]
                    labels = [str(v) for v in item["caption"].tolist() if v >= 0]
                    samples.append(Sample(f"scene-{index}", "image",
                                          f"scene {' '.join(labels)}", "image/png",
                                          _png(item["image"]), {"for": "caption"}))
                self._pictures = samples
            return self._pictures

    def recordings(self) -> list[Sample]:
        """Accent recordings (``speech-N``: en-gb, en-us alternately) as 16-bit WAV, with their
        word time stamps."""
        import soundfile

        from camlens.data.speech import AccentRecordings

        class InMemory(AccentRecordings):
            def store(self, index: int, recording: Any) -> None:
                """Kept in memory only: the server writes nothing to disk."""

        with self._lock:
            if self._recordings is None:
                recordings = InMemory(AUDIO_SAMPLES, "test", kind="whole", seed=0)
                samples = []
                for index in range(AUDIO_SAMPLES):
                    recording = recordings.recording(index)
                    buffer = io.BytesIO()
                    soundfile.write(buffer, recording.waveform.numpy(), recording.sample_rate,
                                    format="WAV", subtype="PCM_16")
                    words = [{"word": w.word, "start_s": round(w.start_s, 4),
                              "end_s": round(w.end_s, 4)} for w in recording.words]
                    said = " ".join(w.word for w in recording.words)
                    samples.append(Sample(
                        f"speech-{index}", "audio", f"{recording.accent}: {said}",
                        "audio/wav", buffer.getvalue(), {"for": "audio", "words": words}))
                self._recordings = samples
            return self._recordings

    def find(self, sample_id: str) -> Sample:
        """The sample ``sample_id``, or a LookupError listing the ids."""
        shelf = self.recordings() if sample_id.startswith("speech-") else self.pictures()
        for sample in shelf:
            if sample.id == sample_id:
                return sample
        ids = [s.id for s in self.pictures()] + [f"speech-0..{AUDIO_SAMPLES - 1}"]
        raise LookupError(f"no sample {sample_id!r}; samples: {', '.join(ids)}")
