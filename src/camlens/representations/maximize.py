"""Activation maximization: the input pattern a unit wants.

Find pictures that maximise units (Erhan et al. 2009; Simonyan et al. 2014; Olah et al., Distill
2017):

``x* = argmax_p  Σ_i s_i(T_i(p_i)) - λ_TV TV(p_i) - λ_2 ||p_i - ½||² - λ_div D_i``,
``x = normalise(p)``, ``p = sigmoid(g(θ))``

with ``s_i`` the score of picture ``i``'s unit (:mod:`camlens.representations.objectives`), ``T_i``
a random jitter, scale and rotation drawn at each step (:mod:`~camlens.representations.transforms`),
``g`` the pixel or decorrelated Fourier parameterisation
(:mod:`~camlens.representations.parameterization`) and ``D_i`` the diversity penalty among the
pictures of one unit. Pictures live in [0, 1] and reach the model through its own normalisation,
so they are valid images of the model's input space. Adam updates ``θ`` with
``torch.autograd.grad`` of the loss with respect to ``θ`` only; the model is left as found
(:func:`~camlens.representations.optimization.held_model`).

Many units are optimised in one batch (one picture per unit, or ``images_per_unit`` for
diversity). A run whose final score (without transformations) is not above its start, or that
produced NaN, warns (:class:`camlens.ExplanationWarning`) and says so in ``notes``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens.explanation import ExplanationWarning
from camlens.layouts import Layout
from camlens.representations.objectives import (
    Objective,
    diversity_penalty,
    l2_penalty,
    total_variation,
)
from camlens.representations.optimization import (
    Progress,
    adam_step,
    check_settings,
    held_model,
    input_shape_of,
    progress_reporter,
    resolve_device,
)
from camlens.representations.parameterization import InputSpace, make_parameterization
from camlens.representations.redirect import redirected_relus
from camlens.representations.taps import (
    LayerTap,
    canonical_layouts,
    resolve_layers,
    tapped_layers,
)
from camlens.representations.transforms import RandomTransforms
from camlens.targets import adapt_output

__all__ = ["DEFAULT_TRANSFORMS", "MaximizationResult", "maximize"]

#: The transformations used when ``transforms="default"``: ±4 px, ±5% scale, ±5°.
DEFAULT_TRANSFORMS = {"jitter": 4.0, "scale": 0.05, "degrees": 5.0}


@dataclass
class MaximizationResult:
    """What :func:`maximize` found, on the CPU, detached.

    Attributes:
        images: ``(N, C, H, W)`` in the model's input space (normalised as the model expects).
        pixels: the same pictures as [0, 1] pixels.
        objectives: the units, in order; picture ``i`` maximises ``objectives[unit_of_image[i]]``.
        unit_of_image: ``(N,)``.
        start_values, final_values: ``(N,)`` each picture's score before and after, measured
            without transformations.
        trajectory: ``(steps, N)`` the scores at each step, under that step's transformations.
        final_activations: the objectives' layer outputs for the final pictures.
        output: ``(N, K)`` the model's output for the final pictures (None when not a tensor).
        notes: what was chosen and anything that went wrong.
        settings: the arguments of the run.
    """

    images: torch.Tensor
    pixels: torch.Tensor
    objectives: tuple[Objective, ...]
    unit_of_image: torch.Tensor
    start_values: torch.Tensor
    final_values: torch.Tensor
    trajectory: torch.Tensor
    final_activations: dict[str, torch.Tensor]
    output: torch.Tensor | None
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def improved(self) -> torch.Tensor:
        """``(N,)`` whether each picture's final score is above its start."""
        return self.final_values > self.start_values


def _objective_list(objectives: Objective | Sequence[Objective]) -> list[Objective]:
    items = [objectives] if isinstance(objectives, Objective) else list(objectives)
    if not items:
        raise ValueError("give at least one objective (a ClassLogit, Channel, Neuron or "
                         "Direction)")
    for item in items:
        if not isinstance(item, Objective):
            raise TypeError(f"objectives must be ClassLogit, Channel, Neuron or Direction "
                            f"objects, got {type(item).__name__}: {item!r}")
    return items


def _transforms(transforms: RandomTransforms | str | None, seed: int) -> RandomTransforms:
    if transforms is None:
        return RandomTransforms(0, 0, 0, seed=seed)
    if isinstance(transforms, str):
        if transforms != "default":
            raise ValueError(f"transforms must be a RandomTransforms, 'default' or None, got "
                             f"{transforms!r}")
        return RandomTransforms(**DEFAULT_TRANSFORMS, seed=seed)
    if not isinstance(transforms, RandomTransforms):
        raise TypeError(f"transforms must be a RandomTransforms, 'default' or None, got "
                        f"{type(transforms).__name__}")
    return transforms


