"""Detecting objects in a person's own images and videos, and writing what was found.

Each run writes into a fresh folder (runs/detect/exp, exp2, ...; never an earlier one). Every input is keyed
by its path relative to the source (a folder, the common folder of a glob's matches, or the file's own
folder), so two inputs never write the same file: `a.jpg` and `a.png` give annotated `a.jpg` and `a.png`,
frame k of `clip.mp4` gives `clip.mp4/00000k.jpg`, labels go to `labels/<key>.txt`, and detections.json
names each image by its key. Unreadable and truncated files are skipped with a one-line warning each and
counted; a run that fails before writing anything leaves no folder behind.
"""
import contextlib
import glob
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Tuple, Union

import cv2
import numpy as np
import torch

from .defaults import DEFAULTS
from .errors import SpikedetError, fail
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from .inference import Detection, StreamSettings, is_image_file, load_image, stream
from .interrupts import STOPS, interrupted
from .networks import class_names, is_snn
from .snn.statistics import SpikeMonitor

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}


@dataclass
class DetectSummary:
    output: Path
    images: int = 0
    detections: int = 0
    skipped: List[str] = field(default_factory=list)
    results: list = field(default_factory=list)  # COCO results format, image_id = the input's key
    pending: List[Path] = field(default_factory=list)  # files of the image being written, until it is complete


