"""Linear probes: they read what a trained layer holds, fall to chance without it, and choose
their penalty on the validation split only."""

from __future__ import annotations

import pytest
import torch

from camlens.data.digits import ClutteredDigits, materialize
from camlens.representations.probes import fit_probe, probe_layers
from camlens.zoo import load


def split(size: int, part: str, seed: int):
    data = materialize(ClutteredDigits(size, part, seed), keys=("image", "label"))
    return data["image"], data["label"]


@pytest.fixture(scope="module")
def digits_gap_probes():
    """Probes of the shipped digits-gap at its input and its last conv block (small splits)."""
    model = load("digits-gap")
    splits = (split(100, "train", 1), split(50, "train", 2), split(100, "test", 0))
    return probe_layers(model, ["input", "features.13"], *splits, pooling="mean")


def test_a_probe_reads_the_trained_layer_far_above_chance(digits_gap_probes):
    deep = digits_gap_probes["features.13"]
    assert deep.accuracy > 0.85 > 3 * deep.chance
    assert deep.interval[0] > 0.7
    # The input's mean brightness carries almost nothing about the digit.
    assert digits_gap_probes["input"].accuracy < 0.35


def labelled_features(seed: int, size: int, informative: bool = True):
    """Features whose first two dimensions carry the class (or not), plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(size) % 4
    features = torch.randn(size, 12, generator=generator)
    if informative:
        features[:, 0] += 3 * (labels % 2)
        features[:, 1] += 3 * (labels // 2)
    return features, labels


def test_shuffled_labels_bring_the_probe_down_to_chance():
    splits = [labelled_features(seed, size) for seed, size in ((0, 200), (1, 100), (2, 400))]
    real = fit_probe(*splits, c_grid=(0.01, 1.0))
    control = fit_probe(*splits, c_grid=(0.01, 1.0), shuffle_labels=True)
    assert real.accuracy > 0.8
    assert abs(control.accuracy - 0.25) < 0.1 and control.shuffled_labels
    assert control.chance == pytest.approx(0.25)


def test_the_penalty_is_chosen_on_validation_never_on_test():
    train, validation, test = (labelled_features(seed, 120) for seed in (3, 4, 5))
    scrambled = (test[0], test[1][torch.randperm(len(test[1]),
                                                 generator=torch.Generator().manual_seed(0))])
    first = fit_probe(train, validation, test, c_grid=(0.001, 0.1, 10.0))
    second = fit_probe(train, validation, scrambled, c_grid=(0.001, 0.1, 10.0))
    assert (first.c, first.validation_accuracy) == (second.c, second.validation_accuracy)
    assert first.accuracy > second.accuracy


def test_bad_splits_are_refused_by_name():
    good = labelled_features(0, 20)
    with pytest.raises(ValueError, match="validation split has no labels"):
        fit_probe(good, (good[0], None), good)
    with pytest.raises(ValueError, match="different feature counts"):
        fit_probe(good, good, (good[0][:, :3], good[1]))
    with pytest.raises(ValueError, match="c_grid must be positive"):
        fit_probe(good, good, good, c_grid=(0.0,))
