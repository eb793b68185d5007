"""How an optimised picture is parameterised: pixels, or a decorrelated Fourier spectrum.

Every parameterisation gives pictures in **[0, 1] pixel space** through a sigmoid, so whatever the
optimiser does the result is a valid image; :class:`InputSpace` then applies the model's own
normalisation ``x = (pixels - mean) / std`` to reach the model's input space.

- :class:`PixelImage`: one free logit per pixel, ``pixels = sigmoid(logits)``.
- :class:`FourierImage` (Olah, Mordvintsev and Schubert, "Feature Visualization", Distill 2017;
  lucid's ``fft_image``): the logits are the inverse real FFT of a spectrum whose coefficients are
  scaled by ``1 / max(f, 1/max(H, W)) ** decay``, so every frequency moves at a similar rate
  (the spectrum of natural images falls as ``1/f``; plain pixel gradients favour high
  frequencies), and for 3-channel pictures the channels are decorrelated: the optimised
  channels are mapped through the square root of the ImageNet colour covariance (lucid's
  ``color_correlation_svd_sqrt``), ``logits = C_sqrt · z`` per pixel. Colour decorrelation
  applies to RGB only: a 1-channel picture (the digit models) uses the identity and says so in
  :attr:`ImageParameterization.note`.

Parameters are created on the CPU from a seeded :class:`torch.Generator` and then moved, so a seed
gives the same start on every device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["COLOR_CORRELATION_SQRT", "PARAMETERIZATIONS", "FourierImage", "ImageParameterization",
           "InputSpace", "PixelImage", "make_parameterization"]

#: The square root of ImageNet's colour covariance (lucid, ``color_correlation_svd_sqrt``).
COLOR_CORRELATION_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


@dataclass(frozen=True)
class InputSpace:
    """The model's input normalisation: ``x = (pixels - mean) / std`` per channel.

    ``mean`` and ``std`` None: the model reads [0, 1] pixels as they are (the digit models).
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std of the input normalisation, or neither")
        if self.std is not None and any(value <= 0 for value in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}")

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.mean is not None and self.std is not None
        if len(self.mean) not in (1, like.shape[1]):
            raise ValueError(f"the input normalisation has {len(self.mean)} channels but the "
                             f"picture has {like.shape[1]}")
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device)[None, :, None, None]
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device)[None, :, None, None]
        return mean, std

    def to_model(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels ``(B, C, H, W)`` -> the model's input."""
        if self.mean is None:
            return pixels
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def to_pixels(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's input -> [0, 1] pixels (clamped: a real input may overshoot a little)."""
        if self.mean is None:
            return inputs.clamp(0, 1)
        mean, std = self._stats(inputs)
        return (inputs * std + mean).clamp(0, 1)


class ImageParameterization:
    """A batch of pictures ``(B, C, H, W)`` in [0, 1] made from free tensors.

    ``parameters``: what the optimiser updates; calling the object gives the pictures.
    ``note``: a line on what was chosen (e.g. no colour decorrelation for 1 channel).
    """

    name = "base"

    def __init__(self, shape: Sequence[int]) -> None:
        if len(shape) != 4 or any(int(size) < 1 for size in shape):
            raise ValueError(f"shape must be (batch, channels, height, width) of positive sizes, "
                             f"got {tuple(shape)}")
        self.shape = tuple(int(size) for size in shape)
        self.parameters: list[torch.Tensor] = []
        self.note = ""

    def logits(self) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self) -> torch.Tensor:
        return torch.sigmoid(self.logits())


class PixelImage(ImageParameterization):
    """``pixels = sigmoid(logits)``, one free logit per pixel, started at ``N(0, sd^2)`` (a grey
    picture with faint noise)."""

    name = "pixel"

    def __init__(self, shape: Sequence[int], *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, sd: float = 0.01) -> None:
        super().__init__(shape)
        start = torch.randn(self.shape, generator=generator) * sd
        self.values = start.to(device).requires_grad_(True)
        self.parameters = [self.values]
        self.note = "pixel parameterisation: pixels = sigmoid(free logits)"

    def logits(self) -> torch.Tensor:
        return self.values


def _frequencies(height: int, width: int) -> torch.Tensor:
    """|f| of each coefficient of a real 2-D FFT of ``height x width``: ``(H, W // 2 + 1)``."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(ImageParameterization):
    """Logits from a scaled spectrum (Olah et al., Distill 2017; lucid's ``fft_image``):

    ``logits = decorrelate(irfft2(s ⊙ z) / 4)``, ``s(f) = 1 / max(|f|, 1/max(H, W)) ** decay``,

    ``z`` complex coefficients started at ``N(0, sd^2)``; ``decorrelate`` multiplies each pixel's
    channels by :data:`COLOR_CORRELATION_SQRT` (normalised by its largest column norm) for 3
    channels and is the identity otherwise (said in :attr:`note`).
    """

    name = "fourier"

    def __init__(self, shape: Sequence[int], *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, sd: float = 0.01,
                 decay_power: float = 1.0, decorrelate: bool | None = None) -> None:
        super().__init__(shape)
        batch, channels, height, width = self.shape
        frequencies = _frequencies(height, width)
        scale = 1.0 / torch.clamp(frequencies, min=1.0 / max(height, width)) ** decay_power
        self.scale = scale[None, None, :, :, None].to(device)
        start = torch.randn((batch, channels, *frequencies.shape, 2), generator=generator) * sd
        self.spectrum = start.to(device).requires_grad_(True)
        self.parameters = [self.spectrum]
        if decorrelate is None:
            decorrelate = channels == 3
        if decorrelate and channels != 3:
            raise ValueError(f"colour decorrelation needs 3 channels (RGB), got {channels}")
        self.color = None
        if decorrelate:
            matrix = torch.tensor(COLOR_CORRELATION_SQRT)
            self.color = (matrix / matrix.norm(dim=0).max()).to(device)
        self.note = (f"Fourier parameterisation (decay {decay_power:g}), "
                     + ("colours decorrelated (ImageNet colour covariance)" if decorrelate else
                        f"no colour decorrelation ({channels} channel"
                        f"{'' if channels == 1 else 's'}: identity)"))

    def logits(self) -> torch.Tensor:
        height, width = self.shape[2:]
        spectrum = torch.view_as_complex(self.scale * self.spectrum)
        image = torch.fft.irfft2(spectrum, s=(height, width), norm="ortho") / 4.0
        if self.color is not None:
            image = torch.einsum("dc,bchw->bdhw", self.color, image)
        return image


PARAMETERIZATIONS = {"pixel": PixelImage, "fourier": FourierImage}


def make_parameterization(kind: str, shape: Sequence[int], *, seed: int = 0,
                          device: torch.device | str | None = None,
                          generator: torch.Generator | None = None
                          ) -> ImageParameterization:
    """The parameterisation named ``kind`` (``"pixel"`` or ``"fourier"``) of ``shape``, started
    from ``seed`` (or from ``generator`` when given)."""
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterisation {kind!r}; accepted: "
                         f"{', '.join(PARAMETERIZATIONS)}")
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    return PARAMETERIZATIONS[kind](shape, generator=generator, device=device)

