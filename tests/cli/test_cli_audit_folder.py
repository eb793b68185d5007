"""`camlens audit --images`: the audit of an annotated folder gives the built-in audit's figures on
the same images; bad and missing annotations are reported and the run goes on; hostile names are
escaped in the report."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from camlens.audit import audit
from camlens.cli import main
from camlens.data import BiasedDigits
from camlens.data.export import export_biased_digits
from camlens.zoo import load

SIZE = 12


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit-folder") / "biased"
    export_biased_digits(folder, size=SIZE, seed=0)
    return folder


class Quantized(torch.utils.data.Dataset):
    """Built-in items with the image as the PNG stores it (8 bits)."""

    def __init__(self, mark: str) -> None:
        self.data = BiasedDigits(SIZE, "test", 0, mark=mark)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        item = dict(self.data[index])
        item["image"] = (item["image"] * 255).round() / 255
        return item


def _folder_audit(exported, out, *extra):
    return CliRunner().invoke(main, [
        "audit", "--model", "digits-biased", "--images", str(exported / "images"),
        "--annotations", str(exported / "annotations.json"), "--region", "object=box:digit",
        "--region", "mark=box:mark", "--labels", str(exported / "labels.csv"),
        "--variant", f"cue removed={exported / 'no-mark'}",
        "--variant-labels", f"cue removed={exported / 'labels-no-mark.csv'}",
        "--variant", f"cue flipped={exported / 'flipped'}",
        "--variant-labels", f"cue flipped={exported / 'labels-flipped.csv'}",
        "--batch-size", "5", "--top", "2", "--out", str(out), *extra])


def test_the_folder_audit_gives_the_built_in_figures_on_the_same_images(exported, tmp_path):
    result = _folder_audit(exported, tmp_path / "folder")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "folder" / "summary.json").read_text())
    model = load("digits-biased")
    variants = {"normal": Quantized("random"), "removed": Quantized("none"),
                "flipped": Quantized("flipped")}
    # the folder lists the images by class sub-folder: the same images in another order; the
    # PNG's grey levels reach the model through Pillow's RGB -> float conversion, equal to
    # round(255 x) / 255 up to float rounding (1e-7), so shares agree to 1e-4
    built_in = audit(model, variants["normal"], {"object": "box", "mark": "mark_box"},
                     batch_size=5, counterfactuals=variants, cue_key="mark_class").to_dict()
    folder_overall, reference = summary["overall"], built_in["overall"]
    assert folder_overall["count"] == reference["count"] == SIZE
    assert folder_overall["accuracy"] == reference["accuracy"]
    for region in ("object", "mark"):
        for key in ("mean_share", "median_share", "mean_area", "lift"):
            assert folder_overall["regions"][region][key] == pytest.approx(
                reference["regions"][region][key], rel=1e-4, abs=1e-4), (region, key)
    assert summary["per_class"].keys() == built_in["per_class"].keys()
    for name, stats in summary["per_class"].items():
        assert stats["count"] == built_in["per_class"][name]["count"]
        assert stats["regions"]["object"]["mean_share"] == pytest.approx(
            built_in["per_class"][name]["regions"]["object"]["mean_share"], abs=1e-4)
    for key in ("accuracy", "cue_following", "cue_count", "count"):
        assert [v[key] for v in summary["counterfactual"]["variants"]] == [
            v[key] for v in built_in["counterfactual"]["variants"]], key
    for group, stats in summary["by_cue"].items():
        assert stats["count"] == built_in["by_cue"][group]["count"]
        assert stats["regions"]["mark"]["mean_share"] == pytest.approx(
            built_in["by_cue"][group]["regions"]["mark"]["mean_share"], abs=1e-4)
    records = {r["file"] for r in summary["top"]["mark"]}
    assert all(name.endswith(".png") for name in records)


@pytest.mark.slow
def test_the_folder_audit_is_the_built_in_command_to_three_decimals(exported, tmp_path):
    result = _folder_audit(exported, tmp_path / "folder")
    assert result.exit_code == 0, result.output
    folder_overall = json.loads((tmp_path / "folder" / "summary.json").read_text())["overall"]
    # the built-in command on the generated (not 8-bit) images
    direct = CliRunner().invoke(main, ["audit", "--model", "digits-biased", "--size",
                                       str(SIZE), "--batch-size", "5", "--top", "2",
                                       "--out", str(tmp_path / "built-in")])
    assert direct.exit_code == 0, direct.output
    generated = json.loads((tmp_path / "built-in" / "summary.json").read_text())["overall"]
    for region in ("object", "mark"):
        assert folder_overall["regions"][region]["mean_share"] == pytest.approx(
            generated["regions"][region]["mean_share"], abs=1e-3)


def test_broken_and_missing_annotations_are_reported_and_the_rest_audited(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported / "images", folder)
    coco = json.loads((exported / "annotations.json").read_text())
    broken_file = coco["images"][0]["file_name"]
    coco["annotations"][0]["bbox"] = [1, 1, -4, 2]  # image 1's digit
    missing_file = coco["images"][1]["file_name"]
    coco["images"] = coco["images"][:1] + coco["images"][2:]  # image 2 unlisted
    (folder / "0" / "junk.png").parent.mkdir(exist_ok=True)
    (folder / "0" / "junk.png").write_bytes(b"no picture")
    coco["images"].append({"id": 999, "file_name": "0/junk.png"})
    coco["images"].append({"id": 1000, "file_name": "gone.png"})
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    result = CliRunner().invoke(main, [
        "audit", "--model", "digits-biased", "--images", str(folder), "--annotations",
        str(tmp_path / "coco.json"), "--region", "object=category:digit", "--region",
        "mark=category:mark", "--top", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["overall"]["count"] == SIZE - 2
    left_out = "\n".join(summary["left_out"])
    assert f"{broken_file}: left out, its annotations are broken" in left_out
    assert "has a negative width or height" in left_out
    assert f"{missing_file}: not in the annotations" in left_out
    assert "0/junk.png: not an image Pillow can read" in left_out
    assert "gone.png is annotated but not among the images" in left_out
    assert "left out: " in result.output


def test_hostile_names_are_escaped_in_the_report(exported, tmp_path):
    folder = tmp_path / "hostile"
    coco = json.loads((exported / "annotations.json").read_text())
    hostile = "<img src=x onerror=alert(1)>.png"
    (folder / "3").mkdir(parents=True)
    for entry in coco["images"]:
        name = f"3/{hostile.replace('.png', '')}{entry['id']}.png"
        shutil.copy(exported / "images" / entry["file_name"], folder / name)
        entry["file_name"] = name
    coco["categories"][-1]["name"] = "<script>alert('mark')</script>"
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    result = CliRunner().invoke(main, [
        "audit", "--model", "digits-biased", "--images", str(folder), "--annotations",
        str(tmp_path / "coco.json"), "--region", "<b>cue</b>=box:<script>alert('mark')</script>",
        "--labels", str(_labels(tmp_path, coco)), "--top", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page and "<img src=x" not in page and "<b>cue" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b&gt;cue&lt;/b&gt;" in page


def _labels(tmp_path, coco):
    path = tmp_path / "labels.csv"
    path.write_text("file,label\n" + "".join(f"{e['file_name']},{e['label']}\n"
                                             for e in coco["images"]))
    return path


@pytest.mark.parametrize(("arguments", "message"), [
    (["--region", "object=box:digit"], "--region describe a folder of images: give it with "
     "--images DIR"),
    (["--images", "IMAGES", "--data", "biased-digits", "--region", "o=box:*"],
     "either --data"),
    (["--images", "IMAGES", "--annotations", "COCO", "--region", "object"],
     "region 'object' is not NAME=KIND:VALUE"),
    (["--images", "IMAGES", "--annotations", "COCO", "--region", "object=category:cat"],
     "no category or supercategory 'cat'; the annotations have ['0', '1'"),
    (["--images", "IMAGES", "--region", "object=box:*"], "needs --annotations FILE"),
    (["--images", "IMAGES", "--annotations", "COCO", "--region", "o=box:*", "--variant",
      "nowhere"], "'nowhere' is not NAME=DIR"),
])
def test_bad_folder_options_exit_with_status_2(arguments, message, exported, tmp_path):
    arguments = [str(exported / "images") if a == "IMAGES" else
                 str(exported / "annotations.json") if a == "COCO" else a for a in arguments]
    result = CliRunner().invoke(main, ["audit", "--model", "digits-biased", *arguments,
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
