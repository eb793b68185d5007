"""Turn a user's picture into the input of the digit models: 1 x 64 x 64, light ink on dark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CANVAS", "digit_canvas"]

CANVAS = (64, 64)


def digit_canvas(image, size: tuple[int, int] = CANVAS) -> torch.Tensor:
    """A ``(1, 1, H, W)`` float tensor in [0, 1] from a path, PIL image, array or tensor.

    Colour is averaged to grey, values are scaled to [0, 1] (8- and 16-bit alike), the picture is
    resized to ``size`` (bilinear), and dark ink on a light background is inverted, since the
    models were trained on light digits on a dark canvas.
    """
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as opened:
            image = np.asarray(opened.convert("F"))
    elif not isinstance(image, (np.ndarray, torch.Tensor)):  # a PIL image
        image = np.asarray(image.convert("F"))
    if isinstance(image, torch.Tensor):
        tensor = image.detach().float().cpu()
    else:
        tensor = torch.as_tensor(np.array(image, dtype=np.float32))
    if tensor.ndim == 3:  # H, W, C or C, H, W
        channel_axis = 0 if tensor.shape[0] in (1, 3, 4) else -1
        tensor = tensor.mean(dim=channel_axis)
    if tensor.ndim != 2:
        raise ValueError(f"expected a 2-D picture (H, W) or one with a channel axis, got shape "
                         f"{tuple(tensor.shape)}")
    if tensor.max() > 1.0:
        tensor = tensor / (65535.0 if tensor.max() > 255.0 else 255.0)
    border = torch.cat([tensor[0], tensor[-1], tensor[:, 0], tensor[:, -1]])
    if border.median() > 0.5:
        tensor = 1.0 - tensor
    resized = F.interpolate(tensor[None, None], size=size, mode="bilinear", align_corners=False)
    return resized.clamp(0, 1)
