"""The embedded dataset: filled circles, squares and triangles on varied backgrounds, generated on demand.

It gives every step of the pipeline (training, conversion, spiking inference, VOC and COCO scoring) input
without downloading anything, with overlaps, tiny objects, textured backgrounds and noise so that detecting
it is not trivial. The same images are written in the three layouts the readers understand (PASCAL VOC,
COCO, ultralytics YOLO), so each reader and both scoring protocols run on it. Generation is deterministic:
one seed gives byte-identical annotations and identical pixels.
"""
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from ..errors import fail
from ..fileio import atomic_write_json
from ..progress import progress_bar
from .voc import voc_to_yolo
from .yolo import _link_or_copy

SHAPES_CLASSES = ("circle", "square", "triangle")
DEFAULT_COUNTS = {"train": 320, "val": 80, "test": 80}
FORMAT_VERSION = 1  # bump whenever the generated files change, so markers written by older code go stale
MARKER_NAME = "generated.json"

# BGR shape colours, drawn independently of the class: colour never tells the class.
PALETTE = np.array([
    (40, 40, 220), (40, 200, 40), (220, 80, 30), (30, 210, 230), (200, 40, 200), (220, 220, 40),
    (30, 120, 250), (250, 250, 250), (20, 20, 20), (130, 60, 140),
], dtype=np.float32)
SIZE_RANGE = (0.05, 0.4)  # shape size (diameter or side) as a fraction of the image side, sampled log-uniform
MIN_VISIBLE = 0.1  # a placement that would hide an earlier object below this fraction is re-sampled
DIFFICULT_VISIBLE = 0.4  # objects less visible than this are marked difficult
DIFFICULT_SIDE_AT_192 = 12  # objects whose box area is below this side squared (at 192 px) are difficult


def make_shapes_dataset(root="data/shapes", imgsz: int = 192, counts=None, seed: int = 0,
                        progress: bool = True) -> dict:
    """Generate the dataset under `root` (or reuse it when its marker says it has these parameters).

    counts maps train/val/test to a number of images (defaults 320/80/80). The generator owns
    root/{VOCdevkit,coco,yolo}: they are rebuilt whenever the parameters change, and it refuses to touch
    such folders that it did not make. Returns the paths of the three layouts:
    {"voc": VOC2007 folder, "coco": {split: instances JSON}, "yolo": dataset YAML}.
    """
    root = Path(root).resolve()
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    if set(counts) != set(DEFAULT_COUNTS) or not all(isinstance(n, int) and n >= 1 for n in counts.values()):
        raise fail(root, f"counts must give train, val and test at least 1 image each, got {counts}")
    if imgsz < 32:
        raise fail(root, f"image size {imgsz} is too small for the shapes dataset (at least 32)")
    voc_root, coco_root, yolo_root = root / "VOCdevkit" / "VOC2007", root / "coco", root / "yolo"
    paths = {"voc": voc_root, "coco": {s: coco_root / "annotations" / f"instances_{s}.json" for s in counts},
             "yolo": yolo_root / "shapes.yaml"}
    params = {"format": FORMAT_VERSION, "root": str(root), "imgsz": imgsz, "counts": counts, "seed": seed}
    marker = root / MARKER_NAME
    state = json.loads(marker.read_text()) if marker.is_file() else None
    if state == {**params, "complete": True}:
        return paths
    layouts = (root / "VOCdevkit", coco_root, yolo_root)
    if state is None and any(folder.exists() for folder in layouts):
        raise fail(root, "has VOCdevkit, coco or yolo folders the shapes generator did not make; "
                         "choose another root")

    atomic_write_json(marker, {**params, "complete": False})  # ours from now on, but not complete
    for folder in layouts:
        shutil.rmtree(folder, ignore_errors=True)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc_root / folder).mkdir(parents=True)

    ids, coco = {s: [] for s in counts}, {s: _coco_skeleton() for s in counts}
    for split in counts:
        (coco_root / split).mkdir(parents=True)
    image_splits = [split for split, count in counts.items() for _ in range(count)]
    for number, split in enumerate(_progress(image_splits, progress), start=1):
        image_id = f"{number:06d}"
        image, objects = render_image(np.random.default_rng([seed, number]), imgsz)
        jpeg = voc_root / "JPEGImages" / f"{image_id}.jpg"
        jpeg.write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
        (voc_root / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, imgsz, objects))
        _link_or_copy(jpeg, coco_root / split / jpeg.name)
        _add_coco_image(coco[split], number, jpeg.name, imgsz, objects)
        ids[split].append(image_id)
    ids["trainval"] = ids["train"] + ids["val"]
    for image_set, image_ids in ids.items():
        (voc_root / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(image_ids) + "\n")
    for split in counts:
        atomic_write_json(paths["coco"][split], coco[split])

    # The YOLO layout goes through the same converter users run on real VOC data, so that path is exercised.
    voc_to_yolo(voc_root, yolo_root, {s: s for s in counts}, SHAPES_CLASSES, yaml_name="shapes.yaml")
    atomic_write_json(marker, {**params, "complete": True})
    return paths


