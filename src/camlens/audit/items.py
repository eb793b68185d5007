"""Reading a data set's items and streaming them in batches.

An item is a dict (the input under ``input_key``, the label under ``label_key``), a tuple or list
``(input, label, ...)``, or a bare input tensor (no label). Items are stacked into batches by a
torch ``DataLoader`` (``shuffle=False``, so batch ``k`` holds items ``k * batch_size ...``); only
one batch is in memory at a time, so data sets larger than memory stream through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from camlens.audit.regions import RegionSpec, read_region, region_mask

__all__ = ["Batch", "ItemReader", "IterableItems", "NO_LABEL", "stream"]

#: Label of an item that has none.
NO_LABEL = -1


@dataclass
class Batch:
    """One batch of items, read and stacked."""

    inputs: torch.Tensor  # (B, C, H, W)
    labels: torch.Tensor  # (B,) long, NO_LABEL where unknown
    masks: torch.Tensor  # (B, R, H, W) bool, all False where a region is absent
    present: torch.Tensor  # (B, R) bool
    cues: torch.Tensor | None  # (B,) long: the class a cue points at, -1 for none
    names: list[str] | None = None  # each item's name (its file), when the reader has a name_key

    def __len__(self) -> int:
        return self.inputs.shape[0]


@dataclass(frozen=True)
class ItemReader:
    """How to read one item: its input, its label, its regions and its cue class."""

    input_key: str | int = "image"
    label_key: str | int | None = "label"
    regions: Mapping[str, RegionSpec] | None = None
    cue_key: str | int | None = None
    name_key: str | int | None = None

    def input_and_label(self, item: Any) -> tuple[torch.Tensor, int]:
        if isinstance(item, torch.Tensor):
            return item, NO_LABEL
        if isinstance(item, Mapping):
            if self.input_key not in item:
                raise KeyError(
                    f"the item has no input {self.input_key!r} (input_key); its keys: {list(item)}"
                )
            image = item[self.input_key]
            label = item.get(self.label_key) if self.label_key is not None else None
        elif isinstance(item, Sequence) and not isinstance(item, str) and item:
            image = item[0]
            label = item[1] if len(item) > 1 and self.label_key is not None else None
        else:
            raise TypeError(
                "items must be dicts, (input, label, ...) tuples or input tensors, got "
                f"{type(item).__name__}"
            )
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"the item's input must be a tensor, got {type(image).__name__}")
        return image, NO_LABEL if label is None else int(label)

    def collate(self, items: list[Any]) -> Batch:
        """Stack ``items`` into a :class:`Batch` (the DataLoader's ``collate_fn``)."""
        inputs, labels = zip(*(self.input_and_label(item) for item in items), strict=True)
        shapes = {tuple(image.shape) for image in inputs}
        if len(shapes) > 1:
            raise ValueError(f"the items' inputs differ in shape ({sorted(shapes)}); resize them "
                             "to one size first")
        stacked = torch.stack(inputs)
        if stacked.ndim < 3:
            raise ValueError(f"inputs must be images (C, H, W), got shape {tuple(inputs[0].shape)}")
        size = tuple(stacked.shape[-2:])
        names = list(self.regions or {})
        masks = torch.zeros(len(items), len(names), *size, dtype=torch.bool)
        present = torch.zeros(len(items), len(names), dtype=torch.bool)
        for row, item in enumerate(items):
            for column, name in enumerate(names):
                mask = region_mask(read_region(item, name, self.regions[name]), size, name)
                if mask is not None:
                    masks[row, column] = mask
                    present[row, column] = True
        cues = None
        if self.cue_key is not None:
            cues = torch.tensor([int(read_region(item, "cue_key", self.cue_key, "the"))
                                 for item in items])
        names = None
        if self.name_key is not None:
            names = [str(read_region(item, "name_key", self.name_key, "the")) for item in items]
        return Batch(stacked, torch.tensor(labels, dtype=torch.long), masks, present, cues, names)


class IterableItems(IterableDataset):
    """A plain iterable (a generator, ...) seen as an IterableDataset."""

    def __init__(self, items: Iterable) -> None:
        self.items = items

    def __iter__(self) -> Iterator:
        return iter(self.items)


def _dataset_length(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def stream(dataset: Any, reader: ItemReader, batch_size: int, num_workers: int = 0,
           progress: bool = False, description: str = "auditing") -> Iterator[Batch]:
    """Batches of ``dataset`` in order (see the module docstring), with a tqdm bar when
    ``progress``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    map_style = isinstance(dataset, Dataset) or (
        hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
    )
    if isinstance(dataset, IterableDataset) or map_style:
        source = dataset
    elif isinstance(dataset, Iterable):
        if num_workers:
            raise ValueError("num_workers > 0 needs a torch Dataset; a plain iterable would be "
                             "read once per worker")
        source = IterableItems(dataset)
    else:
        raise TypeError(f"dataset must be a torch Dataset or an iterable of items, got "
                        f"{type(dataset).__name__}")
    loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=reader.collate)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=_dataset_length(dataset), desc=description, unit="item", leave=False)
    try:
        for batch in loader:
            yield batch
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
