"""From images to detections, for an ANN or an SNN: load, resize, run, non-maximum suppression, rescale.

Both kinds of network produce the same raw output, (B, 4 + nc, anchors) with boxes as centre-size in the
network's input pixels and class scores in [0, 1]; everything after that is shared. An SNN yields one
such output per requested T from a single simulation.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms, box_convert

from .engine import DEFAULT_CHUNK, SpikingNetwork, is_snn_file, load_snn
from .errors import fail
from .fileio import load_torch_file
from .train import load_ann_checkpoint

RESIZE_MODES = ("letterbox", "stretch")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Detection:
    box: np.ndarray  # (xmin, ymin, xmax, ymax), 0-based continuous pixels of the original image
    score: float
    label: int  # 0-based class index


def load_image(path: Union[str, Path]) -> np.ndarray:
    """An image file as BGR uint8; a clear error for a missing, corrupt or non-image file."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "image not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise fail(path, "not a readable image (corrupt or unsupported format)")
    return image


def preprocess(image: np.ndarray, imgsz: int, resize: str = "letterbox") -> torch.Tensor:
    """BGR uint8 -> (3, imgsz, imgsz) RGB float in [0, 1], letterboxed as ultralytics does, or stretched."""
    if resize == "letterbox":
        from ultralytics.data.augment import LetterBox

        image = LetterBox((imgsz, imgsz), auto=False)(image=image)
    elif resize == "stretch":
        image = cv2.resize(image, (imgsz, imgsz), interpolation=cv2.INTER_LINEAR)
    else:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    return torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).float() / 255.0


def postprocess(raw: torch.Tensor, input_size: int, original_shapes: Sequence, resize: str = "letterbox",
                conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
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


def load_network(path: Union[str, Path], cfg: Optional[Union[str, Path]] = None, names=None):
    """(network, source ANN or None) from an SNN file, an ANN checkpoint (told apart by content), or a
    darknet .weights file with its .cfg (and optionally a .names file)."""
    if cfg is not None:
        from .darknet import load_darknet

        return load_darknet(cfg, path, names), None
    ckpt = load_torch_file(path)
    if is_snn_file(ckpt):
        return load_snn(path, ckpt)
    return load_ann_checkpoint(path, ckpt), None


def from_darknet(network) -> bool:
    """A darknet network, or an SNN converted from one."""
    if isinstance(network, SpikingNetwork):
        return "darknet_cfg" in network.meta
    return type(network).__name__ == "DarknetModel"


def default_resize(network) -> str:
    """Darknet networks stretch images, as darknet's reference figures and OpenCV's reader do;
    spikedet-trained ones letterbox, as ultralytics trains them."""
    return "stretch" if from_darknet(network) else "letterbox"


def default_eval_iou(network) -> float:
    """NMS IoU for mAP: darknet's 0.45 for darknet networks, ultralytics' validation 0.7 otherwise."""
    return 0.45 if from_darknet(network) else 0.7


def default_batch(device: str) -> int:
    """Images per simulation batch: 1 on the CPU, where larger batches were slower per image (yolov3-tiny at
    416 px, T = 16, burst: 1.33 s per image at batch 1, 2.79 s at batch 8), 8 on a GPU."""
    return 1 if str(device) == "cpu" else 8


def class_names(network) -> Dict[int, str]:
    names = network.meta["names"] if isinstance(network, SpikingNetwork) else network.names
    return {int(k): v for k, v in names.items()}


@torch.no_grad()
def run_network(network, batch: torch.Tensor, timesteps: Optional[Sequence[int]] = None,
                chunk: int = DEFAULT_CHUNK, statistics: bool = False) -> Dict[Optional[int], torch.Tensor]:
    """Raw outputs: {None: ann_output} for an ANN, {T: output} for an SNN at each requested T."""
    if isinstance(network, SpikingNetwork):
        if not timesteps:
            raise ValueError("an SNN needs the time steps to simulate")
        return network.simulate(batch, timesteps, chunk=chunk, statistics=statistics)
    return {None: network(batch)[0]}
