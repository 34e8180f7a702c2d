"""Any network file spikedet takes, loaded by content: an SNN file, a spikedet ANN checkpoint, or a darknet
.weights file with its .cfg; and what a caller needs to know of a loaded network."""
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from torch import nn

from .darknet import DarknetModel, load_darknet
from .defaults import DEFAULTS
from .errors import fail
from .fileio import load_torch_file
from .model.checkpoint import is_ann_file, load_ann
from .snn.engine import SpikingNetwork
from .snn.files import is_snn_file, load_snn


def load_network(path: Union[str, Path], cfg: Optional[Union[str, Path]] = None,
                 names: Optional[Union[str, Path]] = None) -> Tuple[nn.Module, Optional[nn.Module]]:
    """(network, its source ANN when it is an SNN, else None). cfg: the .cfg of darknet .weights."""
    if cfg is not None:
        return load_darknet(cfg, path, names), None
    if Path(path).suffix == ".weights":
        raise fail(path, "a darknet .weights file needs its .cfg (--cfg)")
    content = load_torch_file(path)
    if is_snn_file(content):
        return load_snn(path, content)
    if is_ann_file(content):
        return load_ann(path, content), None
    raise fail(path, "not a spikedet file (an SNN from tools/convert.py or a checkpoint from tools/train.py)")


def is_snn(network: nn.Module) -> bool:
    return isinstance(network, SpikingNetwork)


def is_darknet(network: nn.Module) -> bool:
    """A darknet network, or an SNN converted from one (its file records the family)."""
    if is_snn(network):
        return network.meta.get("family") == "darknet"
    return isinstance(network, DarknetModel)


def class_names(network: nn.Module) -> Dict[int, str]:
    return {int(k): v for k, v in network.names.items()}


def default_resize(network: nn.Module) -> str:
    """Darknet networks stretch images, as darknet's reference figures and OpenCV's reader do;
    spikedet-trained ones letterbox, as ultralytics trains them."""
    return "stretch" if is_darknet(network) else "letterbox"


def default_eval_iou(network: nn.Module) -> float:
    """NMS IoU for mAP: darknet's for darknet networks, ultralytics' validation value otherwise."""
    return DEFAULTS["iou_eval_darknet"] if is_darknet(network) else DEFAULTS["iou_eval"]


def default_imgsz(network: nn.Module) -> int:
    """The size an SNN was converted at, or an ANN checkpoint trained at, else the default."""
    size = network.meta.get("imgsz") if is_snn(network) else getattr(network, "trained_imgsz", None)
    return size or DEFAULTS["imgsz"]


def default_timesteps(network: nn.Module) -> int:
    """The T an SNN was converted for, else the detect default."""
    return network.meta.get("timesteps") or DEFAULTS["timesteps_detect"]