def render_image(rng: np.random.Generator, imgsz: int):
    """One image (BGR uint8) and its objects: dicts of label, box (0-based corners, int), area (pixels),
    visible (fraction of the shape no later shape covers) and difficult.

    Shapes are painted in order, so a later one may cover part of an earlier one; the box is always the
    tight box of the whole shape, as an annotator would draw it, while the visible fraction decides
    `difficult` together with the size.
    """
    image = _background(rng, imgsz)
    labels, masks, visible = [], [], []  # visible: what later shapes left of each mask
    for _ in range(rng.integers(1, 7)):
        for _attempt in range(20):
            label, mask = _random_shape(rng, imgsz)
            if all((v & ~mask).sum() >= MIN_VISIBLE * m.sum() for m, v in zip(masks, visible)):
                break
        else:
            continue  # no placement leaves the earlier objects visible enough: this image has one object less
        image[mask] = _contrasting_colour(rng, image[mask].mean(axis=0))
        visible = [v & ~mask for v in visible] + [mask]
        labels.append(label)
        masks.append(mask)
    image = np.clip(image + rng.normal(0, rng.uniform(2, 10), image.shape), 0, 255).astype(np.uint8)

    tiny_area = (DIFFICULT_SIDE_AT_192 * imgsz / 192) ** 2
    objects = []
    for label, mask, seen in zip(labels, masks, visible):
        columns, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        box = (int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)
        area, visible_fraction = int(mask.sum()), float(seen.sum() / mask.sum())
        tiny = (box[2] - box[0]) * (box[3] - box[1]) < tiny_area
        objects.append({"label": label, "box": box, "area": area, "visible": visible_fraction,
                        "difficult": bool(tiny or visible_fraction < DIFFICULT_VISIBLE)})
    return image, objects


