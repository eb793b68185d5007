"""`camlens evaluate`: the table for a model and a folder with boxes, equal to the library's, in
Markdown, CSV and JSON; bad input names the value and what is accepted."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from camlens.cli import main
from camlens.data import AnnotatedImages, image_folder, read_coco
from camlens.data.export import export_cluttered_digits
from camlens.evaluation import evaluate
from camlens.zoo import get_weights, load

QUICK = ["--skip", "deletion", "--skip", "insertion", "--skip", "road", "--resamples", "50"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate-folder") / "cluttered"
    export_cluttered_digits(folder, size=8, seed=0)
    return folder


def _evaluate(exported, *extra):
    return CliRunner().invoke(main, [
        "evaluate", "--model", "digits-gap", "--images", str(exported / "images"), "--boxes",
        str(exported / "boxes.json"), "--method", "gradcam", "--method", "CAM", *QUICK, *extra])


def test_the_command_gives_the_library_table(exported, tmp_path):
    out = tmp_path / "table.json"
    result = _evaluate(exported, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "| gradcam | 8 |" in result.output and "| cam | 8 |" in result.output
    assert "tolerance 4 px" in result.output  # 15 px on 224 pixels, scaled to 64
    data = json.loads(out.read_text())
    weights = get_weights("digits-gap")
    items = AnnotatedImages(exported / "images", image_folder(exported / "images"),
                            weights.preprocess, annotations=read_coco(exported / "boxes.json"),
                            boxes="*", class_to_index={str(d): d for d in range(10)})
    table = evaluate(load("digits-gap"), items, methods=("gradcam", "cam"), layer="features",
                     metrics=("localization", "maxboxacc", "pointing", "drop"), tolerance=4,
                     resamples=50)
    for row in data["rows"]:
        for key, cell in row["values"].items():
            assert cell["value"] == pytest.approx(table.value(row["method"], key), abs=1e-5)
    assert data["settings"]["command"].startswith("camlens evaluate --model digits-gap")
    assert data["settings"]["interval"].startswith("95%: Wilson score for the proportions")


def test_csv_and_markdown_outputs_and_a_random_subset(exported, tmp_path):
    out = tmp_path / "table.csv"
    result = _evaluate(exported, "--limit", "5", "--seed", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("method,images,error,loc@0.20") and len(lines) == 3
    assert lines[1].startswith("gradcam,5,")
    assert "drawn at random from 8, seed 1" in result.output
    markdown = tmp_path / "table.md"
    result = _evaluate(exported, "--format", "md", "--out", str(markdown))
    assert markdown.read_text().startswith("| method | images | top-1 loc. error % (20%)")


def test_images_without_boxes_or_unreadable_are_reported(exported, tmp_path):
    coco = json.loads((exported / "boxes.json").read_text())
    coco["images"] = coco["images"][1:]
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    result = CliRunner().invoke(main, [
        "evaluate", "--model", "digits-gap", "--images", str(exported / "images"), "--boxes",
        str(tmp_path / "boxes.json"), *QUICK])
    assert result.exit_code == 1
    assert "| gradcam | 7 |" in result.output
    assert "left out: " in result.output and "not in the annotations" in result.output


@pytest.mark.parametrize(("arguments", "message"), [
    (["--method", "gradcan"], "unknown method"),
    (["--category", "cat"], "no category 'cat' for the boxes; the annotations have ['0', '1'"),
    (["--skip", "localization", "--skip", "maxboxacc", "--skip", "pointing", "--skip",
      "deletion", "--skip", "insertion", "--skip", "drop", "--skip", "road"],
     "every metric is skipped"),
    (["--skip", "speed"], "'speed' is not one of 'localization'"),
    (["--format", "xlsx"], "'xlsx' is not one of 'md', 'csv', 'json'"),
])
def test_bad_options_name_the_value_and_what_is_accepted(arguments, message, exported):
    result = CliRunner().invoke(main, [
        "evaluate", "--model", "digits-gap", "--images", str(exported / "images"), "--boxes",
        str(exported / "boxes.json"), *arguments])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_a_boxes_file_of_an_unknown_format_is_refused(exported, tmp_path):
    (tmp_path / "boxes.yaml").write_text("boxes: []")
    result = CliRunner().invoke(main, [
        "evaluate", "--model", "digits-gap", "--images", str(exported / "images"), "--boxes",
        str(tmp_path / "boxes.yaml")])
    assert result.exit_code == 2
    assert "unknown annotation format '.yaml'; expected a COCO .json" in result.output
