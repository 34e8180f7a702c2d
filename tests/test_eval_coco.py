"""COCO mAP: evaluate_coco must give exactly what pycocotools gives, and handle what pycocotools cannot."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spikedet import SpikedetError
from spikedet.eval import COCO_METRICS, evaluate_coco

SHARED_COCO_GT = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco" / "annotations" / \
    "instances_val2017.json"


def direct_pycocotools_stats(gt_path, dets_path):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(dets_path)), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


@pytest.fixture
def shared_gt():
    if not SHARED_COCO_GT.is_file():
        pytest.skip(f"{SHARED_COCO_GT} is absent")
    return SHARED_COCO_GT


@pytest.fixture
def small_gt(tmp_path):
    """Two images whose only objects are small (area < 32^2): no medium or large ground truth."""
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [50, 50, 10, 20], "area": 200, "iscrowd": 0},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))
    return path


def jittered_detections(gt: dict, seed: int = 0) -> list:
    """80% of the ground truth, jittered, with random scores, plus 1000 random false positives."""
    rng = np.random.default_rng(seed)
    detections = []
    for ann in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        w2, h2 = w * np.exp(rng.normal(0, 0.1)), h * np.exp(rng.normal(0, 0.1))
        detections.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                           "bbox": [x + rng.normal(0, 0.05 * w), y + rng.normal(0, 0.05 * h), w2, h2],
                           "score": float(rng.random())})
    image_ids, category_ids = [im["id"] for im in gt["images"]], [c["id"] for c in gt["categories"]]
    for _ in range(1000):
        box = [*rng.uniform(0, 300, size=2).tolist(), *rng.uniform(2, 200, size=2).tolist()]
        detections.append({"image_id": int(rng.choice(image_ids)), "bbox": box,
                           "category_id": int(rng.choice(category_ids)), "score": 0.7 * float(rng.random())})
    return detections


def test_matches_pycocotools_on_real_coco_val(shared_gt, tmp_path):
    detections = jittered_detections(json.loads(shared_gt.read_text()))
    dets_path = tmp_path / "dets.json"
    dets_path.write_text(json.dumps(detections))

    metrics = evaluate_coco(shared_gt, dets_path)

    assert list(metrics) == list(COCO_METRICS)
    np.testing.assert_allclose([metrics[name] for name in COCO_METRICS],
                               direct_pycocotools_stats(shared_gt, dets_path), atol=1e-6)
    print(f"real COCO val (206 images), jittered detections: "
          f"AP {metrics['AP']:.4f}, AP50 {metrics['AP50']:.4f}")
    assert 0.2 < metrics["AP"] < metrics["AP50"] < 1.0


def test_an_image_subset_scores_as_the_ground_truth_cut_to_it(shared_gt, tmp_path):
    gt = json.loads(shared_gt.read_text())
    detections = jittered_detections(gt, seed=1)
    keep = sorted(im["id"] for im in gt["images"])[:20]
    cut = {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
           "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}
    (tmp_path / "cut.json").write_text(json.dumps(cut))
    (tmp_path / "dets.json").write_text(json.dumps([d for d in detections if d["image_id"] in keep]))
    metrics = evaluate_coco(shared_gt, detections, image_ids=keep)  # detections elsewhere are ignored
    np.testing.assert_allclose([metrics[name] for name in COCO_METRICS],
                               direct_pycocotools_stats(tmp_path / "cut.json", tmp_path / "dets.json"), atol=1e-6)
    assert metrics != evaluate_coco(shared_gt, detections)


def test_perfect_detections_score_close_to_one(shared_gt):
    gt = json.loads(shared_gt.read_text())
    detections = [{"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                   "score": 1.0} for ann in gt["annotations"] if not ann["iscrowd"]]
    metrics = evaluate_coco(shared_gt, detections)
    assert metrics["AP"] > 0.99 and metrics["AP50"] > 0.99 and metrics["AR100"] > 0.99


def test_empty_detections_on_real_coco_val_score_zero(shared_gt):
    assert set(evaluate_coco(shared_gt, []).values()) == {0.0}


def test_empty_detections_score_zero_where_there_is_ground_truth(small_gt):
    metrics = evaluate_coco(small_gt, [])
    assert {name for name, value in metrics.items() if value is None} == {"APm", "APl", "ARm", "ARl"}
    assert all(value == 0.0 for value in metrics.values() if value is not None)


def test_no_ground_truth_in_range_is_none_and_json_null(small_gt):
    detections = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.9},
                  {"image_id": 2, "category_id": 7, "bbox": [50, 50, 10, 20], "score": 0.8}]
    metrics = evaluate_coco(small_gt, detections)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["APs"] == pytest.approx(1.0)
    assert metrics["APl"] is None and '"APl": null' in json.dumps(metrics)


def test_pycocotools_output_only_when_verbose(small_gt, capsys):
    evaluate_coco(small_gt, [])
    assert capsys.readouterr().out == ""
    evaluate_coco(small_gt, [], verbose=True)
    assert "Average Precision" in capsys.readouterr().out


@pytest.mark.parametrize("entry, problem", [
    ({"image_id": 5, "category_id": 3}, "entry 1: image_id 5 is not an image of"),
    ({"image_id": "1", "category_id": 3}, "entry 1: image_id '1' is not an image of"),
    ({"image_id": 1, "category_id": 4}, "entry 1: category_id 4 is not a category of"),
])
def test_unknown_ids_name_the_detections_file(small_gt, tmp_path, entry, problem):
    good = {"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.9}
    dets_path = tmp_path / "my_dets.json"
    dets_path.write_text(json.dumps([good, {**good, **entry}]))
    with pytest.raises(SpikedetError) as error:
        evaluate_coco(small_gt, dets_path)
    assert str(error.value).startswith(f"{dets_path}: {problem} {small_gt}")


def test_bad_ground_truth_file_is_a_one_line_error(tmp_path):
    with pytest.raises(SpikedetError, match=r"nope\.json: COCO ground truth file not found"):
        evaluate_coco(tmp_path / "nope.json", [])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SpikedetError, match=r"list\.json: not a COCO instances file"):
        evaluate_coco(tmp_path / "list.json", [])
