"""The ultralytics YOLO layout: read it into ImageRecords, and the one writer both converters share.

Layout: <root>/images/<split>/*.jpg, <root>/labels/<split>/*.txt with one "class cx cy w h" line per object
(centre and size normalised by the image size), and a dataset YAML naming the root, splits and classes.
"""
import logging
import os
import shutil
from pathlib import Path
from typing import List, Sequence

import numpy as np
import yaml
from PIL import Image
from ultralytics.data.utils import IMG_FORMATS, exif_size, img2label_paths

from ..errors import fail
from ..fileio import atomic_write_text, read_yaml
from .records import ImageRecord, class_names_of

log = logging.getLogger(__name__)


def read_yolo(dataset_yaml, split: str) -> List[ImageRecord]:
    """Records for one split of an ultralytics dataset YAML, boxes in 0-based pixel corners.

    The split entry may be an image folder or a .txt list of image paths (or a list of those), as in
    ultralytics. An image without a label file is a background image (no boxes), also as in ultralytics.
    """
    dataset_yaml = Path(dataset_yaml)
    cfg = read_yaml(dataset_yaml, "dataset config")
    class_names = class_names_of(cfg, dataset_yaml)
    if not cfg.get(split):
        raise fail(dataset_yaml, f"no '{split}' split")
    root = dataset_yaml.parent / (cfg.get("path") or "")  # an absolute `path` replaces the YAML's folder
    entries = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
    records = []
    for image_path in (p for entry in entries for p in _list_images(root / entry)):
        label_path = Path(img2label_paths([str(image_path)])[0])
        width, height = _image_size(image_path)
        classes, boxes = _read_label_file(label_path, len(class_names)) if label_path.exists() else ([], [])
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4) * [width, height, width, height]
        corners = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
        records.append(ImageRecord(image_path.stem, image_path, width, height, corners, classes,
                                   np.zeros(len(classes), dtype=bool)))
    return records


def _list_images(entry: Path) -> List[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.iterdir() if p.suffix[1:].lower() in IMG_FORMATS)
    if entry.suffix == ".txt" and entry.is_file():
        lines = [line.strip() for line in entry.read_text().splitlines() if line.strip()]
        return [entry.parent / line for line in lines]  # relative lines are relative to the list file
    raise fail(entry, "image folder or list not found")


def _image_size(image_path: Path):
    """(width, height) from the file header, after EXIF rotation (ultralytics' exif_size), as cv2.imread
    sees the image."""
    try:
        with Image.open(image_path) as im:
            return exif_size(im)
    except (OSError, SyntaxError) as e:
        raise fail(image_path, f"cannot read image ({e.__class__.__name__})") from None


def _read_label_file(label_path: Path, num_classes: int):
    classes, boxes = [], []
    for number, line in enumerate(label_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cls, *box = line.split()
            cls, box = int(cls), [float(v) for v in box]
            if len(box) != 4:
                raise ValueError
        except ValueError:
            problem = f"line {number}: expected 'class cx cy w h', got {line.strip()!r}"
            raise fail(label_path, problem) from None
        if not 0 <= cls < num_classes:
            raise fail(label_path, f"line {number}: class {cls} is outside 0..{num_classes - 1}")
        if not all(0 <= v <= 1 for v in box):
            raise fail(label_path, f"line {number}: coordinates are not normalised to 0..1")
        classes.append(cls)
        boxes.append(box)
    return classes, boxes


def _write_yolo_split(records: Sequence[ImageRecord], class_names: Sequence[str], out_dir, split: str,
                      yaml_name: str, source) -> Path:
    """Write one split of the ultralytics layout from records whose boxes are 0-based pixel corners.

    Difficult objects are left out of the labels (the VOC protocol neither trains nor scores them).
    images/<split> and labels/<split> are emptied first, so a re-run leaves no stale files behind.
    Returns the dataset YAML, which is updated to list this split.
    """
    out_dir = Path(out_dir).resolve()
    images_dir, labels_dir = out_dir / "images" / split, out_dir / "labels" / split
    for folder in (images_dir, labels_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    missing = 0
    for record in records:
        if not Path(record.path).is_file():
            missing += 1
            continue
        _link_or_copy(Path(record.path), images_dir / Path(record.path).name)
        lines = []
        size = np.array([record.width, record.height] * 2, dtype=np.float64)
        for box, label, difficult in zip(record.boxes, record.labels, record.difficult):
            x0, y0, x1, y1 = np.clip(box, 0, size)
            if difficult or x1 <= x0 or y1 <= y0:
                continue
            cx, cy, w, h = np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]) / size
            lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        (labels_dir / Path(record.path).with_suffix(".txt").name).write_text("".join(lines))
    if missing:
        log.warning("skipped %d of %d images whose file is missing, in %s", missing, len(records), source)
    return _update_dataset_yaml(out_dir / yaml_name, out_dir, split, class_names)


def _link_or_copy(src: Path, dst: Path):
    """Hardlink (no extra space, survives moving the source), else symlink (across file systems),
    else copy."""
    try:
        os.link(src, dst)
    except OSError:
        try:
            os.symlink(src.resolve(), dst)
        except OSError:
            shutil.copyfile(src, dst)


def _update_dataset_yaml(yaml_path: Path, out_dir: Path, split: str, class_names: Sequence[str]) -> Path:
    """Add `split` to the dataset YAML, keeping splits an earlier conversion into the same folder wrote."""
    names = {i: name for i, name in enumerate(class_names)}
    cfg = {"path": str(out_dir)}
    if yaml_path.exists():
        previous = yaml.safe_load(yaml_path.read_text()) or {}
        if previous.get("names") != names:
            raise fail(yaml_path, f"already holds other class names than {list(class_names)}")
        cfg.update({k: v for k, v in previous.items() if k not in ("path", "names")})
    cfg[split] = f"images/{split}"
    cfg["names"] = names
    atomic_write_text(yaml_path, yaml.safe_dump(cfg, sort_keys=False))
    return yaml_path