def _scores(objectives: list[Objective], unit_of_image: torch.Tensor,
            taps: dict[str, LayerTap], layouts: dict[str, Layout | None],
            output: Any) -> torch.Tensor:
    """``(N,)``: each picture's score under its own unit (layer outputs channels first)."""
    parts = []
    for unit, objective in enumerate(objectives):
        rows = (unit_of_image == unit).nonzero().flatten()
        activation = (output if objective.layer is None
                      else taps[objective.layer].canonical(layouts[objective.layer]))
        parts.append((rows, objective.score(activation[rows.to(activation.device)])))
    scores = torch.empty(len(unit_of_image), device=parts[0][1].device, dtype=parts[0][1].dtype)
    for rows, values in parts:
        scores = scores.index_put((rows.to(scores.device),), values)
    return scores


def maximize(
    model: nn.Module,
    objectives: Objective | Sequence[Objective],
    input_shape: Sequence[int],
    *,
    steps: int = 256,
    lr: float = 0.05,
    seed: int = 0,
    param: str = "fourier",
    transforms: RandomTransforms | str | None = "default",
    tv: float = 0.0,
    l2: float = 0.0,
    images_per_unit: int = 1,
    diversity: float = 0.0,
    diversity_layer: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    output_fn: Any = None,
    progress: bool | Progress | None = None,
    redirect_steps: int = 16,
) -> MaximizationResult:
    """Optimise pictures that maximise ``objectives``, one picture (or ``images_per_unit``) per
    objective, all in one batch.

    Args:
        model: any ``nn.Module`` taking ``(N, C, H, W)``; left exactly as found.
        objectives: one or several :class:`~camlens.representations.objectives.Objective`.
        input_shape: ``(C, H, W)`` of the model's input.
        steps, lr, seed: Adam's steps and learning rate; the seed of the start and of the
            transformations (same seed, same pictures on one device).
        param: ``"fourier"`` (decorrelated spectrum) or ``"pixel"``.
        transforms: a :class:`RandomTransforms`, ``"default"`` (:data:`DEFAULT_TRANSFORMS`) or
            None (none).
        tv, l2: weights of the total variation and L2 penalties (on [0, 1] pixels).
        images_per_unit: pictures per objective; with ``diversity`` > 0 they are pushed apart.
        diversity: weight of the diversity penalty (Gram-matrix cosine at ``diversity_layer``,
            default the objective's layer; needed for class objectives).
        mean, std: the model's input normalisation (None: it reads [0, 1] pixels).
        device: where to optimise (default: the model's device).
        output_fn: turns the model's output into the logits (see
            :func:`camlens.targets.adapt_output`).
        progress: True for a tqdm bar, or a callable ``(step, steps, mean score)``.
        redirect_steps: for this many first steps, pass redirected gradients through the
            model's ``nn.ReLU`` modules while a picture's gradient through them is all zero
            (:mod:`~camlens.representations.redirect`, as lucid does), so a unit that is off
            everywhere at the start still moves; 0: never. Later steps use the true gradient
            (and skip the cost: a clone and a Python backward per ReLU).
    """
    units = _objective_list(objectives)
    check_settings(steps, lr, tv=tv, l2=l2, diversity=diversity)
    if isinstance(redirect_steps, bool) or not isinstance(redirect_steps, int) or \
            redirect_steps < 0:
        raise ValueError(f"redirect_steps must be an int >= 0, got {redirect_steps!r}")
    if isinstance(images_per_unit, bool) or not isinstance(images_per_unit, int) or \
            images_per_unit < 1:
        raise ValueError(f"images_per_unit must be an int >= 1, got {images_per_unit!r}")
    channels, height, width = input_shape_of(input_shape)
    space = InputSpace(None if mean is None else tuple(mean), None if std is None else tuple(std))
    units = [unit if unit.layer is None else unit.with_layer(resolve_layers(model, [unit.layer])[0])
             for unit in units]
    if diversity > 0 and images_per_unit < 2:
        raise ValueError("diversity needs images_per_unit >= 2 (several pictures of one unit "
                         "to push apart)")
    diverse_layers: dict[int, str] = {}
    if diversity > 0:
        for index, unit in enumerate(units):
            chosen = diversity_layer or unit.layer
            if chosen is None:
                raise ValueError(f"diversity for {unit.label} needs diversity_layer= (a hidden "
                                 "layer whose Gram matrices are compared)")
            diverse_layers[index] = resolve_layers(model, [chosen])[0]
    target_device = resolve_device(model, device)
    unit_of_image = torch.arange(len(units)).repeat_interleave(images_per_unit)
    batch = len(unit_of_image)
    generator = torch.Generator().manual_seed(int(seed))
    picture = make_parameterization(param, (batch, channels, height, width),
                                    generator=generator, device=target_device)
    moves = _transforms(transforms, seed)
    notes = [picture.note, moves.describe()]
    layers = [unit.layer for unit in units if unit.layer is not None]
    layers += list(diverse_layers.values())
    optimizer = torch.optim.Adam(picture.parameters, lr=lr)
    groups = {layer: [[int(i) for i in (unit_of_image == unit).nonzero().flatten()]
                      for unit, chosen in diverse_layers.items() if chosen == layer]
              for layer in set(diverse_layers.values())}
    trajectory = []

    with held_model(model), ExitStack() as redirecting, \
            progress_reporter(progress, steps, "maximize") as report:
        # registered before the taps, so a tap on a ReLU reads the redirected output
        redirected = redirecting.enter_context(redirected_relus(model, redirect_steps > 0))
        taps = redirecting.enter_context(tapped_layers(model, layers))
        if redirected:
            notes.append(f"ReLU gradients redirected for the first {min(redirect_steps, steps)} "
                         f"steps while a picture's gradient through them is zero ({redirected} "
                         "nn.ReLU modules; lucid's redirected_relu_grad)")

        def forward(pictures: torch.Tensor) -> Any:
            for tap in taps.values():
                tap.reset()
            return adapt_output(model(space.to_model(pictures)), output_fn)

        with torch.no_grad():
            output = forward(picture())
            layouts, layout_notes = canonical_layouts(taps, (batch, channels, height, width))
            notes += layout_notes
            for unit in units:  # units out of range fail here, before any step
                unit.check(output if unit.layer is None
                           else taps[unit.layer].canonical(layouts[unit.layer]))
            start_values = _scores(units, unit_of_image, taps, layouts, output).float().cpu()
        stopped = None
        for step in range(steps):
            if step == redirect_steps and redirected:  # hooks off; the taps again alone
                redirecting.close()
                taps = redirecting.enter_context(tapped_layers(model, layers))
                redirected = 0
            pixels = picture()
            output = forward(moves(pixels))
            scores = _scores(units, unit_of_image, taps, layouts, output)
            loss = -scores.sum()
            if tv:
                loss = loss + tv * total_variation(pixels).sum()
            if l2:
                loss = loss + l2 * l2_penalty(pixels).sum()
            for layer, layer_groups in groups.items():
                loss = loss + diversity * diversity_penalty(taps[layer].canonical(layouts[layer]),
                                                            layer_groups).sum()
            values = scores.detach().float().cpu()
            trajectory.append(values)
            if not torch.isfinite(loss):
                stopped = step
                break
            adam_step(optimizer, loss, picture.parameters)
            if report is not None:
                report(step + 1, steps, float(values.mean()))
        with torch.no_grad():
            pixels = picture()
            output = forward(pixels)
            final_values = _scores(units, unit_of_image, taps, layouts, output).float().cpu()
            final_activations = {name: tap.read().detach().cpu() for name, tap in taps.items()}
            images = space.to_model(pixels).detach().cpu()
            pixels = pixels.detach().cpu()

    labels = [unit.label for unit in units]
    if stopped is not None or not torch.isfinite(final_values).all():
        message = (f"the optimisation produced NaN or infinite values"
                   f"{f' at step {stopped}' if stopped is not None else ''}; lower lr or add "
                   "tv/l2 penalties")
        notes.append(message)
        warnings.warn(message, ExplanationWarning, stacklevel=2)
    not_raised = [f"{labels[int(unit_of_image[i])]} (picture {i}: {float(start_values[i]):.4g}"
                  f" -> {float(final_values[i]):.4g})"
                  for i in range(batch)
                  if torch.isfinite(final_values[i]) and not final_values[i] > start_values[i]]
    if not_raised:
        message = ("the optimisation did not raise the objective above its start for "
                   + "; ".join(not_raised) + "; try more steps, a higher lr or lower penalties")
        notes.append(message)
        warnings.warn(message, ExplanationWarning, stacklevel=2)
    settings = {"steps": steps, "lr": lr, "seed": seed, "param": param,
                "transforms": moves.describe(), "tv": tv, "l2": l2,
                "images_per_unit": images_per_unit, "diversity": diversity,
                "diversity_layer": diversity_layer, "mean": space.mean, "std": space.std,
                "device": str(target_device), "input_shape": (channels, height, width),
                "redirect_steps": redirect_steps}
    return MaximizationResult(
        images=images, pixels=pixels, objectives=tuple(units), unit_of_image=unit_of_image,
        start_values=start_values, final_values=final_values,
        trajectory=torch.stack(trajectory) if trajectory else torch.empty(0, batch),
        final_activations=final_activations,
        output=output.detach().float().cpu() if isinstance(output, torch.Tensor) else None,
        notes=notes, settings=settings)

