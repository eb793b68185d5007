"""`camlens data export`: the shipped digits as a folder of PNG images, COCO JSON and masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main
from camlens.data import BiasedDigits, ClutteredDigits
from camlens.data.annotations import decode_rle, parse_region, read_coco, region_pixels


def test_biased_digits_export_writes_images_coco_masks_and_variants(tmp_path):
    folder = tmp_path / "biased"
    result = CliRunner().invoke(main, ["data", "export", "biased-digits", str(folder),
                                       "--size", "4"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 images of biased-digits" in result.output
    coco = read_coco(folder / "annotations.json")
    assert not coco.problems and len(coco) == 4
    assert coco.categories["mark"] == "cue" and coco.categories["7"] == "digit"
    data = BiasedDigits(4, "test", 0, mark="random")
    ids = json.loads((folder / "mask_ids.json").read_text())
    assert ids == {"1": "digit", "2": "mark"}
    for index, (file, annotation) in enumerate(sorted(coco.images.items(),
                                                      key=lambda kv: kv[0].split("/")[1])):
        item = data[index]
        assert file.split("/")[0] == str(int(item["label"]))
        picture = np.asarray(Image.open(folder / "images" / file), dtype=np.float64) / 255
        assert np.abs(picture - item["image"][0].numpy()).max() <= 1 / 510 + 1e-6
        digit, mark = annotation.objects
        assert digit.box == tuple(item["box"].tolist()) and mark.box == tuple(
            item["mark_box"].tolist())
        ink = decode_rle(digit.rle)
        x0, y0, x1, y1 = (int(v) for v in item["box"])
        assert ink.any() and not ink[:, :x0].any() and not ink[y1:, :].any()
        square = region_pixels(parse_region("mark=category:mark"), annotation, (64, 64))
        assert square.sum() == 16
        ids_picture = np.asarray(Image.open(folder / "masks" / file))
        assert ((ids_picture == 1) == ink).all() and ((ids_picture == 2) == square).all()
        for variant in ("no-mark", "flipped", "aligned"):
            assert (folder / variant / file).is_file()
    cues = (folder / "labels.csv").read_text().splitlines()
    assert cues[0] == "file,label,cue" and len(cues) == 5
    first_item = data[0]
    assert cues[1].split(",")[1:] == [str(int(first_item["label"])),
                                      str(int(first_item["mark_class"]))]
    assert all(line.endswith(",") for line in
               (folder / "labels-no-mark.csv").read_text().splitlines()[1:])
    no_mark = BiasedDigits(4, "test", 0, mark="none")[0]["image"][0].numpy()
    first = sorted(coco.images, key=lambda f: f.split("/")[1])[0]
    picture = np.asarray(Image.open(folder / "no-mark" / first), dtype=np.float64) / 255
    assert np.abs(picture - no_mark).max() <= 1 / 510 + 1e-6


def test_cluttered_digits_export_and_a_folder_that_is_not_empty(tmp_path):
    folder = tmp_path / "cluttered"
    result = CliRunner().invoke(main, ["data", "export", "cluttered-digits", str(folder),
                                       "--size", "3", "--seed", "2"])
    assert result.exit_code == 0, result.output
    boxes = read_coco(folder / "boxes.json")
    data = ClutteredDigits(3, "test", 2)
    found = sorted(boxes.images.values(), key=lambda a: a.file.split("/")[1])
    assert [a.objects[0].box for a in found] == [tuple(data[i]["box"].tolist())
                                                 for i in range(3)]
    assert [a.objects[0].category for a in found] == [str(int(data[i]["label"]))
                                                      for i in range(3)]
    again = CliRunner().invoke(main, ["data", "export", "cluttered-digits", str(folder)])
    assert again.exit_code == 2 and "is not empty; export into a new folder" in again.output


@pytest.mark.parametrize("name", ["imagenet", "biased_digits"])
def test_unknown_data_set_names_are_refused(name, tmp_path):
    result = CliRunner().invoke(main, ["data", "export", name, str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "biased-digits" in result.output and "cluttered-digits" in result.output
