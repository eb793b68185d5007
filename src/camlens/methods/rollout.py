"""Relevance through a vision transformer's attention: attention rollout and its gradient-weighted
form.

Both read every block's attention probabilities ``A_l`` ``(B, H, N, N)`` (the output of the
layers given as ``layer=[...]``, or, by default, of each timm ``Attention`` block's
``attn_drop``, its fused kernel switched off for the call and restored after) and follow the
class token's row to the patches:

- ``rollout`` (Abnar and Zuidema, ACL 2020): ``R = prod_l (0.5 mean_h A_l + 0.5 I)``, rows
  renormalised to sum to 1; class-agnostic.
- ``gradient-rollout`` (Chefer, Gur and Wolf, ICCV 2021): ``R = I``, then for each block
  ``R <- R + mean_h (grad A_l * A_l)^+ R`` with ``grad A_l = d y^c / d A_l``; class-specific.

The map is ``R[cls, patches]`` folded onto the patch grid (``token_grid`` / ``prefix_tokens`` as
for token layers, inferred from the input otherwise). One forward pass; the gradient form adds
one backward pass to every block at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from camlens.capture import capture_layer, checked_activation, named_module
from camlens.explanation import Explanation
from camlens.layouts import infer_token_grid
from camlens.methods.base import CAMMethod, Forward, layer_gradients
from camlens.targets import Target, adapt_output, resolve_target

__all__ = ["AttentionGradientRollout", "AttentionRollout", "attention_layers", "rollout"]


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are attention probabilities in a timm-style vision transformer:
    each block's ``attn_drop`` (applied to the softmax of an ``Attention`` with ``fused_attn``)."""
    found = []
    for name, module in model.named_modules():
        if hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None),
                                                           nn.Module):
            found.append((f"{name}.attn_drop" if name else "attn_drop", module.attn_drop))
    return found


_UNFUSED_LOCK = threading.Lock()
#: Per model (by id): how many calls hold its attention unfused, and the flags to restore.
_UNFUSED: dict[int, tuple[int, list[tuple[nn.Module, object]]]] = {}


@contextmanager
def unfused_attention(model: nn.Module) -> Iterator[None]:
    """timm ``Attention`` modules compute their probabilities explicitly for the block (their
    fused kernel never materialises them). Overlapping calls on one model share the change: the
    first saves the flags, the last restores them (in ``finally``)."""
    key = id(model)
    with _UNFUSED_LOCK:
        count, saved = _UNFUSED.get(key, (0, []))
        if count == 0:
            saved = [(module, module.fused_attn) for module in model.modules()
                     if hasattr(module, "fused_attn")]
            for module, _ in saved:
                setattr(module, "fused_attn", False)  # noqa: B010 - a plain attribute of timm's
        _UNFUSED[key] = (count + 1, saved)
    try:
        yield
    finally:
        with _UNFUSED_LOCK:
            count, saved = _UNFUSED.pop(key)
            if count > 1:
                _UNFUSED[key] = (count - 1, saved)
            else:
                for module, value in saved:
                    setattr(module, "fused_attn", value)  # noqa: B010


def rollout(attentions: list[torch.Tensor], gradients: list[torch.Tensor] | None = None
            ) -> torch.Tensor:
    """The relevance matrix ``R`` ``(B, [K,] N, N)`` of attentions ``(B, H, N, N)`` (plain
    rollout), or with ``gradients`` ``(B, K, H, N, N)`` the gradient-weighted rule (see the
    module docstring)."""
    batch, _, tokens, _ = attentions[0].shape
    eye = torch.eye(tokens, dtype=attentions[0].dtype, device=attentions[0].device)
    if gradients is None:
        relevance = eye.expand(batch, tokens, tokens)
        for attention in attentions:
            mixed = 0.5 * attention.mean(dim=1) + 0.5 * eye
            mixed = mixed / mixed.sum(dim=-1, keepdim=True)
            relevance = mixed @ relevance
        return relevance
    targets = gradients[0].shape[1]
    relevance = eye.expand(batch, targets, tokens, tokens)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient * attention.unsqueeze(1)).clamp(min=0).mean(dim=2)  # (B, K, N, N)
        relevance = relevance + weighted @ relevance
    return relevance


