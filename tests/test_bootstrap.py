"""The paired image bootstrap of COCO AP: each draw must score exactly as pycocotools scores an image set
holding the drawn copies, and the intervals must say what the detections say."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spikedet import SpikedetError
from spikedet.eval import COCO_METRICS, evaluate_coco
from spikedet.eval.bootstrap import DRAWN_METRICS, ImageDraws, bootstrap_coco, format_bootstrap
from spikedet.eval.coco_map import load_coco_gt


def random_ground_truth(images: int = 30, seed: int = 0) -> dict:
    """Images with 1-6 objects of three categories and every COCO area range."""
    rng = np.random.default_rng(seed)
    gt = {"images": [{"id": 10 + i, "width": 400, "height": 400} for i in range(images)],
          "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 5)], "annotations": []}
    for image in gt["images"]:
        for _ in range(int(rng.integers(1, 7))):
            w, h = rng.uniform(8, 200, size=2).tolist()
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 400 - h)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image["id"],
                                      "category_id": int(rng.choice([1, 2, 5])), "bbox": [x, y, w, h],
                                      "area": w * h, "iscrowd": 0})
    return gt


def detections_for(gt: dict, found: float, seed: int = 0) -> list:
    """A share `found` of the objects, jittered, and false positives, with random scores."""
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt["annotations"]:
        if rng.random() < found:
            x, y, w, h = ann["bbox"]
            dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": float(rng.random()),
                         "bbox": [x + rng.normal(0, 0.1 * w), y + rng.normal(0, 0.1 * h), w, h]})
    for image in gt["images"]:
        for _ in range(3):
            box = [*rng.uniform(0, 300, size=2).tolist(), *rng.uniform(5, 100, size=2).tolist()]
            dets.append({"image_id": image["id"], "category_id": int(rng.choice([1, 2, 5])), "bbox": box,
                         "score": 0.8 * float(rng.random())})
    return dets


def pycocotools_on_copies(gt: dict, dets: list, ids: list, draw: list) -> np.ndarray:
    """pycocotools itself on an image set that holds, for each drawn position, a fresh copy of that image."""
    copies = {"images": [], "annotations": [], "categories": gt["categories"]}
    copied_dets = []
    for slot, position in enumerate(draw):
        image_id = ids[position]
        copies["images"].append({"id": slot + 1, "width": 400, "height": 400})
        for ann in gt["annotations"]:
            if ann["image_id"] == image_id:
                copies["annotations"].append({**ann, "id": len(copies["annotations"]) + 1, "image_id": slot + 1})
        copied_dets += [{**d, "image_id": slot + 1} for d in dets if d["image_id"] == image_id]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copies
        coco.createIndex()
        coco_eval = COCOeval(coco, coco.loadRes(copied_dets), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


@pytest.fixture
def gt_file(tmp_path):
    gt = random_ground_truth()
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))
    return gt, path


def test_a_draw_scores_as_pycocotools_scores_the_drawn_copies(gt_file):
    gt, path = gt_file
    dets = detections_for(gt, 0.7)
    ids = sorted(im["id"] for im in gt["images"])
    draws = ImageDraws(load_coco_gt(path), dets, ids)
    draw = np.random.default_rng(3).integers(0, len(ids), len(ids)).tolist()
    assert len(set(draw)) < len(draw)  # repeats, and images left out
    got, expected = draws.score(draw), dict(zip(COCO_METRICS, pycocotools_on_copies(gt, dets, ids, draw)))
    assert got == {name: expected[name] for name in DRAWN_METRICS}
    assert draws.ap50(draw) == got["AP50"]  # the AP50-only accumulate the intervals use: the same number
    # scoring a draw leaves the per-image results as they were: every image once is evaluate_coco again
    whole = evaluate_coco(path, dets)
    assert draws.score(list(range(len(ids)))) == {name: whole[name] for name in DRAWN_METRICS}
    rng = np.random.default_rng(4)
    for _ in range(5):
        other = rng.integers(0, len(ids), len(ids)).tolist()
        assert draws.ap50(other) == draws.score(other)["AP50"]


def test_intervals_pair_the_draws_and_order_worse_detections_below(gt_file):
    gt, path = gt_file
    good, worse = detections_for(gt, 0.9, seed=1), detections_for(gt, 0.5, seed=1)
    result = bootstrap_coco(path, {"good": good, "same": good, "worse": worse}, resamples=20, seed=4, progress=False)

    assert result["networks"]["good"]["value"] == evaluate_coco(path, good)["AP50"]
    for r in result["networks"].values():
        assert r["low"] <= r["value"] <= r["high"] and r["low"] < r["high"]
    # paired: the same detections differ by exactly 0 on every draw (unpaired draws would scatter)
    same = result["differences"]["same"]
    assert same == {"value": 0.0, "low": 0.0, "high": 0.0, "draw_mean": 0.0}
    worse_by = result["differences"]["worse"]
    assert worse_by["high"] < 0
    again = bootstrap_coco(path, {"good": good, "worse": worse}, resamples=20, seed=4, progress=False)
    assert again["differences"] == {"worse": worse_by}  # the seed reproduces the draws
    assert "worse - good" in format_bootstrap(result)


def test_bad_requests_are_one_line_errors(gt_file):
    _, path = gt_file
    for metric in ("mAP", "APs"):  # APs: a draw is scored over objects of every size only
        with pytest.raises(SpikedetError, match=f"metric '{metric}'"):
            bootstrap_coco(path, {"a": []}, metric=metric)
    with pytest.raises(SpikedetError, match="resamples"):
        bootstrap_coco(path, {"a": []}, resamples=0)
