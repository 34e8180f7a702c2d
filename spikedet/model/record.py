"""Checks of a network record read from a file, before anything is built from it: the same values a user could
give as options are held to the same checks, and tensors must be finite (a NaN weight gives no detections and
no error; a NaN in a file spreads to every file converted from it)."""
import torch

from ..checks import check_weight_memory
from ..darknet import parse_cfg
from ..defaults import DEFAULTS
from ..errors import fail
from .activation import DualErrorSettings
from .schema import check_yolo_config

FAMILIES = ("yolo", "darknet")


def check_record(record, source) -> dict:
    """A record (family, config, names, state_dict) as build_ann reads it, every value checked; returns it with
    the config canonical. One-line error naming `source` and the first problem."""
    if not isinstance(record, dict) or not {"family", "config", "names", "state_dict"} <= set(record):
        raise fail(source, "damaged spikedet network record (missing family, config, names or weights)")
    family = record["family"]
    if family not in FAMILIES:
        raise fail(source, f"unknown network family {family!r}")
    names = check_names(record["names"], source)
    config = (check_yolo_config(record["config"], source) if family == "yolo" else
              check_darknet_config(record["config"], source))
    return {**record, "config": config, "names": names, "state_dict": check_state_dict(record["state_dict"], source)}


def check_names(names, source) -> dict:
    """Class names: {0: name, 1: name, ...}, text, at most max_channels of them."""
    if not isinstance(names, dict) or not 0 < len(names) <= DEFAULTS["max_channels"]:
        raise fail(source, "class names must be a mapping {index: name} with 1 .. "
                           f"{DEFAULTS['max_channels']} entries")
    if sorted(names) != list(range(len(names))) or not all(isinstance(v, str) for v in names.values()):
        raise fail(source, "class names must map the indices 0..N-1 to text")
    return {int(k): str(v) for k, v in names.items()}


def check_darknet_config(config, source) -> dict:
    """A darknet record: the cfg's text (parsed by spikedet's own strict reader, sized before allocation), its
    path as a name only, and the dual-error settings."""
    if not isinstance(config, dict) or not {"cfg", "cfg_text"} <= set(config) <= {"cfg", "cfg_text", "dual_error"}:
        raise fail(source, "darknet record: config must hold cfg, cfg_text and dual_error")
    if not isinstance(config["cfg"], str) or not isinstance(config["cfg_text"], str):
        raise fail(source, "darknet record: cfg and cfg_text must be text")
    parse_cfg(source, config["cfg_text"])  # typed and checked line by line; the size is checked as it is built
    dual_error = config.get("dual_error")
    if dual_error is not None:
        if not isinstance(dual_error, dict):
            raise fail(source, f"darknet record: dual_error must be a mapping, got {dual_error!r}")
        try:
            dual_error = DualErrorSettings.from_dict(dual_error).to_dict()
        except (TypeError, ValueError) as e:
            raise fail(source, f"darknet record: {e}") from None
    return {"cfg": str(config["cfg"]), "cfg_text": str(config["cfg_text"]), "dual_error": dual_error}


def check_state_dict(state, source) -> dict:
    """Weights: a mapping of names to tensors, every floating tensor finite (the first that is not is named),
    every learned threshold lambda positive, and their total size within the memory limit."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise fail(source, f"damaged weights: expected a mapping of names to tensors, got {type(state).__name__}")
    check_weight_memory(source, sum(v.numel() for v in state.values()))
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise fail(source, f"tensor {name} holds non-finite values (NaN or infinity)")
        if name.endswith(".lam") and tensor.numel() and not bool((tensor > 0).all()):
            raise fail(source, f"threshold {name} must be > 0, got {float(tensor.min()):g}")
    return state
