"""Reading the user's annotations (COCO, Pascal VOC, CSV, PNG masks), named regions, the geometry
of a preprocessing, and the streamed folder data set with broken and missing annotations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.data.annotations import (
    AnnotationError,
    decode_rle,
    encode_rle,
    parse_region,
    polygon_mask,
    read_annotations,
    read_box_csv,
    read_coco,
    read_mask_ids,
    read_voc,
    region_pixels,
)
from camlens.data.folders import (
    AnnotatedImages,
    class_indices,
    image_folder,
    read_label_list,
    select,
)
from camlens.data.geometry import GeometryError, InputGeometry, probe_geometry


def _coco(tmp_path, annotations, images=None, categories=None):
    data = {"images": images or [{"id": 1, "file_name": "a/one.png", "width": 20, "height": 10},
                                 {"id": 2, "file_name": "b/two.png", "width": 20, "height": 10}],
            "annotations": annotations,
            "categories": categories or [{"id": 1, "name": "dog", "supercategory": "animal"},
                                         {"id": 2, "name": "mark", "supercategory": "cue"}]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


def test_rle_round_trip_and_the_coco_string_form():
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = rng.integers(1, 20, 2)
        mask = rng.random((height, width)) < rng.random()
        for compressed in (True, False):
            assert (decode_rle(encode_rle(mask, compressed)) == mask).all()
    centre = np.zeros((3, 3), dtype=bool)
    centre[1, 1] = True
    # runs down the columns: 4 zeros, 1 one, 4 zeros -> "414" in the COCO API's string form
    assert encode_rle(centre)["counts"] == "414"
    assert decode_rle({"size": [3, 3], "counts": [4, 1, 4]})[1, 1]
    with pytest.raises(ValueError, match="add up to 8 pixels, not 3 x 3 = 9"):
        decode_rle({"size": [3, 3], "counts": [4, 1, 3]})


def test_a_square_polygon_covers_its_box_exactly():
    mask = polygon_mask([[16.0, 2.0, 20.0, 2.0, 20.0, 6.0, 16.0, 6.0]], (10, 30))
    expected = np.zeros((10, 30), dtype=bool)
    expected[2:6, 16:20] = True
    assert (mask == expected).all()


def test_coco_boxes_outlines_and_broken_entries(tmp_path):
    rle = encode_rle(np.pad(np.ones((2, 3), dtype=bool), ((1, 7), (4, 13))))
    path = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 1, 5, 4]},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rle},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2],
         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1, 1, -3, 2]},  # broken
        {"id": 5, "image_id": 9, "category_id": 1, "bbox": [1, 1, 3, 2]},  # no such image
    ])
    read = read_coco(path)
    assert set(read.images) == {"a/one.png", "b/two.png"}
    objects = read["a/one.png"].objects
    assert objects[0].box == (2.0, 1.0, 7.0, 5.0) and objects[0].supercategory == "animal"
    assert objects[1].box == (4.0, 1.0, 7.0, 3.0)  # from the RLE
    assert read.bad == {"b/two.png"}
    assert any("annotation 4 (b/two.png): bbox [1, 1, -3, 2] has a negative width" in p
               for p in read.problems)
    assert any("image_id 9 is not in 'images'" in p for p in read.problems)
    # regions: an outline where there is one, else the box; by category or supercategory
    size = (10, 20)
    mark = region_pixels(parse_region("cue=category:cue"), read["a/one.png"], size)
    assert mark.sum() == 6 and mark[1:3, 4:7].all()
    dogs = region_pixels(parse_region("object=category:dog"), read["a/one.png"], size)
    assert dogs.sum() == 5 * 4 + 4 - 0 and dogs[0:2, 0:2].all()
    boxes = region_pixels(parse_region("object=box:*"), read["a/one.png"], size)
    assert boxes[1:3, 4:7].all() and boxes[1:5, 2:7].all()
    with pytest.raises(AnnotationError, match="no category or supercategory 'cat'"):
        region_pixels(parse_region("object=category:cat"), None, size,
                      categories=read.categories)


def test_not_coco_and_bad_json_name_the_file(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="not a COCO file; expected an object with lists "):
        read_coco(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(AnnotationError, match="bad.json: not valid JSON"):
        read_annotations(tmp_path / "bad.json")
    (tmp_path / "boxes.txt").write_text("")
    with pytest.raises(AnnotationError, match="unknown annotation format '.txt'; expected a COCO"):
        read_annotations(tmp_path / "boxes.txt")


@pytest.mark.parametrize(("text", "message"), [
    ("object", "is not NAME=KIND:VALUE"),
    ("object=shape:dog", "KIND one of category, box, mask"),
    ("=category:dog", "for example object=category:dog"),
])
def test_bad_region_specs_name_the_value_and_the_forms(text, message):
    with pytest.raises(AnnotationError, match=message) as caught:
        parse_region(text)
    assert repr(text) in str(caught.value)


def _voc(name, objects, size=(20, 10)):
    boxes = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                    f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                    for n, (a, b, c, d) in objects)
    return (f"<annotation><filename>{name}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height></size>{boxes}</annotation>")


def test_pascal_voc_is_one_based_and_inclusive(tmp_path):
    folder = tmp_path / "xml"
    folder.mkdir()
    (folder / "one.xml").write_text(_voc("one.png", [("dog", (1, 2, 5, 6))]))
    (folder / "two.xml").write_text(_voc("two.png", [("dog", (5, 2, 1, 6))]))  # xmax < xmin
    (folder / "three.xml").write_text("<annotation><filename>")
    (folder / "four.xml").write_text('<!DOCTYPE x [<!ENTITY a "aaaa">]><annotation/>')
    read = read_voc(folder)
    assert read["one.png"].objects[0].box == (0.0, 1.0, 5.0, 6.0)
    assert "two.png" not in read.images and "dog" in read.categories
    problems = "\n".join(read.problems)
    assert "two.xml: object 0 (dog): bndbox (5, 2, 1, 6) has xmax < xmin" in problems
    assert "three.xml: not well-formed XML" in problems
    assert "four.xml: has a DOCTYPE or ENTITY declaration; refused" in problems


def test_csv_boxes_in_either_form_and_bad_rows(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("file,label,x,y,width,height\none.png,dog,1,2,3,4\ntwo.png,dog,a,2,3,4\n")
    read = read_box_csv(path)
    assert read["one.png"].objects[0].box == (1.0, 2.0, 4.0, 6.0)
    assert read.bad == {"two.png"} and "line 3 (two.png)" in read.problems[0]
    path.write_text("name,x0\none.png,1\n")
    with pytest.raises(AnnotationError, match="lacks a file column"):
        read_box_csv(path)


def test_mask_ids_and_mask_regions(tmp_path):
    (tmp_path / "ids.json").write_text(json.dumps({"1": "dog", "2": "watermark"}))
    names = read_mask_ids(tmp_path / "ids.json")
    assert names == {"dog": 1, "watermark": 2}
    ids = np.zeros((4, 4), dtype=np.int64)
    ids[0, 0] = 2
    rule = parse_region("cue=mask:watermark")
    mask = region_pixels(rule, None, (4, 4), mask_ids=ids, mask_names=names)
    assert mask.sum() == 1 and mask[0, 0]
    assert region_pixels(parse_region("cue=mask:1"), None, (4, 4), mask_ids=ids) is None
    with pytest.raises(AnnotationError, match="'cat' is neither a mask id nor a named id"):
        region_pixels(parse_region("cue=mask:cat"), None, (4, 4), mask_ids=ids,
                      mask_names=names)
    (tmp_path / "bad.json").write_text(json.dumps({"one": "dog"}))
    with pytest.raises(AnnotationError, match="'one' is not a mask id"):
        read_mask_ids(tmp_path / "bad.json")


def test_geometry_of_a_resize_and_crop_is_found_and_a_random_one_refused():
    def resize_crop(picture):  # resize the short side to 32, crop the centre 28 x 28
        scale = 32 / min(picture.size)
        size = (round(picture.width * scale), round(picture.height * scale))
        resized = np.asarray(picture.resize(size, Image.BILINEAR), dtype=np.float32) / 255
        top, left = (size[1] - 28) // 2, (size[0] - 28) // 2
        return torch.from_numpy(resized[top:top + 28, left:left + 28]).permute(2, 0, 1)[None]

    geometry = probe_geometry(resize_crop, (80, 120))
    assert geometry.size == (28, 28)
    assert geometry.scale_x == pytest.approx(0.4, abs=0.01)
    assert geometry.offset_x == pytest.approx(-10, abs=0.3)  # (48 - 28) / 2 pixels cropped
    assert geometry.offset_y == pytest.approx(-2, abs=0.3)
    box = geometry.boxes(np.array([[30.0, 10.0, 60.0, 40.0]]))[0]
    assert box == pytest.approx([2, 2, 14, 14], abs=0.3)

    generator = torch.Generator().manual_seed(0)

    def jitter(picture):
        return torch.rand(1, 3, 8, 8, generator=generator)

    with pytest.raises(GeometryError, match="random augmentation"):
        probe_geometry(jitter, (16, 16))
    plain = InputGeometry.resize((10, 20), (5, 10))
    mask = np.zeros((10, 20), dtype=bool)
    mask[0:4, 0:6] = True
    assert plain.mask(mask).sum() == 2 * 3


def _grey(value: int, size=(24, 16)):
    return Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8))


def _to_tensor(picture):  # a plain resize to 8 x 12 (H x W), half the pictures' size
    resized = picture.convert("RGB").resize((12, 8), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def test_folder_with_class_subfolders_regions_masks_and_problems(tmp_path):
    root = tmp_path / "images"
    for file in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png", "dog/e.png"):
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        _grey(40).save(root / file)
    (root / "dog/e.png").write_bytes(b"not a png")
    masks = tmp_path / "masks"
    (masks / "cat").mkdir(parents=True)
    ids = np.zeros((16, 24), dtype=np.uint8)
    ids[0:4, 0:6] = 3
    Image.fromarray(ids).save(masks / "cat" / "a.png")
    Image.fromarray(ids).save(masks / "cat" / "b.png")
    coco = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 6, 4]},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [6, 4, 6, 4]},
        {"id": 3, "image_id": 3, "category_id": 7, "bbox": [0, 0, 1, 1]},  # unknown category
    ], images=[{"id": 1, "file_name": "cat/a.png", "width": 24, "height": 16},
               {"id": 2, "file_name": "cat/b.png", "width": 24, "height": 16},
               {"id": 3, "file_name": "dog/c.png"},
               {"id": 4, "file_name": "dog/e.png"}])
    entries = image_folder(root)
    assert [e.label for e in entries] == ["cat", "cat", "dog", "dog", "dog"]
    mapping, note = class_indices([e.label for e in entries], ("dog", "cat"))
    assert mapping == {"dog": 0, "cat": 1} and note is None
    data = AnnotatedImages(root, entries, _to_tensor, annotations=read_coco(coco),
                           regions=[parse_region("object=category:dog"),
                                    parse_region("cue=mask:3")],
                           boxes="*", masks=masks, class_to_index=mapping, threads=2)
    items = list(data)
    assert [item["file"] for item in items] == ["cat/a.png", "cat/b.png"]
    first = items[0]
    assert first["image"].shape == (3, 8, 12) and int(first["label"]) == 1
    # the box (0, 0, 6, 4) of a 24 x 16 picture is (0, 0, 3, 2) of the 12 x 8 input
    assert first["boxes"].tolist() == [[0.0, 0.0, 3.0, 2.0]]
    assert first["object"].sum() == 6 and first["object"][:2, :3].all()
    assert torch.equal(first["cue"], first["object"])
    problems = "\n".join(data.problems)
    assert "category_id 7 is not in 'categories'" in problems
    assert "dog/c.png: left out, its annotations are broken" in problems
    assert "dog/d.png: not in the annotations" in problems
    assert "dog/e.png: not an image Pillow can read" in problems
    assert data.read == 2


def test_label_lists_subsets_and_class_indices(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\na.png,3\nsub/b.png,1\n")
    assert read_label_list(tmp_path / "labels.csv") == {"a.png": "3", "sub/b.png": "1"}
    (tmp_path / "labels.json").write_text(json.dumps([{"file": "a.png", "label": 2}]))
    assert read_label_list(tmp_path / "labels.json") == {"a.png": "2"}
    (tmp_path / "bad.csv").write_text("file,kind\na.png,3\n")
    with pytest.raises(AnnotationError, match="needs a file column .* and a label column"):
        read_label_list(tmp_path / "bad.csv")
    assert class_indices(["3", "1"], None) == ({"1": 1, "3": 3}, None)
    mapping, note = class_indices(["zebra", "ant"], ("cat", "dog"))
    assert mapping == {"ant": 0, "zebra": 1} and "sorted order" in note
    entries = image_folder_entries = [f"{i}.png" for i in range(10)]
    assert len(image_folder_entries) == 10
    from camlens.data.folders import ImageEntry

    chosen = select([ImageEntry(e) for e in entries], 3, seed=1)
    assert len(chosen) == 3 and chosen == select([ImageEntry(e) for e in entries], 3, seed=1)
    assert [c.file for c in chosen] == sorted((c.file for c in chosen),
                                              key=lambda f: int(f.split(".")[0]))
