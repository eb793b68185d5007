"""Eigen-CAM (Muhammad and Yeasin, IJCNN 2020).

The activations of one input, as a ``(positions, channels)`` matrix, are projected onto their first
right singular vector (first principal direction): ``L = ReLU(A V_1)``. No gradient, no class:
the map is the same for every target (the scores of the targets are still reported). The sign of a
singular vector is arbitrary; it is chosen so that the projection sums to a positive number.
"""

from __future__ import annotations

import torch

from camlens.explanation import Explanation
from camlens.methods.base import CAMMethod
from camlens.targets import Target


class EigenCAM(CAMMethod):
    """Eigen-CAM: the activations projected on their first principal direction (class-agnostic)."""

    name = "eigencam"
    needs_gradients = False

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        layer_name, module, notes = self.target_layer(inputs)
        forward = self.hooked_forward(inputs, target, layer_name, module, track_grad=False)
        activations = forward.canonical()
        positions_by_channels = activations.flatten(2).transpose(1, 2)  # (B, P, C)
        _, _, right_vectors = torch.linalg.svd(positions_by_channels, full_matrices=False)
        projection = positions_by_channels @ right_vectors[:, 0, :].unsqueeze(-1)  # (B, P, 1)
        sign = torch.where(projection.sum(dim=(1, 2), keepdim=True) < 0, -1.0, 1.0)
        maps = (projection * sign).reshape(activations.shape[0], 1, *activations.shape[2:])
        num_targets = forward.scores.shape[1]
        raw = maps.expand(-1, num_targets, *maps.shape[2:])
        return self.make_explanation(forward, raw, inputs, layer_name, notes)
