"""The one internal record every dataset reader produces, and the dataset config that names the classes."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Union

import numpy as np

from ..errors import fail
from ..fileio import read_yaml

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# The VOC classes under their COCO names (the other 14 are spelled alike), so a COCO detector scores on VOC.
COCO_TO_VOC_NAMES = {"airplane": "aeroplane", "motorcycle": "motorbike", "dining table": "diningtable",
                     "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor"}


@dataclass
class ImageRecord:
    """One image and its ground truth, whatever format it came from.

    boxes are (N, 4) float64 pixel corners (xmin, ymin, xmax, ymax) in the source's own coordinates
    (VOC's are 1-based and inclusive, COCO's 0-based); labels are 0-based indices into the dataset's
    class list; difficult marks objects the VOC protocol ignores (COCO's iscrowd maps onto it).
    """

    image_id: Union[str, int]
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not len(self.boxes) == len(self.labels) == len(self.difficult):
            raise ValueError(f"{self.path}: boxes, labels and difficult flags differ in length")


def load_class_names(path) -> List[str]:
    """Class names from a dataset YAML (ultralytics style: `names` as a list or an {index: name} map)."""
    return class_names_of(read_yaml(path, "dataset config"), path)


def class_names_of(cfg, path) -> List[str]:
    """The checked `names` of an already-read dataset config (`path` names it in errors)."""
    names = cfg.get("names") if isinstance(cfg, dict) else None
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise fail(path, "`names` keys must be the indices 0..N-1")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise fail(path, "no `names` list of class names")
    if len(set(names)) != len(names):
        raise fail(path, "`names` has duplicates")
    return names
