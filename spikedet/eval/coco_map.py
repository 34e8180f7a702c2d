"""COCO box mAP through pycocotools' COCOeval, so the numbers are the ones papers report."""
import contextlib
import io
from pathlib import Path
from typing import Dict, Optional, Sequence

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco import check_coco_dataset
from ..errors import fail
from ..fileio import read_json
from .detections import load_detections

# The order of COCOeval.stats.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def evaluate_coco(ground_truth, detections, verbose: bool = False,
                  image_ids: Optional[Sequence[int]] = None) -> Dict[str, Optional[float]]:
    """The 12 COCOeval bbox numbers as fractions, keyed by COCO_METRICS.

    ground_truth: an instances JSON path, or a COCO object from load_coco_gt (read once for a sweep).
    image_ids: score only these images (pycocotools' params.imgIds), e.g. a subset that was run.
    A metric whose area range holds no ground truth (pycocotools' -1) is None. `detections` is a
    detections-file path or an already-loaded list; an empty list scores 0 wherever there is ground truth.
    pycocotools' own printing is shown only with verbose=True.
    """
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_gt = ground_truth if isinstance(ground_truth, COCO) else load_coco_gt(ground_truth)
        coco_eval = match_images(coco_gt, detections, image_ids)
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: None if value == -1 else float(value) for name, value in zip(COCO_METRICS, coco_eval.stats)}


def match_images(coco_gt: COCO, detections, image_ids: Optional[Sequence[int]] = None) -> COCOeval:
    """pycocotools' per-image matching (COCOeval.evaluate) of the checked detections against `coco_gt`, on
    `image_ids` (default: all): what COCOeval.accumulate then scores. Prints what pycocotools prints."""
    dets = load_detections(detections)
    _check_ids(dets, coco_gt, coco_gt.source)
    coco_dt = coco_gt.loadRes(dets.coco_results()) if len(dets) else _empty_results(coco_gt)
    coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
    if image_ids is not None:
        coco_eval.params.imgIds = sorted(image_ids)
    coco_eval.evaluate()
    return coco_eval


def load_coco_gt(path) -> COCO:
    """Read the instances JSON ourselves so a bad file is a one-line error, not a pycocotools traceback.

    What data.coco.check_coco_dataset refuses (an empty image list, repeated ids, a box that is not four finite
    numbers with positive width and height) pycocotools would score, silently wrong, or fail on with a traceback.
    """
    path = Path(path)
    dataset = check_coco_dataset(path, read_json(path, "COCO ground truth file"))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    coco.source = str(path)
    return coco


def _check_ids(dets, coco_gt: COCO, gt_json_path) -> None:
    """loadRes would only assert on unknown images, and unknown categories would be silently dropped."""
    image_ids, category_ids = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for index, (image_id, category_id) in enumerate(zip(dets.image_ids, dets.category_ids.tolist())):
        if image_id not in image_ids:
            raise fail(dets.source, f"entry {index}: image_id {image_id!r} is not an image of {gt_json_path}")
        if category_id not in category_ids:
            raise fail(dets.source,
                       f"entry {index}: category_id {category_id} is not a category of {gt_json_path}")


def _empty_results(coco_gt: COCO) -> COCO:
    """A results object with no detections: loadRes cannot build one from [], but COCOeval scores it fine."""
    results = COCO()
    results.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                       "annotations": []}
    results.createIndex()
    return results
