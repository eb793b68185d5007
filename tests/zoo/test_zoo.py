"""The shipped reference models: load, accuracy on record, CAM where it applies, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from camlens.data import ClutteredDigits, materialize
from camlens.experiments.training import TrainingRecipe, accuracy, train
from camlens.zoo import available_models, digit_canvas, get_weights, load, weights_path
from camlens.zoo.registry import file_metadata

SHIPPED = ["digits-gap", "digits-fc"]


@pytest.fixture(scope="module")
def test_digits() -> dict[str, torch.Tensor]:
    return materialize(ClutteredDigits(300, "test", seed=0))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_in_eval_mode_with_its_weights_description(name):
    model = load(name)
    assert not model.training
    weights = get_weights(name)
    assert weights.class_names == tuple("0123456789")
    assert weights.target_layer == "features" and weights.input_kind == "image"
    assert weights.metrics["test_accuracy"] > 0.9
    assert weights.metadata["command"] == f"camlens train {name} --seed 0"
    assert weights.file == weights_path(name) and weights_path(name).stat().st_size <= 2_000_000
    assert weights.preprocess(torch.zeros(64, 64)).shape == (1, 1, 64, 64)
    assert type(weights.load()) is type(model)


def test_what_moved_to_the_weights_description_says_where():
    model = load("digits-gap")
    for name in ("class_names", "target_layer", "preprocess", "metadata"):
        with pytest.raises(AttributeError, match=rf"get_weights\(NAME\)\.{name}"):
            getattr(model, name)
    assert getattr(model, "class_names", None) is None  # getattr with a default still works
    with pytest.warns(DeprecationWarning, match="get_weights"):
        from camlens.zoo.registry import entry
    assert entry("digits-gap") is get_weights("digits-gap")


def test_digits_gap_reaches_the_target_accuracy(test_digits):
    model = load("digits-gap")
    assert get_weights("digits-gap").metrics["test_accuracy"] >= 0.95
    assert accuracy(model, test_digits["image"], test_digits["label"]) >= 0.93  # a 300-image check


def test_cam_equals_gradcam_on_digits_gap_and_refuses_digits_fc(test_digits):
    images = test_digits["image"][:16]
    gap = load("digits-gap")
    cam = camlens.explain(gap, images, method="cam", layer="features")
    gradcam = camlens.explain(gap, images, method="gradcam", layer="features")
    torch.testing.assert_close(cam.maps, gradcam.maps, rtol=0, atol=1e-5)
    fc = load("digits-fc")
    with pytest.raises(ValueError, match="gradcam"):
        camlens.explain(fc, images, method="cam", layer="features")
    assert camlens.explain(fc, images, method="gradcam", layer="features").maps.shape == (
        16, 64, 64)


def test_unknown_model_names_the_closest():
    with pytest.raises(ValueError, match="digits-gap"):
        load("digits-gapp")
    assert set(SHIPPED) <= set(available_models())


def test_missing_weights_say_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="camlens train digits-fc"):
        load("digits-fc", weights=tmp_path / "nothing.safetensors")


def test_training_is_reproducible_from_a_seed(tmp_path):
    recipe = TrainingRecipe(epochs=1, train_size=64, test_size=20, batch_size=32)
    first = train("digits-gap", seed=5, recipe=recipe, out=tmp_path / "a.safetensors",
                  progress=False)
    second = train("digits-gap", seed=5, recipe=recipe, out=tmp_path / "b.safetensors",
                   progress=False)
    a, b = load("digits-gap", weights=first["path"]), load("digits-gap", weights=second["path"])
    right_state = b.state_dict()
    for key, left in a.state_dict().items():
        assert torch.equal(left, right_state[key]), key
    metadata = file_metadata(first["path"])
    assert metadata["seed"] == "5"
    assert metadata["command"] == "camlens train digits-gap --seed 5"


def test_the_bias_level_reaches_the_data_and_the_recorded_command(tmp_path):
    from camlens.experiments.training import RECIPES, datasets

    assert datasets("biased", 10, 10, 0)[0].bias == 0.99  # the data set's default
    assert datasets("biased", 10, 10, 0, bias=0.5)[0].bias == 0.5
    assert RECIPES["digits-debiased"].bias == 0.0
    with pytest.raises(ValueError, match="biased digits only"):
        datasets("cluttered", 10, 10, 0, bias=0.5)
    recipe = TrainingRecipe(epochs=1, train_size=64, test_size=20, batch_size=32, bias=0.9)
    summary = train("digits-biased", seed=1, recipe=recipe, out=tmp_path / "b.safetensors",
                    progress=False)
    metadata = file_metadata(summary["path"])
    assert metadata["bias"] == "0.9"
    assert metadata["command"] == "camlens train digits-biased --seed 1 --bias 0.9"


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_preprocess_accepts_common_image_modes(mode):
    array = np.zeros((40, 30), dtype=np.uint8)
    array[10:30, 12:18] = 255
    image = Image.fromarray(array).convert(mode) if mode != "I;16" else Image.fromarray(
        array.astype(np.uint16) * 257)
    tensor = digit_canvas(image)
    assert tensor.shape == (1, 1, 64, 64)
    assert tensor.max() == pytest.approx(1.0, abs=0.01) and tensor.min() >= 0
    assert tensor[0, 0, 32, 32] > 0.9 and tensor[0, 0, 2, 2] < 0.05


def test_preprocess_inverts_dark_ink_on_light_paper():
    paper = np.full((32, 32), 250, dtype=np.uint8)
    paper[8:24, 14:18] = 10
    tensor = digit_canvas(paper)
    assert tensor[0, 0, 32, 32] > 0.9 and tensor[0, 0, 2, 2] < 0.05


def test_preprocess_refuses_a_volume():
    with pytest.raises(ValueError, match="2-D picture"):
        digit_canvas(torch.zeros(2, 5, 5, 5))
