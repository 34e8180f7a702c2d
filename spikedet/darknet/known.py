"""Darknet weights files whose [yolo] anchors spikedet knows, and the check that a cfg decodes them with those.

Why: pjreddie's yolov3-tiny.weights was trained with `mask = 1,2,3` in the second [yolo] section of darknet's
cfg/yolov3-tiny.cfg, a typo for 0,1,2 that the weights depend on (AlexeyAB/darknet#1341, pjreddie/darknet#851).
Copies of that cfg in which the typo was "fixed" decode the 26 x 26 level's boxes with anchors about half the
size they were trained for: its boxes miss, and COCO AP50 falls by a third (0.341 to 0.239 on 100 held-out COCO
train images). Nothing in the cfg or the weights says so, so the check goes by the weights file's sha256, and it
covers networks distilled from those weights (their checkpoints name the teacher's sha256).

The distilled network's raw outputs do not depend on the mask (distillation matches the raw maps), so such a
network is mended by decoding it with the right anchors: with_known_anchors() rewrites the masks of its cfg.
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import SpikedetError, fail
from .model import DarknetHead

Anchors = Tuple[Tuple[float, float], ...]


@dataclass(frozen=True)
class KnownWeights:
    name: str
    anchors: Tuple[Anchors, ...]  # per [yolo] section, in cfg order
    masks: Tuple[Tuple[int, ...], ...]  # the masks that pick them from the cfg's anchors
    fixed_cfg: str  # a cfg in this repository that decodes them right


KNOWN: Dict[str, KnownWeights] = {
    "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c": KnownWeights(
        name="pjreddie's yolov3-tiny.weights (COCO)",
        anchors=(((81.0, 82.0), (135.0, 169.0), (344.0, 319.0)), ((23.0, 27.0), (37.0, 58.0), (81.0, 82.0))),
        masks=((3, 4, 5), (1, 2, 3)),
        fixed_cfg="configs/darknet/yolov3-tiny.cfg"),
}


def yolo_anchors(model) -> List[Anchors]:
    """The anchors (w, h) of each [yolo] level of a darknet network, in cfg order."""
    head = next(m for m in model.modules() if isinstance(m, DarknetHead))
    return [tuple((float(w), float(h)) for w, h in level.anchors) for level in head.levels if level.kind == "yolo"]


def check_anchors(model, weights_sha256: Optional[str], source, checkpoint: bool = False) -> None:
    """A one-line error naming `source` when `weights_sha256` is a known weights file and the network's [yolo]
    anchors are not the ones it was trained with: `source` is the cfg of a darknet network, or (checkpoint)
    a network distilled from those weights, and the error says how to mend either."""
    known = KNOWN.get(weights_sha256 or "")
    if known is None or tuple(yolo_anchors(model)) == known.anchors:
        return
    masks = " and ".join(",".join(map(str, m)) for m in known.masks)
    fix = (f"mend it: python tools/fix_anchors.py --weights {source} --output NEW.pt" if checkpoint
           else f"use {known.fixed_cfg} from spikedet's repository")
    raise fail(source, f"decodes {known.name} with other [yolo] anchors than it was trained with (masks {masks}: "
                       f"darknet's cfg has a typo the weights depend on, AlexeyAB/darknet#1341), so its AP50 "
                       f"would be about a third low; {fix}")


def with_known_anchors(cfg_text: str, weights_sha256: str) -> str:
    """`cfg_text` with the mask of each [yolo] section set to the one the known weights were trained with, every
    other line as it was."""
    known = KNOWN[weights_sha256]
    lines = cfg_text.splitlines(keepends=True)
    section, yolo = None, -1
    for k, line in enumerate(lines):
        key = "".join(line.split())
        if key.startswith("["):
            section = key
            yolo += section == "[yolo]"
        elif section == "[yolo]" and key.startswith("mask="):
            if yolo >= len(known.masks):
                raise SpikedetError(f"the cfg has more [yolo] sections than {known.name} was trained with")
            ending = line[len(line.rstrip("\r\n")):]
            lines[k] = "mask = " + ",".join(map(str, known.masks[yolo])) + ending
    return "".join(lines)


def teacher_sha256(content: dict) -> Optional[str]:
    """The sha256 of the darknet weights a distilled checkpoint was distilled from, or None."""
    record = content.get("distill")
    teacher = record.get("teacher") if isinstance(record, dict) else None
    value = teacher.get("weights_sha256") if isinstance(teacher, dict) else None
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else None
