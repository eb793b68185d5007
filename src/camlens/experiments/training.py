"""Train the shipped reference models, reproducibly from a seed (``camlens train NAME``).

Training data are generated from scikit-learn's digits (train part only); test accuracy is
measured on a fixed test set (test part of the source digits, seed 0), the same for every model
and every training seed, so accuracies compare.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from camlens.data.digits import BiasedDigits, ClutteredDigits, DigitScenes, materialize
from camlens.model_state import preserved_model_state
from camlens.targets import predicted_classes
from camlens.zoo.registry import get_weights, weights_path

__all__ = ["AccentTask", "CaptionTask", "ClassificationTask", "DetectionTask", "RECIPES", "TASKS",
           "TEST_SEED", "TrainingRecipe", "accuracy", "caption_accuracy", "datasets",
           "detection_scores", "run_epochs", "fit", "permuted_labels", "train"]

TEST_SEED = 0


@dataclass(frozen=True)
class TrainingRecipe:
    epochs: int = 8
    train_size: int = 16000
    test_size: int = 2000
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    #: Biased data sets only: the share of training images whose mark sits at the label's spot
    #: (None: BiasedDigits' default, 0.99; 0.0: marks at random spots, a balanced set).
    bias: float | None = None
    #: The data randomization test of Adebayo et al. ("Sanity Checks for Saliency Maps", NeurIPS
    #: 2018): train on the same images with their labels permuted (a random permutation of the
    #: training labels drawn from the seed, so class frequencies are kept). Test accuracy, on the
    #: true test labels, should then be about chance; train accuracy (on the permuted labels)
    #: says how far the network memorised them. Classification data sets only.
    permuted_labels: bool = False


#: Recipes that differ from the default, by model name.
RECIPES = {"digits-captioner": TrainingRecipe(epochs=12, train_size=16000, test_size=1000,
                                                learning_rate=1e-2)}
# Accent recordings: train_size and test_size count recordings, half mixed and half whole.
RECIPES["accent-attention"] = TrainingRecipe(epochs=12, train_size=2400, test_size=800,
                                             batch_size=32, learning_rate=3e-3,
                                             weight_decay=1e-3)
# The uniform-pooling control of accent-attention: the same recipe.
RECIPES["accent-mean"] = RECIPES["accent-attention"]
RECIPES["digits-detector"] = TrainingRecipe(epochs=8, train_size=6000, test_size=1000,
                                            batch_size=64, learning_rate=3e-3)
# The debiased control of digits-biased (Grad-CAM paper, Section 6.3: the same model retrained on
# a balanced set): the same images, every mark at a random spot.
RECIPES["digits-debiased"] = TrainingRecipe(bias=0.0)
RECIPES["accent-cnn"] = TrainingRecipe(epochs=12, train_size=2400, test_size=800, batch_size=32,
                                       learning_rate=3e-3, weight_decay=1e-3)


def datasets(kind: str, train_size: int, test_size: int, seed: int,
             bias: float | None = None):
    """(train, test) data sets of a model's ``dataset`` kind; ``bias``: see
    :attr:`TrainingRecipe.bias` (refused for a data set without marks)."""
    if bias is not None and kind != "biased":
        raise ValueError(f"bias={bias!r} applies to the biased digits only; this model trains on "
                         f"{kind!r} data")
    if kind == "cluttered":
        return (ClutteredDigits(train_size, "train", seed),
                ClutteredDigits(test_size, "test", TEST_SEED))
    if kind == "biased":
        train_set = (BiasedDigits(train_size, "train", seed) if bias is None
                     else BiasedDigits(train_size, "train", seed, bias=bias))
        return train_set, BiasedDigits(test_size, "test", TEST_SEED, mark="random")
    if kind in ("scenes", "scene-boxes"):
        return (DigitScenes(train_size, "train", seed), DigitScenes(test_size, "test", TEST_SEED))
    if kind == "accents":
        return _accent_datasets(train_size, test_size, seed)
    raise ValueError(f"unknown training data set {kind!r}; known: cluttered, biased, scenes, "
                     "scene-boxes, accents")


def _accent_datasets(train_size: int, test_size: int, seed: int):
    """(train, test) accent recordings, each half mixed and half whole (:mod:`camlens.data.
    speech`); the test recordings use the test split's words, which no training recording has.

    Both kinds are trained on: mixed recordings, where only the accent voice's words carry the
    label, teach the model to look for accented words among neutral ones and across silence and
    noise; whole recordings are what a user's recording looks like."""
    from torch.utils.data import ConcatDataset

    from camlens.data.speech import AccentRecordings

    def both_kinds(size: int, split: str, data_seed: int) -> ConcatDataset:
        mixed = size // 2
        return ConcatDataset([AccentRecordings(mixed, split, "mixed", data_seed),
                              AccentRecordings(size - mixed, split, "whole", data_seed)])

    return both_kinds(train_size, "train", seed), both_kinds(test_size, "test", TEST_SEED)


