"""SNN files: the converted network's state dict, what rebuilds its structure (the source ANN's record and
the conversion options) and its meta data; read with torch.load(weights_only=True) like every spikedet file.
The source ANN is kept (a few MB), so the SNN can always be scored against it."""
from pathlib import Path
from typing import Tuple, Union

import torch
from torch import nn

from ..checks import check_stored
from ..defaults import CHOICES
from ..errors import fail
from ..fileio import atomic_torch_save, load_torch_file
from ..model.checkpoint import ann_record, build_ann, check_version
from ..model.record import check_names, check_state_dict
from .convert import OPTION_KEYS, rebuild
from .engine import SpikingNetwork
from .neurons import neuron_kinds, reset_net

SNN_FORMAT = "spikedet-snn"
SNN_VERSION = 2  # 1: the whole network pickled (spikedet <= 0.1); 2: state dict + rebuild record


def save_snn(snn: SpikingNetwork, ann: nn.Module, path: Union[str, Path], replace: bool = True) -> Path:
    """One file with everything needed to run the SNN and to score it against its source ANN (replace=False:
    never over an existing file, see fileio.atomic_write_bytes), its source ANN in float16 where exact (compact)."""
    reset_net(snn)
    record = ann_record(ann)
    record["state_dict"] = compact(record["state_dict"])
    return atomic_torch_save({"format": SNN_FORMAT, "version": SNN_VERSION, "meta": snn.meta,
                              "ann": record, "state_dict": snn.state_dict()}, path, replace)


def compact(state: dict) -> dict:
    """float16 storage where it is exact (a network read from a spikedet checkpoint is float16 already), else
    float32. The SNN's own weights stay float32: rounding them to float16 moved the shipped network's outputs by
    up to 85 px (boxes) and 0.16 (scores) at T = 8 (tools/snn_file_check.py), as counts cross thresholds."""
    out = {}
    for name, tensor in state.items():
        half = tensor.half() if tensor.dtype == torch.float32 else None
        out[name] = half if half is not None and bool(torch.equal(half.float(), tensor)) else tensor
    return out


def is_snn_file(content) -> bool:
    return isinstance(content, dict) and content.get("format") == SNN_FORMAT


def load_snn(path: Union[str, Path], content: dict = None) -> Tuple[SpikingNetwork, nn.Module]:
    """(SNN, its source ANN) from a converted file; a one-line error for anything else.

    content: the file, when the caller has already read it.
    """
    content = load_torch_file(path) if content is None else content
    if not is_snn_file(content):
        raise fail(path, "not a spikedet SNN file (convert a checkpoint with tools/convert.py first)")
    check_version(path, content, SNN_VERSION)
    meta, state = check_meta(content.get("meta"), path), check_state_dict(content.get("state_dict"), path)
    ann = build_ann(content.get("ann"), path)
    snn = rebuild(ann, meta["options"])
    try:
        snn.load_state_dict(state)
    except RuntimeError as e:
        raise fail(path, f"weights do not fit the network its record rebuilds ({str(e).splitlines()[0]})") from None
    snn.meta = dict(meta)
    return snn.eval(), ann


OPTION_CHOICES = ("normalization", "scales", "reset", "leaky")


def check_meta(meta, path) -> dict:
    """An SNN file's meta data and conversion options, held to the checks of the options they were given as."""
    if not isinstance(meta, dict) or not isinstance(meta.get("options"), dict):
        raise fail(path, "damaged SNN file (missing meta, options or weights)")
    options = meta["options"]
    unknown = set(options) - set(OPTION_KEYS) - {"timesteps"}
    if unknown:
        raise fail(path, f"unknown conversion options {sorted(map(str, unknown))}")
    for key, choices in [*((key, CHOICES[key]) for key in OPTION_CHOICES), ("spikes", neuron_kinds())]:
        if options.get(key) not in choices:
            raise fail(path, f"stored {key} must be one of {choices}, got {options.get(key)!r}")
    if options.get("negative_events") not in (None, *CHOICES["negative_events"]):  # None: written before the option
        raise fail(path, f"stored negative_events must be one of {CHOICES['negative_events']}, got "
                         f"{options.get('negative_events')!r}")
    check_stored(path, percentile=options.get("percentile"), threshold_scale=options.get("threshold_scale"),
                 v_init=options.get("v_init"), timesteps=options.get("timesteps"),
                 first_copies=options.get("first_copies"))
    check_stored(path, timesteps=meta.get("timesteps"), imgsz=meta.get("imgsz"))
    if meta.get("resize") not in (None, *CHOICES["resize"]) or meta.get("family") not in (None, "yolo", "darknet"):
        raise fail(path, f"stored resize or family is not one spikedet writes: {meta.get('resize')!r}, "
                         f"{meta.get('family')!r}")
    return {**meta, "names": check_names(meta.get("names"), path)}
