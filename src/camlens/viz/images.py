"""Turning what users hold (PIL images, tensors, arrays) into RGB PIL images, and undoing input
normalisation so a model's input can be looked at."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["CHANNEL_COUNTS", "FLOAT_TOLERANCE", "IMAGENET_MEAN", "IMAGENET_STD", "ImageLike",
           "count_images", "denormalize", "select_image", "to_pil", "to_pixels"]

ImageLike = Image.Image | torch.Tensor | np.ndarray

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Channel counts an image may have: gray, gray + alpha, RGB, RGBA.
CHANNEL_COUNTS = (1, 2, 3, 4)
# Float pixels this far outside [0, 1] / 0..255 are rounding, not a different convention.
FLOAT_TOLERANCE = 1e-3


def to_pil(image: ImageLike) -> Image.Image:
    """An RGB PIL image from ``image``.

    Accepted:

    - a PIL image of any mode (transparent modes are composited over black; 16-bit modes, and
      the 32-bit ``"I"`` mode older Pillow gives 16-bit PNGs, are scaled from 0..65535);
    - a torch tensor ``(C, H, W)``, ``(1, C, H, W)`` or ``(H, W)``, channel first;
    - a numpy array ``(H, W)`` or ``(H, W, C)``, channel last;

    with C in 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Values: uint8 as they are, uint16
    scaled from 0..65535, bool as 0/255, other integers in 0..255, floats in [0, 1] (when their
    maximum is at most 1) or else in 0..255. Gray becomes RGB; alpha is composited over black.
    Negative floats (a normalised input) raise ValueError: see :func:`denormalize`.
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, torch.Tensor):
        return Image.fromarray(_to_rgb_uint8(_tensor_to_hwc(image)))
    if isinstance(image, np.ndarray):
        return Image.fromarray(_to_rgb_uint8(_array_to_hwc(image)))
    raise TypeError(
        f"to_pil takes a PIL image, a torch tensor or a numpy array, got {type(image).__name__}"
    )


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """The pixels of a batch ``(B, C, H, W)`` as a ``(B, H, W, 3)`` uint8 array, each image
    converted as :func:`to_pil` converts it (same rules, same values, same errors), in one pass
    over the batch instead of one per image.

    Floats are scaled per image (from [0, 1] when that image's maximum is at most 1): a batch
    whose images disagree is converted one image at a time.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"to_pixels takes a torch tensor, got {type(images).__name__}")
    shape = tuple(images.shape)
    if images.ndim != 4 or shape[0] == 0:
        raise ValueError(f"to_pixels takes a batch (B, C, H, W) with B >= 1, got shape {shape}")
    _tensor_to_hwc(images[:1])  # the channel checks and messages of one image
    tensor = images.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()
    array = np.moveaxis(_tensor_to_numpy(tensor), 1, -1)
    if np.issubdtype(array.dtype, np.floating) and shape[0] > 1:
        highs = array.reshape(shape[0], -1).max(axis=1)
        unit = highs <= 1.0 + FLOAT_TOLERANCE
        if unit.any() and not unit.all():  # scales differ: each image on its own
            return np.stack([_to_rgb_uint8(image) for image in array])
    return _to_rgb_uint8(array)


def denormalize(
    tensor: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Undo ``(x - mean) / std`` per channel on ``(C, H, W)`` or ``(B, C, H, W)``: returns
    ``x * std + mean`` clamped to [0, 1] (ImageNet statistics by default)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"denormalize takes a torch tensor, got {type(tensor).__name__}")
    if tensor.ndim not in (3, 4):
        raise ValueError(
            f"denormalize takes (C, H, W) or (B, C, H, W), got shape {tuple(tensor.shape)}"
        )
    channels = tensor.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean has {len(mean)} and std {len(std)} values, but the tensor has {channels} "
            f"channels (shape {tuple(tensor.shape)})"
        )
    if any(s == 0 for s in std):
        raise ValueError(f"std must not contain 0, got {tuple(std)}")
    shape = (channels, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).reshape(shape)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).reshape(shape)
    return (tensor * std_t + mean_t).clamp(0.0, 1.0)


def count_images(inputs: ImageLike | Sequence[ImageLike]) -> int:
    """How many images ``inputs`` holds: a batch tensor/array (4-D) or a list counts its
    entries; one image counts 1."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return inputs.shape[0] if inputs.ndim == 4 else 1
    if isinstance(inputs, Image.Image):
        return 1
    if isinstance(inputs, Sequence) and not isinstance(inputs, str):
        return len(inputs)
    raise TypeError(
        "inputs must be a batch tensor (B, C, H, W), a batch array (B, H, W, C), a list of "
        f"images or one image, got {type(inputs).__name__}"
    )


