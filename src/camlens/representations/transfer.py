"""How transferable are features at each depth? (Yosinski, Clune, Bengio and Lipson, "How
transferable are features in deep neural networks?", NeurIPS 2014), on the digits.

Protocol (the paper's, scaled down to the digits):

1. The ten classes are split at random into two halves, A and B (five classes each;
   :func:`class_split`, seeded), and the data into the images of A and those of B.
2. Two base networks of the same architecture (:class:`TransferNet`, ``L`` layers) are trained
   from scratch, ``baseA`` on A and ``baseB`` on B.
3. For each depth ``n = 1 .. L-1`` four networks are trained on B, each starting from a fresh
   random initialisation with its first ``n`` layers replaced by copies
   (:func:`copy_layers`):

   - ``AnB``: the first ``n`` layers of baseA, frozen (only layers ``n+1 .. L`` learn);
   - ``BnB``: the first ``n`` layers of baseB, frozen (the control: same task, no transfer);
   - ``AnB+`` and ``BnB+``: the same copies, fine-tuned (every layer learns).

4. Each network is scored on the test images of B. The paper's Figure 2 plots these accuracies
   against ``n``: BnB drops in the middle (features that were co-adapted with the layers above
   cannot be re-learned in isolation: "fragile co-adaptation"), AnB drops further at the top
   (features become specific to A's classes), and AnB+ recovers to or above baseB.

The last layer (the classifier) is never copied. Every network trains with the same recipe
(:class:`TransferRecipe`: Adam, epochs, batch size, cosine-decayed learning rate). Its values
(and :data:`TRANSFER_CANVAS`) were settled in short trials that scored base networks only, on
the test part's images of seed 0, which thereby served as validation data (``camlens
reproduce transfer`` scores on images of another seed); the transfer conditions were not
compared while choosing, and the recipe treats every condition alike. The convolutional layers
carry batch normalisation (without it this small network trains too unevenly in a few epochs);
a frozen layer runs in eval mode, with the copied running statistics, so it is exactly the
copied function, and its output is computed once and reused for every epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from camlens.data.digits import ClutteredDigits, DigitCanvasConfig, materialize

__all__ = ["CONDITIONS", "TRANSFER_CANVAS", "TransferNet", "TransferRecipe", "class_split",
           "copy_layers", "evaluate_accuracy", "subset", "train_network", "transfer_data",
           "transfer_experiment", "transfer_network"]

#: The four transferred networks of the paper, in its notation.
CONDITIONS = ("AnB", "AnB+", "BnB", "BnB+")

#: Cluttered digits on a 32 x 32 canvas (the shipped models' 64 x 64 scaled by half: digits
#: 14-20 pixels, 2-4 clutter fragments), so that 22 networks per seed train in minutes on a CPU.
TRANSFER_CANVAS = DigitCanvasConfig(canvas=(32, 32), digit_size=(14, 20), clutter=(2, 4),
                                    fragment=(3, 4), fragment_scale=2)


def transfer_data(train_size: int = 6000, test_size: int = 2000, train_seed: int = 5,
                  test_seed: int = 0, progress: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train images, train labels, test images, test labels)`` of :data:`TRANSFER_CANVAS`
    cluttered digits: train images from the train part of the source digits, test images from
    the test part (seed 0 by default, like every camlens test set)."""
    train = materialize(ClutteredDigits(train_size, "train", train_seed, TRANSFER_CANVAS),
                        keys=("image", "label"), progress=progress,
                        description="transfer: train data")
    test = materialize(ClutteredDigits(test_size, "test", test_seed, TRANSFER_CANVAS),
                       keys=("image", "label"), progress=progress,
                       description="transfer: test data")
    return train["image"], train["label"], test["image"], test["label"]


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2,
                                   bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(), nn.MaxPool2d(2))


