"""Representation maps: a layer's activations over a data set, embedded in two dimensions.

- **PCA** (always available, torch only): the features are centred, ``X - mean``, and projected
  on their first two principal directions, the top right singular vectors of the centred
  matrix (an exact SVD, or ``torch.pca_lowrank`` for wide matrices); the share of variance
  they explain is returned with them.
- **t-SNE** (van der Maaten and Hinton, JMLR 2008), from scikit-learn: features reduced to 50
  principal components first (as the paper suggests), then ``TSNE(init="pca")`` with the
  perplexity ``min(30, (N - 1) / 3)``, seeded.
- **UMAP** (McInnes et al. 2018), optional: only when ``umap-learn`` is installed
  (``pip install umap-learn``); camlens does not depend on it.

Distances in 2-D distort the layer's geometry (t-SNE and UMAP keep neighbourhoods, not
distances), so :func:`neighbour_agreement` measures in the layer's own feature space: the share
of each point's ``k`` nearest neighbours (Euclidean, after standardising each feature) that
share its class. :func:`embedding_figure` draws the map coloured by class, with image
thumbnails of a few points and of their nearest neighbours in the feature space (a
``matplotlib.figure.Figure`` made without pyplot: no backend is chosen).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["EMBEDDINGS", "embed_2d", "embedding_figure", "nearest_neighbours",
           "neighbour_agreement", "pca_2d", "plot_embedding", "standardize"]

EMBEDDINGS = ("pca", "tsne", "umap")


def _check_features(features: torch.Tensor) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else None
        raise ValueError(f"features must be a 2-D tensor (N, D), got "
                         f"{shape if shape is not None else type(features).__name__}")
    if features.shape[0] < 3:
        raise ValueError(f"an embedding needs at least 3 points, got {features.shape[0]}")
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    return features.detach().double().cpu()


def standardize(features: torch.Tensor, reference: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Each feature centred and scaled by the mean and standard deviation of ``reference``
    (default: ``features`` itself); constant features are left at zero."""
    reference = features if reference is None else reference
    mean = reference.mean(dim=0)
    std = reference.std(dim=0)
    return (features - mean) / torch.where(std > 0, std, torch.ones_like(std))