def select_image(inputs: ImageLike | Sequence[ImageLike], index: int) -> ImageLike:
    """Image ``index`` of ``inputs`` (see :func:`count_images`); negative indices count from
    the end."""
    count = count_images(inputs)
    if not -count <= index < count:
        raise IndexError(f"index {index} is out of range for {count} input image(s)")
    if isinstance(inputs, (torch.Tensor, np.ndarray)) and inputs.ndim == 4:
        return inputs[index]
    if isinstance(inputs, (torch.Tensor, np.ndarray, Image.Image)):
        return inputs
    return inputs[index]


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("P", "PA") or (mode != "RGBA" and "transparency" in image.info):
        return _pil_to_rgb(image.convert("RGBA"))
    if mode in ("La", "RGBa"):  # premultiplied alpha
        return _pil_to_rgb(image.convert(mode.upper()))
    if mode in ("1", "L", "LA", "RGBA", "F") or mode.startswith("I"):
        array = np.asarray(image)
        if mode == "I":
            # 32-bit integer images come from 16-bit files (older Pillow opens 16-bit PNGs so).
            array = np.clip(array, 0, 65535).astype(np.uint16)
        elif mode.startswith("I;16"):
            array = array.astype(np.uint16)  # native byte order for the I;16B variants
        return Image.fromarray(_to_rgb_uint8(_array_to_hwc(array)))
    return image.convert("RGB")  # CMYK, YCbCr, HSV, LAB


def _tensor_to_hwc(tensor: torch.Tensor) -> np.ndarray:
    shape = tuple(tensor.shape)
    tensor = tensor.detach().cpu()
    if tensor.ndim == 4:
        if shape[0] != 1:
            raise ValueError(
                f"to_pil takes one image; got a batch tensor of shape {shape}: pass tensor[i]"
            )
        tensor = tensor[0]
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 3:
        raise ValueError(
            f"an image tensor must be (C, H, W), (1, C, H, W) or (H, W), got shape {shape}"
        )
    if tensor.shape[0] not in CHANNEL_COUNTS:
        hint = (
            ": tensors are channel first, try tensor.permute(2, 0, 1)"
            if tensor.shape[-1] in CHANNEL_COUNTS
            else ""
        )
        raise ValueError(
            f"an image tensor needs 1, 2, 3 or 4 channels in (C, H, W), got shape {shape}{hint}"
        )
    if tensor.is_floating_point():
        tensor = tensor.float()
    array = _tensor_to_numpy(tensor)
    return np.moveaxis(array, 0, -1)


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    uint16 = getattr(torch, "uint16", None)
    if uint16 is not None and tensor.dtype == uint16:
        # numpy conversion of torch.uint16 is not supported everywhere: go through int32.
        return tensor.to(torch.int32).numpy().astype(np.uint16)
    return tensor.numpy()


def _array_to_hwc(array: np.ndarray) -> np.ndarray:
    shape = array.shape
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3 and array.shape[-1] in CHANNEL_COUNTS:
        return array
    hint = ""
    if array.ndim == 3 and array.shape[0] in CHANNEL_COUNTS:
        hint = ": arrays are channel last, try array.transpose(1, 2, 0)"
    raise ValueError(
        f"an image array must be (H, W) or (H, W, C) with C in 1..4, got shape {shape}{hint}"
    )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values scaled to uint8 by the rules of :func:`to_pil`."""
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if dtype == np.uint16:
        # Exact rounding of x * 255 / 65535: 65535 -> 255, 257 -> 1.
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 255:
            raise ValueError(
                f"integer pixels of dtype {dtype} span [{low}, {high}]; expected 0..255 "
                "(or dtype uint16 for 0..65535)"
            )
        return array.astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        return _float_to_uint8(array.astype(np.float64))
    raise TypeError(f"cannot read pixels of dtype {dtype}; use uint8, uint16, bool or float")


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError("the image has NaN or infinite pixel values")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < -FLOAT_TOLERANCE:
        raise ValueError(
            f"float pixels span [{low:.3g}, {high:.3g}]; negative values look like a normalised "
            "input: undo it first with camlens.viz.denormalize(tensor, mean, std)"
        )
    if high <= 1.0 + FLOAT_TOLERANCE:
        array = array * 255.0
    elif high > 255.0 + FLOAT_TOLERANCE:
        raise ValueError(
            f"float pixels span [{low:.3g}, {high:.3g}]; expected [0, 1] or 0..255"
        )
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _to_rgb_uint8(hwc: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` pixels of any accepted dtype as ``(H, W, 3)`` uint8, alpha over black."""
    pixels = _to_uint8(hwc)
    channels = pixels.shape[-1]
    if channels in (2, 4):
        color, alpha = pixels[..., :-1].astype(np.uint32), pixels[..., -1:].astype(np.uint32)
        pixels = ((color * alpha + 127) // 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels)
