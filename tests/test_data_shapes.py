"""The embedded shapes dataset: deterministic, its three layouts agree, its labels are honest."""
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from spikedet.data import SHAPES_CLASSES, make_shapes_dataset, read_coco, read_voc, read_yolo
from spikedet.data.shapes import DIFFICULT_VISIBLE, MIN_VISIBLE, render_image
from spikedet.errors import SpikedetError

TINY = {"imgsz": 64, "counts": {"train": 8, "val": 6, "test": 6}, "progress": False}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), seed=3, **TINY)


def annotation_files(paths):
    """Every annotation file the generator writes, by path relative to the dataset root."""
    root = paths["voc"].parents[1]
    files = [*paths["voc"].glob("Annotations/*.xml"), *paths["voc"].glob("ImageSets/Main/*.txt"),
             *paths["coco"].values(), *root.glob("yolo/labels/*/*.txt")]
    return {str(f.relative_to(root)): f.read_bytes() for f in files}


def test_same_seed_gives_identical_files(shapes, tmp_path):
    again = make_shapes_dataset(tmp_path / "again", seed=3, **TINY)
    assert annotation_files(again) == annotation_files(shapes)
    for jpeg in shapes["voc"].glob("JPEGImages/*.jpg"):
        assert np.array_equal(cv2.imread(str(jpeg)), cv2.imread(str(again["voc"] / "JPEGImages" / jpeg.name)))
    other_seed = make_shapes_dataset(tmp_path / "other", seed=4, **TINY)
    assert annotation_files(other_seed) != annotation_files(shapes)


def test_reuses_a_complete_dataset_and_rebuilds_on_new_parameters(tmp_path):
    paths = make_shapes_dataset(tmp_path, seed=0, **TINY)
    xml = paths["voc"] / "Annotations" / "000001.xml"
    xml.write_text("stale")
    make_shapes_dataset(tmp_path, seed=0, **TINY)
    assert xml.read_text() == "stale", "same parameters: nothing is regenerated"
    make_shapes_dataset(tmp_path, seed=0, imgsz=64, counts={"train": 2, "val": 1, "test": 1}, progress=False)
    assert xml.read_text() != "stale"
    assert len(list(paths["voc"].glob("JPEGImages/*.jpg"))) == 4
    assert len(list((tmp_path / "yolo" / "images" / "train").iterdir())) == 2, "stale images are removed"


def test_refuses_to_overwrite_folders_it_did_not_make(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    with pytest.raises(SpikedetError) as error:
        make_shapes_dataset(tmp_path, **TINY)
    assert str(error.value).startswith(f"{tmp_path}: ") and "did not make" in str(error.value)
    assert (tmp_path / "VOCdevkit" / "VOC2007").is_dir()


def test_three_layouts_agree(shapes):
    for split in ("train", "val", "test"):
        voc = read_voc(shapes["voc"], split, SHAPES_CLASSES, check_images=True)
        coco, names = read_coco(shapes["coco"][split])
        yolo = read_yolo(shapes["yolo"], split)
        assert names == list(SHAPES_CLASSES)
        assert [r.image_id for r in voc] == [f"{r.image_id:06d}" for r in coco] == [r.image_id for r in yolo]
        for v, c, y in zip(voc, coco, yolo):
            assert c.path.is_file() and y.path.is_file()
            assert (v.width, v.height) == (c.width, c.height) == (y.width, y.height) == (64, 64)
            zero_based = v.boxes - [1, 1, 0, 0]  # devkit pixels xmin..xmax span corners xmin-1..xmax
            np.testing.assert_array_equal(zero_based, c.boxes)
            np.testing.assert_array_equal(v.labels, c.labels)
            assert not c.difficult.any(), "COCO has no difficult: iscrowd stays 0"
            trained = ~v.difficult  # the YOLO labels leave difficult objects out
            np.testing.assert_allclose(y.boxes, zero_based[trained], atol=1e-3)
            np.testing.assert_array_equal(y.labels, v.labels[trained])


def test_difficult_marks_tiny_and_occluded_objects():
    objects = [obj for i in range(150) for obj in render_image(np.random.default_rng([0, i]), 96)[1]]
    tiny_area = (12 * 96 / 192) ** 2
    tiny = np.array([(o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1]) < tiny_area for o in objects])
    visible = np.array([o["visible"] for o in objects])
    difficult = np.array([o["difficult"] for o in objects])
    assert (visible >= MIN_VISIBLE).all(), "almost hidden objects are re-sampled, never annotated"
    np.testing.assert_array_equal(difficult, tiny | (visible < DIFFICULT_VISIBLE))
    assert tiny.sum() >= 5 and (~tiny & (visible < DIFFICULT_VISIBLE)).sum() >= 5
    assert 0.03 < difficult.mean() < 0.3
    assert {o["label"] for o in objects} == {0, 1, 2}


def test_voc_xml_is_devkit_shaped(shapes):
    for xml in shapes["voc"].glob("Annotations/*.xml"):
        root = ET.parse(xml).getroot()
        assert root.tag == "annotation" and root.findtext("folder") == "VOC2007"
        assert root.findtext("filename") == xml.stem + ".jpg" and root.findtext("segmented") == "0"
        assert [root.findtext(f"size/{k}") for k in ("width", "height", "depth")] == ["64", "64", "3"]
        objects = root.findall("object")
        assert 1 <= len(objects) <= 6
        for obj in objects:
            assert obj.findtext("name") in SHAPES_CLASSES and obj.findtext("pose") == "Unspecified"
            assert obj.findtext("truncated") == "0" and obj.findtext("difficult") in ("0", "1")
            xmin, ymin, xmax, ymax = (int(v.text) for v in obj.find("bndbox"))
            assert 1 <= xmin <= xmax <= 64 and 1 <= ymin <= ymax <= 64
    image_sets = shapes["voc"] / "ImageSets" / "Main"
    ids = {s: (image_sets / f"{s}.txt").read_text().split() for s in ("train", "val", "test", "trainval")}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [8, 6, 6]
    assert ids["trainval"] == ids["train"] + ids["val"] and ids["train"][0] == "000001"


def test_coco_json_loads_in_pycocotools(shapes):
    from pycocotools.coco import COCO

    coco = COCO(str(shapes["coco"]["val"]))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES_CLASSES)
    assert len(coco.getImgIds()) == 6 and coco.getAnnIds(iscrowd=True) == []


def test_ultralytics_accepts_the_dataset_yaml(shapes, no_network):
    from ultralytics.data import utils as ultralytics_data

    from spikedet.offline import guard_ultralytics_downloads

    guard_ultralytics_downloads()  # check_det_dataset would otherwise ask the network for a font
    data = ultralytics_data.check_det_dataset(str(shapes["yolo"]), autodownload=False)
    assert data["nc"] == 3 and data["names"] == dict(enumerate(SHAPES_CLASSES))
    assert all(len(list(Path(data[s]).glob("*.jpg"))) == n for s, n in TINY["counts"].items())
