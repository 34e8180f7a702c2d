"""Detecting objects in a person's own images and videos, and writing what was found.

Each run writes into a fresh folder (runs/detect/exp, exp2, ...; never an earlier one). Inputs are keyed as
spikedet.sources says, so two inputs never write the same file: `a.jpg` and `a.png` give annotated `a.jpg`
and `a.png`; a video gives an annotated video of the same name; labels go to `labels/<name>.txt` as
ultralytics names them (`labels/<key>.txt` when two inputs share a name, `labels/clip_<k>.txt` for frame k);
detections.json is in the COCO results format (spikedet.coco_results). Unreadable and truncated files are
skipped with a one-line warning each and counted; a run that fails before writing anything leaves no folder.
"""
import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch

from .coco_results import CocoIds
from .defaults import DEFAULTS
from .errors import fail
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from .inference import Detection, StreamSettings, is_image_file, stream
from .interrupts import STOPS, interrupted
from .networks import class_names, is_snn
from .progress import progress_bar
from .snn.statistics import SpikeMonitor
from .runs import next_run_folder
from .sources import frames, is_video_file, resolve


@dataclass
class DetectSummary:
    output: Path
    images: int = 0
    detections: int = 0
    skipped: List[str] = field(default_factory=list)
    results: list = field(default_factory=list)  # COCO results format (spikedet.coco_results)
    pending: List[Path] = field(default_factory=list)  # files of the image being written, until it is complete
    rates: list = field(default_factory=list)  # per image: firing rates, SOPs, energy (save_rates)
    unmatched: List[str] = field(default_factory=list)  # keys whose file name the COCO annotation file lacks
    ran: str = ""  # what ran, in one line (SpikingYOLO.ran)


def detections_in(network, items, settings: StreamSettings, skipped: List[str]
                  ) -> Iterator[Tuple[str, np.ndarray, List[Detection]]]:
    """(key, BGR image, detections) for every input of `items` (sources.resolve's list), one at a time;
    files that cannot be read are skipped and listed in `skipped`."""
    network = network.to(settings.device)
    images = {}

    def remembered(items):  # the stream yields keys; the image is kept for drawing
        for key, image in items:
            images[key] = image
            yield key, image

    for keys, _, outputs in stream(network, remembered(frames(items, skipped)), settings):
        per_image = next(iter(outputs.values()))
        for key, dets in zip(keys, per_image):
            yield key, images.pop(key), dets


def make_result(image: np.ndarray, key: str, names: dict, dets: List[Detection], timesteps: Optional[int] = None):
    """ultralytics' Results for one image (boxes.xyxy / .conf / .cls, names, plot(), save_txt(), to_json()),
    with spikedet's own `key`, `detections` (a list of Detection) and `timesteps` (None for an ANN)."""
    from ultralytics.engine.results import Results

    rows = [[*map(float, d.box), d.score, float(d.label)] for d in dets]
    result = Results(image, path=key, names=names, boxes=torch.tensor(rows, dtype=torch.float32).reshape(-1, 6))
    result.key, result.detections, result.timesteps = key, dets, timesteps
    return result


def detect(network, source, settings: StreamSettings, project=DEFAULTS["project_detect"],
           name: str = DEFAULTS["name"], save_txt: bool = False, save_rates: bool = False,
           progress: bool = True, gt_coco: Optional[Path] = None) -> DetectSummary:
    """Detect objects in `source` (see spikedet.sources) and write the results to a new folder: annotated
    images and videos, detections.json (COCO ids of `gt_coco` when given), labels/*.txt (save_txt),
    firing_rates.json (save_rates, SNN)."""
    items = resolve(source)  # a bad source fails before any folder is made
    ids = CocoIds(class_names(network), gt_coco)
    summary = DetectSummary(next_run_folder(project, name))
    videos = _Videos(summary, {key: item for key, item in items if isinstance(item, Path) and is_video_file(item)})
    try:
        _write_detections(summary, network, items, settings, save_txt, save_rates and is_snn(network), progress,
                          ids, videos)
    except BaseException as e:
        for path in summary.pending:  # the image being written when the run stopped: not kept half-done
            path.unlink(missing_ok=True)
        if isinstance(e, STOPS) and summary.images:
            videos.close()  # a video keeps the frames done, as detections.json does
            atomic_write_json(summary.output / "detections.json", summary.results)
            raise interrupted(e, f"after {summary.images} images; kept {summary.output} (their annotated copies "
                                 "and detections.json)") from None
        videos.discard()
        if not any(summary.output.iterdir()):
            shutil.rmtree(summary.output, ignore_errors=True)
        if isinstance(e, STOPS):
            raise interrupted(e, "after 0 images; kept nothing") from None
        raise
    if not summary.images:
        shutil.rmtree(summary.output, ignore_errors=True)
        raise fail(source if isinstance(source, (str, Path)) else "source",
                   f"no readable image among its {len(summary.skipped)} files (nothing written)")
    summary.unmatched = ids.unmatched
    return summary


