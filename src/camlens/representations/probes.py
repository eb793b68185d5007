"""Linear probes: how linearly separable the classes are at each depth (Alain and Bengio,
"Understanding intermediate layers using linear classifier probes", 2016).

A probe is a multinomial logistic regression on a layer's frozen, pooled activations
(:func:`camlens.representations.activations.layer_activations`): the network is not changed,
only a linear classifier ``softmax(W f + b)`` is fitted on top of the features ``f``. Protocol:

1. features are standardised with the mean and standard deviation of the **train** split;
2. the loss is scikit-learn's L2-penalised one, ``sum(W**2) / 2 + C * sum_i
   cross_entropy_i`` (bias not penalised), minimised in torch by full-batch L-BFGS (strong
   Wolfe line search, at most ``max_iter`` iterations, warm-started from the previous ``C``);
   ``C`` is chosen from ``c_grid`` by accuracy on the **validation** split (ties go to the
   smaller ``C``, the stronger penalty), never on the test split;
3. the probe fitted on the train split with that ``C`` is scored once on the **test** split,
   with a Wilson score 95% interval;
4. chance is the accuracy of the best constant answer on the test split (the share of its most
   frequent class): no probe that ignores its input can beat it.

``shuffle_labels=True`` fits the probe on permuted train labels (a control: the probe should
fall to chance, showing that its accuracy is the layer's, not the probe's capacity to memorise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from camlens.metrics.intervals import wilson_interval
from camlens.representations.activations import LabelledData, layer_activations
from camlens.representations.embedding import standardize

__all__ = ["C_GRID", "ProbeResult", "fit_probe", "probe_layers"]

#: Inverse L2 penalties tried on the validation split.
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ProbeResult:
    """One probe: test accuracy with its Wilson 95% interval, the validation accuracy that chose
    ``c``, chance, and the sizes."""

    layer: str
    accuracy: float
    interval: tuple[float, float]
    validation_accuracy: float
    c: float
    chance: float
    features: int
    train_size: int
    validation_size: int
    test_size: int
    shuffled_labels: bool = False

    def as_dict(self) -> dict:
        """Plain JSON-ready values."""
        values = asdict(self)
        values["interval"] = list(self.interval)
        return values



def _check_split(name: str, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(split, (tuple, list)) and len(split) == 2):
        raise TypeError(f"the {name} split must be a (features, labels) pair")
    features, labels = split
    if labels is None:
        raise ValueError(f"the {name} split has no labels; a probe needs labelled data")
    features = torch.as_tensor(features).detach().double().cpu()
    labels = torch.as_tensor(labels).long().cpu()
    if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"the {name} split needs features (N, D) and labels (N,), got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    return features, labels


def _fit_logistic(features: torch.Tensor, labels: torch.Tensor, c: float,
                  weight: torch.Tensor, bias: torch.Tensor, max_iter: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean_i CE_i + sum(W**2) / (2 C N)`` (scikit-learn's loss over ``C N``) from
    ``(weight, bias)`` by L-BFGS; returns the fitted ``(W, b)``."""
    weight = weight.clone().requires_grad_(True)
    bias = bias.clone().requires_grad_(True)
    penalty = 1.0 / (2.0 * c * len(labels))
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter,
                                  tolerance_grad=1e-6, tolerance_change=1e-9,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(features @ weight.T + bias, labels) + penalty * (
            weight**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_probe(train: Split, validation: Split, test: Split, *, layer: str = "",
              c_grid: Sequence[float] = C_GRID, shuffle_labels: bool = False, seed: int = 0,
              max_iter: int = 100) -> ProbeResult:
    """Fit and score one linear probe on ``(features, labels)`` splits (see the module's
    docstring for the protocol)."""
    train_x, train_y = _check_split("train", train)
    val_x, val_y = _check_split("validation", validation)
    test_x, test_y = _check_split("test", test)
    if not (train_x.shape[1] == val_x.shape[1] == test_x.shape[1]):
        raise ValueError(f"the splits have different feature counts: {train_x.shape[1]}, "
                         f"{val_x.shape[1]}, {test_x.shape[1]}")
    if not c_grid or any(not (isinstance(c, (int, float)) and c > 0) for c in c_grid):
        raise ValueError(f"c_grid must be positive numbers, got {tuple(c_grid)!r}")
    if shuffle_labels:
        train_y = train_y[torch.randperm(len(train_y),
                                         generator=torch.Generator().manual_seed(seed))]
    if len(torch.unique(train_y)) < 2:
        raise ValueError("the train split has one class; a probe needs at least two")
    scaled = [standardize(split, train_x).float() for split in (train_x, val_x, test_x)]
    classes = int(max(train_y.max(), val_y.max(), test_y.max())) + 1
    weight = torch.zeros(classes, scaled[0].shape[1])
    bias = torch.zeros(classes)
    best = None
    for c in sorted(c_grid, reverse=True):  # weak penalty first: a warm start for the next
        weight, bias = _fit_logistic(scaled[0], train_y, c, weight, bias, max_iter)
        score = float(((scaled[1] @ weight.T + bias).argmax(1) == val_y).float().mean())
        if best is None or score >= best[0]:
            best = (score, c, weight.clone(), bias.clone())
    assert best is not None
    validation_accuracy, c, weight, bias = best
    correct = int(((scaled[2] @ weight.T + bias).argmax(1) == test_y).sum())
    chance = float(torch.bincount(test_y).max()) / len(test_y)
    return ProbeResult(layer=layer, accuracy=correct / len(test_y),
                       interval=wilson_interval(correct, len(test_y)),
                       validation_accuracy=validation_accuracy, c=float(c), chance=chance,
                       features=int(train_x.shape[1]), train_size=len(train_y),
                       validation_size=len(val_y), test_size=len(test_y),
                       shuffled_labels=shuffle_labels)


def probe_layers(model: nn.Module, layers: str | Sequence[str], train: LabelledData,
                 validation: LabelledData, test: LabelledData, *, pooling: str = "mean",
                 grid: int = 4, c_grid: Sequence[float] = C_GRID, batch_size: int = 256,
                 seed: int = 0, device: str | torch.device | None = None
                 ) -> dict[str, ProbeResult]:
    """A linear probe per layer of ``model``: activations of the three labelled splits are
    collected (pooled by ``pooling``; the model left as it was), then :func:`fit_probe` per
    layer. Returns ``{layer: ProbeResult}`` in the order of ``layers``."""
    names = [layers] if isinstance(layers, str) else list(layers)
    splits = {}
    for name, data in (("train", train), ("validation", validation), ("test", test)):
        features, labels = layer_activations(model, data, names, pooling=pooling, grid=grid,
                                             batch_size=batch_size, device=device)
        if labels is None:
            raise ValueError(f"the {name} data have no labels; a probe needs labelled data")
        splits[name] = (features, labels)
    return {name: fit_probe(*((splits[split][0][name], splits[split][1])
                              for split in ("train", "validation", "test")),
                            layer=name, c_grid=c_grid, seed=seed)
            for name in names}