def pca_2d(features: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
    """The first two principal components of ``features`` (N, D) -> ``(coordinates (N, 2),
    the share of the total variance each explains)``."""
    data = _check_features(features)
    centred = data - data.mean(dim=0)
    total = float((centred**2).sum())
    if total == 0:
        return torch.zeros(len(data), 2), (0.0, 0.0)
    if min(centred.shape) > 512:  # a randomized SVD for wide data; exact enough for 2 axes
        _, singular, directions = torch.pca_lowrank(centred, q=6, center=False, niter=6)
    else:
        _, singular, directions_t = torch.linalg.svd(centred, full_matrices=False)
        directions = directions_t.T
    directions = directions[:, :2]
    if directions.shape[1] < 2:  # one feature: a zero second axis
        directions = torch.cat([directions, torch.zeros_like(directions)], dim=1)
    # A sign convention, so reruns and platforms draw the same picture.
    signs = torch.sign(directions[directions.abs().argmax(dim=0), torch.arange(2)])
    directions = directions * torch.where(signs == 0, torch.ones_like(signs), signs)
    coordinates = centred @ directions
    shares = tuple(float(value) / total for value in (singular[:2] ** 2).tolist())
    shares = (shares + (0.0, 0.0))[:2]
    return coordinates.float(), (shares[0], shares[1])


def embed_2d(features: torch.Tensor, method: str = "pca", seed: int = 0,
             perplexity: float | None = None) -> torch.Tensor:
    """``features`` (N, D) -> 2-D coordinates (N, 2) by ``method`` (``pca``, ``tsne`` or
    ``umap``; see the module's docstring)."""
    key = str(method).lower().replace("-", "")
    if key not in EMBEDDINGS:
        raise ValueError(f"unknown embedding method {method!r}; choose one of "
                         f"{', '.join(EMBEDDINGS)}")
    data = _check_features(features)
    if key == "pca":
        return pca_2d(data)[0]
    if key == "umap":
        try:
            import umap
        except ImportError:
            raise ImportError("method='umap' needs the optional package umap-learn, which is "
                              "not installed: pip install umap-learn (or use method='pca' or "
                              "'tsne')") from None
        reducer = umap.UMAP(n_components=2, random_state=seed)
        return torch.as_tensor(reducer.fit_transform(standardize(data).numpy())).float()
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("method='tsne' needs scikit-learn: pip install 'camlens[data]'"
                          ) from None
    array = standardize(data).numpy()
    if array.shape[1] > 50 and array.shape[0] > 50:
        array = PCA(n_components=50, random_state=seed).fit_transform(array)
    chosen = perplexity if perplexity is not None else min(30.0, (len(array) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=chosen, init="pca", random_state=seed,
                learning_rate="auto")
    return torch.as_tensor(tsne.fit_transform(array)).float()


def nearest_neighbours(features: torch.Tensor, k: int = 5,
                       queries: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``(Q, k)`` of the ``k`` nearest points of ``features`` (Euclidean, standardised
    features) to each of ``queries`` (indices into ``features``; default: every point), the
    point itself excluded."""
    data = standardize(_check_features(features))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < len(data):
        raise ValueError(f"k must be an int in [1, {len(data) - 1}], got {k!r}")
    rows = torch.arange(len(data)) if queries is None else torch.as_tensor(queries).long()
    found = []
    for start in range(0, len(rows), 1024):  # a block of distances at a time: bounded memory
        block = rows[start:start + 1024]
        distances = torch.cdist(data[block], data)
        distances[torch.arange(len(block)), block] = float("inf")
        found.append(distances.topk(k, largest=False).indices)
    return torch.cat(found)


def neighbour_agreement(features: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """The share of each point's ``k`` nearest neighbours (in the feature space) that share its
    label, averaged over the points: 1 when classes form separate clumps, about the share of
    the largest class when the layer ignores the label."""
    labels = torch.as_tensor(labels).long().cpu()
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    neighbours = nearest_neighbours(features, k)
    return float((labels[neighbours] == labels[:, None]).float().mean())


def _palette(count: int) -> list[Any]:
    import matplotlib

    colours = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [colours(index % colours.N) for index in range(count)]


def _thumbnail(image: torch.Tensor):
    """(C, H, W) or (H, W) -> an array matplotlib shows (grey or RGB, in [0, 1])."""
    picture = image.detach().float().cpu()
    if picture.ndim == 3:
        picture = picture[0] if picture.shape[0] == 1 else picture[:3].permute(1, 2, 0)
    low, high = float(picture.min()), float(picture.max())
    return ((picture - low) / (high - low if high > low else 1.0)).numpy()


def _strip(images: torch.Tensor, indices: list[int], labels: torch.Tensor | None,
           colours: list[Any] | None, side: int = 48):
    """One RGB array: the images of ``indices`` side by side, each framed in its class colour
    (the first one with a thicker frame); one axes instead of one per image."""
    import numpy as np

    cells = []
    for position, index in enumerate(indices):
        picture = torch.as_tensor(_thumbnail(images[index])).float()
        picture = picture.permute(2, 0, 1) if picture.ndim == 3 else picture.expand(3, -1, -1)
        picture = torch.nn.functional.interpolate(picture[None], size=(side, side),
                                                  mode="bilinear", align_corners=False)[0]
        frame = 4 if position == 0 else 2
        colour = torch.tensor((colours[int(labels[index])] if colours else (0.3, 0.3, 0.3))[:3])
        cell = colour[:, None, None].expand(3, side + 2 * frame, side + 2 * frame).clone()
        cell[:, frame:frame + side, frame:frame + side] = picture.clamp(0, 1)
        pad = 6 - frame  # the same outer size for every cell
        cell = torch.nn.functional.pad(cell, (pad, pad, pad, pad), value=1.0)
        cells.append(cell)
    return np.ascontiguousarray(torch.cat(cells, dim=2).permute(1, 2, 0).numpy())


def plot_embedding(ax, coordinates: torch.Tensor, labels: torch.Tensor | None,
                   class_names: Sequence[str] | None = None,
                   images: torch.Tensor | None = None, thumbnails: int = 0,
                   seed: int = 0, title: str | None = None) -> list[int]:
    """Scatter ``coordinates`` on ``ax`` coloured by class, with ``thumbnails`` of
    ``images`` placed at their points (drawn at random from ``seed``, one class after another);
    returns the indices shown as thumbnails."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    points = coordinates.detach().float().cpu().numpy()
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, color="0.4", linewidths=0)
    else:
        labels = torch.as_tensor(labels).long().cpu()
        classes = sorted(set(labels.tolist()))
        colours = _palette(max(classes) + 1)
        for label in classes:
            chosen = (labels == label).numpy()
            name = class_names[label] if class_names and label < len(class_names) else str(label)
            ax.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colours[label],
                       label=name, linewidths=0)
    shown: list[int] = []
    if images is not None and thumbnails > 0:
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(points), generator=generator)
        if labels is None:
            shown = order[:thumbnails].tolist()
        else:  # one image per class in turn, so every class shows
            by_class = {label: [int(i) for i in order if int(labels[i]) == label]
                        for label in sorted(set(labels.tolist()))}
            while len(shown) < min(thumbnails, len(points)):
                for members in by_class.values():
                    if members and len(shown) < thumbnails:
                        shown.append(members.pop(0))
        for index in shown:
            edge = "0.3" if labels is None else _palette(int(labels.max()) + 1)[int(labels[index])]
            box = AnnotationBbox(OffsetImage(_thumbnail(images[index]), zoom=0.3, cmap="gray"),
                                 points[index], frameon=True, pad=0.05,
                                 bboxprops={"edgecolor": edge, "linewidth": 1.2})
            ax.add_artist(box)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return shown


