"""Pictures of explanations: overlays, colour bars, boxes and figure grids.

Needs the ``viz`` extra (Pillow and matplotlib): ``pip install 'camlens[viz]'``. Figures are
``matplotlib.figure.Figure`` objects built without pyplot, so importing this sets no backend.

    from camlens.viz import overlay, explanation_grid, save_figure
    overlay(image, exp.maps[0]).save("overlay.png")
    explanation_overlays(exp, images)             # one PIL image per input (K per input)
    save_figure(explanation_grid(exp, images, class_names=names), "grid.png")
"""

try:
    import matplotlib  # noqa: F401
    import PIL  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"camlens.viz needs Pillow and matplotlib ({error.name} is missing): "
        "pip install 'camlens[viz]'"
    ) from error

from camlens.viz.grid import explanation_grid, grid, save_figure
from camlens.viz.images import IMAGENET_MEAN, IMAGENET_STD, denormalize, to_pil
from camlens.viz.overlay import (
    colorbar,
    colorize,
    draw_boxes,
    draw_outline,
    explanation_overlays,
    get_colormap,
    overlay,
    resize_map,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "colorbar",
    "colorize",
    "denormalize",
    "draw_boxes",
    "draw_outline",
    "explanation_grid",
    "explanation_overlays",
    "get_colormap",
    "grid",
    "overlay",
    "resize_map",
    "save_figure",
    "to_pil",
]
