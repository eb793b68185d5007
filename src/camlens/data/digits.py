"""Offline image benchmarks built from scikit-learn's bundled handwritten digits.

scikit-learn ships 1,797 8x8 grey-level digits (values 0..16) inside the package, so no download
is needed. The source digits are split once, by a fixed permutation, into a train part (70%) and a
test part (30%): every data set's test split is made only of test-part digits.

- :class:`ClutteredDigits`: one digit, upscaled, at a random place on a 64x64 canvas among clutter
  fragments cut from other digits; its label and ground-truth box.
- :class:`DigitScenes`: 2 to 4 digits at distinct places, each with its box, and the caption (the
  labels read left to right).
- :class:`BiasedDigits`: cluttered digits plus a small bright mark whose position goes with the
  label in most training images and is independent of it at test time; the mark's box too.

Every item is a dict of tensors, generated on the fly and deterministic from ``(seed, split,
index)``; ``materialize`` stacks a whole data set into tensors for training.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["BiasedDigits", "Box", "CLASS_NAMES", "ClutteredDigits", "DigitCanvasConfig",
           "DigitDataset", "DigitScenes", "INK_LEVEL", "MARK_SIZE", "MARK_SPOTS",
           "SOURCE_SPLIT_SEED", "SPLITS", "TEST_FRACTION", "materialize", "overlaps", "paste",
           "randint", "source_digits"]

CLASS_NAMES = tuple(str(digit) for digit in range(10))
SPLITS = ("train", "test")
TEST_FRACTION = 0.3
#: The permutation that splits the source digits is fixed, whatever a data set's seed.
SOURCE_SPLIT_SEED = 20161

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1 and y1 exclusive


@cache
def source_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 8, 8) in [0, 1], labels (N,)) of one part of scikit-learn's digits."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digit data sets need scikit-learn: pip install 'camlens[data]'"
        ) from error
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SOURCE_SPLIT_SEED))
    cut = int(len(labels) * (1 - TEST_FRACTION))
    chosen = order[:cut] if split == "train" else order[cut:]
    return images[chosen], labels[chosen]


def _item_generator(seed: int, split: str, index: int, salt: str) -> torch.Generator:
    """A generator seeded from the item's identity, so item i is the same on every access."""
    key = f"{salt}:{seed}:{split}:{index}".encode()
    return torch.Generator().manual_seed(zlib.crc32(key))


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """A uniform int in [low, high] (both ends included)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _upscale(digit: torch.Tensor, size: int) -> torch.Tensor:
    """An 8x8 digit resized to size x size (bilinear), values kept in [0, 1]."""
    resized = F.interpolate(digit[None, None], size=(size, size), mode="bilinear",
                            align_corners=False)
    return resized[0, 0].clamp(0, 1)


#: A digit's ink: the pixels of its upscaled patch above this level (its box is their extent).
INK_LEVEL = 0.1


def _ink_box(patch: torch.Tensor, top: int, left: int, level: float = INK_LEVEL) -> Box:
    """The tight box of the pixels of ``patch`` above ``level``, in canvas coordinates."""
    rows = torch.nonzero(patch.amax(dim=1) > level).flatten()
    cols = torch.nonzero(patch.amax(dim=0) > level).flatten()
    return (left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1,
            top + int(rows[-1]) + 1)


def paste(canvas: torch.Tensor, patch: torch.Tensor, top: int, left: int) -> None:
    """Draw ``patch`` onto ``canvas`` in place, keeping the brighter pixel where they overlap."""
    height, width = patch.shape
    region = canvas[top : top + height, left : left + width]
    torch.maximum(region, patch, out=region)


def overlaps(box: Box, others: list[Box], margin: int = 0) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < ox1 + margin and ox0 < x1 + margin and y0 < oy1 + margin and oy0 < y1 + margin
        for ox0, oy0, ox1, oy1 in others
    )


@dataclass
class DigitCanvasConfig:
    """Sizes shared by the digit data sets (pixels)."""

    canvas: tuple[int, int] = (64, 64)
    digit_size: tuple[int, int] = (22, 30)
    clutter: tuple[int, int] = (4, 7)
    fragment: tuple[int, int] = (3, 4)  # side of the cut, in source (8x8) pixels
    fragment_scale: int = 3
    noise: float = 0.05


class DigitDataset(Dataset):
    """Common parts: the split's source digits, sizes and the per-item generator."""

    salt = "digits"

    def __init__(self, size: int, split: str, seed: int, config: DigitCanvasConfig | None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.size = size
        self.split = split
        self.seed = seed
        self.config = config or DigitCanvasConfig()
        self.sources, self.source_labels = source_digits(split)

    def __len__(self) -> int:
        return self.size

    def generator(self, index: int) -> torch.Generator:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} is out of range for a data set of {self.size}")
        return _item_generator(self.seed, self.split, index, self.salt)

    def pick_source(self, generator: torch.Generator, label: int | None = None
                    ) -> tuple[torch.Tensor, int]:
        """A random source digit, of ``label`` when given, and its label."""
        if label is None:
            choice = randint(generator, 0, len(self.source_labels) - 1)
        else:
            candidates = torch.nonzero(self.source_labels == label).flatten()
            choice = int(candidates[randint(generator, 0, len(candidates) - 1)])
        return self.sources[choice], int(self.source_labels[choice])

    def blank_canvas(self, generator: torch.Generator) -> torch.Tensor:
        height, width = self.config.canvas
        return torch.rand(height, width, generator=generator) * self.config.noise

    def place_digit(
        self, canvas: torch.Tensor, generator: torch.Generator, digit: torch.Tensor,
        taken: list[Box], attempts: int = 50, ink: torch.Tensor | None = None,
    ) -> Box:
        """Paste ``digit`` upscaled at a random free place; returns its ink box. With ``ink`` (a
        boolean tensor shaped like ``canvas``), also marks the pasted digit's ink there: the
        patch's pixels above :data:`INK_LEVEL`, the pixels its box is drawn around."""
        height, width = canvas.shape
        for _ in range(attempts):
            size = randint(generator, *self.config.digit_size)
            top, left = randint(generator, 0, height - size), randint(generator, 0, width - size)
            patch = _upscale(digit, size)
            box = _ink_box(patch, top, left)
            if not overlaps(box, taken, margin=2):
                paste(canvas, patch, top, left)
                if ink is not None:
                    ink[top : top + size, left : left + size] |= patch > INK_LEVEL
                return box
        raise RuntimeError("could not place a digit without overlap; use a larger canvas")

    def add_clutter(self, canvas: torch.Tensor, generator: torch.Generator, keep_out: list[Box]):
        """Fragments cut from other digits, kept out of the digits' boxes."""
        height, width = canvas.shape
        config = self.config
        for _ in range(randint(generator, *config.clutter)):
            digit, _ = self.pick_source(generator)
            side = randint(generator, *config.fragment)
            row, col = randint(generator, 0, 8 - side), randint(generator, 0, 8 - side)
            piece = digit[row : row + side, col : col + side]
            patch = _upscale(piece, side * config.fragment_scale)
            for _ in range(20):
                top = randint(generator, 0, height - patch.shape[0])
                left = randint(generator, 0, width - patch.shape[1])
                box = (left, top, left + patch.shape[1], top + patch.shape[0])
                if not overlaps(box, keep_out, margin=1):
                    paste(canvas, patch, top, left)
                    break


