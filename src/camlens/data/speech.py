"""Offline accent recordings (British vs American English) synthesized with eSpeak NG.

Every recording is a random sequence of 5 to 10 everyday words (no grammar), labelled with its
accent (:data:`ACCENTS`: 0 = ``en-gb``, 1 = ``en-us``) and carrying the time stamps of its words.
Words are synthesized one at a time and joined with known gaps, so the stamps are exact by
construction.

- ``kind="mixed"``: 2 to 4 words are spoken in the recording's accent (``informative=True``), the
  others in one fixed third voice, eSpeak's Caribbean English (``en-029``), shared by both classes,
  so they carry no accent information. Some gaps between words are long stretches of silence or
  low-level white or pink noise, recorded as spans. eSpeak's British and American voices sound
  different even where their phoneme strings agree (their phoneme tables differ), so only the
  construction tells which words are informative.
- ``kind="whole"``: every word in the accent voice with short pauses, as a user's recording is.
- ``kind="mixed-family"``: the voice control of issue 17. The mixed recording of the same index
  (same words, informative positions, speaker, rate, pitch, gaps and noise: the item's random
  draws are the mixed item's), with its neutral words spoken by a sibling of the accent voices in
  eSpeak's English family instead of the Caribbean voice: :data:`FAMILY_NEUTRAL_VOICES`,
  Received Pronunciation (``en-gb-x-rp``, an ``en-gb`` voice in eSpeak's voice file) for items
  ``4k`` and ``4k + 1`` and New York City (``en-us-nyc``, built on the ``en-us`` phoneme table)
  for ``4k + 2`` and ``4k + 3``. Labels alternate, so each class has each neutral voice on half
  its recordings: the neutral voice says nothing about the label. Models are trained with
  ``en-029`` as the neutral voice, whose voice file also lowers the first two formants by 2%;
  a model whose attention learned "not that voice" finds no such cue on these recordings (the
  neutral words sound like the accent voices' own family), while one that listens for the accent
  still has the informative words' accent to go on. Test-time control only; not trained on.

Within a recording every word has the same speaker (an eSpeak voice variant), rate and pitch, drawn
from the seed. The variants used have no pitch flutter: eSpeak's flutter position is a process-wide
counter that no call resets, so with it the same word sounds a little different on each call.

Items are deterministic from ``(seed, split, kind, index)``; train and test use disjoint words (a
fixed 70/30 partition of each word list). They are generated on first access and cached as 16-bit
FLAC plus a JSON sidecar under :func:`default_cache_dir` (``$CAMLENS_CACHE``, else
``$XDG_CACHE_HOME/camlens``, else ``~/.cache/camlens``).

Needs the ``audio`` extra (``pip install 'camlens[audio]'``): ``espeakng-loader`` (the eSpeak NG
library and its data), ``soundfile`` and ``scipy``. Without ``espeakng-loader`` a system
``libespeak-ng`` (Debian: ``apt-get install espeak-ng``) is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import threading
import zlib
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from camlens.data.digits import SPLITS
from camlens.io.audio import resample

__all__ = ["ACCENTS", "ACCENT_WORDS", "AUDIO_OUTPUT_SYNCHRONOUS", "AccentRecordings",
           "COMMON_WORDS", "ESPEAK_CHARS_UTF8", "ESPEAK_INITIALIZE_DONT_EXIT", "ESPEAK_VOICES",
           "EspeakSynthesizer", "FAMILY_NEUTRAL_VOICES", "FORMAT_VERSION", "GAP_KINDS", "GapSpan",
           "KINDS", "NEUTRAL_VOICE", "POS_CHARACTER", "Recording", "SAMPLE_RATE", "SPEAKERS",
           "SYNTH_CALLBACK", "SpeechConfig", "TEST_FRACTION", "WORD_SPLIT_SEED", "WordStamp",
           "default_cache_dir", "integer", "synthesizer", "word_lists"]

ACCENTS = ("en-gb", "en-us")
NEUTRAL_VOICE = "en-029"
#: The neutral voices of ``kind="mixed-family"``: a British and an American sibling of the accent
#: voices (item ``i`` uses ``FAMILY_NEUTRAL_VOICES[(i // 2) % 2]``, so both classes get both).
FAMILY_NEUTRAL_VOICES = ("en-gb-x-rp", "en-us-nyc")
#: Our voice tags and the eSpeak NG voice each names (``en`` is eSpeak's British English).
ESPEAK_VOICES = {"en-gb": "en", "en-us": "en-us", NEUTRAL_VOICE: "en-029",
                 "en-gb-x-rp": "en-gb-x-rp", "en-us-nyc": "en-us-nyc"}
#: eSpeak voice variants (speakers) without pitch flutter, so synthesis is repeatable.
SPEAKERS = ("Denis", "Diogo", "Henrique", "Hugo", "michel", "miguel", "shelby")
KINDS = ("mixed", "whole", "mixed-family")
GAP_KINDS = ("pause", "silence", "noise")
SAMPLE_RATE = 16000
#: Bump when a change alters generated recordings, so old caches are not reused.
FORMAT_VERSION = 1
TEST_FRACTION = 0.3
#: The permutation that splits the word lists is fixed, whatever a data set's seed.
WORD_SPLIT_SEED = 1066

def _word_tuple(text: str) -> tuple[str, ...]:
    """The distinct white-space separated words of ``text``, in order."""
    return tuple(dict.fromkeys(text.split()))


#: Words whose British and American pronunciations differ (vowels, rhotic r, flapped t, stress).
ACCENT_WORDS = _word_tuple("""
    tomato water schedule dance herb route either neither privacy vitamin garage leisure
    can't car better aunt banana basil bath butter clerk data dynasty fertile missile mobile
    fragile hostile laboratory lieutenant oregano pasta path patriot tuesday news new duty tube
    student yogurt zebra vase adult ballet baton controversy address ask after answer castle
    chance class fast glass grass half laugh last past plant rather staff task example branch
    demand command advance hot dog lot not got box stop shop coffee party city letter matter
    bottle little computer far start hard park four door more world bird word often process
    progress produce project direct mirror sorry tomorrow borrow orange forest hurry worry
    courage nuclear been again year here hair care there where air bear tour sure poor mature
    pretty quarter later beautiful automatic mother father teacher never river paper dollar
    corner north morning first heart card pour
    """)

#: Everyday words whose two pronunciations are close.
_COMMON_WORDS = _word_tuple("""
    big sit will him fish pink milk ring sing king thin kid ten pen red bed egg leg sun fun bus
    cup much jump sleep green tree see tea me feel leave sweet wheel key eat meet need blue food
    moon soon shoe fly time nice like bike ride five line kite day name game rain train play
    say way take make cake late face place baby table lady cold home go no show boat road phone
    nose rose snow open window yellow people three seven eleven twelve wind will kitten picnic
    monday friday sunday happy family animal apple button dinner jacket lemon magic market
    music rabbit salad sister summer ticket travel visit winter yes help well test desk belt
    sell tell bell spell fresh step pencil jelly melon cherry penny puppy funny lucky busy
    simple bridge fix mix wish dish chicken kitchen lift gift film list wet chest pet
    """)
COMMON_WORDS = tuple(word for word in _COMMON_WORDS if word not in ACCENT_WORDS)


@cache
def word_lists(split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(accent words, common words) of one split: a fixed 70/30 partition of each list."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    parts = []
    for salt, words in enumerate((ACCENT_WORDS, COMMON_WORDS)):
        generator = torch.Generator().manual_seed(WORD_SPLIT_SEED + salt)
        order = torch.randperm(len(words), generator=generator).tolist()
        cut = int(len(words) * (1 - TEST_FRACTION))
        chosen = order[:cut] if split == "train" else order[cut:]
        parts.append(tuple(words[index] for index in sorted(chosen)))
    return parts[0], parts[1]


# --- eSpeak NG through ctypes ------------------------------------------------------------------

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000  # without it a failed initialisation calls exit()
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1
ESPEAK_RATE, ESPEAK_PITCH = 1, 3
SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.c_void_p)


def _espeak_paths() -> tuple[str, str | None]:
    """(library path, data path or None for the library's default) of eSpeak NG.

    ``espeakng-loader`` first (it ships both), then a system ``libespeak-ng``."""
    try:
        import espeakng_loader
    except ImportError:
        library = ctypes.util.find_library("espeak-ng")
        if library is None:
            raise ImportError(
                "the speech data sets need eSpeak NG: pip install 'camlens[audio]' "
                "(or apt-get install espeak-ng)"
            ) from None
        return library, None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


class EspeakSynthesizer:
    """libespeak-ng in synchronous mode: text in one voice to a float32 waveform at 16 kHz.

    The library keeps its state in globals, so there is one synthesizer per process
    (:func:`synthesizer`) and calls are serialised by a lock."""

    def __init__(self, library_path: str, data_path: str | None) -> None:
        library = ctypes.CDLL(library_path)
        library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                              ctypes.c_int]
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        library.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                         ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                         ctypes.c_void_p, ctypes.c_void_p]
        library.espeak_Info.restype = ctypes.c_char_p
        library.espeak_Info.argtypes = [ctypes.c_void_p]
        path = data_path.encode() if data_path else None
        rate = library.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, path,
                                         ESPEAK_INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to start from {library_path} with data "
                               f"{data_path or '(its default)'}")
        self.native_rate = rate
        self.version = library.espeak_Info(None).decode()
        # Older releases (before 1.52) lack it; their noise is then not repeatable.
        self._set_seed = getattr(library, "espeak_ng_SetRandSeed", None)
        self._chunks: list[np.ndarray] = []
        self._callback = SYNTH_CALLBACK(self._collect)  # kept alive as long as the library
        library.espeak_SetSynthCallback(self._callback)
        self._library = library
        self._lock = threading.Lock()

    def _collect(self, samples, count: int, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0: go on

    def synthesize(self, text: str, voice: str, speaker: str | None = None, rate_wpm: int = 175,
                   pitch: int = 50, seed: int = 1) -> torch.Tensor:
        """``text`` spoken by the eSpeak voice ``voice`` (e.g. ``"en-us"``), with the variant
        ``speaker``, ``rate_wpm`` words a minute and ``pitch`` (0..99): (T,) float32 at 16 kHz."""
        name = voice if speaker is None else f"{voice}+{speaker}"
        encoded = text.encode() + b"\0"
        with self._lock:
            library = self._library
            if library.espeak_SetVoiceByName(name.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {name!r}; voices used here: "
                                 f"{sorted(ESPEAK_VOICES.values())}, speakers {SPEAKERS}")
            library.espeak_SetParameter(ESPEAK_RATE, rate_wpm, 0)
            library.espeak_SetParameter(ESPEAK_PITCH, pitch, 0)
            if self._set_seed is not None:
                self._set_seed(ctypes.c_long(seed))
            self._chunks = []
            status = library.espeak_Synth(encoded, len(encoded), 0, POS_CHARACTER, 0,
                                          ESPEAK_CHARS_UTF8, None, None)
            chunks, self._chunks = self._chunks, []
        if status != 0:
            raise RuntimeError(f"eSpeak NG failed (status {status}) on {text!r} in {name!r}")
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return resample(torch.from_numpy(samples.astype(np.float32) / 32768.0),
                        self.native_rate, SAMPLE_RATE)


@cache
def synthesizer() -> EspeakSynthesizer:
    """The process's eSpeak NG synthesizer, started on first use."""
    return EspeakSynthesizer(*_espeak_paths())


def _trim(waveform: np.ndarray, level: float = 0.01, margin_s: float = 0.005) -> np.ndarray:
    """``waveform`` without the near-silence (below ``level`` of its peak) at its two ends."""
    magnitude = np.abs(waveform)
    loud = np.flatnonzero(magnitude > level * magnitude.max(initial=0.0))
    if len(loud) == 0:
        return waveform[:0]
    margin = int(margin_s * SAMPLE_RATE)
    return waveform[max(int(loud[0]) - margin, 0) : int(loud[-1]) + 1 + margin]


# --- recordings ---------------------------------------------------------------------------------


class WordStamp(NamedTuple):
    """One spoken word: its span in seconds, whether it is in the accent voice, and the voice."""

    word: str
    start_s: float
    end_s: float
    informative: bool
    voice: str


class GapSpan(NamedTuple):
    """A stretch between words: ``"pause"`` (short, silent), ``"silence"`` or ``"noise"``."""

    kind: str
    start_s: float
    end_s: float


@dataclass
class Recording:
    """A mono recording at ``sample_rate``, its accent label and the spans of its words and
    gaps."""

    waveform: torch.Tensor
    sample_rate: int
    label: int
    words: list[WordStamp]
    gaps: list[GapSpan]
    speaker: str = ""

    @property
    def accent(self) -> str:
        return ACCENTS[self.label]

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / self.sample_rate

    def span_mask(self, informative: bool | None = True) -> torch.Tensor:
        """(T,) bool: the samples inside words (only the informative ones by default; only the
        neutral ones with ``False``; all with ``None``)."""
        mask = torch.zeros(len(self.waveform), dtype=torch.bool)
        for stamp in self.words:
            if informative is None or stamp.informative == informative:
                start, end = (round(second * self.sample_rate)
                              for second in (stamp.start_s, stamp.end_s))
                mask[start:end] = True
        return mask

    def to_item(self) -> dict[str, Any]:
        return {
            "waveform": self.waveform,
            "sample_rate": self.sample_rate,
            "label": torch.tensor(self.label),
            "words": [stamp._asdict() for stamp in self.words],
            "gaps": [gap._asdict() for gap in self.gaps],
        }

    def metadata(self) -> dict[str, Any]:
        return {"label": self.label, "accent": self.accent, "sample_rate": self.sample_rate,
                "samples": len(self.waveform), "speaker": self.speaker,
                "words": [stamp._asdict() for stamp in self.words],
                "gaps": [gap._asdict() for gap in self.gaps]}

    @classmethod
    def from_metadata(cls, waveform: torch.Tensor, metadata: dict[str, Any]) -> Recording:
        return cls(waveform=waveform, sample_rate=metadata["sample_rate"], label=metadata["label"],
                   words=[WordStamp(**stamp) for stamp in metadata["words"]],
                   gaps=[GapSpan(**gap) for gap in metadata["gaps"]],
                   speaker=metadata.get("speaker", ""))


@dataclass(frozen=True)
class SpeechConfig:
    """The ranges recordings are drawn from (both ends included; seconds, amplitudes in full
    scale)."""

    words: tuple[int, int] = (5, 10)
    informative: tuple[int, int] = (2, 4)  # mixed recordings only
    rate_wpm: tuple[int, int] = (150, 200)
    pitch: tuple[int, int] = (35, 65)
    gap_probability: float = 0.35  # mixed: chance that a place between words gets a long gap
    noise_probability: float = 0.5  # of a long gap being noise rather than silence
    gap_s: tuple[float, float] = (0.2, 1.0)
    pause_s: tuple[float, float] = (0.03, 0.15)
    edge_s: tuple[float, float] = (0.1, 0.3)  # silence before the first and after the last word
    noise_rms: tuple[float, float] = (0.01, 0.04)  # relative to the speech peak
    peak: tuple[float, float] = (0.3, 0.9)
    dither: float = 1e-4  # a faint noise floor, so no stretch is digital zero

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def _item_rng(seed: int, split: str, kind: str, index: int) -> np.random.Generator:
    """A random generator seeded from the item's identity, so item i is the same on every
    access and on every machine."""
    return np.random.default_rng(zlib.crc32(f"accents:{seed}:{split}:{kind}:{index}".encode()))


def integer(rng: np.random.Generator, low: int, high: int) -> int:
    """A uniform int in [low, high] (both ends included)."""
    return int(rng.integers(low, high + 1))


def _coloured_noise(samples: int, rng: np.random.Generator, pink: bool) -> np.ndarray:
    """(samples,) white or pink (power ~ 1/f) noise with unit RMS."""
    noise = rng.standard_normal(samples)
    if pink and samples > 1:
        spectrum = np.fft.rfft(noise)
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
        noise = np.fft.irfft(spectrum, n=samples)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def _compose(rng: np.random.Generator, label: int, kind: str, accent_words: tuple[str, ...],
            common_words: tuple[str, ...], config: SpeechConfig,
            neutral_voice: str = NEUTRAL_VOICE) -> Recording:
    """One recording of ``kind`` (``"mixed"`` or ``"whole"``) in accent ``ACCENTS[label]``,
    drawn with ``rng``; mixed recordings' neutral words are spoken by ``neutral_voice``.

    Mixed recordings take their informative words from ``accent_words`` and their neutral ones
    from both lists; whole recordings take every word from both lists."""
    count = integer(rng, *config.words)
    if kind == "mixed":
        informative_count = integer(rng, min(config.informative[0], count),
                                    min(config.informative[1], count))
        informative = set(rng.permutation(count)[:informative_count].tolist())
    else:
        informative = set(range(count))
    vocabulary = accent_words + common_words
    words = [
        str(rng.choice(accent_words if kind == "mixed" and position in informative else vocabulary))
        for position in range(count)
    ]
    speaker = SPEAKERS[integer(rng, 0, len(SPEAKERS) - 1)]
    rate_wpm, pitch = integer(rng, *config.rate_wpm), integer(rng, *config.pitch)
    voice_seed = integer(rng, 1, 2**31 - 1)

    engine = synthesizer()
    spoken = []
    for position, word in enumerate(words):
        voice = ACCENTS[label] if position in informative else neutral_voice
        audio = engine.synthesize(word, ESPEAK_VOICES[voice], speaker, rate_wpm, pitch,
                                  seed=voice_seed + position)
        spoken.append((word, voice, position in informative, _trim(audio.numpy())))
    speech_peak = max(float(np.abs(audio).max(initial=0.0)) for *_, audio in spoken)
    if speech_peak == 0:
        raise RuntimeError(f"eSpeak NG produced silence for {words}")

    pieces: list[np.ndarray] = []
    stamps: list[WordStamp] = []
    gaps: list[GapSpan] = []
    cursor = 0  # samples so far

    def add_gap(gap_kind: str, seconds: tuple[float, float]) -> None:
        nonlocal cursor
        samples = round(rng.uniform(*seconds) * SAMPLE_RATE)
        if gap_kind == "noise":
            pink = bool(rng.random() < 0.5)
            pieces.append(_coloured_noise(samples, rng, pink) * rng.uniform(*config.noise_rms))
        else:
            pieces.append(np.zeros(samples))
        gaps.append(GapSpan(gap_kind, cursor / SAMPLE_RATE, (cursor + samples) / SAMPLE_RATE))
        cursor += samples

    add_gap("pause", config.edge_s)
    for position, (word, voice, is_informative, audio) in enumerate(spoken):
        if position > 0:
            if kind == "mixed" and rng.random() < config.gap_probability:
                noise = rng.random() < config.noise_probability
                add_gap("noise" if noise else "silence", config.gap_s)
            else:
                add_gap("pause", config.pause_s)
        pieces.append(audio / speech_peak)
        stamps.append(WordStamp(word, cursor / SAMPLE_RATE, (cursor + len(audio)) / SAMPLE_RATE,
                                is_informative, voice))
        cursor += len(audio)
    add_gap("pause", config.edge_s)

    waveform = np.concatenate(pieces) * rng.uniform(*config.peak)
    waveform += config.dither * rng.standard_normal(len(waveform))
    return Recording(torch.from_numpy(_dequantize(_quantize(waveform))), SAMPLE_RATE, label, stamps,
                     gaps, speaker)


def _quantize(waveform: np.ndarray) -> np.ndarray:
    """``waveform`` in [-1, 1] as 16-bit integers, as the cache stores it."""
    return np.clip(np.round(waveform * 32767), -32767, 32767).astype(np.int16)


def _dequantize(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32767


# --- the data set -------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$CAMLENS_CACHE``, else ``$XDG_CACHE_HOME/camlens``, else ``~/.cache/camlens``."""
    if os.environ.get("CAMLENS_CACHE"):
        return Path(os.environ["CAMLENS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "camlens"


class AccentRecordings(Dataset):
    """British vs American English recordings with word time stamps (see the module docstring).

    Items: ``{"waveform": (T,) float32 at 16 kHz, "sample_rate": 16000, "label": () long,
    "words": [{"word", "start_s", "end_s", "informative", "voice"}, ...], "gaps": [{"kind",
    "start_s", "end_s"}, ...]}``; :meth:`recording` gives the same as a :class:`Recording`.
    Labels alternate (even index: ``en-gb``), so any run of items is balanced. Waveforms differ
    in length (``camlens.experiments.audio_batches.RaggedWaveforms`` batches them).
    """

    def __init__(self, size: int = 400, split: str = "train", kind: str = "mixed", seed: int = 0,
                 cache_dir: str | os.PathLike | None = None,
                 config: SpeechConfig | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.accent_words, self.common_words = word_lists(split)
        self.size, self.split, self.kind, self.seed = size, split, kind, seed
        self.config = config or SpeechConfig()
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.folder = (root / "speech" /
                       f"v{FORMAT_VERSION}-{kind}-{split}-seed{seed}-{self.config.key()}")

    def __len__(self) -> int:
        return self.size

    def paths(self, index: int) -> tuple[Path, Path]:
        """(audio, sidecar) cache files of item ``index``."""
        return self.folder / f"{index:06d}.flac", self.folder / f"{index:06d}.json"

    def recording(self, index: int) -> Recording:
        """Item ``index``, read from the cache or synthesized and cached."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} is out of range for a data set of {self.size}")
        audio_path, sidecar_path = self.paths(index)
        if sidecar_path.exists() and audio_path.exists():
            import soundfile

            samples, _ = soundfile.read(audio_path, dtype="int16")
            waveform = torch.from_numpy(_dequantize(samples))
            return Recording.from_metadata(waveform, json.loads(sidecar_path.read_text()))
        if self.kind == "mixed-family":  # the mixed item's draws, another neutral voice
            rng = _item_rng(self.seed, self.split, "mixed", index)
            recording = _compose(rng, index % 2, "mixed", self.accent_words, self.common_words,
                                 self.config, FAMILY_NEUTRAL_VOICES[(index // 2) % 2])
        else:
            rng = _item_rng(self.seed, self.split, self.kind, index)
            recording = _compose(rng, index % 2, self.kind, self.accent_words,
                                self.common_words, self.config)
        self.store(index, recording)
        return recording

    def store(self, index: int, recording: Recording) -> None:
        """Write ``recording`` to the cache: audio first, then the sidecar that marks it done."""
        import soundfile

        audio_path, sidecar_path = self.paths(index)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(f"cannot create the speech cache {self.folder}: {error}; set "
                          "CAMLENS_CACHE or pass cache_dir") from error
        samples = _quantize(recording.waveform.numpy())
        suffix = f".{os.getpid()}.tmp"  # several workers may write the same item at once
        soundfile.write(str(audio_path) + suffix, samples, recording.sample_rate, format="FLAC",
                        subtype="PCM_16")
        os.replace(str(audio_path) + suffix, audio_path)
        metadata = recording.metadata() | {"format": FORMAT_VERSION, "kind": self.kind,
                                           "espeak": synthesizer().version}
        Path(str(sidecar_path) + suffix).write_text(json.dumps(metadata, indent=1))
        os.replace(str(sidecar_path) + suffix, sidecar_path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.recording(index).to_item()

    def prepare(self, progress: bool = False) -> AccentRecordings:
        """Generate every item not yet cached (at most a few seconds per hundred)."""
        indices = range(self.size)
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"synthesizing {self.kind} speech", leave=False)
        for index in indices:
            if not all(path.exists() for path in self.paths(index)):
                self.recording(index)
        return self


_MOVED = {"load_audio": "camlens.io.audio",
          "MIN_DURATION_S": "camlens.io.audio"}


def __getattr__(name: str):
    from camlens._moved import moved_attribute

    return moved_attribute(__name__, name, _MOVED)
