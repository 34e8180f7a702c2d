"""PASCAL VOC box AP at IoU 0.5, the devkit's way, in both its VOC2007 (11-point) and VOC2010+ (area) forms.

The rules are those of the official MATLAB devkit (VOCevaldet.m, VOCap.m), so published VOC numbers can be
compared: boxes are 1-based inclusive pixel corners, so widths and areas carry a +1; detections are taken
by descending score (ties in file order, as MATLAB's stable sort does); each detection is compared with the
ground-truth box it overlaps most in its image and is a true positive when that IoU is >= 0.5 (the devkit's
test; py-faster-rcnn's Python port uses > 0.5, which differs only on exact ties) and the box is not yet
matched, a false positive when the IoU is lower or the box is already taken, and is ignored when that box
is marked difficult. Difficult boxes do not count towards recall either.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..data.records import VOC_CLASSES, ImageRecord
from ..data.voc import read_voc
from ..errors import fail
from .detections import Detections, load_detections

IOU_THRESHOLD = 0.5
# np.arange rather than exact tenths: this is the recall grid voc_eval uses, and a recall of exactly 0.3
# lies below its third point (0.30000000000000004).
VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)


def evaluate_voc(voc_root, split: str, detections, class_names: Sequence[str] = VOC_CLASSES) -> dict:
    """VOC2007 11-point and VOC2010+ area AP per class and their mean, for one image set of a VOC tree.

    `voc_root` is e.g. VOCdevkit/VOC2007 and `split` names ImageSets/Main/<split>.txt. `detections` is a
    detections-file path or an already-loaded list in the COCO results format, with image_id the image's
    file stem ("000001") and category_id the 1-based index into `class_names`; bbox [x, y, w, h] stands for
    the devkit box (x, y, x + w, y + h). Returns {"voc07": {"mAP", "per_class"}, "voc10": {...}}.
    """
    return evaluate_voc_records(read_voc(voc_root, split, class_names), detections, class_names)


def evaluate_voc_records(records: List[ImageRecord], detections, class_names: Sequence[str]) -> dict:
    """evaluate_voc on ground truth already read, with boxes in the devkit's 1-based inclusive pixels.

    A class with no non-difficult ground-truth box has no recall to measure: its AP is None and the mAP is
    the mean over the other classes (None if there are none).
    """
    if not records:
        raise ValueError("no images to evaluate")
    dets = load_detections(detections)
    det_images = _image_indices(dets, records)
    det_labels = _class_indices(dets, class_names)
    det_corners = np.concatenate([dets.boxes[:, :2], dets.boxes[:, :2] + dets.boxes[:, 2:]], axis=1)

    # All ground truth in image order, then file order within an image: the order the devkit searches in.
    gt_images = np.repeat(np.arange(len(records)), [len(r.labels) for r in records])
    gt_labels = np.concatenate([r.labels for r in records])
    gt_boxes = np.concatenate([r.boxes for r in records])
    gt_difficult = np.concatenate([r.difficult for r in records])

    results = {"voc07": {}, "voc10": {}}
    for label, name in enumerate(class_names):
        is_det, is_gt = det_labels == label, gt_labels == label
        n_positives = int(np.sum(~gt_difficult[is_gt]))
        if n_positives == 0:
            results["voc07"][name] = results["voc10"][name] = None
            continue
        tp, fp = _match_class(det_images[is_det], det_corners[is_det], dets.scores[is_det],
                              gt_images[is_gt], gt_boxes[is_gt], gt_difficult[is_gt])
        recall, precision = _recall_precision(tp, fp, n_positives)
        results["voc07"][name] = _ap_11_point(recall, precision)
        results["voc10"][name] = _ap_area(recall, precision)
    return {metric: {"mAP": _mean_ignoring_none(per_class), "per_class": per_class}
            for metric, per_class in results.items()}


def _image_indices(dets: Detections, records: List[ImageRecord]) -> np.ndarray:
    """Position of each detection's image in `records`; an integer id is accepted when its str() is a stem."""
    index_of = {str(record.image_id): i for i, record in enumerate(records)}
    indices = np.empty(len(dets), dtype=np.int64)
    for n, image_id in enumerate(dets.image_ids):
        if str(image_id) not in index_of:
            raise fail(dets.source, f"entry {n}: image_id {image_id!r} is not an image of the evaluated "
                                    "split (VOC image ids are file stems such as '000001')")
        indices[n] = index_of[str(image_id)]
    return indices


