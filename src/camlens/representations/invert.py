"""Input reconstruction from a hidden layer: what a layer keeps of the picture.

Mahendran and Vedaldi, "Understanding Deep Image Representations by Inverting Them", CVPR 2015:
given a picture ``x0`` and its representation ``Φ0 = Φ(x0)`` at a layer, find

``x* = argmin_x  ||Φ(x) - Φ0||² / ||Φ0||²  +  λ_TV TV(p)  +  λ_2 ||p - ½||²``,
``x = normalise(p)``, ``p = sigmoid(g(θ))``

(the representation loss normalised by ``||Φ0||²`` so one weight suits every layer; TV the
``V^β`` total variation, here with β = 2, and an L2 pull to mid-grey, both on [0, 1] pixels). What
the reconstructions share with ``x0`` is what the layer keeps; what varies is what it throws
away. Every layer is reconstructed in one optimisation: the batch holds one picture per (layer,
input), and each picture answers only to its own layer.

Reported per layer and input: the **relative representation error**
``||Φ(x*) - Φ0||² / ||Φ0||²`` of the final picture (without transformations), its value at the
start (the grey, faintly noisy first picture), the trajectory over the steps, and the **pixel
error**: the root mean squared difference between ``x*`` and ``x0`` as [0, 1] pixels (the model's
normalisation undone), so 0 is identical and 0.5 is as far as mid-grey from black or white.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens.explanation import ExplanationWarning
from camlens.representations.objectives import l2_penalty, total_variation
from camlens.representations.optimization import (
    Progress,
    adam_step,
    check_settings,
    held_model,
    progress_reporter,
    resolve_device,
)
from camlens.representations.parameterization import InputSpace, make_parameterization
from camlens.representations.taps import resolve_layers, tapped_layers
from camlens.representations.transforms import RandomTransforms
from camlens.targets import adapt_output

__all__ = ["InversionResult", "LayerReconstruction", "invert", "relative_error"]


def relative_error(representation: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(B,)``: ``||Φ - Φ0||² / ||Φ0||²`` per picture."""
    difference = (representation - target).reshape(len(target), -1)
    return difference.pow(2).sum(dim=1) / target.reshape(len(target), -1).pow(2).sum(dim=1)


@dataclass
class LayerReconstruction:
    """The reconstructions of the inputs from one layer, on the CPU.

    Attributes:
        layer: the layer's dotted name.
        images: ``(B, C, H, W)`` in the model's input space; ``pixels``: the same in [0, 1].
        representation_error: ``(B,)`` ``||Φ(x*) - Φ0||² / ||Φ0||²`` of the final pictures.
        start_error: ``(B,)`` the same for the first pictures.
        pixel_rmse: ``(B,)`` RMSE to the input in [0, 1] pixels.
        trajectory: ``(steps, B)`` the relative error at each step (under its transformations).
    """

    layer: str
    images: torch.Tensor
    pixels: torch.Tensor
    representation_error: torch.Tensor
    start_error: torch.Tensor
    pixel_rmse: torch.Tensor
    trajectory: torch.Tensor


