"""PASCAL VOC devkit layout: read it into ImageRecords, and convert it to the ultralytics layout for training.

Layout: <voc_root>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt}, voc_root being
e.g. VOCdevkit/VOC2007. Boxes stay in the devkit's 1-based inclusive pixel coordinates, which is what the
devkit's evaluation (voc_eval) compares against; the converter shifts them to 0-based corners.
"""
import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import fail
from .records import VOC_CLASSES, ImageRecord
from .yolo import _write_yolo_split

log = logging.getLogger(__name__)


def _check_split_present(voc_root: Path, split: str, image_ids: List[str]):
    """A split whose annotations are not all here (a partial copy of VOC) is one line naming the image sets
    that are complete, instead of an error on the first missing file."""
    missing = [i for i in image_ids if not (voc_root / "Annotations" / f"{i}.xml").is_file()]
    if not missing:
        return
    complete = [p.stem for p in sorted((voc_root / "ImageSets" / "Main").glob("*.txt"))
                if p.stem != split and not any(p.stem.startswith(f"{c}_") for c in VOC_CLASSES)  # per-class sets
                and _all_annotated(voc_root, p)]
    offer = f"image sets with every annotation here: {', '.join(complete)} (--split NAME)" if complete else \
        "no image set here has all its annotations"
    raise fail(voc_root / "Annotations" / f"{missing[0]}.xml",
               f"not found: image set '{split}' lists {len(image_ids)} images, {len(missing)} of them without an "
               f"annotation here; {offer}")


def _all_annotated(voc_root: Path, split_file: Path) -> bool:
    try:
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        return False
    return bool(ids) and all((voc_root / "Annotations" / f"{i}.xml").is_file() for i in ids)


def read_voc(voc_root, split: str, class_names: Sequence[str] = VOC_CLASSES,
             check_images: bool = False) -> List[ImageRecord]:
    """Records for the ids in ImageSets/Main/<split>.txt, boxes as float 1-based devkit coordinates.

    A box reaching outside its image is clipped to it and one warning at the end counts them; a box that is
    empty after clipping (wholly outside, or xmax < xmin) is dropped and counted too. Anything else wrong
    with the files raises SpikedetError naming the file.
    """
    voc_root = Path(voc_root)
    split_file = voc_root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise fail(split_file, f"image set '{split}' not found")
    try:
        image_ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise fail(split_file, "not a text file, expected one image id per line") from None
    if not image_ids:
        raise fail(split_file, f"lists no images: image set '{split}' has nothing to score")
    if len(set(image_ids)) != len(image_ids):
        repeated = next(i for i in image_ids if image_ids.count(i) > 1)
        raise fail(split_file, f"image id {repeated} is listed more than once")
    _check_split_present(voc_root, split, image_ids)
    records, clipped, dropped = [], 0, 0
    for image_id in image_ids:
        image_path = voc_root / "JPEGImages" / f"{image_id}.jpg"
        record, record_clipped, record_dropped = _read_annotation(
            voc_root / "Annotations" / f"{image_id}.xml", image_id, image_path, list(class_names))
        if check_images and not record.path.is_file():
            raise fail(record.path, f"image listed in {split_file} not found")
        records.append(record)
        clipped, dropped = clipped + record_clipped, dropped + record_dropped
    if clipped:
        log.warning("clipped %d boxes outside their image in %s (image set %s), dropped %d that became empty",
                    clipped, voc_root, split, dropped)
    return records


def _read_annotation(xml_path: Path, image_id: str, image_path: Path, class_names: List[str]):
    """One devkit XML -> (record, boxes clipped, boxes dropped as empty)."""
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise fail(xml_path, "annotation not found") from None
    except ET.ParseError as e:
        raise fail(xml_path, f"not valid XML ({e})") from None
    try:
        width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
    except (TypeError, ValueError):
        raise fail(xml_path, "no <size> with integer <width> and <height>") from None
    if width <= 0 or height <= 0:
        raise fail(xml_path, f"image size is {width}x{height}")
    boxes, labels, difficult = [], [], []
    clipped = dropped = 0
    for number, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if name not in class_names:
            raise fail(xml_path, f"class '{name}' is not in the class list {class_names}")
        try:
            box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise fail(xml_path, f"object {number} ('{name}') has no numeric <bndbox>") from None
        # The part of the box inside the image, whose pixels are 1..width, 1..height (1-based, inclusive).
        inside = [max(box[0], 1), max(box[1], 1), min(box[2], width), min(box[3], height)]
        empty = inside[2] < inside[0] or inside[3] < inside[1]
        clipped += inside != box or empty
        if empty:
            dropped += 1
            continue
        boxes.append(inside)
        labels.append(class_names.index(name))
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return ImageRecord(image_id, image_path, width, height, boxes, labels, difficult), clipped, dropped


def voc_to_yolo(voc_root, out_dir, splits: Optional[Dict[str, str]] = None,
                class_names: Sequence[str] = VOC_CLASSES, yaml_name: str = "dataset.yaml") -> Path:
    """Write the ultralytics layout for training from a VOC devkit folder; returns the dataset YAML.

    `splits` maps each ultralytics split to the VOC image set it is made of; the default is the usual VOC2007
    choice {"train": "trainval", "val": "test"}. Images are hardlinked into out_dir/images/<split> (a symlink
    across file systems, a copy where neither works). Difficult objects are left out of the labels, and
    images whose JPEG is missing are skipped with one warning per split.
    """
    splits = splits or {"train": "trainval", "val": "test"}
    yaml_path = None
    for split, image_set in splits.items():
        records = [_to_zero_based(r) for r in read_voc(voc_root, image_set, class_names)]
        yaml_path = _write_yolo_split(records, class_names, out_dir, split, yaml_name,
                                      source=f"{voc_root} (image set {image_set})")
    return yaml_path


def _to_zero_based(record: ImageRecord) -> ImageRecord:
    """Devkit pixel indices (1-based, inclusive) -> 0-based pixel corners: the box of pixels xmin..xmax
    spans xmin-1 .. xmax."""
    boxes = record.boxes - [1, 1, 0, 0]
    return ImageRecord(record.image_id, record.path, record.width, record.height, boxes, record.labels,
                       record.difficult)
