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
        image = image.detach().float().cpu().numpy()
    # numpy, not a dozen small torch operations: each of those releases and retakes the GIL,
    # which costs more than the work when other threads (a pipeline's lanes) want it
    array = np.array(image, dtype=np.float32)
    if array.ndim == 3:  # H, W, C or C, H, W
        channel_axis = 0 if array.shape[0] in (1, 3, 4) else -1
        array = torch.from_numpy(array).mean(dim=channel_axis).numpy()  # torch's float sum
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D picture (H, W) or one with a channel axis, got shape "
                         f"{tuple(array.shape)}")
    high = array.max()
    if high > 1.0:
        array = array / np.float32(65535.0 if high > 255.0 else 255.0)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    middle = (border.size - 1) // 2  # torch.median: the lower of the two middle values
    if np.partition(border, middle)[middle] > 0.5:
        array = np.float32(1.0) - array
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None, None]
    if tuple(tensor.shape[-2:]) != tuple(size):
        tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return tensor.clamp(0, 1)
