"""SNN files: the converted network's state dict, what rebuilds its structure (the source ANN's record and
the conversion options) and its meta data; read with torch.load(weights_only=True) like every spikedet file.
The source ANN is kept (a few MB), so the SNN can always be scored against it."""
from pathlib import Path
from typing import Tuple, Union

from torch import nn

from ..errors import fail
from ..fileio import atomic_torch_save, load_torch_file
from ..model.checkpoint import ann_record, build_ann, check_version
from .convert import rebuild
from .engine import SpikingNetwork
from .neurons import reset_net

SNN_FORMAT = "spikedet-snn"
SNN_VERSION = 2  # 1: the whole network pickled (spikedet <= 0.1); 2: state dict + rebuild record


def save_snn(snn: SpikingNetwork, ann: nn.Module, path: Union[str, Path]) -> Path:
    """One file with everything needed to run the SNN and to score it against its source ANN."""
    reset_net(snn)
    return atomic_torch_save({"format": SNN_FORMAT, "version": SNN_VERSION, "meta": snn.meta,
                              "ann": ann_record(ann), "state_dict": snn.state_dict()}, path)


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
    try:
        meta, state = content["meta"], content["state_dict"]
        options = meta["options"]
    except (KeyError, TypeError):
        raise fail(path, "damaged SNN file (missing meta, options or weights)") from None
    ann = build_ann(content.get("ann"), path)
    snn = rebuild(ann, options)
    try:
        snn.load_state_dict(state)
    except RuntimeError as e:
        raise fail(path, f"weights do not fit the network its record rebuilds ({str(e).splitlines()[0]})") from None
    snn.meta = dict(meta)
    return snn.eval(), ann
