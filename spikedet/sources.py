"""What a user may point detection at, as ultralytics' predict takes it: an image or video file, a folder, a
glob pattern, a list of these, a numpy array (BGR, as OpenCV reads it) or a PIL image.

Every input gets a key that no other input of the run shares: a file's path relative to the source (a
folder, the common folder of a glob's or a list's files, or the file's own folder), `clip.mp4/00000k` for
frame k of a video, `imageN` for the N-th in-memory image. Unreadable files are skipped with a one-line
warning each and listed, so a run over a folder is not stopped by one bad file.
"""
import glob
import logging
import os
from pathlib import Path
from typing import Iterator, List, Tuple, Union

import cv2
import numpy as np

from .errors import SpikedetError, fail
from .inference import is_image_file, load_image

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}


def is_video_file(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


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
    if not any(is_image_file(p) or is_video_file(p) for p in paths):
        raise fail(source, f"no image or video files among its {len(paths)} files")
    return paths, root


def resolve(source) -> List[Tuple[str, Union[Path, np.ndarray]]]:
    """(key, file or BGR array) for every input of `source`; a bad source fails here, before any work."""
    if isinstance(source, (str, os.PathLike)):
        paths, root = list_sources(source)
        return [(p.relative_to(root).as_posix(), p) for p in paths]
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise SpikedetError("source: an empty list")
    arrays = [(i, as_bgr(item, f"source[{i}]")) for i, item in enumerate(items)
              if not isinstance(item, (str, os.PathLike))]
    files = [(i, path) for i, item in enumerate(items) if isinstance(item, (str, os.PathLike))
             for path in list_sources(item)[0]]
    root = Path(os.path.commonpath([str(p.resolve().parent) for _, p in files])) if files else None
    keyed = [(i, f"image{i}", array) for i, array in arrays]
    keyed += [(i, p.resolve().relative_to(root).as_posix(), p) for i, p in files]
    keys = [key for _, key, _ in keyed]
    repeated = next((key for key in keys if keys.count(key) > 1), None)
    if repeated is not None:
        raise SpikedetError(f"source: {repeated} is given more than once")
    return [(key, item) for _, key, item in sorted(keyed, key=lambda k: k[0])]


def as_bgr(image, what: str = "image") -> np.ndarray:
    """A numpy array (H, W, 3) BGR uint8 as OpenCV reads, (H, W) grey, or a PIL image -> BGR uint8."""
    if type(image).__module__.startswith("PIL."):
        image = np.asarray(image.convert("RGB"))[:, :, ::-1]
    elif not isinstance(image, np.ndarray):
        raise SpikedetError(f"{what}: expected a path, a numpy array or a PIL image, got {type(image).__name__}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise SpikedetError(f"{what}: expected an image array of shape (H, W, 3) or (H, W), got {image.shape}")
    if image.dtype != np.uint8:
        raise SpikedetError(f"{what}: expected uint8 pixels (0..255), got {image.dtype}")
    return np.ascontiguousarray(image)


def frames(items, skipped: List[str]) -> Iterator[Tuple[str, np.ndarray]]:
    """(key, BGR image) for each image, and for each frame of each video; unreadable files are skipped."""
    for key, item in items:
        if isinstance(item, np.ndarray):
            yield key, item
        elif is_video_file(item):
            capture = cv2.VideoCapture(str(item))
            index, ok = 0, capture.isOpened()
            while ok:
                ok, frame = capture.read()
                if ok:
                    yield f"{key}/{index:06d}", frame
                    index += 1
            capture.release()
            if index == 0:
                skip(skipped, item, "not a readable video")
        elif not is_image_file(item):
            skip(skipped, item, f"unsupported file type '{item.suffix or item.name}'")
        else:
            try:
                yield key, load_image(item)
            except SpikedetError as e:
                skip(skipped, item, str(e).split(": ", 1)[-1])


def skip(skipped: List[str], path: Path, why: str):
    log.warning("skipped %s: %s", path, why)
    skipped.append(f"{path}: {why}")
