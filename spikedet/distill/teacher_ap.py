"""Teacher AP: a student's detections scored by pycocotools against its teacher's confident detections on
held-out images -- a label-free selection measure in AP's own units.

Why: the head loss weighs every raw output alike; AP counts only the ranking of the detections that survive NMS.
A recipe can lower the one without moving the other (run (p): head loss 8.7% lower, COCO AP50 at T = 16 0.010
lower). Here the teacher's detections scoring at least `truth_conf` (after its own NMS) stand in for the labels,
and the student's detections down to the evaluation's conf are scored against them as COCO val is scored (AP50
and AP over all areas). The teacher scores exactly 1 against itself: its own confident boxes outrank all of its
other detections, and NMS leaves no second box of a class on one of them (so long as it finds at most 100 in an
image: COCO scores an image's 100 best detections).
"""
import contextlib
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from pycocotools.coco import COCO

from ..defaults import DEFAULTS
from ..errors import SpikedetError
from ..eval.coco_map import evaluate_coco
from ..inference import Detection, postprocess
from ..networks import default_eval_iou
from .images import load_batch
from .student import set_levels


def teacher_ap(student: torch.nn.Module, teacher: torch.nn.Module, paths: Sequence[Path], imgsz: int,
               levels: Sequence[int], truth_conf: float = DEFAULTS["teacher_ap_conf"],
               batch: int = 8) -> Dict[str, Dict[str, Optional[float]]]:
    """{"8": {"AP50", "AP"}, "16": ..., "float": ...}: the student at each level (and its float network, errors
    off) scored against the teacher's detections >= truth_conf on `paths` (stretched to imgsz, as the head loss
    sees them). None where the teacher finds nothing to score against. Leaves the student at its smallest level."""
    truth = teacher_truth(teacher, paths, imgsz, truth_conf, batch)
    return ap_against(truth, student_detections(student, paths, imgsz, levels, default_eval_iou(teacher), batch))


def ap_against(truth: COCO, found: Dict[str, List[dict]]) -> Dict[str, Dict[str, Optional[float]]]:
    """{key: {"AP50", "AP"}} of each key's detections against the teacher's (None where it found nothing)."""
    result = {}
    for key, entries in found.items():
        metrics = evaluate_coco(truth, entries) if truth.dataset["annotations"] else {"AP50": None, "AP": None}
        result[key] = {"AP50": metrics["AP50"], "AP": metrics["AP"]}
    return result


@torch.no_grad()
def teacher_truth(teacher: torch.nn.Module, paths: Sequence[Path], imgsz: int,
                  truth_conf: float = DEFAULTS["teacher_ap_conf"], batch: int = 8) -> COCO:
    """The teacher's detections >= truth_conf on `paths` (stretched to imgsz) as a pycocotools ground truth over
    images 1..len(paths): the stand-in labels, one set for every student scored on these images."""
    if not paths:
        raise SpikedetError("no images to score against the teacher's detections")
    if not 0 < truth_conf < 1:
        raise SpikedetError(f"truth_conf must be in (0, 1), got {truth_conf}")
    truth: List[dict] = []
    iou = default_eval_iou(teacher)
    for start, x, shapes in _batches(paths, imgsz, batch):
        ids = range(start + 1, start + 1 + len(x))
        truth += _entries(ids, postprocess(teacher(x)[0], imgsz, shapes, "stretch", truth_conf, iou), score=False)
    return _ground_truth(truth, len(paths), imgsz, teacher.nc)


@torch.no_grad()
def student_detections(student: torch.nn.Module, paths: Sequence[Path], imgsz: int, levels: Sequence[int],
                       iou: float, batch: int = 8) -> Dict[str, List[dict]]:
    """{"8": [...], "16": [...], "float": [...]}: the student's detections in COCO format at each level and for
    its float network, the images numbered as teacher_truth numbers them, NMS at the teacher's `iou`; kept apart
    from their AP for scoring on other image draws (spikedet.distill.choose.figure_intervals). Leaves the student
    at its smallest level."""
    keys = [str(L) for L in levels] + ["float"]
    found: Dict[str, List[dict]] = {key: [] for key in keys}
    for start, x, shapes in _batches(paths, imgsz, batch):
        ids = range(start + 1, start + 1 + len(x))
        for L, key in zip(list(levels) + [None], keys):
            set_levels(student, L)
            found[key] += _entries(ids, postprocess(student(x)[0], imgsz, shapes, "stretch",
                                                    DEFAULTS["conf_eval"], iou))
    set_levels(student, min(levels))
    return found


def _batches(paths: Sequence[Path], imgsz: int, batch: int):
    """(index of the first image, the batch stretched to imgsz, its image shapes) for each `batch` images."""
    for start in range(0, len(paths), batch):
        x = load_batch(paths[start:start + batch], imgsz)
        yield start, x, [(imgsz, imgsz, 3)] * len(x)


def _entries(image_ids, detections: List[List[Detection]], score: bool = True) -> List[dict]:
    """COCO-format entries (category ids 1-based); boxes without area are left out (they match nothing)."""
    out = []
    for image_id, dets in zip(image_ids, detections):
        for d in dets:
            x1, y1, x2, y2 = (float(v) for v in d.box)
            if x2 > x1 and y2 > y1:
                out.append({"image_id": image_id, "category_id": d.label + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            **({"score": d.score} if score else {})})
    return out


def _ground_truth(entries: List[dict], count: int, imgsz: int, nc: int) -> COCO:
    """The teacher's detections as a pycocotools ground truth over images 1..count."""
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": imgsz, "height": imgsz} for i in range(1, count + 1)],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(nc)],
        "annotations": [{**e, "id": k + 1, "area": e["bbox"][2] * e["bbox"][3], "iscrowd": 0}
                        for k, e in enumerate(entries)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it indexes
        coco.createIndex()
    coco.source = "the teacher's detections"
    return coco
