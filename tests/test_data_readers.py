"""Readers and converters: one-line errors naming the file, counted warnings, and the real staged data."""
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from spikedet.data import coco_to_yolo, read_coco, read_voc, read_yolo, voc_to_yolo
from spikedet.errors import SpikedetError

from conftest import SHARED_DATA, needs_real_data  # noqa: E402

REAL_VOC = SHARED_DATA / "voc" / "VOCdevkit" / "VOC2007"
REAL_COCO = SHARED_DATA / "coco"

CLASSES = ("cat", "dog")


def voc_xml(objects, size="<size><width>40</width><height>30</height><depth>3</depth></size>"):
    """A devkit annotation with (name, difficult, xmin, ymin, xmax, ymax) objects."""
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
        f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, difficult, x0, y0, x1, y1 in objects)
    return f"<annotation><filename>x.jpg</filename>{size}{body}</annotation>"


def make_voc(root: Path, annotations: dict, images=True):
    """A VOC devkit folder with image set 'train' listing `annotations` ({id: xml text}), with 40x30 JPEGs."""
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in annotations))
    for image_id, xml in annotations.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
        if images:
            cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), np.zeros((30, 40, 3), np.uint8))
    return root


def assert_one_line_error(error, path, *words):
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert all(word in message for word in words), message


# VOC


def test_read_voc_keeps_devkit_coordinates(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([("dog", 0, 1, 2, 40, 30), ("cat", 1, 5, 6, 7, 8)])})
    [record] = read_voc(root, "train", CLASSES, check_images=True)
    np.testing.assert_array_equal(record.boxes, [[1, 2, 40, 30], [5, 6, 7, 8]])
    assert record.labels.tolist() == [1, 0] and record.difficult.tolist() == [False, True]
    assert (record.width, record.height, record.image_id) == (40, 30, "a")
    assert record.path == tmp_path / "JPEGImages" / "a.jpg"


@pytest.mark.parametrize("xml, words", [
    (voc_xml([("dog", 0, 1, 1, 5, 5)], size=""), ["<size>"]),
    (voc_xml([("dog", 0, 1, 1, 5, 5)], size="<size><width>0</width><height>30</height></size>"), ["0x30"]),
    (voc_xml([("foo", 0, 1, 1, 5, 5)]), ["class 'foo' is not in the class list", "'cat', 'dog'"]),
    (voc_xml([("dog", 0, 1, 1, "five", 5)]), ["object 1", "<bndbox>"]),
    ("<annotation><size>", ["not valid XML"]),
])
def test_read_voc_bad_annotation_names_the_xml(tmp_path, xml, words):
    root = make_voc(tmp_path, {"a": xml})
    with pytest.raises(SpikedetError) as error:
        read_voc(root, "train", CLASSES)
    assert_one_line_error(error, root / "Annotations" / "a.xml", *words)


def test_read_voc_missing_files_name_the_file(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([])}, images=False)
    with pytest.raises(SpikedetError) as error:
        read_voc(root, "val", CLASSES)
    assert_one_line_error(error, root / "ImageSets" / "Main" / "val.txt", "'val'")
    with pytest.raises(SpikedetError) as error:
        read_voc(root, "train", CLASSES, check_images=True)
    assert_one_line_error(error, root / "JPEGImages" / "a.jpg", "not found")
    (root / "Annotations" / "a.xml").unlink()
    with pytest.raises(SpikedetError) as error:
        read_voc(root, "train", CLASSES)
    assert_one_line_error(error, root / "Annotations" / "a.xml", "not found")


def test_read_voc_clips_boxes_outside_the_image_and_counts_them(tmp_path, caplog):
    root = make_voc(tmp_path, {
        "a": voc_xml([("dog", 0, 0, 5, 45, 10), ("cat", 0, 10, 10, 20, 20)]),
        "b": voc_xml([("cat", 0, 30, 5, 20, 10), ("dog", 0, 50, 40, 60, 50)]),  # inverted; wholly outside
    })
    with caplog.at_level(logging.WARNING):
        a, b = read_voc(root, "train", CLASSES)
    np.testing.assert_array_equal(a.boxes, [[1, 5, 40, 10], [10, 10, 20, 20]])
    assert len(b.boxes) == len(b.labels) == len(b.difficult) == 0
    [warning] = caplog.messages
    assert "clipped 3 boxes outside their image" in warning and "dropped 2 that became empty" in warning


