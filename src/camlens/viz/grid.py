"""Figures: an input next to its overlays, and one input's explanations side by side.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot, so no backend is chosen and
no global figure state is touched; a notebook displays a returned Figure by itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from camlens.explanation import Explanation
from camlens.viz.images import ImageLike, select_image, to_pil
from camlens.viz.overlay import MapLike, get_colormap, image_maps, overlay

__all__ = ["PANEL_INCHES", "explanation_grid", "grid", "save_figure"]

# Inches per panel when no figsize is given.
PANEL_INCHES = 2.6


def grid(
    image: ImageLike,
    maps: MapLike | Sequence[MapLike],
    titles: Sequence[str] | None = None,
    colormap: str | Colormap = "jet",
    alpha: float = 0.5,
    columns: int | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A figure with ``image`` in the first panel (titled "input") and one overlay per map after
    it, titled by ``titles`` (one per map; "map 0", "map 1", ... by default).

    ``maps``: a ``(K, h, w)`` tensor or array, one ``(h, w)`` map, or a list of maps.
    ``columns``: panels per row (all in one row by default); ``figsize`` in inches."""
    map_list = _map_list(maps)
    if titles is None:
        titles = [f"map {number}" for number in range(len(map_list))]
    titles = list(titles)
    if len(titles) != len(map_list):
        raise ValueError(f"got {len(titles)} titles for {len(map_list)} maps; give one per map")
    get_colormap(colormap)
    picture = to_pil(image)
    panels = [(picture, "input")]
    for heat_map, title in zip(map_list, titles, strict=True):
        panels.append((overlay(picture, heat_map, colormap, alpha), title))
    return _figure(panels, columns, figsize)


def explanation_grid(
    explanations: Explanation | Sequence[Explanation],
    inputs: ImageLike | Sequence[ImageLike],
    index: int = 0,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    colormap: str | Colormap = "jet",
    alpha: float = 0.5,
    columns: int | None = None,
) -> Figure:
    """Input ``index`` of ``inputs`` and one overlay per (explanation, target) of that input.

    - One Explanation: one panel per target, titled "<class> <score>" (for example "cat 4.12"),
      the method and layer as the figure's title.
    - A list of Explanations (different methods on the same inputs): panels titled
      "<method>: <class> (score <score>)".

    The class is ``class_names[target]`` when names are given (for a zoo model:
    ``camlens.zoo.get_weights(name).class_names``), else the index; scores are the explained
    scores (``Explanation.scores``, raw logits for class targets)."""
    single = isinstance(explanations, Explanation)
    explanation_list = [explanations] if single else list(explanations)
    if not explanation_list:
        raise ValueError("explanation_grid needs at least one Explanation")
    for item in explanation_list:
        if not isinstance(item, Explanation):
            raise TypeError(f"expected Explanation objects, got {type(item).__name__}")
    picture = to_pil(select_image(inputs, index))
    panels = [(picture, "input")]
    for explanation in explanation_list:
        for heat_map, label, score in _panels_of(explanation, index, class_names):
            title = f"{label} {score:.2f}" if single else (
                f"{explanation.method}: {label} (score {score:.2f})"
            )
            panels.append((overlay(picture, heat_map, colormap, alpha), title))
    figure = _figure(panels, columns, None)
    if single:
        figure.suptitle(f"{explanation_list[0].method} at {explanation_list[0].layer}")
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: float = 100) -> Path:
    """Write ``figure`` to ``path`` as PNG (tight bounding box), creating missing folders; the
    figure stays open and usable. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _map_list(maps: MapLike | Sequence[MapLike]) -> list[MapLike]:
    if isinstance(maps, (torch.Tensor, np.ndarray)):
        if maps.ndim == 2:
            return [maps]
        if maps.ndim == 3:
            return list(maps)
        raise ValueError(f"maps must be (K, h, w), (h, w) or a list of maps, got shape "
                         f"{tuple(maps.shape)}")
    if isinstance(maps, Sequence) and not isinstance(maps, str):
        if not maps:
            raise ValueError("maps is empty; give at least one map")
        return list(maps)
    raise TypeError(f"maps must be a tensor, an array or a list of them, got {type(maps).__name__}")


def _panels_of(
    explanation: Explanation, index: int, class_names: Sequence[str] | Mapping[int, str] | None
) -> list[tuple[torch.Tensor, str, float]]:
    """(map, class label, score) for each target of input ``index``."""
    maps = image_maps(explanation)
    count = maps.shape[0]
    if not -count <= index < count:
        raise IndexError(f"index {index} is out of range for a {explanation.method} explanation "
                         f"of {count} input(s)")
    input_maps = maps[index]
    scores = explanation.scores[index].detach().cpu().reshape(-1).tolist()
    targets = explanation.targets
    if targets is None:
        labels = ["custom target"] * len(scores)
    else:
        classes = targets[index].detach().cpu().reshape(-1).tolist()
        labels = [_class_label(int(c), class_names) for c in classes]
    if input_maps.ndim == 2:
        input_maps = input_maps[None]
    return list(zip(input_maps, labels, scores, strict=True))


def _class_label(target: int, class_names: Sequence[str] | Mapping[int, str] | None) -> str:
    if class_names is None:
        return str(target)
    try:
        return str(class_names[target])
    except (IndexError, KeyError):
        raise ValueError(
            f"class {target} has no name: class_names has {len(class_names)} entries"
        ) from None


def _figure(
    panels: list[tuple], columns: int | None, figsize: tuple[float, float] | None
) -> Figure:
    """One panel per (PIL image, title), ``columns`` per row, axes hidden."""
    if columns is None:
        columns = len(panels)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    if figsize is None:
        figsize = (PANEL_INCHES * columns, PANEL_INCHES * rows + 0.3)
    figure = Figure(figsize=figsize, layout="constrained")
    for number, (picture, title) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, number + 1)
        axes.imshow(np.asarray(picture), interpolation="nearest")
        axes.set_title(title, fontsize=9)
        axes.set_axis_off()
    return figure
