"""Train the shipped reference models, reproducibly from a seed (``camlens train NAME``).

Training data are generated from scikit-learn's digits (train part only); test accuracy is
measured on a fixed test set (test part of the source digits, seed 0), the same for every model
and every training seed, so accuracies compare.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from camlens.data.digits import BiasedDigits, ClutteredDigits, materialize
from camlens.zoo.registry import entry, weights_path

TEST_SEED = 0


@dataclass(frozen=True)
class TrainingRecipe:
    epochs: int = 8
    train_size: int = 16000
    test_size: int = 2000
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4


def datasets(kind: str, train_size: int, test_size: int, seed: int):
    """(train, test) data sets of a model's ``dataset`` kind."""
    if kind == "cluttered":
        return (ClutteredDigits(train_size, "train", seed),
                ClutteredDigits(test_size, "test", TEST_SEED))
    if kind == "biased":
        return (BiasedDigits(train_size, "train", seed),
                BiasedDigits(test_size, "test", TEST_SEED, mark="random"))
    raise ValueError(f"unknown training data set {kind!r}; known: cluttered, biased")


def stacked(dataset, progress: bool, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a whole data set, generated once."""
    batch = materialize(dataset, keys=("image", "label"), progress=progress, description=label)
    return batch["image"], batch["label"]


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (run in eval mode, mode restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(labels)


def train(name: str, *, seed: int = 0, recipe: TrainingRecipe | None = None,
          out: str | Path | None = None, progress: bool = True) -> dict:
    """Train zoo model ``name`` and save it as safetensors (default: the shipped weights' path).

    Returns the training summary, which is also stored in the file's metadata."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    spec = entry(name)
    recipe = recipe or TrainingRecipe()
    started = time.perf_counter()
    torch.manual_seed(seed)
    train_set, test_set = datasets(spec.dataset, recipe.train_size, recipe.test_size, seed)
    train_images, train_labels = stacked(train_set, progress, "generating train data")
    test_images, test_labels = stacked(test_set, progress, "generating test data")

    model = spec.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate,
                                  weight_decay=recipe.weight_decay)
    steps_per_epoch = -(-len(train_labels) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch
    )
    shuffler = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=recipe.epochs * steps_per_epoch, desc=f"training {name}",
               disable=not progress)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(train_labels), generator=shuffler)
        for start in range(0, len(order), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            loss = F.cross_entropy(model(train_images[batch]), train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    summary = {
        "name": name,
        "seed": seed,
        "epochs": recipe.epochs,
        "train_size": recipe.train_size,
        "test_size": recipe.test_size,
        "test_accuracy": round(accuracy(model, test_images, test_labels), 4),
        "train_accuracy": round(accuracy(model, train_images, train_labels), 4),
        "train_seconds": round(time.perf_counter() - started, 1),
        "command": f"camlens train {name} --seed {seed}",
        "torch": torch.__version__,
    }
    path = Path(out) if out is not None else weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(path), metadata={key: str(value) for key, value in summary.items()})
    summary["path"] = str(path)
    return summary
