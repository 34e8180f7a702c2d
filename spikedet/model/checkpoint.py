"""spikedet's network files: tensors, numbers and text only, read with torch.load(weights_only=True).

A network is saved as a record from which it is rebuilt: the config that defines it (an ultralytics-style
model YAML, or a darknet cfg's text with its class names and dual-error settings), the class names and
its state dict. Nothing in a file can run code when opened, and a file does not break when a class moves.
"""
from pathlib import Path
from typing import Optional, Union

from torch import nn

from ..darknet import DarknetModel
from ..darknet.known import check_anchors, teacher_sha256
from ..errors import fail
from ..fileio import atomic_torch_save, load_torch_file
from .activation import DualErrorSettings, install_leaky_dual_error
from .record import check_record
from .yolo import DualErrorYOLO

ANN_FORMAT = "spikedet-ann"
ANN_VERSION = 1


def ann_record(model: nn.Module, half: bool = False) -> dict:
    """What rebuilds the network: its family, config, class names and weights (floats in half precision when
    asked, as ultralytics stores checkpoints)."""
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
             for k, v in model.state_dict().items()}
    names = {int(k): str(v) for k, v in model.names.items()}
    if isinstance(model, DarknetModel):
        config = {"cfg": str(model.cfg), "cfg_text": model.cfg_text,
                  "dual_error": getattr(model, "dual_error", None)}
        return {"family": "darknet", "config": config, "names": names, "state_dict": state}
    if isinstance(model, DualErrorYOLO):
        return {"family": "yolo", "config": dict(model.yaml), "names": names, "state_dict": state}
    raise TypeError(f"cannot save a {type(model).__name__}: not a spikedet network")


def build_ann(record: dict, source: Union[str, Path] = "network record") -> nn.Module:
    """The network an ann_record describes, in float32 eval mode; every stored value is checked first
    (model.record), so nothing in a file reaches a model builder unchecked."""
    record = check_record(record, source)
    family, config, names, state = record["family"], record["config"], record["names"], record["state_dict"]
    if family == "darknet":
        model = DarknetModel(config["cfg"], list(names.values()), cfg_text=config["cfg_text"])
        if config.get("dual_error"):
            install_leaky_dual_error(model, DualErrorSettings.from_dict(config["dual_error"]))
    else:
        model = DualErrorYOLO(config, nc=len(names))
        model.names = names
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        raise fail(source, f"weights do not fit the network its config builds ({str(e).splitlines()[0]})") from None
    return model.float().eval()


def save_ann(model: nn.Module, path: Union[str, Path], half: bool = True, replace: bool = True, **extra) -> Path:
    """An ANN file (atomic write; replace=False: never over an existing file); `extra` adds plain values
    (training state, provenance)."""
    return atomic_torch_save({"format": ANN_FORMAT, "version": ANN_VERSION, **ann_record(model, half), **extra},
                             path, replace)


def is_ann_file(content) -> bool:
    return isinstance(content, dict) and content.get("format") == ANN_FORMAT


def load_ann(path: Union[str, Path], content: dict = None) -> nn.Module:
    """The network in an ANN file; a one-line error for any other file. content: the file, when already read.
    The network's `trained_imgsz` is the image size it was trained or distilled at (None if not recorded):
    the size convert, detect and eval default to."""
    content = load_torch_file(path) if content is None else content
    if not is_ann_file(content):
        raise fail(path, "not a spikedet ANN checkpoint (train one with tools/train.py)")
    check_version(path, content, ANN_VERSION)
    model = build_ann(content, path)
    if isinstance(model, DarknetModel):  # distilled from darknet weights it may have to decode as they were trained
        check_anchors(model, teacher_sha256(content), path, checkpoint=True)
    model.trained_imgsz = trained_imgsz(path, content)
    return model


def trained_imgsz(path: Union[str, Path], content: dict) -> Optional[int]:
    """The image size in a checkpoint's distillation record or ultralytics' train_args, else None; a value
    that is not a multiple of 32 in 32..8192 (as --imgsz takes) is a one-line error naming the file."""
    train = content.get("train")
    for record in (content.get("distill"), train.get("train_args") if isinstance(train, dict) else None):
        if isinstance(record, dict) and "imgsz" in record:
            value = record["imgsz"]
            if isinstance(value, bool) or not isinstance(value, int) or not 32 <= value <= 8192 or value % 32:
                raise fail(path, f"records a training image size {value!r}, not a multiple of 32 in 32..8192 "
                                 "(a damaged or hand-edited file)")
            return value
    return None


def check_version(path, content: dict, version: int):
    found = content.get("version")
    if found != version or isinstance(found, bool):
        if isinstance(found, bool) or not isinstance(found, int):
            raise fail(path, f"{content.get('format')} file format version {found!r} is not a version number "
                             "(a damaged or hand-edited file)")
        raise fail(path, f"{content.get('format')} file format version {found}; this spikedet reads version "
                         f"{version} ({'newer' if found > version else 'older'} file: use the spikedet that wrote it, "
                         "or convert it again)")