def _background(rng, imgsz):
    """A float32 BGR background: flat, a linear gradient, soft blotches, or smooth texture."""
    kind = rng.integers(4)
    base = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 0:
        return np.broadcast_to(base, (imgsz, imgsz, 3)).copy()
    if kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:imgsz, 0:imgsz].astype(np.float32) / imgsz
        t = np.cos(angle) * xs + np.sin(angle) * ys
        t = (t - t.min()) / (t.max() - t.min())
        return base + t[..., None] * (rng.uniform(0, 255, 3).astype(np.float32) - base)
    if kind == 2:
        image = np.broadcast_to(base, (imgsz, imgsz, 3)).copy()
        for _ in range(rng.integers(3, 9)):
            centre = tuple(int(c) for c in rng.integers(0, imgsz, 2))
            axes = tuple(int(a) for a in rng.integers(imgsz // 10, imgsz // 3, 2))
            colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        return cv2.GaussianBlur(image, (0, 0), imgsz / 20)
    cells = rng.integers(3, 13)
    coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
    return cv2.resize(coarse, (imgsz, imgsz), interpolation=cv2.INTER_CUBIC)


def _random_shape(rng, imgsz):
    """(label, boolean mask) of one shape lying wholly inside the image, so `truncated` is honestly 0."""
    label = int(rng.integers(len(SHAPES_CLASSES)))
    size = max(3.0, imgsz * np.exp(rng.uniform(*np.log(SIZE_RANGE))))
    mask = np.zeros((imgsz, imgsz), np.uint8)
    if SHAPES_CLASSES[label] == "circle":
        radius = max(1, round(size / 2))
        centre = rng.integers(radius, imgsz - radius, 2)
        cv2.circle(mask, (int(centre[0]), int(centre[1])), radius, 1, -1)
        return label, mask.astype(bool)
    angle = rng.uniform(0, 2 * np.pi) if rng.random() < 0.5 else 0.0
    if SHAPES_CLASSES[label] == "square":
        corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * size / 2
    else:  # equilateral triangle of side `size`, apex up before rotation
        turns = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        corners = np.stack([np.cos(turns), np.sin(turns)], axis=1) * size / np.sqrt(3)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = corners @ rotation.T
    low, high = -corners.min(axis=0), imgsz - 1 - corners.max(axis=0)
    centre = low + rng.random(2) * (high - low)
    cv2.fillPoly(mask, [np.round(corners + centre).astype(np.int32)], 1)
    return label, mask.astype(bool)


def _contrasting_colour(rng, under):
    """A jittered palette colour that stands out from the mean colour `under` the shape."""
    distances = np.linalg.norm(PALETTE - under, axis=1)
    candidates = np.flatnonzero(distances >= 100)
    pick = rng.choice(candidates) if len(candidates) else int(distances.argmax())
    return np.clip(PALETTE[pick] + rng.uniform(-20, 20, 3), 0, 255)


def _voc_xml(image_id, imgsz, objects) -> str:
    """The annotation as the devkit writes it, boxes 1-based inclusive: pixels x0..x1-1 -> xmin x0+1..x1."""
    annotation = ET.Element("annotation")
    for tag, text in (("folder", "VOC2007"), ("filename", f"{image_id}.jpg")):
        ET.SubElement(annotation, tag).text = text
    ET.SubElement(ET.SubElement(annotation, "source"), "database").text = "spikedet synthetic shapes"
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", imgsz), ("height", imgsz), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(annotation, "segmented").text = "0"
    for obj in objects:
        element = ET.SubElement(annotation, "object")
        for tag, text in (("name", SHAPES_CLASSES[obj["label"]]), ("pose", "Unspecified"), ("truncated", "0"),
                          ("difficult", str(int(obj["difficult"])))):
            ET.SubElement(element, tag).text = text
        bndbox = ET.SubElement(element, "bndbox")
        x0, y0, x1, y1 = obj["box"]
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(annotation, space="\t")
    return ET.tostring(annotation, encoding="unicode") + "\n"


def _coco_skeleton():
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"}
                  for i, name in enumerate(SHAPES_CLASSES)]
    return {"info": {"description": "spikedet synthetic shapes"}, "licenses": [], "images": [],
            "annotations": [], "categories": categories}


def _add_coco_image(coco, image_id: int, file_name, imgsz, objects):
    """COCO has no `difficult`: every object is iscrowd 0, and the VOC protocol alone ignores difficult ones.
    `area` is the shape's pixel area (what COCO's small/medium/large buckets look at)."""
    coco["images"].append({"id": image_id, "file_name": file_name, "width": imgsz, "height": imgsz})
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": obj["label"] + 1,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": float(obj["area"]),
            "iscrowd": 0})


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    return progress_bar(iterable, desc="shapes dataset", unit="img")