class ClutteredDigits(DigitDataset):
    """One digit on a cluttered canvas: ``{"image": (1, H, W), "label": (), "box": (4,)}``."""

    salt = "cluttered"

    def __init__(self, size: int = 5000, split: str = "train", seed: int = 0,
                 config: DigitCanvasConfig | None = None) -> None:
        super().__init__(size, split, seed, config)

    def _draw(self, index: int, ink: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, int, Box]:
        generator = self.generator(index)
        canvas = self.blank_canvas(generator)
        digit, label = self.pick_source(generator)
        box = self.place_digit(canvas, generator, digit, [], ink=ink)
        self.add_clutter(canvas, generator, [box])
        return canvas, label, box

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        canvas, label, box = self._draw(index)
        return {"image": canvas[None], "label": torch.tensor(label),
                "box": torch.tensor(box, dtype=torch.float32)}

    def ink_mask(self, index: int) -> torch.Tensor:
        """The digit's ink in item ``index``: a boolean ``(H, W)`` mask of the pixels where the
        pasted digit's upscaled patch exceeds :data:`INK_LEVEL` (the item is generated again, so
        this is the generator's own record, not a reading of the image). The item's ``box`` is
        the tight box around these pixels; the pointing game can ask for the map's maximum on the
        ink instead of anywhere in that box."""
        ink = torch.zeros(self.config.canvas, dtype=torch.bool)
        self._draw(index, ink)
        return ink


