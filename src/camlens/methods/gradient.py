"""The gradient-weighted CAM family: each method is its weighting rule.

Notation: ``A^k`` is channel k of the target layer's output, ``g^k = d y^c / d A^k`` the gradient
of the explained score ``y^c`` (a pre-softmax logit for class targets), ``Z`` the number of
positions. Every map is passed through ReLU afterwards.

Each rule gives the per-channel terms of its map, ``T^k`` with ``L = sum_k T^k``: ``alpha_k A^k``
for the methods with one weight per channel, ``w^k_ij A^k_ij`` for the per-position ones.
``eigen_smooth=True`` replaces the sum by the terms' first principal component
(:func:`eigen_projection`).
"""

from __future__ import annotations

import torch

from camlens.methods.base import GradientCAM, spatial_axes

__all__ = ["ChannelWeightedCAM", "EigenGradCAM", "GradCAM", "GradCAMPlusPlus", "HiResCAM",
           "LayerCAM", "XGradCAM", "weighted_channel_sum"]


def weighted_channel_sum(channel_weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A^k for weights ``(B, K, C)`` and activations ``(B, C, *spatial)``."""
    return torch.einsum("bkc,bc...->bk...", channel_weights, activations)


def channel_products(channel_weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """The terms ``w_k A^k`` ``(B, K, C, *spatial)`` of weights ``(B, K, C)``."""
    spatial = activations.ndim - 2
    return channel_weights.reshape(*channel_weights.shape, *([1] * spatial)) * (
        activations.unsqueeze(1))


class ChannelWeightedCAM(GradientCAM):
    """A rule with one weight per channel and target, ``L = sum_k alpha_k A^k``: subclasses
    override :meth:`channel_weights` only."""

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor
                        ) -> torch.Tensor:
        """``alpha`` ``(B, K, C)`` from activations ``(B, C, *S)`` and gradients
        ``(B, K, C, *S)``."""
        raise NotImplementedError

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return weighted_channel_sum(self.channel_weights(activations, gradients), activations)

    def channel_terms(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return channel_products(self.channel_weights(activations, gradients), activations)


class GradCAM(ChannelWeightedCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017 / IJCV 2019).

    ``alpha_k^c = (1/Z) sum_ij d y^c / d A^k_ij`` and ``L^c = ReLU(sum_k alpha_k^c A^k)``.
    On a global-average-pooling + linear head ``alpha_k^c = w_k^c / Z``: the CAM map up to scale.

    Example:
        >>> exp = GradCAM(model, layer="layer4")(images, target=TopK(3))  # doctest: +SKIP
    """

    name = "gradcam"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017 / IJCV 2019"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor
                        ) -> torch.Tensor:
        return gradients.mean(dim=spatial_axes(gradients, 3))


class HiResCAM(GradientCAM):
    """HiResCAM (Draelos and Carin, arXiv 2011.08891, 2020).

    ``L^c = ReLU(sum_k g^k * A^k)`` (element-wise): no averaging of the gradient over positions, so
    on a conv -> flatten -> linear head the map sums to ``y^c - b_c`` and shows only positions the
    model used. Equals Grad-CAM on a global-average-pooling + linear head.

    Example:
        >>> exp = HiResCAM(model, layer="features")(images)  # doctest: +SKIP
    """

    name = "hirescam"
    paper = "Draelos and Carin, Use HiResCAM instead of Grad-CAM, arXiv 2011.08891, 2020"

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return (gradients * activations.unsqueeze(1)).sum(dim=2)

    def channel_terms(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients * activations.unsqueeze(1)


class EigenGradCAM(HiResCAM):
    """Eigen-Grad-CAM (as in pytorch-grad-cam; after Eigen-CAM, Muhammad and Yeasin, IJCNN 2020):
    the first principal component of the gradient-times-activation terms ``g^k * A^k`` over the
    positions, ``L^c = ReLU(P_1(g * A))`` (:func:`~camlens.methods.base.eigen_projection`): a
    class-dependent Eigen-CAM.

    Example:
        >>> exp = EigenGradCAM(model, layer="layer4")(images)  # doctest: +SKIP
    """

    name = "eigengradcam"
    paper = "after Muhammad and Yeasin, Eigen-CAM, IJCNN 2020 (pytorch-grad-cam's variant)"
    always_eigen = True


class XGradCAM(ChannelWeightedCAM):
    """XGrad-CAM (Fu et al., BMVC 2020), from the sensitivity and conservation axioms.

    ``alpha_k^c = sum_ij (A^k_ij / sum_ab A^k_ab) * d y^c / d A^k_ij``; a channel whose
    activations sum to zero gets weight zero. ``L^c = ReLU(sum_k alpha_k^c A^k)``.

    Example:
        >>> exp = XGradCAM(model, layer="layer4")(images, target=3)  # doctest: +SKIP
    """

    name = "xgradcam"
    paper = "Fu et al., Axiom-based Grad-CAM, BMVC 2020"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor
                        ) -> torch.Tensor:
        axes = spatial_axes(gradients, 3)
        activation_sums = activations.sum(dim=spatial_axes(activations, 2)).unsqueeze(1)
        weighted = (gradients * activations.unsqueeze(1)).sum(dim=axes)
        safe_sums = torch.where(activation_sums != 0, activation_sums, torch.ones_like(weighted))
        return torch.where(activation_sums != 0, weighted / safe_sums, 0.0)


class GradCAMPlusPlus(ChannelWeightedCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018).

    With ``Y^c = exp(S^c)`` and piecewise-linear layers the pixel coefficients are
    ``a_ij^kc = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab g_ij^3)`` (zero where the denominator is zero),
    the channel weights ``w_k^c = sum_ij a_ij^kc ReLU(g_ij)``, and ``L^c = ReLU(sum_k w_k^c A^k)``,
    where ``g = d S^c / d A^k``.

    Example:
        >>> exp = GradCAMPlusPlus(model, layer="layer4")(images)  # doctest: +SKIP
    """

    name = "gradcam++"
    paper = "Chattopadhyay et al., Grad-CAM++, WACV 2018"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor
                        ) -> torch.Tensor:
        axes = spatial_axes(gradients, 3)
        activation_sums = activations.sum(dim=spatial_axes(activations, 2), keepdim=True)
        squared = gradients.pow(2)
        denominator = 2 * squared + activation_sums.unsqueeze(1) * gradients.pow(3)
        safe_denominator = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        coefficients = torch.where(denominator != 0, squared / safe_denominator, 0.0)
        return (coefficients * torch.relu(gradients)).sum(dim=axes)


class LayerCAM(GradientCAM):
    """LayerCAM (Jiang et al., IEEE TIP 2021).

    ``L^c = ReLU(sum_k ReLU(g^k) * A^k)`` (element-wise): positive gradients weight each position,
    which keeps fine detail when explaining shallow layers.

    Example:
        >>> exp = LayerCAM(model, layer="layer2")(images)  # doctest: +SKIP
    """

    name = "layercam"
    paper = "Jiang et al., LayerCAM, IEEE TIP 2021"

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return (torch.relu(gradients) * activations.unsqueeze(1)).sum(dim=2)

    def channel_terms(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return torch.relu(gradients) * activations.unsqueeze(1)
