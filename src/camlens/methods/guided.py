"""Guided backpropagation and Guided Grad-CAM: maps at the input's own resolution.

Guided backpropagation (Springenberg et al., "Striving for Simplicity", ICLR 2015 workshop):
the gradient of the score with respect to the input, where every ReLU passes back only positive
gradients at positions where its input was positive: ``R_in = 1[x > 0] * ReLU(R_out)``. The map
is the largest magnitude over the input's channels (Simonyan et al. 2014's convention);
``attributions`` keeps the signed gradient image.

Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the upsampled Grad-CAM map.

Guided ReLUs are put in place for one forward by a ``TorchFunctionMode`` that swaps every ReLU call
(``nn.ReLU``, ``F.relu``, ``torch.relu``, in place or not) for the guided one; the model itself is
not touched. Other activations (GELU, SiLU, ...) pass gradients unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from camlens.capture import Layout
from camlens.explanation import Explanation, normalize, upsample
from camlens.methods.base import CAMMethod, Forward, score_gradients
from camlens.methods.gradient import GradCAM
from camlens.targets import Target, adapt_output, resolve_target

__all__ = ["GuidedBackprop", "GuidedGradCAM"]


class GuidedReLUFunction(torch.autograd.Function):
    """ReLU forward; backward passes ``1[x > 0] * ReLU(grad)``."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        result = tensor.clamp(min=0)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        (result,) = ctx.saved_tensors
        return gradient.clamp(min=0) * (result > 0)


RELU_FUNCTIONS = frozenset(
    {torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu, torch.Tensor.relu_}
)


class GuidedReLUMode(TorchFunctionMode):
    """While active, every ReLU call computes :class:`GuidedReLUFunction` (out of place)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELU_FUNCTIONS:
            return GuidedReLUFunction.apply(args[0])
        return func(*args, **(kwargs or {}))


class GuidedBackprop(CAMMethod):
    """Guided backpropagation: input-resolution maps, no target layer (``layer`` is ignored).

    Example:
        >>> exp = GuidedBackprop(model)(images).attributions  # doctest: +SKIP
    """

    name = "guided-backprop"
    paper = "Springenberg et al., Striving for Simplicity, ICLR Workshop 2015"

    def __init__(self, model, layer=None, **options) -> None:
        super().__init__(model, None, **options)
        self.ignored_layer = layer  # said in the notes: the maps are input gradients

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        forward, gradients = self.input_gradients(inputs, target)
        explained = self.options.explained(inputs)
        saliency = gradients.abs().amax(dim=2) if explained.ndim >= 3 else gradients.abs()
        notes = [] if self.ignored_layer is None else [
            f"layer={self.ignored_layer!r} was not used: guided backpropagation maps the input"]
        return self.make_explanation(
            forward, saliency, inputs, "input", notes, attributions=gradients.detach()
        )

    def input_gradients(
        self, inputs: tuple[torch.Tensor, ...], target: Target
    ) -> tuple[Forward, torch.Tensor]:
        """The forward record and guided gradients ``(B, K, *input.shape[1:])``."""
        index = self.options.input_index
        image = inputs[index].detach().requires_grad_(True)
        with torch.enable_grad(), GuidedReLUMode():
            output = adapt_output(self.model(*inputs[:index], image, *inputs[index + 1 :]),
                                  self.options.output_fn)
            resolved, scores = resolve_target(target, output, image.shape[0])
        forward = Forward(output, image.detach(), Layout("channels_first"), resolved, scores)
        return forward, score_gradients(scores, image)


class GuidedGradCAM(CAMMethod):
    """Guided Grad-CAM: guided backpropagation times the upsampled, normalised Grad-CAM map of the
    same targets (Selvaraju et al. 2017), at the input's resolution.

    Example:
        >>> exp = GuidedGradCAM(model, layer="layer4")(images)  # doctest: +SKIP
    """

    name = "guided-gradcam"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017"

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        gradcam = GradCAM(self.model, self.layer, **self.options.as_keywords())
        return self.guided(gradcam.explain(inputs, target), inputs, target)

    def explain_layers(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        """Guided backpropagation times the fused Grad-CAM map of the layers."""
        gradcam = GradCAM(self.model, self.layers, fuse=self.fuse,
                          **self.options.as_keywords())
        return self.guided(gradcam.explain_layers(inputs, target), inputs, target)

    def guided(self, gradcam: Explanation, inputs: tuple[torch.Tensor, ...], target: Target
               ) -> Explanation:
        """Guided backpropagation of the same targets as ``gradcam``, times its map."""
        same_targets = target if gradcam.targets is None else gradcam.targets
        guided = GuidedBackprop(self.model, output_fn=self.options.output_fn)
        forward, gradients = guided.input_gradients(inputs, same_targets)
        spatial_ndim = len(gradcam.input_size)
        has_channels = self.options.explained(inputs).ndim >= 3
        saliency = gradients.abs().amax(dim=2) if has_channels else gradients.abs()
        gradcam_raw = gradcam.raw if gradcam.raw.ndim - spatial_ndim == 2 else gradcam.raw[:, None]
        coarse = normalize(upsample(gradcam_raw, tuple(saliency.shape[2:])), spatial_ndim)
        return self.make_explanation(
            forward,
            saliency * coarse,
            inputs,
            gradcam.layer,
            gradcam.notes,
            attributions=(gradients * (coarse.unsqueeze(2) if has_channels else coarse)).detach(),
        )
