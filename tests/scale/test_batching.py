"""Batching changes nothing: a batch's maps, scores, targets and notes are each input's own,
equal to explaining the inputs one at a time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camlens.scale.sources import InputItem
from camlens.scale.work import Decoded, WorkSpec, explain_batch
from camlens.targets import TopK


def decoded(digits_gap, folder, count):
    from camlens.scale.sources import read_inputs
    from camlens.scale.work import decode_input

    return [decode_input(digits_gap, WorkSpec(), item) for item in read_inputs([folder])[:count]]


def assert_same(batched, alone):
    assert [r.key for r in batched] == [r.key for r in alone]
    for together, single in zip(batched, alone, strict=True):
        assert together.error == single.error
        assert len(together.rows) == len(single.rows) > 0
        for row, expected in zip(together.rows, single.rows, strict=True):
            assert (row.method, row.layer, row.target, row.target_name) == (
                expected.method, expected.layer, expected.target, expected.target_name)
            assert row.score == pytest.approx(expected.score, rel=1e-5, abs=1e-5)
            assert torch.allclose(torch.from_numpy(row.raw), torch.from_numpy(expected.raw),
                                  rtol=1e-4, atol=1e-5 * max(1.0, float(expected.raw.max())))
            assert row.notes == expected.notes
        assert together.console_notes == single.console_notes
        for mine, own in zip(together.explanations or [], single.explanations or [],
                             strict=True):  # the pictures' maps, computed for the batch
            assert torch.allclose(mine.maps, own.maps, atol=1e-4)


@pytest.mark.parametrize(("methods", "layer", "target", "count"), [
    (("gradcam",), None, None, 3),  # the automatic layer: its note quotes one input's shapes
    (("gradcam", "layercam"), "features", None, 6),
    (("gradcam++",), "features", TopK(3), 6),
    (("gradcam",), ["features.3", "features"], 4, 6),
])
def test_a_batch_explains_each_input_as_if_alone(digits_gap, digit_scenes, methods, layer,
                                                  target, count):
    inputs = decoded(digits_gap, digit_scenes, count)
    spec = WorkSpec(methods=methods, layer=layer, target=target, pictures=True,
                    options={"fuse": "max"} if isinstance(layer, list) else {})
    batched = explain_batch(digits_gap, spec, "cpu", inputs)
    alone = [explain_batch(digits_gap, spec, "cpu", [one])[0] for one in inputs]
    assert_same(batched, alone)
    assert len({round(r.rows[0].score, 4) for r in batched}) > 1  # not one input repeated


def test_batch_norm_in_eval_and_a_resnet_batch_equal_one_at_a_time():
    from camlens.models import LoadedModel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    for module in model.modules():  # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    loaded = LoadedModel(model, "bn", preprocess=lambda image: image)
    inputs = [Decoded(InputItem(f"x{i}"), torch.rand(1, 3, 20, 20)) for i in range(5)]
    spec = WorkSpec(methods=("gradcam", "scorecam"), layer="3")
    assert_same(explain_batch(loaded, spec, "cpu", inputs),
                [explain_batch(loaded, spec, "cpu", [one])[0] for one in inputs])
    assert model.training  # the model's mode is left as found


def test_a_bad_input_in_a_batch_fails_alone(digits_gap, digit_scenes):
    inputs = decoded(digits_gap, digit_scenes, 4)
    broken = inputs[1].tensor.clone()
    broken[0, 0, 0, 0] = float("nan")
    inputs[1] = Decoded(InputItem("nan.png"), broken)
    inputs.insert(2, Decoded(InputItem("unreadable.png"), error="unreadable.png: not an image"))
    results = explain_batch(digits_gap, WorkSpec(), "cpu", inputs)
    assert [r.key for r in results] == [inputs[0].item.key, "nan.png", "unreadable.png",
                                        inputs[3].item.key, inputs[4].item.key]
    assert results[1].error.startswith("nan.png: ") and "NaN" in results[1].error
    assert results[2].error == "unreadable.png: not an image"
    assert all(r.error is None and r.rows for r in (results[0], *results[3:]))


def test_an_empty_map_is_noted_for_its_own_input_only(digits_gap, digit_scenes):
    """Inputs whose map is empty get "1 of 1 ... zero everywhere"; the others no note."""
    inputs = decoded(digits_gap, digit_scenes, 4)
    inputs[2] = Decoded(InputItem("black.png"), torch.zeros_like(inputs[2].tensor))
    spec = WorkSpec(methods=("gradcam",), target=7)
    batched = explain_batch(digits_gap, spec, "cpu", inputs)
    alone = [explain_batch(digits_gap, spec, "cpu", [one])[0] for one in inputs]
    assert_same(batched, alone)
    def empty(result):
        return any("zero everywhere" in note for note in result.rows[0].notes)

    assert [r.key for r in batched if empty(r)] == [r.key for r in alone if empty(r)] == [
        "black.png"]
    for result in batched:
        for note in result.console_notes:
            assert note.startswith("1 of 1 gradcam maps")


def written_files(writer, results, together: bool, out) -> dict[str, bytes]:
    """What ``writer`` puts in ``out`` for ``results``: name -> bytes."""
    done = writer.write_batch(results) if together else [
        written for result in results for written in writer.write(result)]
    assert all(written.error is None for written in done)
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


@pytest.mark.parametrize(("methods", "target"), [
    (("gradcam",), None),
    (("gradcam", "layercam"), TopK(3)),  # several maps per input, and a grid per input
])
def test_overlays_drawn_together_are_the_files_drawn_one_at_a_time(digits_gap, digit_scenes,
                                                                   tmp_path, methods, target):
    from camlens.scale.writers import PngWriter

    inputs = decoded(digits_gap, digit_scenes, 5)
    spec = WorkSpec(methods=methods, layer="features", target=target, pictures=True)
    results = explain_batch(digits_gap, spec, "cpu", inputs)
    files = {}
    for together in (False, True):
        out = tmp_path / str(together)
        out.mkdir()
        files[together] = written_files(PngWriter(digits_gap, out), results, together, out)
    assert len(files[True]) == 5 * (len(methods) * (3 if target else 1) + (1 if target else 0))
    overlays = [name for name in files[True] if not name.endswith("grid.png")]
    assert overlays and all(files[True][name] == files[False][name] for name in overlays)
    assert files[True].keys() == files[False].keys()


def test_a_normalised_model_with_two_input_sizes_draws_as_one_at_a_time(tmp_path):
    """Inputs of two sizes are drawn in two groups (and one alone), the normalisation undone
    for each, the pixels those of one at a time."""
    from camlens.models import LoadedModel
    from camlens.scale.writers import PngWriter

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    loaded = LoadedModel(model, "norm", preprocess=lambda image: image,
                         mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    sizes = [(16, 16), (16, 16), (12, 20), (16, 16), (12, 20), (9, 9)]
    inputs = [Decoded(InputItem(f"x{i}.png"), torch.randn(1, 3, *size))
              for i, size in enumerate(sizes)]
    results = explain_batch(loaded, WorkSpec(methods=("gradcam",), layer="0", pictures=True),
                            "cpu", inputs)
    writer = PngWriter(loaded, tmp_path)
    assert sorted(writer._drawn_together(results)) == [0, 1, 2, 3, 4]  # the 9x9 input alone
    files = {}
    for together in (False, True):
        out = tmp_path / str(together)
        out.mkdir()
        files[together] = written_files(PngWriter(loaded, out), results, together, out)
    assert len(files[True]) == 6 and files[True] == files[False]


def test_overlays_drawn_together_stay_within_their_memory_bound(digits_gap, digit_scenes,
                                                                tmp_path, monkeypatch):
    """The batch is drawn in chunks under ``TOGETHER_PIXELS``; inputs with more maps than the
    bound allows are drawn one at a time; the files are the same either way."""
    import importlib

    import camlens.scale.writers as writers

    overlay_module = importlib.import_module("camlens.viz.overlay")  # not viz's overlay()

    inputs = decoded(digits_gap, digit_scenes, 5)
    spec = WorkSpec(methods=("gradcam",), layer="features", target=TopK(2), pictures=True)
    results = explain_batch(digits_gap, spec, "cpu", inputs)
    expected = written_files(writers.PngWriter(digits_gap, tmp_path / "alone"), results, False,
                             _made(tmp_path / "alone"))
    per_input = 2 * 64 * 64  # two maps of 64x64 each
    monkeypatch.setattr(overlay_module, "BLEND_PIXELS", 3 * 64 * 64)  # blends in chunks too
    for bound, together in ((2 * per_input, 5), (per_input, 0)):
        monkeypatch.setattr(writers, "TOGETHER_PIXELS", bound)
        writer = writers.PngWriter(digits_gap, _made(tmp_path / str(bound)))
        assert len(writer._drawn_together(results)) == together
        assert written_files(writer, results, True, tmp_path / str(bound)) == expected


def _made(folder):
    folder.mkdir()
    return folder


def test_an_input_whose_overlay_is_refused_fails_alone(digits_gap, digit_scenes, tmp_path):
    import dataclasses

    from camlens.scale.writers import PngWriter

    inputs = decoded(digits_gap, digit_scenes, 3)
    results = explain_batch(digits_gap, WorkSpec(layer="features", pictures=True), "cpu", inputs)
    exp = results[1].explanations[0]
    results[1].explanations = [dataclasses.replace(  # a map overlay() refuses
        exp, _maps=torch.full_like(exp.maps, float("nan")))]
    done = PngWriter(digits_gap, tmp_path).write_batch(results)
    assert [written.error is None for written in done] == [True, False, True]
    assert "cannot draw its overlays" in done[1].error and "NaN" in done[1].error
    assert len(list(tmp_path.iterdir())) == 2
