"""Transferability (Yosinski et al. 2014): copied layers are the source's, frozen ones stay put
while the rest learns, fine-tuned ones move; the experiment records every network."""

from __future__ import annotations

import pytest
import torch

from camlens.experiments.transfer import mean_interval, summarize
from camlens.representations.transfer import (
    CONDITIONS,
    TransferRecipe,
    class_split,
    copy_layers,
    subset,
    train_network,
    transfer_experiment,
    transfer_network,
)

ONE_EPOCH = TransferRecipe(epochs=1, batch_size=16)


def toy_data(size: int = 48, classes: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(size, 1, 32, 32, generator=generator), torch.arange(size) % classes


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def test_copied_layers_equal_the_source_and_frozen_ones_do_not_learn():
    source, target = transfer_network(seed=1), transfer_network(seed=2)
    copy_layers(source, target, 2, freeze=True)
    for index in range(2):  # weights, biases and batch-norm statistics
        for key, value in source.layers[index].state_dict().items():
            assert torch.equal(target.layers[index].state_dict()[key], value)
        assert all(not p.requires_grad for p in target.layers[index].parameters())
    assert not torch.equal(target.layers[3][1].weight, source.layers[3][1].weight)
    frozen, rest = snapshot(target.layers[:2]), snapshot(target.layers[2:])
    train_network(target, *toy_data(), recipe=ONE_EPOCH)
    after_frozen, after_rest = snapshot(target.layers[:2]), snapshot(target.layers[2:])
    assert all(torch.equal(frozen[key], after_frozen[key]) for key in frozen)  # BN stats too
    assert all(p.grad is None for p in target.layers[:2].parameters())
    assert any(not torch.equal(rest[key], after_rest[key]) for key in rest)
    assert not target.training


def test_fine_tuned_copies_start_equal_and_then_learn():
    source, target = transfer_network(seed=1), transfer_network(seed=2)
    copy_layers(source, target, 3, freeze=False)
    assert torch.equal(target.layers[0][0].weight, source.layers[0][0].weight)
    assert all(p.requires_grad for p in target.parameters())
    train_network(target, *toy_data(), recipe=ONE_EPOCH)
    assert not torch.equal(target.layers[0][0].weight, source.layers[0][0].weight)


def test_copy_layers_refuses_the_classifier_and_bad_depths():
    source, target = transfer_network(), transfer_network()
    with pytest.raises(ValueError, match=r"n must be an int in \[0, 5\].*got 6"):
        copy_layers(source, target, 6, freeze=True)
    with pytest.raises(ValueError, match="got -1"):
        copy_layers(source, target, -1, freeze=True)
    copy_layers(source, target, 5, freeze=True)
    for layer in target.layers[:5]:
        layer.requires_grad_(False)
    target.layers[5].requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        train_network(target, *toy_data())


def test_class_splits_are_disjoint_halves_seeded():
    for seed in range(4):
        a, b = class_split(seed)
        assert len(a) == len(b) == 5 and sorted(a + b) == list(range(10))
        assert class_split(seed) == (a, b)
    assert len({class_split(seed) for seed in range(4)}) > 1
    images, labels = torch.zeros(6, 1, 2, 2), torch.tensor([0, 3, 7, 3, 9, 0])
    kept, relabelled = subset(images, labels, (3, 9))
    assert relabelled.tolist() == [0, 0, 1] and len(kept) == 3


def test_the_experiment_records_every_network_of_the_protocol():
    images, labels = toy_data(60, classes=10)
    records = transfer_experiment(images, labels, images, labels, seeds=(0,), depths=(1, 4),
                                  recipe=ONE_EPOCH)
    assert {(r["condition"], r["n"]) for r in records} == {
        ("baseA", 0), ("baseB", 0), ("baseB-2x", 0),
        *((name, n) for name in CONDITIONS for n in (1, 4))}
    assert all(0 <= r["accuracy"] <= 1 and r["split_b"] == list(class_split(0)[1])
               for r in records)
    summary = summarize(records)
    assert summary[("AnB", 1)][0] == next(r["accuracy"] for r in records
                                          if r["condition"] == "AnB" and r["n"] == 1)
    with pytest.raises(ValueError, match=r"unknown condition 'AnA'"):
        transfer_experiment(images, labels, images, labels, conditions=("AnA",))
    with pytest.raises(ValueError, match=r"depths must be ints in \[1, 5\], got 0"):
        transfer_experiment(images, labels, images, labels, depths=(0,))


def test_mean_interval_is_a_student_t_interval():
    mean, low, high = mean_interval([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9)
    assert high - mean == pytest.approx(4.303 * 0.1 / 3**0.5, rel=1e-3)
    assert mean_interval([0.5]) == (0.5, 0.5, 0.5)