def test_voc_to_yolo_drops_difficult_and_skips_missing_images(tmp_path, caplog):
    root = make_voc(tmp_path / "voc", {"a": voc_xml([("dog", 0, 1, 1, 20, 30), ("cat", 1, 5, 5, 9, 9)]),
                                       "b": voc_xml([("cat", 0, 1, 1, 4, 4)])})
    (root / "JPEGImages" / "b.jpg").unlink()
    with caplog.at_level(logging.WARNING):
        dataset_yaml = voc_to_yolo(root, tmp_path / "yolo", {"train": "train", "val": "train"}, CLASSES)
    skipped = f"skipped 1 of 2 images whose file is missing, in {root} (image set train)"
    assert caplog.messages == [skipped] * 2, "one warning per split"
    label = tmp_path / "yolo" / "labels" / "train" / "a.txt"
    assert label.read_text() == "1 0.250000 0.500000 0.500000 1.000000\n", "the difficult cat is left out"
    [record] = read_yolo(dataset_yaml, "val")
    np.testing.assert_allclose(record.boxes, [[0, 0, 20, 30]])


# COCO


def coco_json(path: Path, images=None, annotations=None):
    """Two 40x30 images, the second without annotations; a dog and a cat crowd; categories not by id."""
    default_images = [{"id": i, "file_name": f"{i}.jpg", "width": 40, "height": 30} for i in (7, 8)]
    default_annotations = [
        {"id": 1, "image_id": 7, "category_id": 18, "bbox": [1.5, 2, 10, 20], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 17, "bbox": [0, 0, 40, 30], "iscrowd": 1}]
    data = {"images": default_images if images is None else images,
            "annotations": default_annotations if annotations is None else annotations,
            "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_read_coco_corners_crowds_and_empty_images(tmp_path):
    instances = coco_json(tmp_path / "annotations" / "instances_val2017.json")
    records, names = read_coco(instances)
    assert names == ["cat", "dog"], "categories sorted by id"
    first, empty = records
    np.testing.assert_array_equal(first.boxes, [[1.5, 2, 11.5, 22], [0, 0, 40, 30]])
    assert first.labels.tolist() == [1, 0] and first.difficult.tolist() == [False, True]
    assert first.path == tmp_path / "val2017" / "7.jpg" and first.image_id == 7
    assert len(empty.boxes) == 0
    records, names = read_coco(instances, tmp_path / "pics", class_names=["dog", "bird", "cat"])
    assert records[0].labels.tolist() == [0, 2] and records[0].path == tmp_path / "pics" / "7.jpg"


def test_read_coco_bad_files_name_the_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(SpikedetError) as error:
        read_coco(bad)
    assert_one_line_error(error, bad, "not valid JSON")
    no_key = coco_json(tmp_path / "no_key.json", images=[{"id": 7, "file_name": "7.jpg"}], annotations=[])
    with pytest.raises(SpikedetError) as error:
        read_coco(no_key)
    assert_one_line_error(error, no_key, "missing key 'width'")
    with pytest.raises(SpikedetError) as error:
        read_coco(coco_json(tmp_path / "c.json"), class_names=["dog"])
    assert_one_line_error(error, tmp_path / "c.json", "category 'cat' is not in the class list ['dog']")
    with pytest.raises(SpikedetError) as error:
        read_coco(tmp_path / "absent.json")
    assert_one_line_error(error, tmp_path / "absent.json", "not found")


# YOLO


def test_read_yolo_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "train" / "a.jpg"), np.zeros((30, 40, 3), np.uint8))
    label = tmp_path / "labels" / "train" / "a.txt"
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [cat, dog]\n")
    label.write_text("1 0.5 0.5 0.5 1.0\n")
    [record] = read_yolo(tmp_path / "data.yaml", "train")
    np.testing.assert_allclose(record.boxes, [[10, 0, 30, 30]])
    for text, words in [("1 0.5 0.5 0.5 1\n0 0.5 0.5 0.5\n", ["line 2", "class cx cy w h"]),
                        ("2 0.5 0.5 0.5 0.5\n", ["line 1", "class 2"]),
                        ("0 0.5 0.5 1.5 0.5\n", ["line 1", "normalised"])]:
        label.write_text(text)
        with pytest.raises(SpikedetError) as error:
            read_yolo(tmp_path / "data.yaml", "train")
        assert_one_line_error(error, label, *words)
    with pytest.raises(SpikedetError) as error:
        read_yolo(tmp_path / "data.yaml", "test")
    assert_one_line_error(error, tmp_path / "data.yaml", "no 'test' split")


