"""FullGrad (Srinivas and Fleuret, NeurIPS 2019): the full-gradient decomposition of a score.

For a network with biases, ``f(x) = grad_x f . x + sum_b grad_b f . b``: the input-gradient
term and one bias-gradient term per bias. FullGrad's saliency sums their spatial parts:

    ``S(x) = psi(grad_x f * x) + sum_l sum_c psi(grad_{z_l} f * b_l)``

where ``z_l`` is the output of a layer with a per-channel bias ``b_l`` (convolutions, and batch
norms in eval mode with ``b = beta - gamma mu / sqrt(var + eps)``), and ``psi`` takes the
absolute value, rescales each input's map to [0, 1] over its channels and positions, upsamples
bilinearly to the input, and sums the channels (the official implementation's
post-processing). The ``layer`` argument is not used: every such layer is. One forward and one
backward pass (to the input and to every bias layer at once); ``raw`` is at the input's
resolution.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import nn

from camlens.capture import capture_layer, checked_activation
from camlens.explanation import Explanation, normalize, upsample
from camlens.methods.base import CAMMethod, Forward, check_batch_axis, layer_gradients
from camlens.model_state import preserved_model_state
from camlens.targets import Target, adapt_output, resolve_target

__all__ = ["FullGrad", "bias_layers", "effective_bias"]

BIAS_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def effective_bias(module: nn.Module) -> torch.Tensor:
    """The per-channel bias a layer adds in eval mode."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        assert module.running_mean is not None and module.running_var is not None
        weight = module.weight if module.weight is not None else torch.ones_like(
            module.running_mean)
        bias = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
        return bias - module.running_mean * weight / torch.sqrt(module.running_var + module.eps)
    assert isinstance(module.bias, torch.Tensor)
    return module.bias


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers FullGrad reads: convolutions with a bias, and batch norms that track
    statistics (their eval-mode shift is a bias)."""
    chosen: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.track_running_stats and module.running_mean is not None:
                chosen.append((name, module))
        elif isinstance(module, BIAS_TYPES) and getattr(module, "bias", None) is not None:
            chosen.append((name, module))
    return chosen


def _psi(term: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """abs, rescale to [0, 1] over channels and positions per (input, target), upsample, sum
    the channels: ``(B, K, C, *S)`` -> ``(B, K, *size)``."""
    magnitude = term.abs()
    leading = magnitude.shape[:2]
    flat = magnitude.reshape(*leading, -1)
    scaled = normalize(flat, 1).reshape(magnitude.shape)
    return upsample(scaled.sum(dim=2), size)


class FullGrad(CAMMethod):
    """FullGrad saliency (see the module): input-gradient and bias-gradient terms of every layer.

    Example:
        >>> exp = FullGrad(model)(images, target=3)  # doctest: +SKIP
    """

    name = "fullgrad"
    paper = "Srinivas and Fleuret, Full-Gradient Representation, NeurIPS 2019"

    def __init__(self, model, layer=None, **options) -> None:
        super().__init__(model, None, **options)
        self.ignored_layer = layer  # said in the notes: FullGrad reads every biased layer

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        index = self.options.input_index
        explained = self.options.explained(inputs)
        if not explained.is_floating_point():
            raise ValueError(f"FullGrad differentiates the input; input {index} holds "
                             f"{explained.dtype} values")
        layers = bias_layers(self.model)
        if not layers:
            raise ValueError("FullGrad needs layers with biases (convolutions or batch norms); "
                             "this model has none")
        image = explained.detach().requires_grad_(True)
        leaf_inputs = tuple(image if i == index else tensor for i, tensor in enumerate(inputs))
        with ExitStack() as stack:
            stack.enter_context(torch.enable_grad())
            captures = [stack.enter_context(capture_layer(module, track_grad=True))
                        for _, module in layers]
            model_output = self.model(*leaf_inputs)
            output = adapt_output(model_output, self.options.output_fn)
            resolved, scores = resolve_target(target, output, image.shape[0])
            scores = self.target_scores(resolved, scores, output)
        activations = []
        for capture, (name, _) in zip(captures, layers, strict=True):
            activation = checked_activation(capture, name)
            check_batch_axis(activation.shape, image, name)
            activations.append(activation)
        gradients = layer_gradients(scores, [image, *activations])
        size = tuple(image.shape[2:])
        saliency = _psi(gradients[0] * image.detach().unsqueeze(1), size)
        for (_, module), gradient in zip(layers, gradients[1:], strict=True):
            with preserved_model_state(module), torch.no_grad():
                bias = effective_bias(module).detach()
            shaped = bias.reshape(1, 1, -1, *([1] * (gradient.ndim - 3)))
            saliency = saliency + _psi(gradient * shaped, size)
        forward = Forward(output, image.detach(), None, resolved, scores,
                          "input")
        notes = [f"fullgrad: the input and {len(layers)} bias layers"]
        if self.ignored_layer is not None:
            notes.append(f"layer={self.ignored_layer!r} was not used: FullGrad reads the input "
                         "and every layer with a bias")
        return self.make_explanation(forward, saliency.detach(), inputs, "input", notes)
