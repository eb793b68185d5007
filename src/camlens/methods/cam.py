"""Class activation mapping (Zhou et al., "Learning Deep Features for Discriminative
Localization", CVPR 2016).

For a network whose last conv layer ``f`` feeds global average pooling and one linear layer,
``y^c = sum_k w_k^c GAP(f_k) + b_c``, so ``M^c(i,j) = sum_k w_k^c f_k(i,j)`` is the map whose
average is the class score (less the bias). No gradient is needed, and the maps of every class
come from one forward pass and one matrix product.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from camlens._calls import current, is_current
from camlens.methods.base import Forward, LayerMapMethod, nearly_equal, spatial_axes
from camlens.methods.gradient import channel_products, weighted_channel_sum

__all__ = ["CAM", "gap_linear_weights"]


class CAM(LayerMapMethod):
    """CAM: ``M^c = sum_k w_k^c f_k`` with ``w`` the weights of the linear layer after global
    average pooling (found by watching the forward pass: the linear layer whose input is the
    spatial mean, or sum, of the target layer's output and whose output is the model's).

    Example:
        >>> exp = CAM(model, layer="layer4")(images, target="all")  # doctest: +SKIP
    """

    name = "cam"
    paper = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    uses_gradients = False
    has_channel_terms = True

    @contextmanager
    def watch(self) -> Iterator[list[tuple[nn.Linear, torch.Tensor, torch.Tensor]]]:
        """Record every linear layer's input and output during the forward pass."""
        linear_calls: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []
        token = current()

        def record(linear: nn.Linear, args: tuple, output: torch.Tensor) -> None:
            if is_current(token) and args and isinstance(args[0], torch.Tensor):
                linear_calls.append((linear, args[0], output))

        handles = [module.register_forward_hook(record) for module in self.model.modules()
                   if isinstance(module, nn.Linear)]
        try:
            yield linear_calls
        finally:
            for handle in handles:
                handle.remove()

    def layer_terms(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        self.layer_map(forward, inputs)  # the same checks
        activations = forward.canonical()
        class_weights = gap_linear_weights(activations, forward, forward.watched,
                                           forward.layer_name)
        assert forward.target.classes is not None
        return channel_products(class_weights[forward.target.classes], activations)

    def layer_map(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if forward.target.classes is None:
            raise ValueError(
                "CAM explains class scores; a callable target needs method='gradcam' (or another "
                "gradient method)"
            )
        activations = forward.canonical()
        class_weights = gap_linear_weights(activations, forward, forward.watched,
                                           forward.layer_name)
        classes = forward.target.classes
        every_class = torch.arange(class_weights.shape[0], device=classes.device)
        if classes.shape[1] == len(every_class) and torch.equal(classes, every_class.expand_as(
            classes
        )):  # all classes: one product with the weight matrix, no per-input weight copies
            return torch.einsum("kc,bc...->bk...", class_weights, activations)
        return weighted_channel_sum(class_weights[classes], activations)


def gap_linear_weights(
    activations: torch.Tensor,
    forward: Forward,
    linear_calls: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]],
    layer_name: str,
) -> torch.Tensor:
    """The ``(num_classes, C)`` weights of the linear layer that reads the pooled activations."""
    mean_pooled = activations.mean(dim=spatial_axes(activations, 2))
    output = forward.output
    for linear, linear_input, linear_output in reversed(linear_calls):
        if linear_input.shape != mean_pooled.shape or linear_output.shape != output.shape:
            continue
        summed = mean_pooled * activations[0, 0].numel()
        # Does this layer give the output, and read the mean (or the sum) of the activations?
        # Three checks, one host transfer (each would stall a GPU's queue).
        gives_output, reads_mean, reads_sum = torch.stack([
            nearly_equal(linear_output, output),
            nearly_equal(linear_input, mean_pooled),
            nearly_equal(linear_input, summed),
        ]).tolist()
        if gives_output and (reads_mean or reads_sum):
            return linear.weight
    raise ValueError(
        f"CAM needs the target layer to feed global average pooling followed by one linear layer "
        f"that gives the model's output; layer {layer_name!r} does not in this model. Use "
        "method='gradcam', which works on any network (and equals CAM where CAM applies)"
    )
