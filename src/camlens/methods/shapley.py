"""Shapley-CAM (Cai, Wang, Liu et al., "CAMs as Shapley value-based explainers", 2025).

Read as a cooperative game over positions, a channel's Shapley value to second order weighs its
activations by the gradient corrected with the Hessian: ``w_k = (1/Z) sum_ij (g - 1/2 H A)^k_ij``
with ``H A`` the Hessian-vector product of the score with the activations
(``d (g . A) / d A`` with ``A`` held as the vector), and ``L = ReLU(sum_k w_k A^k)``.

On a network that is piecewise linear after the layer, ``H A`` is zero for a logit, so the paper
explains the ReST score ``y_c + log softmax(y)_c`` (the logit plus the log-probability); that is
the default here (``score="rest"``), ``score="logit"`` explains the logit itself (then equal to
Grad-CAM on piecewise-linear heads). The extra cost is one more backward pass per target.
"""

from __future__ import annotations

from typing import Any

import torch

from camlens.methods.base import CAMMethod, Forward, spatial_axes
from camlens.methods.gradient import ChannelWeightedCAM, channel_products
from camlens.targets import ResolvedTarget, class_logits

__all__ = ["ShapleyCAM"]


class ShapleyCAM(ChannelWeightedCAM):
    """Shapley-CAM: Grad-CAM's channel weights from ``g - 1/2 H A`` (see the module).

    Example:
        >>> exp = ShapleyCAM(model, layer="layer4")(images)  # doctest: +SKIP
    """

    name = "shapleycam"
    paper = "Cai et al., CAMs as Shapley value-based explainers, 2025"
    can_differentiate = False  # its Hessian products already take the second order

    def __init__(self, model, layer=None, *, score: str = "rest", **options) -> None:
        super().__init__(model, layer, **options)
        if score not in ("rest", "logit"):
            raise ValueError(f"score must be 'rest' or 'logit', got {score!r}")
        self.score = score

    def target_scores(self, resolved: ResolvedTarget, scores: torch.Tensor, output: Any
                      ) -> torch.Tensor:
        if self.score == "logit" or resolved.classes is None:
            return scores
        logits = class_logits(output)
        rest = logits + torch.log_softmax(logits, dim=1)
        return rest.gather(1, resolved.classes)

    def corrected_gradients(self, forward: Forward) -> torch.Tensor:
        """``g - 1/2 H A`` per target ``(B, K, *activation.shape[1:])``."""
        activation = forward.activation
        corrected = []
        for k in range(forward.scores.shape[1]):
            with torch.enable_grad():
                total = forward.scores[:, k].sum()
                (gradient,) = torch.autograd.grad(total, activation, retain_graph=True,
                                                  create_graph=True, allow_unused=True)
            if gradient is None:
                corrected.append(torch.zeros_like(activation))
                continue
            hessian_product = None
            if gradient.requires_grad:
                (hessian_product,) = torch.autograd.grad(gradient, activation,
                                                         grad_outputs=activation.detach(),
                                                         retain_graph=True, allow_unused=True)
            hvp = torch.zeros_like(activation) if hessian_product is None else hessian_product
            corrected.append((gradient - 0.5 * hvp).detach())
        return torch.stack(corrected, dim=1)

    # The Hessian products need each layer's graph of its own: one pass per layer.
    explain_layers = CAMMethod.explain_layers

    def gradients_of(self, forward: Forward) -> torch.Tensor:
        canonical = forward.canonical(self.corrected_gradients(forward))
        return -canonical if self.counterfactual else canonical

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor
                        ) -> torch.Tensor:
        return gradients.mean(dim=spatial_axes(gradients, 3))

    def channel_terms(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return channel_products(self.channel_weights(activations, gradients), activations)

