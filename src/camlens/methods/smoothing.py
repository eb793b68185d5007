"""Smoothing a method's maps by averaging them over altered copies of the input.

- **Test-time augmentation** (``aug_smooth=True``; pytorch-grad-cam's ``aug_smooth``): the image
  and its horizontal mirror, each with its intensities multiplied by 0.9, 1 and 1.1. Each map
  is taken back to the original geometry (upsampled to the input, the mirror's map mirrored
  back) before the mean.
- **Noise averaging** (``smooth_samples=N``; SmoothGrad, Smilkov et al. 2017; Smooth Grad-CAM++,
  Omeiza et al. 2019): the mean map over N copies of the input with Gaussian noise of standard
  deviation ``smooth_noise`` times the input's range (max - min, per input), from a seeded
  generator.

Both together average over every augmentation's N noisy copies. The targets are resolved once on
the original input and held fixed for every copy, so every map is of the same class; the scores
reported are the original input's. The averaged ``raw`` maps are at the input's resolution.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from camlens.explanation import Explanation, ExplanationWarning, upsample
from camlens.targets import Target

__all__ = ["INTENSITY_FACTORS", "Smoothing", "smoothed"]

#: The intensity factors of test-time augmentation (as pytorch-grad-cam's, via ttach).
INTENSITY_FACTORS = (0.9, 1.0, 1.1)


@dataclass(frozen=True)
class Smoothing:
    """What to average over: ``augment`` (flips and intensity factors), ``samples`` noisy copies
    of noise level ``noise`` (a fraction of the input's range), drawn from ``seed``."""

    augment: bool = False
    samples: int = 0
    noise: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or (
                self.samples < 0):
            raise ValueError(f"smooth_samples must be an int >= 0, got {self.samples!r}")
        if not 0 < self.noise <= 1:
            raise ValueError(f"smooth_noise must be in (0, 1] (a fraction of the input's "
                             f"range), got {self.noise!r}")

    @property
    def active(self) -> bool:
        return self.augment or self.samples > 0

    def describe(self) -> str:
        parts = []
        if self.augment:
            parts.append("6 augmentations (mirror x intensity 0.9, 1, 1.1)")
        if self.samples:
            parts.append(f"{self.samples} noisy copies (noise {self.noise:g} of the range, "
                         f"seed {self.seed})")
        return "averaged over " + (", each with ".join(parts))


def smoothed(smoothing: Smoothing, inputs: tuple[torch.Tensor, ...], target: Target,
             input_index: int, explain_once: Callable[[tuple[torch.Tensor, ...], Target],
                                                     Explanation]) -> Explanation:
    """The mean map of ``explain_once`` over the copies ``smoothing`` asks for (see the module
    docstring); ``explain_once(inputs, target)`` explains one version of the inputs."""
    image = inputs[input_index]
    original = explain_once(inputs, target)
    fixed: Target = target
    if original.targets is not None:
        fixed = original.targets  # (B,): one class per input; (B, K): K per input
    elif smoothing.augment:
        raise ValueError("aug_smooth mirrors the image, so a callable target (a box, a region) "
                         "would score another place; use smooth_samples=N (noise) instead")
    if smoothing.augment and image.ndim != 4:
        raise ValueError(f"aug_smooth mirrors images (B, C, H, W); the explained input has "
                         f"shape {tuple(image.shape)}")
    size = original.input_size
    variants = [(mirror, factor) for mirror in (False, True) for factor in INTENSITY_FACTORS] \
        if smoothing.augment else [(False, 1.0)]
    generator = torch.Generator().manual_seed(smoothing.seed)
    span = (image.flatten(1).amax(dim=1) - image.flatten(1).amin(dim=1)).reshape(
        -1, *([1] * (image.ndim - 1)))
    total: torch.Tensor | None = None
    count = 0
    for mirror, factor in variants:
        version = (image.flip(-1) if mirror else image) * factor
        for _ in range(max(smoothing.samples, 1)):
            noisy = version
            if smoothing.samples:
                noise = torch.randn(image.shape, generator=generator).to(image.device, image.dtype)
                noisy = version + noise * smoothing.noise * span
            copy = tuple(noisy if index == input_index else tensor
                         for index, tensor in enumerate(inputs))
            same = smoothing.samples == 0 and not mirror and factor == 1.0
            if same:
                raw = original.raw
            else:
                with warnings.catch_warnings():  # the copies' empty maps: judged on the mean
                    warnings.simplefilter("ignore", ExplanationWarning)
                    raw = explain_once(copy, fixed).raw
            at_input = upsample(raw, size)
            at_input = at_input.flip(-1) if mirror else at_input
            total = at_input if total is None else total + at_input
            count += 1
    assert total is not None
    mean = total / count
    notes = [*original.notes, smoothing.describe()]
    spatial = len(size)
    empty = int((mean.flatten(mean.ndim - spatial).amax(dim=-1) <= 0).sum())
    if empty:
        note = (f"{empty} averaged {original.method} maps are zero everywhere: no copy of the "
                "input gave positive evidence")
        warnings.warn(note, ExplanationWarning, stacklevel=4)
        notes.append(note)
    return Explanation(raw=mean, scores=original.scores, targets=original.targets,
                       method=original.method, layer=original.layer, input_size=size,
                       notes=notes)