@dataclass
class InversionResult:
    """:func:`invert`'s reconstructions per layer (in the order given), the input as [0, 1]
    pixels, notes and settings."""

    layers: dict[str, LayerReconstruction]
    original_pixels: torch.Tensor
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def invert(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: str | Sequence[str],
    *,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    param: str = "pixel",
    transforms: RandomTransforms | None = None,
    tv: float = 0.05,
    l2: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    output_fn: Any = None,
    progress: bool | Progress | None = None,
) -> InversionResult:
    """Reconstruct ``inputs`` ``(B, C, H, W)`` (the model's input space) from each of ``layers``.

    Args:
        model: any ``nn.Module``; left exactly as found.
        inputs: the pictures to reconstruct, normalised as the model expects.
        layers: one dotted layer name or several (unknown names: the closest are listed).
        steps, lr, seed, param: Adam's steps and learning rate, the seed of the start, the
            parameterisation (``"pixel"`` or ``"fourier"``).
        transforms: random jitter/scale/rotation at each step (None: none, so the trajectory is
            the error itself).
        tv, l2: penalty weights on the [0, 1] pixels.
        mean, std: the model's input normalisation (None: it reads [0, 1] pixels).
        device: where to optimise (default: the model's device).
        output_fn: unused by the loss; passed to :func:`camlens.targets.adapt_output` so models
            with unusual outputs run.
        progress: True for a tqdm bar, or a callable ``(step, steps, mean error)``.
    """
    names = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    if not names:
        raise ValueError("give at least one layer to reconstruct from")
    names = resolve_layers(model, names)
    if len(set(names)) < len(names):
        raise ValueError(f"a layer is given twice: {', '.join(names)}")
    check_settings(steps, lr, tv=tv, l2=l2)
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or inputs.shape[0] == 0:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a (B, C, H, W) tensor with B >= 1, got {shape}")
    space = InputSpace(None if mean is None else tuple(mean), None if std is None else tuple(std))
    target_device = resolve_device(model, device)
    inputs = inputs.detach().to(target_device, torch.float32)
    count, layer_count = inputs.shape[0], len(names)
    generator = torch.Generator().manual_seed(int(seed))
    picture = make_parameterization(param, (layer_count * count, *inputs.shape[1:]),
                                    generator=generator, device=target_device)
    moves = transforms if transforms is not None else RandomTransforms(0, 0, 0, seed=seed)
    notes = [picture.note, moves.describe(),
             "pixel error: RMSE between reconstruction and input as [0, 1] pixels"]
    optimizer = torch.optim.Adam(picture.parameters, lr=lr)
    trajectory = []

    with held_model(model), tapped_layers(model, names) as taps, \
            progress_reporter(progress, steps, "invert") as report:

        def representations(model_inputs: torch.Tensor) -> list[torch.Tensor]:
            for tap in taps.values():
                tap.reset()
            adapt_output(model(model_inputs), output_fn)
            return [taps[name].read() for name in names]

        def errors(pictures: torch.Tensor) -> torch.Tensor:
            """``(layers, B)``: each layer's block of pictures against its own target."""
            found = representations(space.to_model(pictures))
            return torch.stack([relative_error(found[k][k * count:(k + 1) * count], targets[k])
                                for k in range(layer_count)])

        with torch.no_grad():
            targets = [tensor.detach() for tensor in representations(inputs)]
            for name, target in zip(names, targets, strict=True):
                norms = target.reshape(count, -1).pow(2).sum(dim=1)
                if not (norms > 0).all():
                    empty = [int(i) for i in (norms == 0).nonzero().flatten()]
                    raise ValueError(f"the representation of input(s) {empty} at layer {name!r} "
                                     "is all zeros, so its relative error is undefined; choose "
                                     "another layer (e.g. before the ReLU)")
            start = errors(picture()).float().cpu()
        stopped = None
        for step in range(steps):
            pixels = picture()
            layer_errors = errors(moves(pixels))
            loss = layer_errors.sum()
            if tv:
                loss = loss + tv * total_variation(pixels).sum()
            if l2:
                loss = loss + l2 * l2_penalty(pixels).sum()
            trajectory.append(layer_errors.detach().float().cpu())
            if not torch.isfinite(loss):
                stopped = step
                break
            adam_step(optimizer, loss, picture.parameters)
            if report is not None:
                report(step + 1, steps, float(trajectory[-1].mean()))
        with torch.no_grad():
            pixels = picture()
            final = errors(pixels).float().cpu()
            images = space.to_model(pixels).detach().cpu()
            pixels = pixels.detach().cpu()
    original = space.to_pixels(inputs).cpu()
    history = torch.stack(trajectory) if trajectory else torch.empty(0, layer_count, count)
    result = {}
    for k, name in enumerate(names):
        block = slice(k * count, (k + 1) * count)
        rmse = (pixels[block] - original).reshape(count, -1).pow(2).mean(dim=1).sqrt()
        result[name] = LayerReconstruction(
            layer=name, images=images[block], pixels=pixels[block],
            representation_error=final[k], start_error=start[k], pixel_rmse=rmse,
            trajectory=history[:, k])
    if stopped is not None or not torch.isfinite(final).all():
        message = (f"the reconstruction produced NaN or infinite values"
                   f"{f' at step {stopped}' if stopped is not None else ''}; lower lr")
        notes.append(message)
        warnings.warn(message, ExplanationWarning, stacklevel=2)
    worse = [f"{name} (input {i}: {float(start[k, i]):.3g} -> {float(final[k, i]):.3g})"
             for k, name in enumerate(names) for i in range(count)
             if not final[k, i] < start[k, i]]
    if worse:
        message = ("the reconstruction did not lower the representation error below its start "
                   "for " + "; ".join(worse) + "; try more steps, another lr or lower penalties")
        notes.append(message)
        warnings.warn(message, ExplanationWarning, stacklevel=2)
    settings = {"steps": steps, "lr": lr, "seed": seed, "param": param,
                "transforms": moves.describe(), "tv": tv, "l2": l2, "mean": space.mean,
                "std": space.std, "device": str(target_device), "layers": names}
    return InversionResult(layers=result, original_pixels=original, notes=notes,
                           settings=settings)