# Real staged data (skipped where shared/data is absent)


@needs_real_data
def test_read_voc_real_val_staged():
    records = read_voc(REAL_VOC, "val_staged", check_images=True)
    objects = sum(len(r.labels) for r in records)
    difficult = sum(int(r.difficult.sum()) for r in records)
    assert len(records) == 1300
    assert 2.5 < objects / len(records) < 4, "VOC2007 val averages about 3.1 objects per image"
    assert 0.15 < difficult / objects < 0.25, "about 19% of VOC2007 val objects are difficult"
    for r in records:
        assert (r.boxes[:, :2] >= 1).all() and (r.boxes[:, :2] <= r.boxes[:, 2:]).all()
        assert (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()


@needs_real_data
def test_voc_to_yolo_on_real_images(tmp_path):
    dataset_yaml = voc_to_yolo(REAL_VOC, tmp_path, {"train": "test_staged", "val": "test_staged"})
    voc_records = read_voc(REAL_VOC, "test_staged")
    yolo_records = read_yolo(dataset_yaml, "val")
    assert len(voc_records) == 5 and [r.image_id for r in yolo_records] == [r.image_id for r in voc_records]
    for v, y in zip(voc_records, yolo_records):
        assert (y.width, y.height) == (v.width, v.height)
        np.testing.assert_allclose(y.boxes, v.boxes[~v.difficult] - [1, 1, 0, 0], atol=0.01)
        np.testing.assert_array_equal(y.labels, v.labels[~v.difficult])


@needs_real_data
def test_read_coco_real_val2017():
    records, names = read_coco(REAL_COCO / "annotations" / "instances_val2017.json")
    assert len(records) == 206 and len(names) == 80 and names[0] == "person"
    assert sum(len(r.labels) for r in records) == 1786 and sum(int(r.difficult.sum()) for r in records) == 21
    assert sum(len(r.labels) == 0 for r in records) == 2
    assert all(r.path.is_file() for r in records)


@needs_real_data
def test_coco_to_yolo_on_real_images(tmp_path, caplog, no_network):
    """A handful of real images, including crowds, an unannotated image and one whose file is missing."""
    source = json.loads((REAL_COCO / "annotations" / "instances_val2017.json").read_text())
    crowded = {a["image_id"] for a in source["annotations"] if a["iscrowd"]}
    annotated = {a["image_id"] for a in source["annotations"]}
    unannotated = [i for i in source["images"] if i["id"] not in annotated][:1]
    images = [i for i in source["images"] if i["id"] in crowded][:3] + unannotated + [
        {"id": -1, "file_name": "missing.jpg", "width": 10, "height": 10}]
    ids = {i["id"] for i in images}
    annotations = [a for a in source["annotations"] if a["image_id"] in ids]
    subset = {**source, "images": images, "annotations": annotations}
    instances = tmp_path / "instances_subset.json"
    instances.write_text(json.dumps(subset))

    with caplog.at_level(logging.WARNING):
        for split in ("train", "val"):
            dataset_yaml = coco_to_yolo(instances, REAL_COCO / "val2017", tmp_path / "yolo", split)
    assert caplog.messages == [f"skipped 1 of 5 images whose file is missing, in {instances}"] * 2
    coco_records, names = read_coco(instances, REAL_COCO / "val2017")
    yolo_records = read_yolo(dataset_yaml, "val")
    assert [r.image_id for r in yolo_records] == sorted(f"{i['id']:012d}" for i in images[:-1])
    by_id = {f"{r.image_id:012d}": r for r in coco_records}
    for y in yolo_records:
        c = by_id[y.image_id]
        assert (y.width, y.height) == (c.width, c.height)
        np.testing.assert_allclose(y.boxes, c.boxes[~c.difficult], atol=1.0)
        np.testing.assert_array_equal(y.labels, c.labels[~c.difficult])

    from ultralytics.data import utils as ultralytics_data

    from spikedet.offline import guard_ultralytics_downloads

    guard_ultralytics_downloads()  # check_det_dataset would otherwise ask the network for a font
    data = ultralytics_data.check_det_dataset(str(dataset_yaml), autodownload=False)
    assert data["nc"] == 80 and data["names"][0] == names[0]
