"""Darknet .weights and .names files: fill a DarknetModel, name its classes, start other models from it."""
import hashlib
import struct
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch
from torch import nn

from ..data.records import COCO_TO_VOC_NAMES
from ..errors import fail
from .known import check_anchors
from .model import ConvBlock, DarknetModel

# darknet's COCO names (data/coco.names) spell six classes as VOC does; mapped to the category names of
# COCO's instances JSON, so a darknet COCO network's classes match COCO ground truth by name. Applied to
# 80-name lists only: VOC's own class names are darknet's spellings, so voc.names must stay as it is.
DARKNET_TO_COCO_NAMES = {voc: coco for coco, voc in COCO_TO_VOC_NAMES.items()}


def load_weights(model: DarknetModel, path: Union[str, Path]) -> dict:
    """Fill the model from a darknet .weights file; returns its header (major, minor, revision, seen).

    The file is a header (int32 major, minor, revision; `seen` int64 from version 0.2 on, int32 before),
    then float32 values per convolution in cfg order: with batch-norm its beta, gamma, running mean and
    variance, else the conv bias; then the conv weights. Every value must be used, exactly: a count that
    differs means the weights belong to another cfg (or the file is damaged). Weights whose [yolo] anchors
    spikedet knows must be decoded with them (known.py).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail(path, "darknet weights not found") from None
    if len(data) < 12:
        raise fail(path, "too short for a darknet weights header")
    major, minor, revision = struct.unpack_from("<3i", data)
    seen_bytes = 8 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 4
    header = 12 + seen_bytes
    if len(data) < header:
        raise fail(path, "too short for a darknet weights header")
    tensors = [t for m in model.model if isinstance(m, ConvBlock) for t in _darknet_order(m)]
    expected = sum(t.numel() for t in tensors)
    found, stray = divmod(len(data) - header, 4)
    if found != expected or stray:
        raise fail(path, f"expected {expected} float values for {model.cfg}, found {found}"
                         + (f" and {stray} stray bytes" if stray else ""))
    values = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=header).copy())
    start = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(values[start:start + t.numel()].view_as(t))
            start += t.numel()
    check_anchors(model, hashlib.sha256(data).hexdigest(), model.cfg)
    return {"major": major, "minor": minor, "revision": revision,
            "seen": int.from_bytes(data[12:header], "little")}


def _darknet_order(block: ConvBlock) -> List[torch.Tensor]:
    """A convolution's tensors in the order its values follow each other in a .weights file."""
    if block.bn is None:
        return [block.conv.bias, block.conv.weight]
    bn = block.bn
    return [bn.bias, bn.weight, bn.running_mean, bn.running_var, block.conv.weight]


def read_names(path: Union[str, Path], nc: Optional[int] = None) -> List[str]:
    """A darknet .names file (one class per line), darknet's COCO spellings mapped to COCO's (see above)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise fail(path, "class names file not found") from None
    except UnicodeDecodeError:
        raise fail(path, "not a text file, expected one class name per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if "" in names:
        raise fail(path, f"line {names.index('') + 1}: empty class name")
    if nc is not None and len(names) != nc:
        raise fail(path, f"{len(names)} class names for a network with {nc} classes")
    return [DARKNET_TO_COCO_NAMES.get(n, n) for n in names] if len(names) == 80 else names


def load_darknet(cfg: Union[str, Path], weights: Union[str, Path],
                 names: Optional[Union[str, Path]] = None) -> DarknetModel:
    """A darknet network with its weights, in eval mode.

    names: a .names file; by default coco.names (80 classes) or voc.names (20) beside the cfg when there,
    else the classes are called class0, class1, ...
    """
    model = DarknetModel(cfg)
    if names is None and model.nc in (80, 20):
        default = Path(cfg).parent / ("coco.names" if model.nc == 80 else "voc.names")
        names = default if default.is_file() else None
    if names is not None:
        model.names = dict(enumerate(read_names(names, model.nc)))
    load_weights(model, weights)
    return model.eval()


def transfer_weights(cfg: Union[str, Path], weights: Union[str, Path], model: nn.Module) -> int:
    """Start `model` from a darknet network: its batch-normalized convolutions, in cfg order, fill the model's
    conv + batch-norm blocks before the detection head, in order, for as long as the shapes agree. Returns how
    many were filled; none is an error. The detection head (and every layer after the first disagreement)
    keeps its own initialization: darknet's [yolo] output convolutions do not fit ultralytics' Detect.

    For yolov3-tiny.weights into configs/yolov3-tiny.yaml at width m all 11 backbone and neck blocks fill.
    """
    source = [m for m in load_darknet(cfg, weights).model if isinstance(m, ConvBlock) and m.bn is not None]
    target = [m for m in list(model.model)[:-1] if isinstance(getattr(m, "conv", None), nn.Conv2d)
              and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)]
    filled = 0
    with torch.no_grad():
        for src, dst in zip(source, target):
            if src.conv.weight.shape != dst.conv.weight.shape:
                break
            dst.conv.weight.copy_(src.conv.weight)
            dst.bn.load_state_dict(src.bn.state_dict())
            dst.bn.eps = src.bn.eps
            filled += 1
    if not filled:
        first = (f"its first convolution is {tuple(source[0].conv.weight.shape)}, the model's "
                 f"{tuple(target[0].conv.weight.shape)}") if source and target else "no conv + batch-norm blocks"
        raise fail(weights, f"no layer fits the model ({first}); "
                            "is the model config the same network at the same width?")
    return filled
