"""Does the model's confidence follow the map? Deletion/insertion and average drop/increase.

- Deletion and insertion (Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of
  Black-box Models", BMVC 2018): change the pixels most-salient first and follow the softmax
  probability ``s_i`` of the target class after ``i`` of ``n`` equal steps. Deletion replaces
  pixels of the image by a substrate (zeros) and should make ``s`` fall fast (low AUC);
  insertion starts from the substrate (a Gaussian blur of the image, kernel 11, sigma 5) and
  restores the image's pixels, and should make ``s`` rise fast (high AUC).
  ``AUC = (sum_i s_i - s_0 / 2 - s_n / 2) / n``, the trapezoid rule over the fraction changed.
- Average drop and increase in confidence (Chattopadhyay et al., "Grad-CAM++", WACV 2018):
  ``Y`` = confidence on the image, ``O`` = confidence on the image times the map;
  ``Average Drop % = 100 * mean(max(0, Y - O) / Y)``, ``% Increase = 100 * mean(Y < O)``.

Confidence is the softmax probability of the target class, in float64 (default: the class the
model predicts on the original image). The model runs in eval mode under ``torch.no_grad()``, at
most ``batch_size`` perturbed inputs at a time, and is left exactly as found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from camlens.explanation import upsample
from camlens.model_state import model_device, preserved_model_state
from camlens.targets import Target, adapt_output, class_logits, one_class_per_input

__all__ = ["PerturbationCurves", "Substrate", "average_drop_increase", "deletion_insertion",
           "gaussian_blur", "gaussian_kernel", "probabilities"]

Substrate = torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor] | None


@dataclass(frozen=True)
class PerturbationCurves:
    """Deletion or insertion curves of a batch.

    ``curves (B, steps + 1)``: the target's probability after ``fractions[i]`` of the pixels
    changed; ``auc (B,)``: the area under each curve; ``targets (B,)``: the scored classes.
    """

    mode: str
    fractions: torch.Tensor
    curves: torch.Tensor
    auc: torch.Tensor
    targets: torch.Tensor


def gaussian_kernel(size: int = 11, sigma: float = 5.0, device: Any = None) -> torch.Tensor:
    """The normalised 1-D Gaussian ``(size,)``: ``exp(-t^2 / (2 sigma^2))`` for
    ``t = -(size // 2) .. size // 2``, divided by its sum."""
    offsets = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def gaussian_blur(images: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Blur ``images (B, C, *spatial)`` (1 to 3 spatial axes) with a separable Gaussian of
    ``size`` taps and standard deviation ``sigma`` per spatial axis, channel by channel.

    RISE's insertion substrate uses ``size=11, sigma=5``. Borders are padded by replicating the
    edge pixels; RISE's own code zero-pads (and builds its kernel with
    ``scipy.ndimage.gaussian_filter`` on a delta), which darkens a 5-pixel frame of the blur.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the blur kernel size must be a positive odd number, got {size}")
    spatial_ndim = images.ndim - 2
    if spatial_ndim not in (1, 2, 3):
        raise ValueError(f"can blur (B, C, *spatial) with 1 to 3 spatial axes, got {images.shape}")
    kernel = gaussian_kernel(size, sigma, images.device).to(images.dtype).reshape(1, 1, size)
    blurred = images
    for axis in range(2, images.ndim):
        moved = blurred.movedim(axis, -1)
        lines = moved.reshape(-1, 1, moved.shape[-1])
        padded = F.pad(lines, (size // 2, size // 2), mode="replicate")
        blurred = F.conv1d(padded, kernel).reshape(moved.shape).movedim(-1, axis)
    return blurred


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: Target = None,
    steps: int = 100,
    mode: Literal["deletion", "insertion"] = "deletion",
    substrate: Substrate = None,
    batch_size: int = 64,
    output_fn: Callable[[Any], Any] | None = None,
    seed: int = 0,
) -> PerturbationCurves:
    """RISE deletion or insertion curves and their AUC (Petsiuk et al., BMVC 2018).

    ``images (B, C, *spatial)``; ``maps (B, *spatial')`` are resized to the images' spatial size
    (bilinear) when they differ. At step ``i = 0 .. steps`` the ``floor(i * P / steps)``
    most-salient of the ``P`` pixel positions (all channels of a position together) are changed.
    Positions with equal map values are taken in a random order drawn from ``seed`` (the same
    for every image of the call): in raster order, a sparse map's flat zero region would be
    inserted from the top-left corner first, which can decide its insertion AUC.

    - ``mode="deletion"``: from the image to ``substrate`` (default zeros);
    - ``mode="insertion"``: from ``substrate`` (default :func:`gaussian_blur` of the image,
      kernel 11, sigma 5) back to the image.

    ``substrate``: a tensor broadcastable to ``images``, a number, or a callable
    ``images -> tensor`` (the default blur pads borders by replicating edge pixels).
    ``targets``: the scored class per image in the forms of :mod:`camlens.targets` (default: the
    class predicted on the original image). Probabilities are computed in float64, so a
    confident model's scores do not saturate at 1.0.
    ``AUC = (sum_i s_i - s_0 / 2 - s_n / 2) / n`` with ``n = steps``.
    The model makes ``B * (steps + 1)`` forward passes, ``batch_size`` inputs at a time.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    _check_batch_size(batch_size)
    images, saliency = _checked_images_and_maps(model, images, maps)
    if substrate is None:
        substrate = 0.0 if mode == "deletion" else gaussian_blur
    background = _substrate_for(substrate, images)
    start, finish = (images, background) if mode == "deletion" else (background, images)

    batch, positions = images.shape[0], saliency[0].numel()
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.randperm(positions, generator=generator).to(images.device)
    shuffled = saliency.reshape(batch, positions)[:, shuffle]
    order = shuffle[shuffled.argsort(dim=1, descending=True, stable=True)]  # ties: random
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(positions, device=images.device).expand(batch, -1)
    )
    changed_counts = torch.arange(steps + 1, device=images.device) * positions // steps

    with preserved_model_state(model), torch.no_grad():
        targets = _resolve_targets(model, images, targets, batch_size, output_fn)
        # one flat list of (image, step) pairs, scored batch_size at a time
        pairs = torch.arange(batch * (steps + 1), device=images.device)
        scores = []
        for chunk in pairs.split(batch_size):
            image_index, step_index = chunk // (steps + 1), chunk % (steps + 1)
            changed = rank[image_index] < changed_counts[step_index, None]
            changed = changed.reshape(len(chunk), 1, *images.shape[2:])
            perturbed = torch.where(changed, finish[image_index], start[image_index])
            scores.append(probabilities(model, perturbed, targets[image_index], output_fn))
    curves = torch.cat(scores).reshape(batch, steps + 1)
    auc = (curves.sum(dim=1) - curves[:, 0] / 2 - curves[:, -1] / 2) / steps
    fractions = changed_counts.float() / positions
    return PerturbationCurves(mode, fractions, curves, auc, targets)


def average_drop_increase(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: Target = None,
    batch_size: int = 64,
    output_fn: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Average Drop % and % Increase in Confidence (Chattopadhyay et al., Grad-CAM++, WACV 2018).

    ``Y`` = the target's softmax probability on ``images (B, C, *spatial)``, ``O`` = on
    ``images * maps`` (``maps (B, *spatial')`` in [0, 1], e.g. ``Explanation.maps``, resized to
    the images when they differ). Returns a dict:

    - ``"average_drop"``: ``100 * mean(max(0, Y - O) / Y)`` (float, lower is better);
    - ``"increase_in_confidence"``: ``100 * mean(Y < O)`` (float, higher is better);
    - per image: ``"drop"`` ``max(0, Y - O) / Y`` ``(B,)``, ``"increased"`` bool ``(B,)``,
      ``"confidence"`` ``Y``, ``"masked_confidence"`` ``O`` and ``"targets"`` ``(B,)``.

    ``targets`` default to the class predicted on each image.
    """
    _check_batch_size(batch_size)
    images, saliency = _checked_images_and_maps(model, images, maps)
    with preserved_model_state(model), torch.no_grad():
        targets = _resolve_targets(model, images, targets, batch_size, output_fn)
        full, masked = [], []
        for index in torch.arange(images.shape[0], device=images.device).split(batch_size):
            chunk, chunk_targets = images[index], targets[index]
            full.append(probabilities(model, chunk, chunk_targets, output_fn))
            explained = chunk * saliency[index].unsqueeze(1).to(chunk.dtype)
            masked.append(probabilities(model, explained, chunk_targets, output_fn))
    confidence, masked_confidence = torch.cat(full), torch.cat(masked)
    drop = (confidence - masked_confidence).clamp_min(0) / confidence.clamp_min(1e-12)
    increased = confidence < masked_confidence
    return {
        "average_drop": 100.0 * drop.mean().item(),
        "increase_in_confidence": 100.0 * increased.float().mean().item(),
        "drop": drop,
        "increased": increased,
        "confidence": confidence,
        "masked_confidence": masked_confidence,
        "targets": targets,
    }


# --- shared steps --------------------------------------------------------------------------------


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _checked_images_and_maps(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images (B, C, *spatial)`` and ``maps`` resized to ``(B, *spatial)`` on their device."""
    if not isinstance(images, torch.Tensor) or images.ndim < 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (B, C, *spatial), got {shape}")
    if images.shape[0] == 0:
        raise ValueError("images hold an empty batch (shape[0] == 0); pass at least one image")
    device = model_device(model)
    if device is not None and images.device != device:
        raise ValueError(
            f"images are on device {images.device} but the model is on {device}; move one of "
            f"them, e.g. images.to('{device}')"
        )
    spatial = tuple(images.shape[2:])
    if not isinstance(maps, torch.Tensor) or maps.ndim != images.ndim - 1 or (
        maps.shape[0] != images.shape[0]
    ):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(
            f"maps must hold one map per image, shape ({images.shape[0]}, *spatial) with "
            f"{len(spatial)} spatial axes, got {shape}; pick one target's maps from a (B, K, ...) "
            "explanation, e.g. exp.maps[:, 0]"
        )
    maps = maps.detach().to(images.device)
    maps = maps.float() if not maps.is_floating_point() else maps
    return images, upsample(maps, spatial)


def _substrate_for(substrate: Substrate, images: torch.Tensor) -> torch.Tensor:
    """The substrate as a tensor shaped like ``images``."""
    if callable(substrate) and not isinstance(substrate, torch.Tensor):
        value = substrate(images)
    elif isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        value = torch.full_like(images, float(substrate))
    elif isinstance(substrate, torch.Tensor):
        value = substrate
    else:
        raise TypeError(
            "substrate must be a tensor, a number or a callable images -> tensor, got "
            f"{type(substrate).__name__}"
        )
    try:
        return torch.broadcast_to(value.to(images.device, images.dtype), images.shape)
    except RuntimeError:
        raise ValueError(
            f"a substrate of shape {tuple(value.shape)} does not broadcast to images of shape "
            f"{tuple(images.shape)}"
        ) from None


def probabilities(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    output_fn: Callable[[Any], Any] | None,
) -> torch.Tensor:
    """The softmax probability ``(N,)`` of ``targets[n]`` for each input."""
    logits = class_logits(adapt_output(model(inputs), output_fn))
    if ((targets < 0) | (targets >= logits.shape[1])).any():
        bad = targets[(targets < 0) | (targets >= logits.shape[1])][0].item()
        raise IndexError(
            f"target class {bad} is out of range for a model with {logits.shape[1]} outputs"
        )
    return logits.double().softmax(dim=1).gather(1, targets[:, None]).squeeze(1)


def _resolve_targets(
    model: nn.Module,
    images: torch.Tensor,
    targets: Target,
    batch_size: int,
    output_fn: Callable[[Any], Any] | None,
) -> torch.Tensor:
    """Class indices ``(B,)`` for ``targets`` in the forms of :mod:`camlens.targets` (None: the
    model's prediction on each image, an int, one class per image, ``TopK(1)``)."""
    logits = torch.cat([class_logits(adapt_output(model(chunk), output_fn))
                        for chunk in images.split(batch_size)])
    return one_class_per_input(targets, logits, images.shape[0], "a faithfulness metric")