class TransferNet(nn.Module):
    """A small digits network as a list of layers, so "the first ``n`` layers" is well defined.

    For 1 x 32 x 32 canvases (:data:`TRANSFER_CANVAS`): conv 3x3 (8) + BN + ReLU + max pool
    -> 8 x 16 x 16; conv 3x3 (16) + BN + ReLU + max pool -> 16 x 8 x 8; conv 3x3 (32) + BN +
    ReLU + max pool -> 32 x 4 x 4; flatten + fully connected (128) + ReLU; fully connected (64)
    + ReLU; fully connected (``num_classes``): six layers, the paper's eight (five
    convolutional, three fully connected) scaled down."""

    def __init__(self, num_classes: int = 5, in_channels: int = 1, canvas: int = 32) -> None:
        super().__init__()
        side = canvas // 8
        self.layers = nn.ModuleList([
            _conv(in_channels, 8, 3),
            _conv(8, 16, 3),
            _conv(16, 32, 3),
            nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, 128), nn.ReLU()),
            nn.Sequential(nn.Linear(128, 64), nn.ReLU()),
            nn.Linear(64, num_classes),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def transfer_network(num_classes: int = 5, seed: int = 0) -> TransferNet:
    """A freshly initialised :class:`TransferNet`, its weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TransferNet(num_classes)


@dataclass(frozen=True)
class TransferRecipe:
    """How every network of the experiment is trained (the same for every condition)."""

    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    #: The learning rate falls from ``learning_rate`` to 0 along a cosine over all steps, so
    #: every network ends converged to the same schedule.
    cosine_decay: bool = True


def class_split(seed: int, classes: int = 10) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Halves A and B of ``range(classes)``, drawn at random from ``seed`` (each sorted)."""
    if classes < 2:
        raise ValueError(f"classes must be at least 2, got {classes}")
    order = torch.randperm(classes, generator=torch.Generator().manual_seed(seed)).tolist()
    half = classes // 2
    return tuple(sorted(order[:half])), tuple(sorted(order[half:]))


