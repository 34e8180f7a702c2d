"""One inference stream for every consumer (scoring, detection, the demo, the API): images -> preprocess ->
network (an ANN once, or an SNN at every requested T from one simulation) -> decode -> class-wise NMS ->
boxes in original pixels.

Both kinds of network produce the same raw output, (B, 4 + nc, anchors) with boxes as centre-size in the
network's input pixels and class scores in [0, 1]; everything after that is shared.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms, box_convert
from ultralytics.data.utils import IMG_FORMATS

from .data.yolo import read_yolo
from .defaults import CHOICES, DEFAULTS
from .errors import SpikedetError, fail
from .networks import default_eval_iou, default_resize, is_snn

log = logging.getLogger(__name__)
RESIZE_MODES = CHOICES["resize"]


@dataclass
class Detection:
    box: np.ndarray  # (xmin, ymin, xmax, ymax), 0-based continuous pixels of the original image
    score: float
    label: int  # 0-based class index


def is_image_file(path: Path) -> bool:
    return path.suffix[1:].lower() in IMG_FORMATS


def load_image(path: Union[str, Path]) -> np.ndarray:
    """An image file as BGR uint8; a one-line error for a missing, corrupt, truncated or non-image file."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "image not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise fail(path, "not a readable image (corrupt or unsupported format)")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        with open(path, "rb") as f:  # libjpeg decodes a cut-off JPEG with a grey bottom and only a warning
            f.seek(-2, 2)
            if f.read() != b"\xff\xd9":
                raise fail(path, "truncated JPEG (no end-of-image marker)")
    return image


def preprocess(image: np.ndarray, imgsz: int, resize: str = "letterbox") -> torch.Tensor:
    """BGR uint8 -> (3, imgsz, imgsz) RGB float in [0, 1], letterboxed as ultralytics does, or stretched."""
    if resize == "letterbox":
        from ultralytics.data.augment import LetterBox

        image = LetterBox((imgsz, imgsz), auto=False)(image=image)
    elif resize == "stretch":
        image = cv2.resize(image, (imgsz, imgsz), interpolation=cv2.INTER_LINEAR)
    else:
        raise SpikedetError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    return torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).float() / 255.0


def postprocess(raw: torch.Tensor, input_size: int, original_shapes: Sequence, resize: str = "letterbox",
                conf: float = DEFAULTS["conf_eval"], iou: float = DEFAULTS["iou_eval"], max_det: int = 300,
                max_candidates: int = 30000) -> List[List[Detection]]:
    """Raw outputs (B, 4 + nc, anchors) -> per image, class-wise NMS'd detections in original pixels.

    Every (anchor, class) pair above `conf` is a candidate (multi-label, as ultralytics scores mAP).
    """
    from ultralytics.utils.ops import scale_boxes

    results = []
    for pred, shape in zip(raw.float(), original_shapes):
        boxes = box_convert(pred[:4].T, "cxcywh", "xyxy")
        scores = pred[4:].T
        anchor, label = torch.nonzero(scores > conf, as_tuple=True)
        score = scores[anchor, label]
        if len(score) > max_candidates:
            score, top = score.topk(max_candidates)
            anchor, label = anchor[top], label[top]
        keep = batched_nms(boxes[anchor], score, label, iou)[:max_det]
        kept = boxes[anchor[keep]].clone()
        if resize == "letterbox":
            kept = scale_boxes((input_size, input_size), kept, shape[:2])
        else:
            kept[:, 0::2] = (kept[:, 0::2] * shape[1] / input_size).clamp(0, shape[1])
            kept[:, 1::2] = (kept[:, 1::2] * shape[0] / input_size).clamp(0, shape[0])
        results.append([Detection(b.numpy(), float(s), int(c)) for b, s, c in
                        zip(kept, score[keep], label[keep])])
    return results


@torch.no_grad()
def run_network(network, batch: torch.Tensor, timesteps: Optional[Sequence[int]] = None,
                chunk: int = DEFAULTS["chunk"], method: Optional[str] = None,
                burn_in: int = 0) -> Dict[Optional[int], torch.Tensor]:
    """Raw outputs: {None: ann_output} for an ANN, {T: output} for an SNN at each requested T (method:
    "steps" or "closed-form"; None: the engine's default for the network; burn_in: see engine.simulate)."""
    if is_snn(network):
        if not timesteps:
            raise SpikedetError("an SNN needs the time steps to simulate")
        return network.simulate(batch, timesteps, chunk=chunk, method=method, burn_in=burn_in)
    return {None: network(batch)[0]}


@dataclass
class StreamSettings:
    """How images are fed and read out; None picks the network's default (see networks.py)."""

    imgsz: int = DEFAULTS["imgsz"]
    timesteps: Optional[Sequence[int]] = None
    batch: int = 1
    resize: Optional[str] = None
    conf: float = DEFAULTS["conf_eval"]
    iou: Optional[float] = None
    chunk: int = DEFAULTS["chunk"]
    device: str = "cpu"
    method: Optional[str] = None  # SNN: "steps" or "closed-form" (burst networks); None: the engine's default
    burn_in: int = 0  # SNN: the first steps the read-out leaves out (engine.simulate)


def stream(network, frames: Iterable[Tuple[object, np.ndarray]], settings: StreamSettings
           ) -> Iterator[Tuple[List[object], torch.Tensor, Dict[Optional[int], List[List[Detection]]]]]:
    """For each batch of (key, BGR image) frames: (keys, the input batch, {None or T: per frame, its
    detections}). The network must already be on settings.device."""
    resize = settings.resize or default_resize(network)
    iou = settings.iou if settings.iou is not None else default_eval_iou(network)
    batch: List[Tuple[object, np.ndarray]] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == settings.batch:
            yield _run_batch(network, batch, settings, resize, iou)
            batch = []
    if batch:
        yield _run_batch(network, batch, settings, resize, iou)


def _run_batch(network, batch, s: StreamSettings, resize: str, iou: float):
    keys, images = [k for k, _ in batch], [im for _, im in batch]
    tensor = torch.stack([preprocess(im, s.imgsz, resize) for im in images]).to(s.device)
    shapes = [im.shape for im in images]
    outputs = {key: postprocess(raw.cpu(), s.imgsz, shapes, resize, s.conf, iou)
               for key, raw in run_network(network, tensor, s.timesteps, s.chunk, s.method, s.burn_in).items()}
    return keys, tensor, outputs


def image_files(folder: Path) -> List[Path]:
    """The image files in a folder, sorted (ultralytics' image formats)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_file(p))


def calibration_images(source, imgsz: int, count: int = DEFAULTS["calibration_count"],
                       resize: str = "letterbox") -> torch.Tensor:
    """The first `count` readable images (sorted, so reproducible) of a dataset YAML's train split or of a
    folder; unreadable ones are skipped with a warning, as detect skips them."""
    source = Path(source)
    if source.suffix in (".yaml", ".yml"):
        paths = sorted(r.path for r in read_yolo(source, "train"))
    elif source.is_dir():
        paths = image_files(source)
    else:
        raise fail(source, "calibration source must be a dataset YAML or a folder of images")
    images = []
    for path in paths:
        if len(images) == count:
            break
        try:
            images.append(preprocess(load_image(path), imgsz, resize))
        except SpikedetError as e:
            log.warning("calibration: skipped %s", e)
    if not images:
        raise fail(source, "no readable calibration images found")
    return torch.stack(images)