def _write_detections(summary: DetectSummary, network, items, settings: StreamSettings, save_txt: bool,
                      save_rates: bool, progress: bool, ids: CocoIds, videos: "_Videos"):
    names = class_names(network)
    written, t = set(), max(settings.timesteps) if settings.timesteps else None
    with progress_bar(desc="detecting", unit="image", disable=not progress) as bar, \
            SpikeMonitor(network) if save_rates else contextlib.nullcontext() as monitor:
        for key, image, dets in detections_in(network, items, settings, summary.skipped):
            result = make_result(image, key, names, dets, t)
            video_key, _, frame = key.rpartition("/")
            if video_key in videos.sources:
                videos.write(video_key, result.plot())
                label = f"{Path(video_key).with_suffix('').as_posix()}_{int(frame)}"
            else:
                image_path = summary.output / (key if is_image_file(Path(key)) else f"{key}.jpg")
                summary.pending.append(_write_image(image_path, result.plot(), written))
                label = Path(key).with_suffix("").as_posix() if is_image_file(Path(key)) else key
            if save_txt:
                path = summary.output / "labels" / f"{label}.txt"
                summary.pending.append(summary.output / "labels" / f"{key}.txt" if path in written else path)
                written.add(summary.pending[-1])
                _save_txt(result, summary.pending[-1])
            if monitor is not None:
                summary.rates.append({"image": key, **monitor.report(t, batch_size=1)})
                monitor.clear()
            summary.results += ids.entries(key, dets)
            summary.pending = []  # this image is complete: its files and its detections stay together
            summary.images += 1
            summary.detections += len(dets)
            bar.update(1)
    videos.close()
    atomic_write_json(summary.output / "detections.json", summary.results)
    if summary.rates:
        atomic_write_json(summary.output / "firing_rates.json", summary.rates)


class _Videos:
    """Annotated videos, one per input video, written frame by frame into a hidden file of the run folder and
    moved to the input's name when the video ends (never over an existing file)."""

    FOURCC = {".avi": "MJPG", ".webm": "VP80"}  # others: mp4v (.mp4, .m4v, .mov, .mkv)

    def __init__(self, summary: DetectSummary, sources: dict):
        self.summary, self.sources = summary, sources  # key -> input video path
        self.key, self.writer, self.partial = None, None, None

    def write(self, key: str, frame: np.ndarray):
        if key != self.key:
            self.close()
            self.key, suffix = key, Path(key).suffix.lower()
            capture = cv2.VideoCapture(str(self.sources[key]))
            fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
            capture.release()
            self.partial = self.summary.output / f".{Path(key).name}.partial{suffix}"
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*self.FOURCC.get(suffix, "mp4v")),
                                          fps, (frame.shape[1], frame.shape[0]))
        self.writer.write(frame)

    def close(self):
        """Finish the video being written and move it into place."""
        if self.writer is None:
            return
        self.writer.release()
        data = self.partial.read_bytes()
        self.partial.unlink()
        atomic_write_bytes(self.summary.output / self.key, data, replace=False)
        self.key, self.writer = None, None

    def discard(self):
        if self.writer is not None:
            self.writer.release()
            self.partial.unlink(missing_ok=True)
            self.writer = None


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


def _save_txt(result, path: Path):
    """ultralytics' Results.save_txt lines (class cx cy w h score, normalized), written atomically: it appends
    to a file, so it writes into a scratch file whose text then goes into place."""
    with tempfile.TemporaryDirectory() as scratch:
        lines = Path(scratch) / "labels.txt"
        result.save_txt(lines, save_conf=True)
        atomic_write_text(path, lines.read_text() if lines.exists() else "")  # nothing found: an empty file