class AttentionRollout(CAMMethod):
    """Attention rollout (Abnar and Zuidema, ACL 2020): see :mod:`camlens.methods.rollout`.

    Example:
        >>> exp = AttentionRollout(vit)(images)  # doctest: +SKIP
    """

    name = "rollout"
    paper = "Abnar and Zuidema, Quantifying Attention Flow in Transformers, ACL 2020"
    uses_gradients = False

    def __init__(self, model, layer=None, **options) -> None:
        layers = layer if isinstance(layer, (list, tuple)) else ([layer] if layer else [])
        super().__init__(model, None, **options)
        self.attention_names = [named_module(model, item) for item in layers]

    def explain(self, inputs: tuple[torch.Tensor, ...], target: Target) -> Explanation:
        named = self.attention_names or attention_layers(self.model)
        if not named:
            raise ValueError(f"{self.name} needs the attention probabilities of every block: "
                             "pass layer=[...] with the modules that output them (B, H, N, N), "
                             "or use a timm vision transformer (its attn_drop layers are found)")
        explained = self.options.explained(inputs)
        with ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(unfused_attention(self.model))
            captures = [stack.enter_context(capture_layer(module, track_grad=self.uses_gradients))
                        for _, module in named]
            model_output = self.model(*inputs)
            with torch.set_grad_enabled(self.uses_gradients):
                output = adapt_output(model_output, self.options.output_fn)
                resolved, scores = resolve_target(target, output, explained.shape[0])
        attentions = []
        for capture, (name, _) in zip(captures, named, strict=True):
            attention = checked_activation(capture, name)
            shape = tuple(attention.shape)
            if len(shape) != 4 or shape[-1] != shape[-2] or shape[0] != explained.shape[0]:
                raise ValueError(f"layer {name!r} outputs {shape}, not attention probabilities "
                                 "(B, heads, tokens, tokens)")
            attentions.append(attention)
        forward = Forward(output, attentions[-1], None, resolved, scores, named[-1][0])
        gradients = None
        if self.uses_gradients:
            gradients = layer_gradients(scores, attentions)
        relevance = rollout([a.detach() for a in attentions], gradients)
        if gradients is None:
            relevance = relevance.unsqueeze(1).expand(-1, scores.shape[1], -1, -1)
        tokens = relevance.shape[-1]
        if self.options.token_grid is not None:
            grid = self.options.token_grid
            prefix = tokens - grid[0] * grid[1]
        else:
            prefix, grid = infer_token_grid(tokens, tuple(explained.shape[-2:]),
                                            self.options.prefix_tokens)
        if prefix < 1:
            raise ValueError(f"{tokens} tokens and the grid {grid} leave no class token to read "
                             "the relevance from; give token_grid=(h, w)")
        class_row = relevance[..., 0, prefix:]  # (B, K, patches)
        maps = class_row.reshape(*class_row.shape[:2], *grid)
        names = [name for name, _ in named]
        layer = "+".join(names) if len(names) <= 3 else f"{names[0]}+...+{names[-1]}"
        return self.make_explanation(forward, maps, inputs, layer, [
            f"{self.name} over {len(named)} attention layers, {prefix} prefix token(s), "
            f"grid {grid[0]}x{grid[1]}"])


class AttentionGradientRollout(AttentionRollout):
    """Gradient-weighted attention rollout (Chefer, Gur and Wolf, ICCV 2021): see
    :mod:`camlens.methods.rollout`.

    Example:
        >>> exp = AttentionGradientRollout(vit)(images, target=3)  # doctest: +SKIP
    """

    name = "gradient-rollout"
    paper = ("Chefer, Gur and Wolf, Generic Attention-model Explainability for Interpreting "
             "Bi-Modal and Encoder-Decoder Transformers, ICCV 2021")
    uses_gradients = True
