"""Eigen-CAM (Muhammad and Yeasin, IJCNN 2020).

The activations of one input, as a ``(positions, channels)`` matrix, are projected onto their first
right singular vector (first principal direction): ``L = ReLU(A V_1)``. No gradient, no class:
the map is the same for every target (the scores of the targets are still reported). The sign of a
singular vector is arbitrary; it is chosen so that the projection sums to a positive number.
"""

from __future__ import annotations

import torch

from camlens.methods.base import Forward, LayerMapMethod

__all__ = ["EigenCAM"]


class EigenCAM(LayerMapMethod):
    """Eigen-CAM: the activations projected on their first principal direction (class-agnostic).

    Example:
        >>> exp = EigenCAM(model, layer="layer4")(images)  # doctest: +SKIP
    """

    name = "eigencam"
    paper = "Muhammad and Yeasin, Eigen-CAM, IJCNN 2020"

    def layer_map(self, forward: Forward, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        activations = forward.canonical()
        # The SVD runs in float32 at least: half precision has no SVD, and would lose the
        # smaller singular values anyway.
        dtype = torch.promote_types(activations.dtype, torch.float32)
        positions_by_channels = activations.flatten(2).transpose(1, 2).to(dtype)  # (B, P, C)
        _, _, right_vectors = torch.linalg.svd(positions_by_channels, full_matrices=False)
        projection = positions_by_channels @ right_vectors[:, 0, :].unsqueeze(-1)  # (B, P, 1)
        sign = torch.where(projection.sum(dim=(1, 2), keepdim=True) < 0, -1.0, 1.0)
        maps = (projection * sign).reshape(activations.shape[0], 1, *activations.shape[2:])
        maps = maps.to(activations.dtype)
        return maps.expand(-1, forward.scores.shape[1], *maps.shape[2:])