def subset(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``classes``, with their labels renumbered 0..len(classes)-1 in the order
    of ``classes``."""
    classes = [int(c) for c in classes]
    if not classes or min(classes) < 0:
        raise ValueError(f"classes must be non-negative class indices, got {classes!r}")
    lookup = torch.full((max(int(labels.max()), *classes) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    keep = lookup[labels] >= 0
    return images[keep], lookup[labels[keep]]


def copy_layers(source: TransferNet, target: TransferNet, n: int, *, freeze: bool) -> None:
    """Copy the first ``n`` layers of ``source`` into ``target`` (parameters and batch-norm
    statistics), frozen (``requires_grad=False``, run in eval mode by :func:`train_network`) or
    trainable; the classifier (the last layer) cannot be copied."""
    last = len(target.layers) - 1
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= last:
        raise ValueError(f"n must be an int in [0, {last}] (the classifier is never copied), "
                         f"got {n!r}")
    if len(source.layers) != len(target.layers):
        raise ValueError(f"source has {len(source.layers)} layers, target {len(target.layers)}")
    for index in range(n):
        target.layers[index].load_state_dict(source.layers[index].state_dict())
        target.layers[index].requires_grad_(not freeze)


def _frozen(layer: nn.Module) -> bool:
    return all(not parameter.requires_grad for parameter in layer.parameters())


def train_network(network: TransferNet, images: torch.Tensor, labels: torch.Tensor,
                  recipe: TransferRecipe = TransferRecipe(), seed: int = 0) -> TransferNet:
    """Train the parameters of ``network`` that require grad with Adam and cross-entropy
    (``recipe``: cosine-decayed learning rate; batches drawn in an order from ``seed``);
    returns it in eval mode.

    Frozen layers stay in eval mode; the output of the frozen leading layers is computed once
    (the same values every epoch would recompute)."""
    trainable = [parameter for parameter in network.parameters() if parameter.requires_grad]
    if not trainable:
        raise ValueError("every parameter of the network is frozen; nothing to train")
    optimizer = torch.optim.Adam(trainable, lr=recipe.learning_rate,
                                 weight_decay=recipe.weight_decay)
    shuffler = torch.Generator().manual_seed(seed)
    layers = list(network.layers)
    prefix = 0
    while prefix < len(layers) and _frozen(layers[prefix]):
        prefix += 1
    network.eval()
    with torch.no_grad():
        inputs = torch.cat([nn.Sequential(*layers[:prefix])(images[start:start + 500])
                            for start in range(0, len(images), 500)])
    head = nn.Sequential(*layers[prefix:])
    for layer in layers[prefix:]:
        layer.train(not _frozen(layer))
    steps = recipe.epochs * -(-len(labels) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if (
        recipe.cosine_decay) else None
    for _ in range(recipe.epochs):
        order = torch.randperm(len(labels), generator=shuffler)
        for start in range(0, len(labels), recipe.batch_size):
            rows = order[start:start + recipe.batch_size]
            loss = F.cross_entropy(head(inputs[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    return network.eval()


def evaluate_accuracy(network: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 500) -> float:
    """Top-1 accuracy of ``network`` (eval mode, no gradients)."""
    network.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            scores = network(images[start:start + batch_size])
            correct += int((scores.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / len(labels)


def transfer_experiment(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    depths: Sequence[int] | None = None,
    conditions: Sequence[str] = CONDITIONS,
    recipe: TransferRecipe = TransferRecipe(),
    log: Callable[[str], None] | None = None,
    budget_control: bool = True,
) -> list[dict]:
    """Run the protocol of the module's docstring once per seed (the seed draws the A/B split,
    every initialisation and every batch order) and return one record per trained network:
    ``{"seed", "split_a", "split_b", "condition" ("baseA", "baseB", "baseB-2x" or one of
    CONDITIONS), "n", "accuracy" (on B's test images; baseA's on A's), "seconds"}``.

    ``budget_control``: also train ``baseB-2x``, baseB from scratch for twice the epochs. A
    fine-tuned network (``+``) trains its copied layers twice (once in the base, once after
    the copy), so it is compared with a base of the same training budget too."""
    unknown = [name for name in conditions if name not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition {unknown[0]!r}; choose from {', '.join(CONDITIONS)}")
    layer_count = len(TransferNet().layers)
    depths = list(range(1, layer_count)) if depths is None else list(depths)
    for n in depths:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < layer_count:
            raise ValueError(f"depths must be ints in [1, {layer_count - 1}], got {n!r}")
    records: list[dict] = []
    for seed in seeds:
        records.extend(_one_seed(seed, train_images, train_labels, test_images, test_labels,
                                 depths, conditions, recipe, log, budget_control))
    return records


def _one_seed(seed: int, train_images: torch.Tensor, train_labels: torch.Tensor,
              test_images: torch.Tensor, test_labels: torch.Tensor, depths: Sequence[int],
              conditions: Sequence[str], recipe: TransferRecipe,
              log: Callable[[str], None] | None, budget_control: bool) -> list[dict]:
    """The records of one seed of :func:`transfer_experiment`."""
    records: list[dict] = []
    split_a, split_b = class_split(seed)
    a_train, b_train = (subset(train_images, train_labels, half) for half in (split_a, split_b))
    a_test, b_test = (subset(test_images, test_labels, half) for half in (split_a, split_b))

    def run(name: str, n: int, network: TransferNet, data: tuple, test: tuple,
            init: int, recipe: TransferRecipe = recipe) -> TransferNet:
        started = time.perf_counter()
        train_network(network, *data, recipe=recipe, seed=init)
        accuracy = evaluate_accuracy(network, *test)
        records.append({"seed": seed, "split_a": list(split_a), "split_b": list(split_b),
                        "condition": name, "n": n, "accuracy": accuracy,
                        "seconds": round(time.perf_counter() - started, 2)})
        if log:
            log(f"seed {seed}: {name} n={n}: {accuracy:.4f}")
        return network

    base_seed = 1000 * seed
    base_a = run("baseA", 0, transfer_network(len(split_a), base_seed + 1), a_train, a_test,
                 base_seed + 1)
    base_b = run("baseB", 0, transfer_network(len(split_b), base_seed + 2), b_train, b_test,
                 base_seed + 2)
    if budget_control:
        run("baseB-2x", 0, transfer_network(len(split_b), base_seed + 2), b_train, b_test,
            base_seed + 2, replace(recipe, epochs=2 * recipe.epochs))
    for n in depths:
        for index, name in enumerate(conditions):
            init = base_seed + 10 * n + index + 3
            network = transfer_network(len(split_b), init)
            copy_layers(base_a if name.startswith("A") else base_b, network, n,
                        freeze=not name.endswith("+"))
            run(name, n, network, b_train, b_test, init)
    return records
