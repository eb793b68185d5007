"""Recordings of different lengths held in memory for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from camlens.model_state import preserved_model_state

__all__ = ["FULL_SCALE", "RaggedWaveforms", "predict"]

FULL_SCALE = 32767  # the speech cache stores 16-bit samples, so this keeps them exactly


class RaggedWaveforms:
    """Waveforms of different lengths stored end to end as 16-bit integers (a quarter of the
    memory of a float batch padded to the longest recording).

    ``ragged[rows]`` (a tensor or list of row indices) is a float ``(B, T)`` batch zero-padded to
    its own longest recording; ``ragged.lengths`` holds every recording's sample count."""

    def __init__(self, waveforms: Sequence[torch.Tensor]) -> None:
        if not waveforms:
            raise ValueError("need at least one waveform")
        self.lengths = torch.tensor([len(waveform) for waveform in waveforms])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])
        samples = torch.cat([waveform.reshape(-1) for waveform in waveforms])
        self.samples = torch.round(samples.clamp(-1, 1) * FULL_SCALE).to(torch.int16)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, rows) -> torch.Tensor:
        rows = torch.as_tensor(rows).reshape(-1)
        lengths = self.lengths[rows]
        batch = torch.zeros(len(rows), int(lengths.max()))
        for position, row in enumerate(rows.tolist()):
            start, end = int(self.offsets[row]), int(self.offsets[row + 1])
            batch[position, : end - start] = self.samples[start:end].float() / FULL_SCALE
        return batch

    def recording(self, row: int) -> torch.Tensor:
        """Recording ``row`` as a ``(T,)`` float tensor."""
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return self.samples[start:end].float() / FULL_SCALE


def _length_batches(lengths: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Row indices in batches of similar length (less padding), covering every row once."""
    order = torch.argsort(lengths, stable=True)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def predict(model: torch.nn.Module, waveforms: RaggedWaveforms, batch_size: int = 64
            ) -> torch.Tensor:
    """``(N, classes)`` logits of every recording (eval mode; the model's state restored after,
    every module's flag included)."""
    logits: list[torch.Tensor] = []
    rows_seen: list[torch.Tensor] = []
    with preserved_model_state(model):
        for rows in _length_batches(waveforms.lengths, batch_size):
            logits.append(model(waveforms[rows], waveforms.lengths[rows]))
            rows_seen.append(rows)
    ordered = torch.empty(len(waveforms), logits[0].shape[1])
    ordered[torch.cat(rows_seen)] = torch.cat(logits)
    return ordered
