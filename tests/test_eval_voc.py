"""PASCAL VOC AP: the vectorised evaluator must agree with a plain devkit port and with worked-out cases."""
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from spikedet import SpikedetError
from spikedet.data.records import VOC_CLASSES
from spikedet.data.voc import read_voc
from spikedet.eval import evaluate_voc

SHARED_VOC = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc" / "VOCdevkit" / "VOC2007"
CLASSES = ("cat", "dog", "fish", "bird")


# ---- the reference: py-faster-rcnn's voc_eval, loop by loop ----------------------------------------------


def reference_parse_rec(xml_path):
    objects = []
    for obj in ET.parse(xml_path).findall("object"):
        bbox = obj.find("bndbox")
        objects.append({
            "name": obj.find("name").text,
            "difficult": int(obj.find("difficult").text),
            "bbox": [float(bbox.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")],
        })
    return objects


def reference_voc_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def reference_voc_eval(recs, imagenames, class_dets, classname):
    """(voc07 AP, voc10 AP) of one class; class_dets is [(image_id, score, xmin, ymin, xmax, ymax)]."""
    class_recs, npos = {}, 0
    for name in imagenames:
        R = [obj for obj in recs[name] if obj["name"] == classname]
        bbox = np.array([x["bbox"] for x in R]).reshape(-1, 4)
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        npos = npos + sum(~difficult)
        class_recs[name] = {"bbox": bbox, "difficult": difficult, "det": [False] * len(R)}
    if npos == 0:
        return None, None

    confidence = [d[1] for d in class_dets]
    sorted_ind = sorted(range(len(class_dets)), key=lambda k: -confidence[k])  # stable: ties in file order
    image_ids = [class_dets[k][0] for k in sorted_ind]
    BB = np.array([class_dets[k][2:] for k in sorted_ind], dtype=float).reshape(-1, 4)

    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :]
        ovmax = -np.inf
        BBGT = R["bbox"]
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax >= 0.5:  # VOCevaldet.m: ovmax >= VOCopts.minoverlap
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0

    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return reference_voc_ap(rec, prec, True), reference_voc_ap(rec, prec, False)


def reference_evaluate(voc_root, split, detections, class_names):
    """The same dict as evaluate_voc, built with the reference from the XML files directly."""
    imagenames = (Path(voc_root) / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    recs = {name: reference_parse_rec(Path(voc_root) / "Annotations" / f"{name}.xml") for name in imagenames}
    results = {"voc07": {"per_class": {}}, "voc10": {"per_class": {}}}
    for index, classname in enumerate(class_names):
        class_dets = [(str(d["image_id"]), d["score"], d["bbox"][0], d["bbox"][1],
                       d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3])
                      for d in detections if d["category_id"] == index + 1]
        ap07, ap10 = reference_voc_eval(recs, imagenames, class_dets, classname)
        results["voc07"]["per_class"][classname] = ap07
        results["voc10"]["per_class"][classname] = ap10
    for metric in results.values():
        aps = [ap for ap in metric["per_class"].values() if ap is not None]
        metric["mAP"] = float(np.mean(aps)) if aps else None
    return results


def assert_same_results(actual, expected):
    for metric in ("voc07", "voc10"):
        assert list(actual[metric]["per_class"]) == list(expected[metric]["per_class"])
        for name, ap in expected[metric]["per_class"].items():
            if ap is None:
                assert actual[metric]["per_class"][name] is None, (metric, name)
            else:
                assert actual[metric]["per_class"][name] == pytest.approx(ap, abs=1e-6), (metric, name)
        assert actual[metric]["mAP"] == pytest.approx(expected[metric]["mAP"], abs=1e-6), metric


# ---- building data ---------------------------------------------------------------------------------------


def write_voc_tree(root, images, split="test"):
    """images: {stem: [(name, (xmin, ymin, xmax, ymax), difficult), ...]} as hand-made devkit XML."""
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, objects in images.items():
        parts = [f"<annotation><filename>{stem}.jpg</filename>",
                 "<size><width>500</width><height>400</height><depth>3</depth></size>"]
        for name, (x1, y1, x2, y2), difficult in objects:
            parts.append(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox>"
                         f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                         "</bndbox></object>")
        parts.append("</annotation>")
        (root / "Annotations" / f"{stem}.xml").write_text("\n".join(parts))
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{stem}\n" for stem in images))
    return root


def det(image_id, category_id, corners, score):
    """A detection from devkit corners."""
    x1, y1, x2, y2 = corners
    return {"image_id": image_id, "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score}


def jittered_detections(rng, objects_by_image, class_names, n_false_positives):
    """Noisy copies of the ground truth (some dropped, some duplicated, some mislabelled) plus random boxes.

    Scores are rounded to 2 decimals so that ties occur and their order is tested too.
    """
    detections = []
    for image_id, objects in objects_by_image.items():
        for name, (x1, y1, x2, y2), _ in objects:
            if rng.random() < 0.2:
                continue
            for _ in range(1 + (rng.random() < 0.15)):
                w, h = x2 - x1, y2 - y1
                cx = (x1 + x2) / 2 + rng.normal(0, 0.1 * w)
                cy = (y1 + y2) / 2 + rng.normal(0, 0.1 * h)
                w, h = w * np.exp(rng.normal(0, 0.15)), h * np.exp(rng.normal(0, 0.15))
                mislabelled = rng.random() < 0.05
                label = int(rng.integers(len(class_names))) if mislabelled else class_names.index(name)
                detections.append({"image_id": image_id, "category_id": label + 1,
                                   "bbox": [cx - w / 2, cy - h / 2, w, h],
                                   "score": round(float(rng.random()), 2)})
    image_ids = list(objects_by_image)
    for _ in range(n_false_positives):
        x, y = rng.uniform(1, 400, size=2)
        w, h = rng.uniform(5, 200, size=2)
        detections.append({"image_id": image_ids[rng.integers(len(image_ids))],
                           "category_id": int(rng.integers(len(class_names))) + 1,
                           "bbox": [x, y, w, h], "score": round(float(rng.random()) * 0.8, 2)})
    return detections


# ---- agreement with the reference ------------------------------------------------------------------------


def test_matches_devkit_reference_on_real_voc2007_val(tmp_path):
    if not SHARED_VOC.is_dir():
        pytest.skip(f"{SHARED_VOC} is absent")
    split = "val_staged"
    stems = (SHARED_VOC / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    objects_by_image = {}
    for stem in stems:
        objects = reference_parse_rec(SHARED_VOC / "Annotations" / f"{stem}.xml")
        objects_by_image[stem] = [(o["name"], o["bbox"], o["difficult"]) for o in objects]
    detections = jittered_detections(np.random.default_rng(0), objects_by_image, list(VOC_CLASSES), 2000)
    dets_path = tmp_path / "dets.json"
    dets_path.write_text(json.dumps(detections))

    results = evaluate_voc(SHARED_VOC, split, dets_path)

    assert_same_results(results, reference_evaluate(SHARED_VOC, split, detections, VOC_CLASSES))
    print(f"real VOC2007 val_staged, jittered detections: voc07 mAP {results['voc07']['mAP']:.4f}, "
          f"voc10 mAP {results['voc10']['mAP']:.4f}")
    assert 0.3 < results["voc10"]["mAP"] < 0.95  # noisy but far from random or perfect


def test_matches_devkit_reference_on_synthetic_tree(tmp_path):
    rng = np.random.default_rng(1)
    images = {}
    for n in range(40):
        objects = []
        for _ in range(rng.integers(0, 5)):
            x1, y1 = (int(v) for v in rng.integers(1, 300, size=2))
            x2, y2 = x1 + int(rng.integers(10, 150)), y1 + int(rng.integers(10, 150))
            name = ("cat", "dog", "bird")[rng.integers(3)]
            difficult = rng.random() < 0.25 or name == "bird"  # bird: difficult objects only
            objects.append((name, (x1, y1, x2, y2), difficult))
            if rng.random() < 0.1:  # an identical second box: ties in the best-overlap search
                objects.append((name, (x1, y1, x2, y2), rng.random() < 0.5 or name == "bird"))
        images[f"{n:06d}"] = objects
    root = write_voc_tree(tmp_path / "VOC", images)
    detections = jittered_detections(rng, images, list(CLASSES), 60)

    results = evaluate_voc(root, "test", detections, CLASSES)

    assert_same_results(results, reference_evaluate(root, "test", detections, CLASSES))
    for metric in ("voc07", "voc10"):  # fish has no boxes, bird only difficult ones: no AP, not in the mean
        assert results[metric]["per_class"]["fish"] is None and results[metric]["per_class"]["bird"] is None
        expected = np.mean([results[metric]["per_class"][name] for name in ("cat", "dog")])
        assert results[metric]["mAP"] == pytest.approx(expected)


# ---- hand-worked cases -----------------------------------------------------------------------------------


@pytest.fixture
def two_cats(tmp_path):
    """Two cats in one image, one difficult cat in another; class 1 = cat."""
    images = {
        "a": [("cat", (1, 1, 100, 100), False), ("cat", (201, 201, 300, 300), False)],
        "b": [("cat", (50, 50, 150, 150), True)],
    }
    return write_voc_tree(tmp_path / "VOC", images)


def aps(results, name="cat"):
    """(voc07, voc10) AP of one class."""
    return results["voc07"]["per_class"][name], results["voc10"]["per_class"][name]


def approx(ap07, ap10):
    return pytest.approx(ap07), pytest.approx(ap10)


def test_perfect_detections_score_one(two_cats):
    detections = [det("a", 1, (1, 1, 100, 100), 0.9), det("a", 1, (201, 201, 300, 300), 0.8)]
    results = evaluate_voc(two_cats, "test", detections, CLASSES)
    assert aps(results) == approx(1.0, 1.0)
    assert results["voc07"]["per_class"]["dog"] is None  # no ground truth: no AP
    assert results["voc07"]["mAP"] == pytest.approx(1.0) and results["voc10"]["mAP"] == pytest.approx(1.0)


def test_tp_fp_tp_gives_known_ap(two_cats):
    """Precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: 11-point (6 * 1 + 5 * 2/3) / 11, area 1/2 + 1/2 * 2/3."""
    detections = [det("a", 1, (1, 1, 100, 100), 0.9), det("a", 1, (400, 300, 450, 350), 0.8),
                  det("a", 1, (201, 201, 300, 300), 0.7)]
    assert aps(evaluate_voc(two_cats, "test", detections, CLASSES)) == approx(28 / 33, 5 / 6)


def test_duplicate_detection_is_a_false_positive(two_cats):
    """A second hit on an already-matched cat is a false positive: the same numbers as the miss above."""
    detections = [det("a", 1, (1, 1, 100, 100), 0.9), det("a", 1, (2, 2, 100, 100), 0.8),
                  det("a", 1, (201, 201, 300, 300), 0.7)]
    assert aps(evaluate_voc(two_cats, "test", detections, CLASSES)) == approx(28 / 33, 5 / 6)


def test_fp_then_tp_then_nothing(two_cats):
    """Precision 0 then 1/2 at recall 0 then 1/2: area 1/2 * 1/2; 11-point 6 points of 1/2."""
    detections = [det("a", 1, (400, 300, 450, 350), 0.9), det("a", 1, (1, 1, 100, 100), 0.5)]
    assert aps(evaluate_voc(two_cats, "test", detections, CLASSES)) == approx(3 / 11, 0.25)


def test_detection_on_difficult_object_changes_nothing(two_cats):
    base = [det("a", 1, (1, 1, 100, 100), 0.9), det("a", 1, (400, 300, 450, 350), 0.8),
            det("a", 1, (201, 201, 300, 300), 0.7)]
    on_difficult = det("b", 1, (50, 50, 150, 150), 0.95)
    assert aps(evaluate_voc(two_cats, "test", base + [on_difficult], CLASSES)) == \
        aps(evaluate_voc(two_cats, "test", base, CLASSES))


def test_iou_uses_inclusive_pixels_and_the_devkit_threshold(tmp_path):
    root = write_voc_tree(tmp_path / "VOC", {"a": [("cat", (1, 1, 10, 10), False)]})  # 10 x 10 pixels
    # 10 x 5 inclusive pixels: IoU exactly 0.5, a match under the devkit's >= (plain x2 - x1 widths: 0.44)
    exactly_half = det("a", 1, (1, 1, 10, 5), 0.9)
    assert aps(evaluate_voc(root, "test", [exactly_half], CLASSES)) == (1.0, 1.0)
    just_below = det("a", 1, (1, 1, 10, 4.9), 0.9)  # 10 x 4.9: IoU 0.49
    assert aps(evaluate_voc(root, "test", [just_below], CLASSES)) == (0.0, 0.0)


@pytest.mark.parametrize("difficult_box", [(1, 1, 10, 11), (1, 1, 10, 10)])
def test_best_overlap_on_a_difficult_box_is_ignored_not_matched(tmp_path, difficult_box):
    """The devkit looks only at the best-overlapping box (the first one on a tie): when it is difficult, the
    detection is ignored even though it also covers a non-difficult box, here with IoU 100/110, then 1."""
    boxes = [("cat", difficult_box, True), ("cat", (1, 1, 10, 10), False)]
    root = write_voc_tree(tmp_path / "VOC", {"a": boxes})
    assert aps(evaluate_voc(root, "test", [det("a", 1, difficult_box, 0.9)], CLASSES)) == (0.0, 0.0)


def test_voc07_recall_grid_is_numpys_arange(tmp_path):
    """3 of 10 boxes found at precision 1: recall 0.3 falls short of arange's 0.30000000000000004, so the
    11-point AP is 3/11 (not 4/11); the area is 0.3."""
    boxes = [(1 + 20 * i, 1, 10 + 20 * i, 10) for i in range(10)]
    root = write_voc_tree(tmp_path / "VOC", {"a": [("cat", box, False) for box in boxes]})
    detections = [det("a", 1, box, 0.9) for box in boxes[:3]]
    assert aps(evaluate_voc(root, "test", detections, CLASSES)) == approx(3 / 11, 0.3)


def test_no_detections_scores_zero(two_cats):
    results = evaluate_voc(two_cats, "test", [], CLASSES)
    assert aps(results) == (0.0, 0.0) and results["voc10"]["mAP"] == 0.0


def test_integer_image_id_is_accepted_when_it_names_a_stem(tmp_path):
    root = write_voc_tree(tmp_path / "VOC", {"7": [("dog", (1, 1, 50, 50), False)]})
    assert aps(evaluate_voc(root, "test", [det(7, 2, (1, 1, 50, 50), 0.5)], CLASSES), "dog") == (1.0, 1.0)
    with pytest.raises(SpikedetError, match=r"entry 0: image_id 8 is not an image"):
        evaluate_voc(root, "test", [det(8, 2, (1, 1, 50, 50), 0.5)], CLASSES)


# ---- errors ----------------------------------------------------------------------------------------------


def test_ground_truth_errors_name_the_file(tmp_path):
    root = write_voc_tree(tmp_path / "VOC", {"a": [("cat", (1, 1, 10, 10), False)], "b": []})
    with pytest.raises(SpikedetError, match=r"Main/val\.txt: image set 'val' not found"):
        evaluate_voc(root, "val", [], CLASSES)
    (root / "ImageSets" / "Main" / "empty.txt").write_text("\n")
    with pytest.raises(SpikedetError, match=r"Main/empty\.txt: lists no images"):
        evaluate_voc(root, "empty", [], CLASSES)
    with pytest.raises(SpikedetError, match=r"a\.xml: class 'cat' is not in the class list"):
        evaluate_voc(root, "test", [], ("dog", "fish"))
    (root / "Annotations" / "b.xml").write_text("<annotation><object>")
    with pytest.raises(SpikedetError, match=r"b\.xml: not valid XML"):
        evaluate_voc(root, "test", [], CLASSES)
    (root / "Annotations" / "b.xml").write_text("<annotation></annotation>")
    with pytest.raises(SpikedetError, match=r"b\.xml: no <size>"):
        evaluate_voc(root, "test", [], CLASSES)
    (root / "Annotations" / "b.xml").unlink()
    with pytest.raises(SpikedetError, match=r"b\.xml: not found"):
        evaluate_voc(root, "test", [], CLASSES)


def test_ground_truth_records_keep_devkit_coordinates(two_cats):
    records = read_voc(two_cats, "test", CLASSES)
    assert [r.image_id for r in records] == ["a", "b"]
    assert records[0].boxes.tolist() == [[1, 1, 100, 100], [201, 201, 300, 300]]
    assert records[1].difficult.tolist() == [True] and (records[0].width, records[0].height) == (500, 400)


GOOD = {"image_id": "a", "category_id": 1, "bbox": [1, 1, 5, 5], "score": 1}


@pytest.mark.parametrize("content, problem", [
    (None, "detections file not found"),
    ("[{", "not valid JSON"),
    ('{"image_id": "a"}', "expected a JSON list"),
    (json.dumps([{"image_id": "a", "category_id": 1, "bbox": [1, 1, 5, 5]}]), "entry 0: missing score"),
    (json.dumps([{**GOOD, "score": float("nan")}]), "entry 0: score must be a finite"),  # JSON NaN
    (json.dumps([GOOD, {**GOOD, "bbox": [1, 1, -5, 5]}]), "entry 1: bbox has a negative"),
    (json.dumps([{**GOOD, "bbox": [1, 1, float("inf"), 5]}]), "entry 0: bbox has a non-finite"),
    (json.dumps([{**GOOD, "bbox": [1, 1, 5]}]), "entry 0: bbox must be 4 numbers"),
    (json.dumps([{**GOOD, "image_id": "zz"}]), "entry 0: image_id 'zz' is not"),
    (json.dumps([{**GOOD, "category_id": 5}]), "entry 0: category_id 5 is outside 1..4"),
])
def test_bad_detections_give_one_line_errors_naming_the_file(two_cats, tmp_path, content, problem):
    path = tmp_path / "dets.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SpikedetError) as error:
        evaluate_voc(two_cats, "test", path, CLASSES)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message