class ClassificationTask:
    """Images -> one class; cross-entropy; top-1 accuracy."""

    def prepare(self, model: nn.Module) -> None:
        """Nothing to set up: trained from scratch."""

    def cache(self, model: nn.Module, data: dict[str, torch.Tensor]) -> None:
        """Nothing to precompute."""

    def tensors(self, dataset, progress: bool, label: str) -> dict[str, torch.Tensor]:
        return materialize(dataset, keys=("image", "label"), progress=progress,
                           description=label)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(model(batch["image"]), batch["label"])

    def scores(self, model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"accuracy": accuracy(model, data["image"], data["label"])}


class CaptionTask:
    """Scenes -> digits left to right then <end>; teacher-forced cross-entropy; exact-caption
    accuracy of greedy decoding."""

    def tensors(self, dataset, progress: bool, label: str) -> dict[str, torch.Tensor]:
        from camlens.zoo.captioner import teacher_forcing_tokens

        data = materialize(dataset, keys=("image", "caption", "count"), progress=progress,
                           description=label)
        data["inputs"], data["targets"] = teacher_forcing_tokens(data["caption"], data["count"])
        return data

    def prepare(self, model: nn.Module) -> None:
        """Start the encoder from digits-gap's trunk and keep it fixed."""
        from camlens.zoo.registry import load

        model.encoder.load_state_dict(load("digits-gap").features.state_dict())
        model.encoder.requires_grad_(False)

    def cache(self, model: nn.Module, data: dict[str, torch.Tensor]) -> None:
        """The fixed encoder's positions of every training scene, computed once (float16)."""
        model.encoder.eval()
        with torch.no_grad():
            data["features"] = torch.cat([
                model.encode(data["image"][start : start + 500]).half()
                for start in range(0, len(data["image"]), 500)
            ])
        del data["image"]

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model.decode(batch["features"].float(), batch["inputs"])
        return F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-1)

    def scores(self, model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"accuracy": caption_accuracy(model, data["image"], data["caption"],
                                             data["count"])}


def caption_accuracy(model: nn.Module, images: torch.Tensor, captions: torch.Tensor,
                     counts: torch.Tensor, beam_size: int = 1) -> float:
    """The share of scenes whose generated caption is exactly right."""
    with preserved_model_state(model), torch.no_grad():
        generated = model.generate(images, beam_size=beam_size)
    right = sum(words == captions[row, : int(counts[row])].tolist()
                for row, words in enumerate(generated))
    return right / len(generated)


class AccentTask:
    """Waveforms of different lengths -> accent; cross-entropy; top-1 accuracy. Waveforms are
    held as :class:`~camlens.experiments.audio_batches.RaggedWaveforms` (a batch is padded to its
    longest recording and the models are told the true ``lengths``)."""

    def prepare(self, model: nn.Module) -> None:
        """Nothing to set up: trained from scratch."""

    def cache(self, model: nn.Module, data: dict) -> None:
        """Nothing to precompute (log-mel features are computed in the model, per batch)."""

    def tensors(self, dataset, progress: bool, label: str) -> dict:
        from tqdm import tqdm

        from camlens.experiments.audio_batches import RaggedWaveforms

        items = [dataset[index] for index in tqdm(range(len(dataset)), desc=label,
                                                   disable=not progress, leave=False)]
        waveforms = RaggedWaveforms([item["waveform"] for item in items])
        return {"waveform": waveforms, "lengths": waveforms.lengths,
                "label": torch.stack([item["label"] for item in items])}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(batch["waveform"], batch["lengths"]), batch["label"])

    def scores(self, model: nn.Module, data: dict) -> dict[str, float]:
        from camlens.experiments.audio_batches import predict

        predicted = predict(model, data["waveform"]).argmax(dim=1)
        return {"accuracy": float((predicted == data["label"]).float().mean())}