def next_run_folder(project: Union[str, Path], name: str = DEFAULTS["name"]) -> Path:
    """project/name, or name2, name3, ...: the first that does not exist, created with mkdir. Unlike
    ultralytics' increment_path (which checks, then creates), mkdir either creates a folder or fails, so two
    runs started at once never share a folder and overwrite each other's files."""
    project = Path(project)
    if not name or name in (".", "..") or Path(name).name != name:
        raise SpikedetError(f"run name {name!r} must be a plain folder name (no path separators)")
    try:
        project.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise fail(project, "is a file, expected a folder for run outputs") from None
    except PermissionError:
        raise fail(project, "cannot be created: permission denied") from None
    for n in range(1, 10000):
        folder = project / (name if n == 1 else f"{name}{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except PermissionError:
            raise fail(project, "cannot be written: permission denied") from None
    raise fail(project, f"no free run folder name for {name!r}")


def list_sources(source: Union[str, Path]) -> Tuple[List[Path], Path]:
    """(the files, the folder their keys are relative to) for an image or video file, a folder (every file
    in it, sorted) or a glob pattern."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else None
    elif Path(text).is_dir():
        root = Path(text)
        paths = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    elif Path(text).is_file():
        paths, root = [Path(text)], Path(text).parent
    else:
        raise fail(source, "no such file, folder or glob match")
    if not paths:
        raise fail(source, "no files found")
    if not any(is_image_file(p) or p.suffix.lower() in VIDEO_SUFFIXES for p in paths):
        raise fail(source, f"no image or video files among its {len(paths)} files")
    return paths, root


def frames(paths: List[Path], root: Path, skipped: List[str]) -> Iterator[Tuple[str, np.ndarray]]:
    """(key, BGR image) for each image, and for each frame of each video; unreadable files are skipped."""
    for path in paths:
        key = path.relative_to(root).as_posix()
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            index, ok = 0, capture.isOpened()
            while ok:
                ok, frame = capture.read()
                if ok:
                    yield f"{key}/{index:06d}", frame
                    index += 1
            capture.release()
            if index == 0:
                _skip(skipped, path, "not a readable video")
        elif not is_image_file(path):
            _skip(skipped, path, f"unsupported file type '{path.suffix or path.name}'")
        else:
            try:
                yield key, load_image(path)
            except SpikedetError as e:
                _skip(skipped, path, str(e).split(": ", 1)[-1])


def _skip(skipped: List[str], path: Path, why: str):
    log.warning("skipped %s: %s", path, why)
    skipped.append(f"{path}: {why}")


def detections_in(network, source, settings: StreamSettings, skipped: List[str]
                  ) -> Iterator[Tuple[str, np.ndarray, List[Detection]]]:
    """(key, BGR image, detections) for every image and video frame of `source`, one at a time; files that
    cannot be read are skipped and listed in `skipped`."""
    paths, root = list_sources(source)
    network = network.to(settings.device)
    images = {}

    def remembered(items):  # the stream yields keys; the image is kept for drawing
        for key, image in items:
            images[key] = image
            yield key, image

    for keys, _, outputs in stream(network, remembered(frames(paths, root, skipped)), settings):
        per_image = next(iter(outputs.values()))
        for key, dets in zip(keys, per_image):
            yield key, images.pop(key), dets


def detect(network, source, settings: StreamSettings, project=DEFAULTS["project_detect"],
           name: str = DEFAULTS["name"], save_txt: bool = False, save_rates: bool = False,
           progress: bool = True) -> DetectSummary:
    """Detect objects in `source` (image, folder, glob or video) and write the results to a new folder:
    annotated images, detections.json, labels/*.txt (save_txt), firing_rates.json (save_rates, SNN)."""
    list_sources(source)  # a bad source fails before any folder is made
    summary = DetectSummary(next_run_folder(project, name))
    try:
        _write_detections(summary, network, source, settings, save_txt, save_rates and is_snn(network), progress)
    except BaseException as e:
        for path in summary.pending:  # the image being written when the run stopped: not kept half-done
            path.unlink(missing_ok=True)
        if isinstance(e, STOPS) and summary.images:
            atomic_write_json(summary.output / "detections.json", summary.results)
            raise interrupted(e, f"after {summary.images} images; kept {summary.output} (their annotated copies "
                                 "and detections.json)") from None
        if not any(summary.output.iterdir()):
            shutil.rmtree(summary.output, ignore_errors=True)
        if isinstance(e, STOPS):
            raise interrupted(e, "after 0 images; kept nothing") from None
        raise
    if not summary.images:
        shutil.rmtree(summary.output, ignore_errors=True)
        raise fail(source, f"no readable image among its {len(summary.skipped)} files (nothing written)")
    return summary


def _write_detections(summary: DetectSummary, network, source, settings: StreamSettings, save_txt: bool,
                      save_rates: bool, progress: bool):
    from ultralytics.engine.results import Results
    from ultralytics.utils import TQDM

    names = class_names(network)
    rates, written = [], set()
    bar = TQDM(desc="detecting", unit="image", disable=not progress)
    with SpikeMonitor(network) if save_rates else contextlib.nullcontext() as monitor:
        for key, image, dets in detections_in(network, source, settings, summary.skipped):
            result = Results(image, path=key, names=names, boxes=_boxes(dets))
            image_path = summary.output / (key if is_image_file(Path(key)) else f"{key}.jpg")
            summary.pending.append(_write_image(image_path, result.plot(), written))
            if save_txt:
                summary.pending.append(summary.output / "labels" / f"{key}.txt")
                _save_txt(result, summary.pending[-1])
            if monitor is not None:
                rates.append({"image": key, **monitor.report(max(settings.timesteps), batch_size=1)})
                monitor.clear()
            summary.results += [{"image_id": key, "category_id": d.label + 1, "category_name": names[d.label],
                                 "bbox": [float(d.box[0]), float(d.box[1]), float(d.box[2] - d.box[0]),
                                          float(d.box[3] - d.box[1])], "score": d.score} for d in dets]
            summary.pending = []  # this image is complete: its files and its detections stay together
            summary.images += 1
            summary.detections += len(dets)
            bar.update(1)
    bar.close()
    atomic_write_json(summary.output / "detections.json", summary.results)
    if rates:
        atomic_write_json(summary.output / "firing_rates.json", rates)


def _write_image(path: Path, image: np.ndarray, written: set):
    """In the input's own format where OpenCV writes it, else as JPEG (name + .jpg: OpenCV reads .mpo, .dng
    or .heic files it cannot write). `written`: the files of this run so far; a name already taken (an input
    named like another's JPEG fallback) gets ~2, ~3, ... before its suffix, so nothing is overwritten."""
    try:
        ok, encoded = cv2.imencode(path.suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        path = path.with_name(path.name + ".jpg")
        _, encoded = cv2.imencode(".jpg", image)
    candidate, n = path, 2
    while candidate in written:
        candidate, n = path.with_name(f"{path.stem}~{n}{path.suffix}"), n + 1
    written.add(candidate)
    return atomic_write_bytes(candidate, encoded.tobytes())


def _boxes(dets: List[Detection]) -> torch.Tensor:
    """ultralytics' Results boxes: (N, 6) x0, y0, x1, y1, score, class."""
    rows = [[*map(float, d.box), d.score, float(d.label)] for d in dets]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def _save_txt(result, path: Path):
    """ultralytics' Results.save_txt lines (class cx cy w h score, normalized), written atomically: it appends
    to a file, so it writes into a scratch file whose text then goes into place."""
    with tempfile.TemporaryDirectory() as scratch:
        lines = Path(scratch) / "labels.txt"
        result.save_txt(lines, save_conf=True)
        atomic_write_text(path, lines.read_text() if lines.exists() else "")  # nothing found: an empty file
