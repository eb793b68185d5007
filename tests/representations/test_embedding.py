"""Representation maps: layer activations collected without touching the model, and 2-D
embeddings that keep separated classes apart."""

from __future__ import annotations

import sys

import pytest
import torch
from toy_models import GapNet

from camlens.representations.activations import INPUT_LAYER, batches, layer_activations
from camlens.representations.embedding import (
    embed_2d,
    embedding_figure,
    nearest_neighbours,
    neighbour_agreement,
    pca_2d,
)


def clusters(per_class: int = 30, classes: int = 3, dims: int = 20, seed: int = 0):
    """Well-separated Gaussian clusters: centres 10 apart, unit noise."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=generator) * 10
    labels = torch.arange(classes).repeat_interleave(per_class)
    points = centres[labels] + torch.randn(len(labels), dims, generator=generator)
    return points, labels


def nearest_centroid_accuracy(coordinates: torch.Tensor, labels: torch.Tensor) -> float:
    centroids = torch.stack([coordinates[labels == label].mean(0) for label in labels.unique()])
    predicted = torch.cdist(coordinates, centroids).argmin(1)
    return float((predicted == labels).float().mean())


def test_pca_of_separated_clusters_keeps_them_apart():
    points, labels = clusters()
    coordinates, shares = pca_2d(points)
    assert nearest_centroid_accuracy(coordinates, labels) == 1.0
    assert shares[0] >= shares[1] > 0 and sum(shares) > 0.8  # two axes carry 3 far clusters


@pytest.mark.slow  # importing scikit-learn takes seconds
def test_pca_matches_scikit_learn_up_to_sign():
    from sklearn.decomposition import PCA

    points, _ = clusters(dims=8, seed=3)
    ours, _ = pca_2d(points)
    theirs = torch.as_tensor(PCA(2).fit_transform(points.double().numpy())).float()
    assert torch.allclose(ours.abs(), theirs.abs(), atol=1e-3)


def test_pca_on_random_labels_does_not_invent_classes():
    points, labels = clusters(classes=1, per_class=90)
    fake = torch.arange(3).repeat(30)
    coordinates, _ = pca_2d(points)
    assert nearest_centroid_accuracy(coordinates, fake) < 0.7
    assert neighbour_agreement(points, fake, k=5) < 0.5
    assert neighbour_agreement(*clusters(), k=5) == 1.0
    del labels


@pytest.mark.slow
def test_tsne_separates_clusters_and_is_seeded():
    points, labels = clusters(per_class=20)
    first = embed_2d(points, "tsne", seed=1)
    assert nearest_centroid_accuracy(first, labels) == 1.0
    assert torch.allclose(first, embed_2d(points, "t-SNE", seed=1))


def test_bad_method_and_missing_umap_say_what_is_accepted(monkeypatch):
    points, _ = clusters()
    with pytest.raises(ValueError, match=r"'isomap'.*pca, tsne, umap"):
        embed_2d(points, "isomap")
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(ImportError, match="umap-learn"):
        embed_2d(points, "umap")
    with pytest.raises(ValueError, match="2-D tensor"):
        embed_2d(points[0], "pca")


def test_nearest_neighbours_exclude_the_point_itself():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    assert nearest_neighbours(points, k=1).flatten().tolist() == [1, 0, 3, 2]
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(points, k=4)


def test_embedding_figure_is_written(tmp_path):
    points, labels = clusters(per_class=8)
    images = torch.rand(len(labels), 1, 8, 8)
    path = embedding_figure([{"coordinates": pca_2d(points)[0], "features": points,
                              "title": "toy"}], labels, tmp_path / "map.png", images=images,
                            class_names=("a", "b", "c"), anchors=2, k=3, thumbnails=3)
    assert path.stat().st_size > 1000


@pytest.fixture
def busy_gap_net():
    """A GapNet in train mode with a frozen layer and gradients already set."""
    torch.manual_seed(0)
    model = GapNet().train()
    model.features[0].weight.requires_grad_(False)
    model(torch.randn(4, 3, 6, 6)).sum().backward()
    return model


def test_activations_leave_the_model_untouched(busy_gap_net):
    model = busy_gap_net
    modes = {name: module.training for name, module in model.named_modules()}
    flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    grads = {name: parameter.grad for name, parameter in model.named_parameters()}
    grad_values = {name: None if g is None else g.clone() for name, g in grads.items()}
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    features, labels = layer_activations(model, torch.randn(10, 3, 6, 6),
                                         ["features.1", "features.4"], batch_size=3)
    assert features["features.1"].shape == (10, 8) and labels is None
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for name, parameter in model.named_parameters():
        assert parameter.grad is grads[name]
        if parameter.grad is not None:
            assert torch.equal(parameter.grad, grad_values[name])
    for name, buffer in model.named_buffers():  # BatchNorm ran in eval mode: no update
        assert torch.equal(buffer, buffers[name])
    assert all(not module._forward_hooks for module in model.modules())


def test_pooled_activations_are_the_layers_outputs_and_batching_does_not_matter(gap_net):
    inputs = torch.randn(7, 3, 6, 6)
    with torch.no_grad():
        maps = gap_net.features(inputs)
    for batch_size in (2, 7):
        features, _ = layer_activations(gap_net, inputs, ["features", INPUT_LAYER],
                                        pooling="mean", batch_size=batch_size)
        assert torch.allclose(features["features"], maps.mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(features[INPUT_LAYER], inputs.mean(dim=(2, 3)))
    grid, _ = layer_activations(gap_net, inputs, "features", pooling="grid", grid=2)
    quarter = maps[:, :, :3, :3].mean(dim=(2, 3))
    assert torch.allclose(grid["features"].view(7, -1, 4)[:, :, 0], quarter, atol=1e-6)


def test_a_data_set_streams_with_its_labels(gap_net):
    class Items(torch.utils.data.Dataset):
        def __init__(self):
            self.images = torch.randn(5, 3, 6, 6)

        def __len__(self):
            return 5

        def __getitem__(self, index):
            return {"image": self.images[index], "label": torch.tensor(index % 2)}

    data = Items()
    features, labels = layer_activations(gap_net, data, "fc", batch_size=2)
    direct, _ = layer_activations(gap_net, data.images, "fc")
    assert labels.tolist() == [0, 1, 0, 1, 0]
    assert torch.allclose(features["fc"], direct["fc"], atol=1e-6)
    assert [len(inputs) for inputs, _ in batches(data, 2)] == [2, 2, 1]


def test_bad_layer_pooling_and_size_are_refused_by_name(gap_net):
    inputs = torch.randn(2, 3, 6, 6)
    with pytest.raises(ValueError, match=r"unknown layer 'featurs'.*features"):
        layer_activations(gap_net, inputs, "featurs")
    with pytest.raises(ValueError, match=r"unknown pooling 'median'.*mean, max, grid, flatten"):
        layer_activations(gap_net, inputs, "features", pooling="median")
    with pytest.raises(ValueError, match="max_features=10"):
        layer_activations(gap_net, inputs, "features", pooling="flatten", max_features=10)
    assert all(not module._forward_hooks for module in gap_net.modules())