class DetectionTask:
    """Scenes -> every digit's box and class; :func:`~camlens.zoo.detector.detection_loss`;
    scored by :func:`detection_scores`."""

    def prepare(self, model: nn.Module) -> None:
        """Nothing to set up: trained from scratch."""

    def cache(self, model: nn.Module, data: dict[str, torch.Tensor]) -> None:
        """Nothing to precompute."""

    def tensors(self, dataset, progress: bool, label: str) -> dict[str, torch.Tensor]:
        return materialize(dataset, keys=("image", "labels", "boxes"), progress=progress,
                           description=label)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from camlens.zoo.detector import detection_loss

        return detection_loss(model, batch["image"], batch["boxes"], batch["labels"])

    def scores(self, model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
        return detection_scores(model, data["image"], data["boxes"], data["labels"])


def detection_scores(model: nn.Module, images: torch.Tensor, boxes: torch.Tensor,
                     labels: torch.Tensor, score_threshold: float = 0.5,
                     iou_threshold: float = 0.5, batch_size: int = 250) -> dict[str, float]:
    """How well a dense detector finds the digits of scenes (boxes ``(B, K, 4)`` and labels
    ``(B, K)`` padded with -1). A detection (score at least ``score_threshold``, after
    non-maximum suppression) is right when it has a digit's class and IoU at least
    ``iou_threshold`` with its box, each digit matched once. ``accuracy``: the share of scenes
    whose detections are exactly their digits; ``recall`` and ``precision`` over boxes."""
    from camlens.score_targets import box_iou, dense_detections

    found_right = found_total = digits_total = scenes_right = 0
    with preserved_model_state(model), torch.no_grad():
        model.eval()
        for start in range(0, len(images), batch_size):
            outputs = model(images[start : start + batch_size])
            detections = dense_detections(outputs, score_threshold, iou_threshold)
            for offset, found in enumerate(detections):
                row = start + offset
                truth = labels[row] >= 0
                true_boxes, true_labels = boxes[row][truth], labels[row][truth]
                unmatched = torch.ones(len(true_boxes), dtype=torch.bool)
                right = 0
                for box, label in zip(found["boxes"], found["labels"], strict=True):
                    overlap = box_iou(true_boxes, box)
                    fits = unmatched & (true_labels == label) & (overlap >= iou_threshold)
                    if bool(fits.any()):
                        unmatched[torch.where(fits, overlap, -1.0).argmax()] = False
                        right += 1
                found_right += right
                found_total += len(found["boxes"])
                digits_total += len(true_boxes)
                scenes_right += int(right == len(true_boxes) == len(found["boxes"]))
    return {"accuracy": scenes_right / len(images),
            "recall": found_right / max(digits_total, 1),
            "precision": found_right / max(found_total, 1)}


TASKS = {"cluttered": ClassificationTask, "biased": ClassificationTask, "scenes": CaptionTask,
         "accents": AccentTask, "scene-boxes": DetectionTask}


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (run in eval mode, its state restored)."""
    predicted = predicted_classes(model, images, batch_size=batch_size)
    return float((predicted == labels).float().mean())


def permuted_labels(train_data: dict[str, torch.Tensor], dataset: str, seed: int
                    ) -> torch.Tensor:
    """The training labels in a random order drawn from ``seed`` (its own generator, salted, so
    it is not the first epoch's batch order): the data randomization test of Adebayo et al. 2018.
    Refused for data sets whose targets are not one class per image."""
    if TASKS.get(dataset) is not ClassificationTask or "label" not in train_data:
        raise ValueError(f"permuted labels apply to classification data sets (cluttered, biased), "
                         f"not {dataset!r}")
    labels = train_data["label"]
    generator = torch.Generator().manual_seed(zlib.crc32(f"permuted-labels:{seed}".encode()))
    return labels[torch.randperm(len(labels), generator=generator)]


def run_epochs(model: nn.Module, task, train_data: dict, count: int, recipe: TrainingRecipe,
               seed: int, *, progress: bool = False, description: str = "training") -> None:
    """The training loop of every zoo model: ``recipe.epochs`` passes over the ``count`` rows of
    ``train_data`` in an order drawn from ``seed``, AdamW with a one-cycle learning rate, the
    loss of ``task``; leaves ``model`` in eval mode. (Global torch seeding, which fixes the
    initial weights and dropout, is the caller's: :func:`train` seeds before building.)"""
    from tqdm import tqdm

    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=recipe.learning_rate,
                                  weight_decay=recipe.weight_decay)
    steps_per_epoch = -(-count // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch
    )
    shuffler = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=recipe.epochs * steps_per_epoch, desc=description,
               disable=not progress)
    for _ in range(recipe.epochs):
        order = torch.randperm(count, generator=shuffler)
        for start in range(0, count, recipe.batch_size):
            rows = order[start : start + recipe.batch_size]
            loss = task.loss(model, {key: value[rows] for key, value in train_data.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()


def train(name: str, *, seed: int = 0, recipe: TrainingRecipe | None = None,
          out: str | Path | None = None, progress: bool = True) -> dict:
    """Train zoo model ``name`` and save it as safetensors (default: the shipped weights' path).

    Returns the training summary, which is also stored in the file's metadata."""
    from safetensors.torch import save_file

    model, summary = fit(name, seed=seed, recipe=recipe, progress=progress)
    path = Path(out) if out is not None else weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(path), metadata={key: str(value) for key, value in summary.items()})
    summary["path"] = str(path)
    return summary


def fit(name: str, *, seed: int = 0, recipe: TrainingRecipe | None = None,
        progress: bool = True) -> tuple[nn.Module, dict]:
    """Train zoo model ``name`` from ``seed`` and return it (eval mode) with its training
    summary, without writing anything (:func:`train` saves it)."""
    spec = get_weights(name)
    recipe = recipe or RECIPES.get(name, TrainingRecipe())
    started = time.perf_counter()
    torch.manual_seed(seed)
    train_set, test_set = datasets(spec.dataset, recipe.train_size, recipe.test_size, seed,
                                   recipe.bias)
    task = TASKS[spec.dataset]()
    train_data = task.tensors(train_set, progress, "generating train data")
    if recipe.permuted_labels:
        train_data["label"] = permuted_labels(train_data, spec.dataset, seed)
    test_data = task.tensors(test_set, progress, "generating test data")
    count = len(train_set)

    model = spec.build()
    task.prepare(model)
    task.cache(model, train_data)
    run_epochs(model, task, train_data, count, recipe, seed, progress=progress,
               description=f"training {name}")
    test_scores = task.scores(model, test_data)
    summary = {
        "name": name,
        "seed": seed,
        "epochs": recipe.epochs,
        "train_size": recipe.train_size,
        "test_size": recipe.test_size,
        "test_accuracy": round(test_scores["accuracy"], 4),
        **{f"test_{key}": round(value, 4) for key, value in test_scores.items()
           if key != "accuracy"},
        "train_accuracy": round(task.scores(model, train_data)["accuracy"], 4)
        if "image" in train_data and "boxes" not in train_data else None,
        "train_seconds": round(time.perf_counter() - started, 1),
        **({"bias": train_set.bias} if spec.dataset == "biased" else {}),
        **({"permuted_labels": True} if recipe.permuted_labels else {}),
        "command": f"camlens train {name} --seed {seed}" + (
            f" --bias {recipe.bias:g}" if recipe.bias != RECIPES.get(name, TrainingRecipe()).bias
            else "") + (" --permuted-labels" if recipe.permuted_labels else ""),
        "torch": torch.__version__,
    }
    return model, summary
