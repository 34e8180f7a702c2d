"""Detecting objects in a person's own images and videos, with an ANN checkpoint or an SNN file.

Each run writes into a fresh folder (runs/detect/exp, exp2, ...; never an earlier one): the annotated
images, detections.json (COCO results format, plus class names), optional YOLO txt labels, and for an
SNN optionally the per-layer firing rates. Files that cannot be read are skipped with a one-line warning
each and counted in the summary.
"""
import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from .engine import SpikingNetwork
from .errors import SpikedetError
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from .predict import (IMAGE_SUFFIXES, Detection, class_names, default_resize, load_network, postprocess,
                      preprocess, run_network)

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}


@dataclass
class DetectSummary:
    output: Path
    images: int = 0
    detections: int = 0
    skipped: List[str] = field(default_factory=list)


def next_run_folder(project: Union[str, Path], name: str = "exp") -> Path:
    """project/name, or name2, name3, ...: the first that does not exist, created atomically (mkdir)."""
    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10000):
        folder = project / (name if n == 1 else f"{name}{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise SpikedetError(f"{project}: no free run folder name for {name!r}")


def list_sources(source: Union[str, Path]) -> List[Path]:
    """An image or video file, a folder (every file in it, sorted) or a glob pattern."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    elif Path(text).is_dir():
        paths = sorted(p for p in Path(text).iterdir() if p.is_file() and not p.name.startswith("."))
    elif Path(text).is_file():
        paths = [Path(text)]
    else:
        raise SpikedetError(f"{source}: no such file, folder or glob match")
    if not paths:
        raise SpikedetError(f"{source}: no files found")
    return paths


def frames(path: Path, skipped: List[str]) -> Iterator[Tuple[str, np.ndarray]]:
    """(name, BGR image) for an image, or for each frame of a video; unreadable files are skipped."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        index, ok = 0, capture.isOpened()
        while ok:
            ok, frame = capture.read()
            if ok:
                yield f"{path.stem}_{index:06d}", frame
                index += 1
        capture.release()
        if index == 0:
            _skip(skipped, path, "not a readable video")
        return
    if suffix not in IMAGE_SUFFIXES:
        _skip(skipped, path, f"unsupported file type '{suffix or path.name}'")
        return
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        _skip(skipped, path, "not a readable image (corrupt or unsupported)")
        return
    yield path.stem, image


def _skip(skipped: List[str], path: Path, why: str):
    log.warning("skipped %s: %s", path, why)
    skipped.append(f"{path}: {why}")


def draw(image: np.ndarray, detections: List[Detection], names: dict) -> np.ndarray:
    """Boxes with class name and score, in ultralytics' palette, drawn with OpenCV (no font files)."""
    from ultralytics.utils.plotting import colors

    out = image.copy()
    thickness = max(1, round(sum(image.shape[:2]) / 600))
    scale = max(0.35, thickness / 3)
    for d in detections:
        color = colors(d.label, bgr=True)
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
        text = f"{names.get(d.label, d.label)} {d.score:.2f}"
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thickness - 1))
        top = y0 - h - base - 2 if y0 - h - base - 2 >= 0 else y0
        cv2.rectangle(out, (x0, top), (x0 + w + 2, top + h + base + 2), color, -1)
        luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
        cv2.putText(out, text, (x0 + 1, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0) if luminance > 140 else (255, 255, 255), max(1, thickness - 1), cv2.LINE_AA)
    return out


def yolo_lines(detections: List[Detection], shape) -> str:
    """ultralytics' txt format: class cx cy w h score, normalized by the image size."""
    h, w = shape[:2]
    rows = []
    for d in detections:
        x0, y0, x1, y1 = d.box
        rows.append(f"{d.label} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} "
                    f"{(y1 - y0) / h:.6f} {d.score:.5f}")
    return "\n".join(rows) + ("\n" if rows else "")


def detect(source, weights, timesteps: Optional[int] = None, conf: float = 0.25, iou: float = 0.45,
           imgsz: Optional[int] = None, device: str = "cpu", project="runs/detect", name: str = "exp",
           save_txt: bool = False, save_rates: bool = False, resize: Optional[str] = None,
           progress: bool = True, cfg=None, names=None) -> DetectSummary:
    """Detect objects in `source` (image, folder, glob or video) and write the results to a new folder."""
    from ultralytics.utils import TQDM

    network, _ = load_network(weights, cfg, names)
    network = network.to(device)
    is_snn = isinstance(network, SpikingNetwork)
    meta = network.meta if is_snn else {}
    steps = [timesteps or meta.get("timesteps") or 16] if is_snn else None
    imgsz = imgsz or meta.get("imgsz") or 416
    names = class_names(network)
    resize = resize or default_resize(network)
    paths = list_sources(source)
    summary = DetectSummary(next_run_folder(project, name))
    results, rates = [], []
    for path in TQDM(paths, desc="detecting", disable=not progress):
        for frame_name, image in frames(path, summary.skipped):
            batch = preprocess(image, imgsz, resize).unsqueeze(0).to(device)
            raw = next(iter(run_network(network, batch, steps, statistics=save_rates).values()))
            dets = postprocess(raw.cpu(), imgsz, [image.shape], resize, conf, iou)[0]
            _, encoded = cv2.imencode(".jpg", draw(image, dets, names))
            atomic_write_bytes(summary.output / f"{frame_name}.jpg", encoded.tobytes())
            if save_txt:
                atomic_write_text(summary.output / "labels" / f"{frame_name}.txt", yolo_lines(dets, image.shape))
            if is_snn and save_rates:
                rates.append({"image": frame_name, **network.statistics(batch_size=1)})
            results += [{"image_id": frame_name, "category_id": d.label + 1, "category_name": names[d.label],
                         "bbox": [float(d.box[0]), float(d.box[1]), float(d.box[2] - d.box[0]),
                                  float(d.box[3] - d.box[1])], "score": d.score} for d in dets]
            summary.images += 1
            summary.detections += len(dets)
    atomic_write_json(summary.output / "detections.json", results)
    if rates:
        atomic_write_json(summary.output / "firing_rates.json", rates)
    return summary
