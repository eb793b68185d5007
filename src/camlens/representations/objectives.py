"""What activation maximization raises, and the penalties that keep the picture readable.

An objective reads one layer's output ``A`` (channels first, ``(B, C, *spatial)``, or ``(B, C)``
for a vector) or the model's output (``layer=None``) and gives one score per picture ``(B,)``:

- :class:`ClassLogit` ``k``: the output's ``z_k`` (Simonyan, Vedaldi and Zisserman 2014,
  "Deep Inside Convolutional Networks": ``argmax_x z_k(x) - λ ||x||²``; the logit, not the
  softmax, which can rise by lowering the other classes);
- :class:`Channel` ``c``: ``mean_p A_{c,p}``, the channel's mean over positions (Olah et al.,
  Distill 2017);
- :class:`Neuron` ``(c, y, x)``: ``A_{c,y,x}``, one unit (Erhan, Bengio, Courville and Vincent
  2009, "Visualizing Higher-Layer Features of a Deep Network"); the centre when ``y, x`` are None;
- :class:`Direction` ``v``: ``mean_p <A_{:,p}, v> / ||v||``, a direction in the layer's
  activation space (Olah et al. 2017, "interactions and directions").

Many units are optimised in one batch, one picture (or ``n``, for diversity) per unit: each
picture's score is its own unit's. Penalties, each one value per picture:

- :func:`total_variation` (Mahendran and Vedaldi, CVPR 2015, the ``V^β`` regulariser):
  ``mean_{ij} ((x_{i,j+1} - x_{ij})² + (x_{i+1,j} - x_{ij})²)^{β/2}`` on [0, 1] pixels;
- :func:`l2_penalty` (Simonyan et al. 2014; Mahendran and Vedaldi's ``α``-norm with α = 2):
  ``mean (x - 1/2)²`` of the [0, 1] pixels, i.e. the distance from mid-grey;
- :func:`diversity_penalty` (Olah et al. 2017, lucid's ``diversity``): for pictures of one unit,
  the mean cosine similarity between the Gram matrices ``G = A Aᵀ / P`` of their activations
  (style, not position), which the optimisation lowers so the pictures differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["ClassLogit", "Channel", "Direction", "Neuron", "Objective", "diversity_penalty",
           "l2_penalty", "total_variation"]


def _channels_first(activation: torch.Tensor, layer: str | None) -> torch.Tensor:
    if activation.ndim < 2:
        raise ValueError(f"layer {layer!r} outputs shape {tuple(activation.shape)}; an objective "
                         "needs (batch, channels, ...)")
    return activation


class Objective:
    """One unit to maximise: reads ``layer`` (None: the model's output) and scores each picture.
    Subclasses are frozen dataclasses with a ``layer`` field."""

    layer: str | None

    def with_layer(self, layer: str) -> Objective:
        """The same objective at the resolved layer name."""
        from dataclasses import replace

        return replace(self, layer=layer)  # type: ignore[type-var]

    def check(self, activation: torch.Tensor) -> None:
        """Raise a ValueError naming the unit and the range when it does not fit ``activation``."""

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        """``(B,)`` scores of the pictures whose layer output is ``activation``."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class ClassLogit(Objective):
    """The output's logit of class ``class_index`` (Simonyan et al. 2014)."""

    class_index: int
    layer: str | None = None

    def check(self, activation: torch.Tensor) -> None:
        if activation.ndim != 2:
            raise ValueError(f"a class logit needs a model output of shape (batch, classes); "
                             f"this model outputs {tuple(activation.shape)}")
        classes = activation.shape[1]
        if not 0 <= self.class_index < classes:
            raise ValueError(f"class {self.class_index} is out of range: the model outputs "
                             f"{classes} classes (0 to {classes - 1})")

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        return activation[:, self.class_index]

    @property
    def label(self) -> str:
        return f"class {self.class_index}" + (f" at {self.layer}" if self.layer else "")


def _check_channel(channel: int, activation: torch.Tensor, layer: str | None) -> None:
    _channels_first(activation, layer)
    channels = activation.shape[1]
    if not 0 <= channel < channels:
        raise ValueError(f"channel {channel} is out of range: layer {layer!r} has {channels} "
                         f"channels (0 to {channels - 1})")


@dataclass(frozen=True)
class Channel(Objective):
    """The mean of channel ``channel`` of ``layer`` over its positions (Olah et al. 2017)."""

    layer: str
    channel: int

    def check(self, activation: torch.Tensor) -> None:
        _check_channel(self.channel, activation, self.layer)

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        return activation[:, self.channel].reshape(activation.shape[0], -1).mean(dim=1)

    @property
    def label(self) -> str:
        return f"channel {self.channel} of {self.layer}"


@dataclass(frozen=True)
class Neuron(Objective):
    """One unit: channel ``channel`` at position ``(y, x)`` of ``layer`` (Erhan et al. 2009);
    the centre of the layer's grid when ``y`` and ``x`` are None."""

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None

    def _position(self, activation: torch.Tensor) -> tuple[int, ...]:
        spatial = activation.shape[2:]
        given = tuple(value for value in (self.y, self.x) if value is not None)
        if not given:
            return tuple(size // 2 for size in spatial)
        if len(given) != len(spatial):
            raise ValueError(f"a neuron at {given} needs a layer with {len(given)} spatial "
                             f"axes; layer {self.layer!r} outputs {tuple(activation.shape)}")
        return given

    def check(self, activation: torch.Tensor) -> None:
        _check_channel(self.channel, activation, self.layer)
        position = self._position(activation)
        spatial = activation.shape[2:]
        if any(not 0 <= value < size for value, size in zip(position, spatial, strict=True)):
            raise ValueError(f"position {position} is out of range: layer {self.layer!r} has a "
                             f"{' x '.join(str(size) for size in spatial)} grid (0 to "
                             f"{', '.join(str(size - 1) for size in spatial)})")

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        position = self._position(activation)
        return activation[(slice(None), self.channel, *position)]

    @property
    def label(self) -> str:
        where = "centre" if self.y is None and self.x is None else f"({self.y}, {self.x})"
        return f"neuron {self.channel} at {where} of {self.layer}"


@dataclass(frozen=True)
class Direction(Objective):
    """``mean_p <A_{:,p}, v> / ||v||``: a direction ``vector`` (one value per channel) in the
    activation space of ``layer`` (Olah et al. 2017)."""

    layer: str
    vector: tuple[float, ...]

    def __post_init__(self) -> None:
        vector = tuple(float(value) for value in torch.as_tensor(self.vector).flatten().tolist())
        if not vector or not any(vector):
            raise ValueError("a direction needs a non-zero vector (one value per channel)")
        object.__setattr__(self, "vector", vector)

    def check(self, activation: torch.Tensor) -> None:
        _channels_first(activation, self.layer)
        if activation.shape[1] != len(self.vector):
            raise ValueError(f"the direction has {len(self.vector)} values but layer "
                             f"{self.layer!r} has {activation.shape[1]} channels")

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        vector = torch.tensor(self.vector, dtype=activation.dtype, device=activation.device)
        flat = activation.reshape(activation.shape[0], activation.shape[1], -1)
        return torch.einsum("bcp,c->bp", flat, vector / vector.norm()).mean(dim=1)

    @property
    def label(self) -> str:
        return f"direction ({len(self.vector)} channels) of {self.layer}"


def total_variation(pixels: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """``(B,)``: ``mean_{ij} ((x_{i,j+1} - x_{ij})² + (x_{i+1,j} - x_{ij})²)^{β/2}`` over channels
    and positions (Mahendran and Vedaldi, CVPR 2015)."""
    dx = pixels[..., :-1, 1:] - pixels[..., :-1, :-1]
    dy = pixels[..., 1:, :-1] - pixels[..., :-1, :-1]
    squared = dx * dx + dy * dy
    # β = 2 avoids the power (and its infinite gradient at 0 for β < 2)
    terms = squared if beta == 2 else (squared + 1e-8) ** (beta / 2)
    return terms.reshape(pixels.shape[0], -1).mean(dim=1)


def l2_penalty(pixels: torch.Tensor) -> torch.Tensor:
    """``(B,)``: ``mean (x - 1/2)²``, the pictures' distance from mid-grey (Simonyan et al.
    2014)."""
    return ((pixels - 0.5) ** 2).reshape(pixels.shape[0], -1).mean(dim=1)


def diversity_penalty(activation: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(B,)``: each picture's mean cosine similarity between its Gram matrix
    ``G = A Aᵀ / P`` (channels x channels, ``P`` positions) and those of the other pictures of its
    group (Olah et al. 2017, lucid's ``diversity``); 0 for a picture alone in its group."""
    batch, channels = activation.shape[:2]
    flat = activation.reshape(batch, channels, -1)
    grams = torch.bmm(flat, flat.transpose(1, 2)) / flat.shape[2]
    grams = torch.nn.functional.normalize(grams.reshape(batch, -1), dim=1)
    penalty = activation.new_zeros(batch)
    for group in groups:
        if len(group) < 2:
            continue
        index = torch.as_tensor(list(group), device=activation.device)
        members = grams[index]
        cosine = members @ members.T
        others = (cosine.sum(dim=1) - cosine.diagonal()) / (len(group) - 1)
        penalty = penalty.index_add(0, index, others)
    return penalty
