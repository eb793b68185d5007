"""grid, explanation_grid, explanation_overlays and save_figure."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from toy_models import GapNet

import camlens
from camlens.viz import explanation_grid, grid, overlay, save_figure

CLASS_NAMES = ("cat", "dog", "bird")


@pytest.fixture
def model() -> GapNet:
    torch.manual_seed(0)
    return GapNet(classes=len(CLASS_NAMES)).eval()


@pytest.fixture
def inputs() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 3, 8, 10)


def titles(figure: Figure) -> list[str]:
    return [axes.get_title() for axes in figure.axes]


def test_grid_has_the_input_then_one_titled_overlay_per_map():
    image = torch.rand(3, 8, 8)
    figure = grid(image, torch.rand(2, 4, 4), titles=["first", "second"])
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 3
    assert titles(figure) == ["input", "first", "second"]
    np.testing.assert_array_equal(
        figure.axes[0].get_images()[0].get_array(), np.asarray(camlens.viz.to_pil(image))
    )
    assert figure.axes[2].get_images()[0].get_array().shape == (8, 8, 3)


def test_grid_shows_the_overlay_pixels():
    image = torch.rand(3, 8, 8)
    maps = [torch.rand(4, 4), np.random.default_rng(0).random((8, 8))]
    figure = grid(image, maps, alpha=0.7, colormap="viridis")
    assert titles(figure) == ["input", "map 0", "map 1"]
    for axes, heat in zip(figure.axes[1:], maps, strict=True):
        expected = np.asarray(overlay(image, heat, colormap="viridis", alpha=0.7))
        np.testing.assert_array_equal(axes.get_images()[0].get_array(), expected)


def test_grid_columns_wrap_into_rows_without_empty_axes():
    figure = grid(Image.new("RGB", (6, 6)), torch.rand(3, 6, 6), columns=2)
    assert len(figure.axes) == 4
    assert figure.axes[2].get_subplotspec().rowspan.start == 1


def test_grid_titles_must_match_the_maps():
    with pytest.raises(ValueError, match="3 titles for 2 maps"):
        grid(torch.rand(3, 4, 4), torch.rand(2, 4, 4), titles=["a", "b", "c"])


def test_explanation_grid_titles_targets_with_class_names_and_scores(model, inputs):
    explanation = camlens.explain(model, inputs[:1], target=[[0, 1]])
    figure = explanation_grid(explanation, inputs[:1], class_names=CLASS_NAMES)
    scores = explanation.scores[0].tolist()
    assert len(figure.axes) == 3
    assert titles(figure) == ["input", f"cat {scores[0]:.2f}", f"dog {scores[1]:.2f}"]
    shown = figure.axes[2].get_images()[0].get_array()
    expected = np.asarray(overlay(inputs[0], explanation.maps[0, 1]))
    np.testing.assert_array_equal(shown, expected)


def test_explanation_grid_compares_methods_for_one_input(model, inputs):
    gradcam = camlens.explain(model, inputs, method="gradcam", target=2)
    cam = camlens.explain(model, inputs, method="cam", target=[[0, 1], [1, 2]])
    figure = explanation_grid([gradcam, cam], inputs, index=1)
    gradcam_score = gradcam.scores[1].item()
    cam_scores = cam.scores[1].tolist()
    assert titles(figure) == [
        "input",
        f"gradcam: 2 (score {gradcam_score:.2f})",
        f"cam: 1 (score {cam_scores[0]:.2f})",
        f"cam: 2 (score {cam_scores[1]:.2f})",
    ]
    np.testing.assert_array_equal(
        figure.axes[0].get_images()[0].get_array(), np.asarray(camlens.viz.to_pil(inputs[1]))
    )


def test_explanation_grid_errors_name_the_problem(model, inputs):
    explanation = camlens.explain(model, inputs, target=[0, 2])
    with pytest.raises(ValueError, match="class 2 has no name"):
        explanation_grid(explanation, inputs, index=1, class_names=["cat", "dog"])
    with pytest.raises(IndexError, match="index 5"):
        explanation_grid(explanation, inputs, index=5)


def test_save_figure_writes_a_png_pillow_opens(tmp_path):
    figure = grid(torch.rand(3, 8, 8), torch.rand(1, 8, 8))
    path = save_figure(figure, tmp_path / "figures" / "grid.png")
    assert path.is_file()
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.width > saved.height > 10
    assert len(figure.axes) == 2  # still usable after saving


def test_explanation_overlay_nests_per_input_and_target(model, inputs):
    explanation = camlens.explain(model, inputs, target=[[0, 1], [2, 0]])
    pictures = camlens.viz.explanation_overlays(explanation, inputs, colormap="jet", alpha=0.4)
    assert len(pictures) == 2 and all(len(per_input) == 2 for per_input in pictures)
    assert all(p.size == (10, 8) and p.mode == "RGB" for row in pictures for p in row)
    expected = overlay(inputs[1], explanation.maps[1, 1], alpha=0.4)
    np.testing.assert_array_equal(np.asarray(pictures[1][1]), np.asarray(expected))


def test_explanation_overlay_one_target_gives_a_flat_list(model, inputs):
    explanation = camlens.explain(model, inputs)
    pictures = camlens.viz.explanation_overlays(explanation,
                                                [camlens.viz.to_pil(image) for image in inputs])
    assert len(pictures) == 2 and all(isinstance(p, Image.Image) for p in pictures)
    assert pictures[0].size == (10, 8)
    with pytest.raises(ValueError, match="2 input"):
        camlens.viz.explanation_overlays(explanation, inputs[:1])


def test_explanation_is_plain_data_and_names_where_its_pictures_went(model, inputs):
    explanation = camlens.explain(model, inputs)
    with pytest.raises(AttributeError, match=r"camlens\.viz\.explanation_overlays"):
        explanation.overlay(inputs)
    with pytest.raises(AttributeError, match=r"camlens\.viz\.explanation_grid"):
        explanation.show(inputs)
    with pytest.raises(AttributeError, match="no attribute 'mapz'"):
        explanation.mapz  # noqa: B018
    assert getattr(explanation, "anything", None) is None


def test_explanation_grid_titles_each_target(model, inputs):
    explanation = camlens.explain(model, inputs, target=camlens.TopK(2))
    figure = camlens.viz.explanation_grid(explanation, inputs, index=1, class_names=CLASS_NAMES)
    assert isinstance(figure, Figure)
    classes = explanation.targets[1].tolist()
    scores = explanation.scores[1].tolist()
    assert titles(figure)[1:] == [
        f"{CLASS_NAMES[c]} {s:.2f}" for c, s in zip(classes, scores, strict=True)
    ]


def test_import_camlens_loads_neither_matplotlib_nor_pillow():
    code = (
        "import sys, camlens\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL')]\n"
        "import camlens.viz\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