class DigitScenes(DigitDataset):
    """2 to 4 digits at distinct places on a wider canvas, left to right (each in its own
    vertical slot of the canvas, at a random place within it).

    Items: ``image`` (1, H, W); ``labels`` (4,) and ``boxes`` (4, 4), padded with -1 past
    ``count``; ``caption``: the labels read left to right (by box centre), padded with -1.
    """

    salt = "scenes"

    def __init__(self, size: int = 2000, split: str = "train", seed: int = 0,
                 digits: tuple[int, int] = (2, 4), config: DigitCanvasConfig | None = None) -> None:
        config = config or DigitCanvasConfig(canvas=(64, 128), digit_size=(20, 26), clutter=(0, 2))
        super().__init__(size, split, seed, config)
        if not 1 <= digits[0] <= digits[1] <= 4:
            raise ValueError(f"digits must be a range within 1..4, got {digits}")
        self.digits = digits

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = self.generator(index)
        canvas = self.blank_canvas(generator)
        placed: list[tuple[Box, int]] = []
        height, width = canvas.shape
        count = randint(generator, *self.digits)
        slot = width // count  # one slot per digit, so digits never overlap
        for index in range(count):
            digit, label = self.pick_source(generator)
            size = min(randint(generator, *self.config.digit_size), slot, height)
            top = randint(generator, 0, height - size)
            left = index * slot + randint(generator, 0, slot - size)
            patch = _upscale(digit, size)
            paste(canvas, patch, top, left)
            placed.append((_ink_box(patch, top, left), label))
        self.add_clutter(canvas, generator, [b for b, _ in placed])
        count = len(placed)
        labels = torch.full((4,), -1, dtype=torch.long)
        boxes = torch.full((4, 4), -1.0)
        labels[:count] = torch.tensor([label for _, label in placed])
        boxes[:count] = torch.tensor([box for box, _ in placed], dtype=torch.float32)
        return {"image": canvas[None], "labels": labels, "boxes": boxes, "caption": labels.clone(),
                "count": torch.tensor(count)}


#: Where the spurious mark sits for each class: ten spots along the canvas border.
MARK_SPOTS = ((2, 2), (2, 30), (2, 58), (30, 58), (58, 58), (58, 30), (58, 2), (30, 2),
              (2, 16), (2, 44))
MARK_SIZE = 4


class BiasedDigits(DigitDataset):
    """Cluttered digits with a spurious mark: a bright ``MARK_SIZE`` square at one of ten border
    spots. In the train split the spot is the label's in a ``bias`` share of the images (random
    otherwise); in the test split it is random (``mark="random"``), the label's (``"aligned"``),
    another class's (``"flipped"``) or absent (``"none"``). Items add ``mark_box`` (4,) and
    ``mark_class`` (the class whose spot holds the mark, -1 without a mark)."""

    salt = "biased"
    MARKS = ("random", "aligned", "flipped", "none", "biased")

    # 0.99: with 0.95, the 800 counter-examples of a 16,000-image training set taught
    # digits-biased to read the digit and ignore the mark (flipped marks cost 0.8 points).
    def __init__(self, size: int = 5000, split: str = "train", seed: int = 0, bias: float = 0.99,
                 mark: str | None = None, config: DigitCanvasConfig | None = None) -> None:
        super().__init__(size, split, seed, config)
        mark = mark or ("biased" if split == "train" else "random")
        if mark not in self.MARKS:
            raise ValueError(f"mark must be one of {self.MARKS}, got {mark!r}")
        if not 0.0 <= bias <= 1.0:
            raise ValueError(f"bias must be in [0, 1], got {bias}")
        self.bias = bias
        self.mark = mark

    def mark_spot(self, generator: torch.Generator, label: int) -> int:
        random_spot = randint(generator, 0, 9)
        aligned = bool(torch.rand(1, generator=generator) < self.bias)
        if self.mark == "aligned" or (self.mark == "biased" and aligned):
            return label
        if self.mark == "flipped":
            return (label + 1 + random_spot % 9) % 10
        return random_spot

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = self.generator(index)
        canvas = self.blank_canvas(generator)
        digit, label = self.pick_source(generator)
        spot = self.mark_spot(generator, label)
        top, left = MARK_SPOTS[spot]
        mark_box = (left, top, left + MARK_SIZE, top + MARK_SIZE)
        box = self.place_digit(canvas, generator, digit, [mark_box])
        self.add_clutter(canvas, generator, [box, mark_box])
        if self.mark != "none":
            canvas[top : top + MARK_SIZE, left : left + MARK_SIZE] = 1.0
        return {
            "image": canvas[None],
            "label": torch.tensor(label),
            "box": torch.tensor(box, dtype=torch.float32),
            "mark_box": torch.tensor(mark_box, dtype=torch.float32),
            "mark_class": torch.tensor(-1 if self.mark == "none" else spot),
        }


def materialize(
    dataset: Dataset, keys: tuple[str, ...] | None = None, progress: bool = False,
    description: str = "generating",
) -> dict[str, torch.Tensor]:
    """All items of ``dataset`` stacked into tensors (one pass; for training and evaluation)."""
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=description, leave=False)
    items = [dataset[index] for index in indices]
    keys = keys or tuple(items[0])
    return {key: torch.stack([item[key] for item in items]) for key in keys}
