"""COCO instances JSON: read it into ImageRecords, and convert it to the ultralytics layout for training."""
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..errors import fail
from ..fileio import read_json
from .records import ImageRecord
from .yolo import _write_yolo_split


def read_coco(instances_json, images_dir=None,
              class_names: Optional[Sequence[str]] = None) -> Tuple[List[ImageRecord], List[str]]:
    """Records for every image in the JSON (those without annotations get no boxes), and the class names.

    Boxes become 0-based corners [x, y, x+w, y+h]; iscrowd objects are marked difficult, so training and
    VOC-style scoring ignore them. Labels index `class_names` by category name when it is given, else the
    categories sorted by id. `images_dir` defaults to COCO's own layout: annotations/instances_val2017.json
    -> ../val2017.
    """
    instances_json = Path(instances_json)
    if images_dir is None:
        images_dir = instances_json.parent.parent / instances_json.stem.removeprefix("instances_")
    data = check_coco_dataset(instances_json, read_json(instances_json, "COCO annotation file"))
    try:
        categories = sorted(data["categories"], key=lambda c: c["id"])
        if class_names is None:
            class_names = [c["name"] for c in categories]
        label_of = {}
        for category in categories:
            if category["name"] not in class_names:
                raise fail(instances_json,
                           f"category '{category['name']}' is not in the class list {list(class_names)}")
            label_of[category["id"]] = list(class_names).index(category["name"])
        objects = {image["id"]: ([], [], []) for image in data["images"]}
        for ann in data["annotations"]:
            if ann["image_id"] not in objects or ann["category_id"] not in label_of:
                raise fail(instances_json, f"annotation {ann.get('id')} names an unknown image or category")
            check_coco_box(instances_json, ann)
            x, y, w, h = ann["bbox"]
            boxes, labels, difficult = objects[ann["image_id"]]
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[ann["category_id"]])
            difficult.append(bool(ann.get("iscrowd", 0)))
        records = [ImageRecord(image["id"], Path(images_dir) / image["file_name"], image["width"],
                               image["height"], *objects[image["id"]]) for image in data["images"]]
    except KeyError as e:
        raise fail(instances_json, f"missing key {e} in a COCO instances file") from None
    except (TypeError, ValueError) as e:
        raise fail(instances_json, f"not a COCO instances file ({e})") from None
    return records, list(class_names)


def coco_to_yolo(instances_json, images_dir, out_dir, split_name: str,
                 class_names: Optional[Sequence[str]] = None, yaml_name: str = "dataset.yaml") -> Path:
    """Write one split of the ultralytics layout from a COCO instances JSON; returns the dataset YAML.

    Call it once per split into the same out_dir (the YAML gathers the splits). Images are hardlinked into
    out_dir/images/<split_name> (a symlink across file systems, a copy where neither works); iscrowd objects
    are left out of the labels, and images whose file is missing are skipped with one warning.
    """
    records, class_names = read_coco(instances_json, images_dir, class_names)
    return _write_yolo_split(records, class_names, out_dir, split_name, yaml_name, source=instances_json)


def check_coco_dataset(path, data) -> dict:
    """A COCO instances file checked for meaning: images to score, ids that are unique (a repeated image id
    counts its ground truth twice; a repeated annotation id makes pycocotools drop boxes), and boxes that are
    boxes. Annotations without iscrowd are not crowds (pycocotools needs the key), without area get w * h."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise fail(path, "not a COCO instances file (needs lists of images, annotations and categories)")
    if not data["images"]:
        raise fail(path, "its `images` list is empty: nothing to score")
    for key, what in (("images", "image"), ("annotations", "annotation"), ("categories", "category")):
        seen = set()
        for entry in data[key]:
            if not isinstance(entry, dict) or "id" not in entry:
                raise fail(path, f"{what} entry without an id: {entry!r}"[:200])
            if entry["id"] in seen:
                raise fail(path, f"{what} id {entry['id']!r} appears more than once")
            seen.add(entry["id"])
    for ann in data["annotations"]:
        check_coco_box(path, ann)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    return data


def check_coco_box(path, ann) -> None:
    """A ground-truth annotation's bbox: [x, y, w, h], finite, w and h positive."""
    box = ann.get("bbox") if isinstance(ann, dict) else None
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
        raise fail(path, f"annotation {ann.get('id') if isinstance(ann, dict) else ann!r}: bbox must be 4 finite "
                         f"numbers [x, y, w, h], got {box!r}")
    if box[2] <= 0 or box[3] <= 0:
        raise fail(path, f"annotation {ann.get('id')}: bbox {box} has a non-positive width or height")
