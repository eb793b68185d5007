"""Bad input gets a clear exception that names the bad value and what would be accepted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens


def test_unknown_layer_lists_the_closest_names(gap_net, images):
    with pytest.raises(ValueError, match=r"'featurez'.*features"):
        camlens.explain(gap_net, images, layer="featurez")


def test_unknown_layer_is_caught_when_the_method_is_built(gap_net):
    with pytest.raises(ValueError, match="fetures"):
        camlens.GradCAM(gap_net, layer="fetures")


def test_layer_given_as_a_module_that_is_not_in_the_model(gap_net, images):
    with pytest.raises(ValueError, match="not a submodule"):
        camlens.explain(gap_net, images, layer=nn.Conv2d(3, 3, 1))


def test_layer_of_the_wrong_type(gap_net, images):
    with pytest.raises(TypeError, match="42"):
        camlens.explain(gap_net, images, layer=42)


def test_layer_without_spatial_axis(gap_net, images):
    with pytest.raises(ValueError, match=r"'fc' outputs shape \(2, 5\)"):
        camlens.explain(gap_net, images, layer="fc")


def test_layer_that_never_runs(images):
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Conv2d(3, 2, 1)
            self.spare = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.used(x).mean(dim=(2, 3))

    with pytest.raises(ValueError, match="'spare' was not called"):
        camlens.explain(Unused(), images, layer="spare")


@pytest.mark.parametrize("target", [5, -1, [0, 7]])
def test_target_out_of_range(gap_net, images, target):
    with pytest.raises(IndexError, match=r"out of range.*5 outputs.*0 to 4"):
        camlens.explain(gap_net, images, layer="features", target=target)


def test_wrong_number_of_targets(gap_net, images):
    with pytest.raises(ValueError, match=r"shape \(3,\).*batch of 2"):
        camlens.explain(gap_net, images, layer="features", target=[0, 1, 2])


@pytest.mark.parametrize("target", [1.5, [0.5, 1.0], True, object()])
def test_target_of_the_wrong_type(gap_net, images, target):
    with pytest.raises(TypeError):
        camlens.explain(gap_net, images, layer="features", target=target)


def test_unknown_string_target(gap_net, images):
    with pytest.raises(ValueError, match="'cat'"):
        camlens.explain(gap_net, images, layer="features", target="cat")


def test_callable_target_of_the_wrong_shape(gap_net, images):
    with pytest.raises(ValueError, match=r"\(2,\) or \(2, K\)"):
        camlens.explain(gap_net, images, layer="features", target=lambda out: out.sum())


def test_topk_larger_than_classes(gap_net, images):
    with pytest.raises(ValueError, match="TopK\\(9\\)"):
        camlens.explain(gap_net, images, layer="features", target=camlens.TopK(9))


@pytest.mark.parametrize("k", [0, -2, 1.5])
def test_topk_needs_positive_int(k):
    with pytest.raises(ValueError, match="positive int"):
        camlens.TopK(k)


def test_inputs_on_another_device(gap_net, images):
    model = gap_net.to("meta")
    with pytest.raises(ValueError, match="device cpu but the model is on meta"):
        camlens.explain(model, images, layer="features")


def test_inference_mode_tensor(gap_net):
    with torch.inference_mode():
        frozen = torch.randn(1, 3, 6, 6)
    with pytest.raises(ValueError, match="inference-mode tensor"):
        camlens.explain(gap_net, frozen, layer="features")


def test_call_inside_inference_mode(gap_net, images):
    with torch.inference_mode(), pytest.raises(ValueError, match="inference_mode"):
        camlens.explain(gap_net, images, layer="features")


@pytest.mark.parametrize("inputs", [[[1.0]], "image.png", None, ()])
def test_inputs_that_are_not_tensors(gap_net, inputs):
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        camlens.explain(gap_net, inputs, layer="features")


def test_inputs_without_batch_axis(gap_net):
    with pytest.raises(ValueError, match=r"batch axis.*\(6,\)"):
        camlens.explain(gap_net, torch.randn(6), layer="features")


def test_model_that_is_not_a_module(images):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        camlens.explain(lambda x: x, images)


def test_unknown_method_suggests_names(gap_net, images):
    with pytest.raises(ValueError, match="'gradcamm'.*did you mean gradcam"):
        camlens.explain(gap_net, images, method="gradcamm")


@pytest.mark.parametrize("spelling", ["Grad-CAM", "grad_cam", "GRADCAM++", "Score-CAM"])
def test_method_names_ignore_case_and_dashes(spelling):
    assert camlens.get_method(spelling).name in camlens.available_methods()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam",
                                    "scorecam", "ablationcam", "guided-gradcam"])
def test_score_that_ignores_the_layer_gives_zero_maps(gap_net, images, method):
    exp = camlens.explain(gap_net, images, method=method, layer="features",
                          target=lambda out: out[:, 0] * 0 + 3.0)
    assert torch.isfinite(exp.maps).all()
    assert torch.count_nonzero(exp.maps) == 0


def test_zero_activations_give_zero_maps_not_nan(gap_net):
    exp_methods = ["cam", "gradcam", "gradcam++", "xgradcam", "eigencam"]
    dead = torch.full((1, 3, 6, 6), -50.0)  # drives every ReLU to zero
    for method in exp_methods:
        exp = camlens.explain(gap_net, dead, method=method, layer="features")
        assert torch.isfinite(exp.maps).all() and torch.isfinite(exp.raw).all(), method


def test_batch_size_must_be_positive(gap_net):
    with pytest.raises(ValueError, match="batch_size"):
        camlens.ScoreCAM(gap_net, "features", batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        camlens.AblationCAM(gap_net, "features", batch_size=-3)


def test_dict_output_without_logits(images):
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return {"scores": self.conv(x).mean(dim=(2, 3))}

    with pytest.raises(TypeError, match=r"keys \['scores'\].*output_fn"):
        camlens.explain(DictOut(), images, layer="conv")
    exp = camlens.explain(DictOut(), images, layer="conv", output_fn=lambda out: out["scores"])
    assert exp.maps.shape == (2, 6, 6)


def test_segmentation_output_needs_a_callable_target(images):
    seg = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match=r"\(B, num_classes\).*callable"):
        camlens.explain(seg, images, layer="0")
    region = torch.zeros(6, 6, dtype=torch.bool)
    region[1:3, 1:3] = True
    exp = camlens.explain(seg, images, layer="0", target=lambda out: out[:, 1][:, region].sum(1))
    assert exp.targets is None and exp.scores.shape == (2,)


def test_numpy_class_indices_are_targets(gap_net, images):
    """Labels of a numpy data set (scikit-learn's digits): a numpy integer or array of them is
    the same target as the Python ints."""
    import numpy as np

    reference = camlens.explain(gap_net, images, layer="features", target=[3, 4])
    for target in (np.array([3, 4]), np.array([3, 4], dtype=np.int32)):
        exp = camlens.explain(gap_net, images, layer="features", target=target)
        torch.testing.assert_close(exp.maps, reference.maps)
    one = camlens.explain(gap_net, images, layer="features", target=np.int64(3))
    assert one.targets.tolist() == [3, 3]
    with pytest.raises(TypeError, match="target must be None, an int"):
        camlens.explain(gap_net, images, layer="features", target=np.bool_(True))


def test_a_numpy_input_is_told_how_to_convert(gap_net, images):
    with pytest.raises(TypeError, match=r"got ndarray; for a numpy array: torch.from_numpy"):
        camlens.explain(gap_net, images.numpy(), layer="features")


@pytest.mark.parametrize("dtype, extra", [(torch.uint8, "also need the model's scaling"),
                                          (torch.float64, ""), (torch.float16, "")])
def test_pixels_of_another_dtype_than_the_weights(gap_net, images, dtype, extra):
    pixels = (images * 255).to(dtype) if dtype == torch.uint8 else images.to(dtype)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ValueError, match=rf"the input is {name} but the model's weights are "
                                         r"float32; convert it first, e.g. x.to\(torch.float32\)"
                       ) as raised:
        camlens.explain(gap_net, pixels, layer="features")
    assert extra in str(raised.value) and "the model said:" in str(raised.value)


def test_token_ids_are_not_taken_for_pixels_of_another_dtype():
    """An embedding model's integer input is not a dtype mistake: its own error is raised."""
    from torch import nn

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, ids):
            if ids.shape[1] > 2:
                raise RuntimeError("sequences of at most 2 tokens")
            return self.head(self.embed(ids).mean(dim=1))

    with pytest.raises(RuntimeError, match="^sequences of at most 2 tokens$"):
        camlens.explain(Tokens(), torch.tensor([[1, 2, 3]]), method="gradcam", layer="embed")


def test_a_list_of_images_is_told_to_stack_them(gap_net, images):
    with pytest.raises(ValueError, match=r"a list of 2 tensors is passed as the model's 2 "
                                         r"inputs, model\(x1, x2, ...\); to explain 2 images, "
                                         r"stack them into one batch: torch.stack\(images\)"):
        camlens.explain(gap_net, [images[0], images[1]], layer="features")
