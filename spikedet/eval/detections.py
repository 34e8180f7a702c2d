"""Detections in the COCO results format, checked once so the evaluators can trust every field.

A detections file is a JSON list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}, the format
pycocotools' loadRes reads. Both evaluators take it, so a model's output is written one way only.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

import numpy as np

from ..errors import fail
from ..fileio import read_json

REQUIRED_KEYS = ("image_id", "category_id", "bbox", "score")


@dataclass
class Detections:
    """Validated detections as parallel arrays; `source` names where they came from, for error messages."""

    source: str
    image_ids: List[Union[int, str]]
    category_ids: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float64 [x, y, w, h]
    scores: np.ndarray  # (N,) float64

    def __len__(self):
        return len(self.scores)

    def coco_results(self) -> List[dict]:
        """The entries again as plain dicts, the form pycocotools' loadRes takes."""
        entries = zip(self.image_ids, self.category_ids.tolist(), self.boxes.tolist(), self.scores.tolist())
        return [{"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}
                for image_id, category_id, box, score in entries]


def load_detections(detections) -> Detections:
    """Read a detections file (path) or take an already-loaded list, and validate every entry.

    Any problem is a one-line SpikedetError naming the file and the entry index.
    """
    if isinstance(detections, (str, Path)):
        source = str(detections)
        entries = _read_json_list(Path(detections))
    elif isinstance(detections, (list, tuple)):
        source, entries = "detections", detections
    else:
        raise TypeError(f"detections must be a path or a list, not {type(detections).__name__}")

    image_ids, category_ids, boxes, scores = [], [], [], []
    for index, entry in enumerate(entries):
        image_id, category_id, box, score = _check_entry(source, index, entry)
        image_ids.append(image_id)
        category_ids.append(category_id)
        boxes.append(box)
        scores.append(score)
    return Detections(
        source=source,
        image_ids=image_ids,
        category_ids=np.array(category_ids, dtype=np.int64),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        scores=np.array(scores, dtype=np.float64),
    )


def _read_json_list(path: Path) -> list:
    entries = read_json(path, "detections file")
    if not isinstance(entries, list):
        raise fail(path, "expected a JSON list of detections {image_id, category_id, bbox, score}")
    return entries


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_entry(source: str, index: int, entry):
    where = f"entry {index}"
    if not isinstance(entry, dict):
        raise fail(source, f"{where}: expected an object, got {type(entry).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise fail(source, f"{where}: missing {', '.join(missing)}")

    image_id, category_id, box, score = (entry[key] for key in REQUIRED_KEYS)
    if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
        raise fail(source, f"{where}: image_id must be an integer or a string, got {image_id!r}")
    if isinstance(category_id, bool) or not isinstance(category_id, int):
        raise fail(source, f"{where}: category_id must be an integer, got {category_id!r}")
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise fail(source, f"{where}: bbox must be 4 numbers [x, y, w, h], got {box!r}")
    if not all(math.isfinite(v) for v in box):
        raise fail(source, f"{where}: bbox has a non-finite number: {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise fail(source, f"{where}: bbox has a negative width or height: {box!r}")
    if not _is_number(score) or not math.isfinite(score):
        raise fail(source, f"{where}: score must be a finite number, got {score!r}")
    return image_id, category_id, [float(v) for v in box], float(score)