def _class_indices(dets: Detections, class_names: Sequence[str]) -> np.ndarray:
    bad = np.flatnonzero((dets.category_ids < 1) | (dets.category_ids > len(class_names)))
    if len(bad):
        n = int(bad[0])
        raise fail(dets.source, f"entry {n}: category_id {dets.category_ids[n]} is outside "
                                f"1..{len(class_names)} (the 1-based index into the class list)")
    return dets.category_ids - 1


def _match_class(det_images, det_boxes, det_scores, gt_images, gt_boxes, gt_difficult):
    """True/false-positive flags of one class's detections in descending-score order (both 0: ignored).

    Each detection's best ground-truth box does not depend on the others, so it is found for all at once;
    only "already matched" is sequential, and it means "not the first, by score, to claim that box".
    """
    order = np.argsort(-det_scores, kind="stable")
    det_images, det_boxes = det_images[order], det_boxes[order]

    # Every (detection, ground-truth box in the same image) pair, grouped by detection. gt_images is sorted,
    # so detection d's boxes are first_gt[d] + 0..n_gt[d]-1, and its pairs start at pair_start[d].
    first_gt = np.searchsorted(gt_images, det_images, side="left")
    n_gt = np.searchsorted(gt_images, det_images, side="right") - first_gt
    pair_start = np.cumsum(n_gt) - n_gt
    pair_det = np.repeat(np.arange(len(det_images)), n_gt)
    pair_gt = np.repeat(first_gt - pair_start, n_gt) + np.arange(len(pair_det))
    iou = _iou_inclusive(det_boxes[pair_det], gt_boxes[pair_gt])

    best_iou = np.full(len(det_images), -np.inf)
    has_gt = n_gt > 0
    if has_gt.any():
        best_iou[has_gt] = np.maximum.reduceat(iou, pair_start[has_gt])
    # The first box reaching the maximum, as argmax picks it.
    is_best = iou == best_iou[pair_det]
    dets_with_best, first_best = np.unique(pair_det[is_best], return_index=True)
    best_gt = np.full(len(det_images), -1)
    best_gt[dets_with_best] = pair_gt[is_best][first_best]

    overlaps = best_iou >= IOU_THRESHOLD
    on_difficult = overlaps & gt_difficult[best_gt]  # best_gt is -1 (no box) only where overlaps is False
    claims = np.flatnonzero(overlaps & ~on_difficult)
    _, first_claim = np.unique(best_gt[claims], return_index=True)
    tp = np.zeros(len(det_images), dtype=bool)
    tp[claims[first_claim]] = True
    fp = ~(tp | on_difficult)  # misses and duplicates
    return tp.astype(np.float64), fp.astype(np.float64)


def _iou_inclusive(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired (xmin, ymin, xmax, ymax) rows with the devkit's +1 pixel-inclusive sizes."""
    inter_w = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0, 0.0)
    inter_h = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0, 0.0)
    inter = inter_w * inter_h
    union = ((a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
             + (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0) - inter)
    return inter / union


def _recall_precision(tp: np.ndarray, fp: np.ndarray, n_positives: int):
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return tp / float(n_positives), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)


def _ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007: mean over recall 0, 0.1, ..., 1 of the best precision at that recall or more."""
    best_from = np.maximum.accumulate(precision[::-1])[::-1]  # max precision over each suffix
    start = np.searchsorted(recall, VOC07_RECALL_POINTS, side="left")  # recall is non-decreasing
    reached = start < len(recall)
    return float(np.sum(best_from[start[reached]]) / 11.0)


def _ap_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+: area under the precision-recall curve made monotone (precision = best at higher recall)."""
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _mean_ignoring_none(per_class: Dict[str, Optional[float]]) -> Optional[float]:
    values = [ap for ap in per_class.values() if ap is not None]
    return float(np.mean(values)) if values else None