def embedding_figure(
    panels: Sequence[dict[str, Any]],
    labels: torch.Tensor | None,
    path: str | Path,
    *,
    images: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    anchors: int = 4,
    k: int = 5,
    thumbnails: int = 10,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """One PNG with a column per panel: the 2-D map (coloured by class, ``thumbnails`` images at
    their points), and under it ``anchors`` rows of an image followed by its ``k`` nearest
    neighbours in that layer's feature space (framed in their class's colour).

    Each panel is a dict with ``coordinates`` (N, 2), ``features`` (N, D) for the neighbours
    (optional) and ``title``."""
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("embedding_figure needs at least one panel")
    show_neighbours = images is not None and anchors > 0 and all(
        "features" in panel for panel in panels)
    rows = 1 + (anchors if show_neighbours else 0)
    heights = [4.0] + [0.75] * (rows - 1)
    figure = Figure(figsize=(4.2 * len(panels), sum(heights) + 0.6), dpi=110)
    grid = figure.add_gridspec(rows, len(panels), height_ratios=heights, hspace=0.15,
                               wspace=0.06)
    generator = torch.Generator().manual_seed(seed + 1)
    count = len(panels[0]["coordinates"])
    anchor_rows = torch.randperm(count, generator=generator)[:anchors]
    colours = _palette(int(labels.max()) + 1) if labels is not None else None
    for column, panel in enumerate(panels):
        ax = figure.add_subplot(grid[0, column])
        plot_embedding(ax, panel["coordinates"], labels, class_names, images, thumbnails,
                       seed, panel.get("title"))
        if column == 0 and labels is not None:
            ax.legend(loc="best", fontsize=6, markerscale=2, ncol=2, frameon=False)
        if not show_neighbours:
            continue
        neighbours = nearest_neighbours(panel["features"], k, anchor_rows)
        for row, (anchor, found) in enumerate(zip(anchor_rows.tolist(), neighbours.tolist(),
                                                  strict=True)):
            cell = figure.add_subplot(grid[row + 1, column])
            cell.imshow(_strip(images, [anchor, *found], labels, colours))
            cell.set_axis_off()
        if column == 0:
            figure.text(0.12, 0.06, f"rows: an image (thick frame), then its {k} nearest "
                        "neighbours in the layer's feature space (frame: class colour)",
                        fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path
