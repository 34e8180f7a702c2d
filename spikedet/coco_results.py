"""A detect run's detections in the COCO results format, so that `eval --detections` scores them as written.

Given the COCO annotation file the images belong to, each image gets its id there (found by file name) and
each class the category id of the same name (COCO's ids have gaps: tv is 72, not its index + 1); without one,
the image is named by its key and the category id is the class index + 1. The class name is always written.
"""
from pathlib import Path
from typing import Dict, List, Optional

from .data.records import COCO_TO_VOC_NAMES
from .errors import fail
from .fileio import read_json
from .inference import Detection


class CocoIds:
    """Image and category ids: from a COCO instances file, or the run's own keys and class indices."""

    def __init__(self, names: Dict[int, str], gt_coco: Optional[Path] = None):
        self.names, self.images, self.categories, self.unmatched = names, None, None, []
        if gt_coco is None:
            return
        gt = read_json(gt_coco, "COCO instances file")
        if not isinstance(gt, dict) or not isinstance(gt.get("images"), list):
            raise fail(gt_coco, "not a COCO instances file (no 'images' list)")
        self.images = {Path(str(i.get("file_name"))).name: i.get("id") for i in gt["images"]}
        by_name = {c.get("name"): c.get("id") for c in gt.get("categories", [])}
        by_name.update({coco: by_name[voc] for coco, voc in COCO_TO_VOC_NAMES.items()
                        if voc in by_name and coco not in by_name})
        self.categories = {k: by_name[name] for k, name in names.items() if name in by_name}
        if not self.categories:
            raise fail(gt_coco, f"none of the network's classes ({', '.join(names.values())}) is a category there")

    def entries(self, key: str, detections: List[Detection]) -> List[dict]:
        """One COCO results entry per detection; classes the annotation file lacks are left out."""
        image_id = key
        if self.images is not None:
            image_id = self.images.get(Path(key).name)
            if image_id is None:
                self.unmatched.append(key)
                image_id = key
        out = []
        for d in detections:
            category = d.label + 1 if self.categories is None else self.categories.get(d.label)
            if category is None:
                continue
            x0, y0, x1, y1 = (float(v) for v in d.box)
            out.append({"image_id": image_id, "category_id": category, "category_name": self.names[d.label],
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "score": d.score})
        return out
