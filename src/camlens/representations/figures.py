"""Pictures of optimised inputs: one PNG per picture and captioned grids (rows of pictures)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["picture_grid", "save_picture", "to_picture"]


def to_picture(pixels: torch.Tensor, scale: int = 1):
    """A PIL image of ``pixels`` ``(C, H, W)`` in [0, 1], ``scale`` times larger (sharp)."""
    from PIL import Image

    from camlens.viz import to_pil

    picture = to_pil(pixels.detach().float().clamp(0, 1).cpu())
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return picture


def save_picture(pixels: torch.Tensor, path: str | Path, scale: int = 1) -> Path:
    """Write ``pixels`` ``(C, H, W)`` in [0, 1] as a PNG; its path."""
    path = Path(path)
    to_picture(pixels, scale).save(path)
    return path


def picture_grid(rows: Sequence[Sequence[torch.Tensor]], captions: Sequence[Sequence[str]],
                 row_titles: Sequence[str] | None = None, inches: float = 1.3):
    """A matplotlib figure: row ``r`` shows the pictures ``rows[r]`` (``(C, H, W)`` in [0, 1])
    with ``captions[r]`` under them and ``row_titles[r]`` on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, squeeze=False,
                                figsize=(inches * columns + (1.2 if row_titles else 0),
                                         (inches + 0.35) * len(rows)))
    for r, row in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c >= len(row):
                axis.axis("off")
                continue
            image = row[c].detach().float().clamp(0, 1).cpu()
            if image.shape[0] == 1:
                axis.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(image.permute(1, 2, 0).numpy())
            axis.set_xlabel(captions[r][c], fontsize=7)
        if row_titles:
            axes[r][0].set_ylabel(row_titles[r], fontsize=8)
    figure.tight_layout()
    return figure
