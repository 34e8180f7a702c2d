"""The key=value options of a distillation (tools/train.py --distill ... lr=0.00005), each with its check: the
same check whether a value comes from the command line, the Python API or a resumed run's state file. Kept out
of spikedet.distill so that the command line can list them without loading torch."""
import argparse
import math
import os
from pathlib import Path

from .defaults import DEFAULTS
from .errors import SpikedetError

MAX_FIRST_COPIES = DEFAULTS["max_first_copies"]


def _writable_file(value: str) -> bool:
    """A file path whose folder exists and that is not itself a folder: checked before the run starts."""
    path = Path(value)
    return bool(value) and not path.is_dir() and path.parent.is_dir() and os.access(path.parent, os.W_OK)


def _present_device(value: str) -> bool:
    """cpu, or a CUDA / MPS device this machine has (spikedet.checks.device)."""
    from . import checks

    try:
        checks.device(value)
    except argparse.ArgumentTypeError:
        return False
    return True


OPTIONS = {
    "lr": (float, "a learning rate in (0, 1]", lambda v: 0 < v <= 1),
    "lam_lr": (float, "a learning rate in (0, 1]", lambda v: 0 < v <= 1),
    "feature_weight": (float, "a weight in [0, 1e6]", lambda v: 0 <= v <= 1e6),
    "float_share": (float, "a fraction in [0, 1)", lambda v: 0 <= v < 1),
    "quant_drop": (float, "a fraction in [0, 1)", lambda v: 0 <= v < 1),
    "ema": (float, "a decay in [0, 1) (0: no weight average)", lambda v: 0 <= v < 1),
    "binary_steps": (int, "a step count in [0, 4096] (0: the steps train the dual error at the levels)",
                     lambda v: 0 <= v <= 4096),
    "burn_in": (int, "a step count >= 0 below binary_steps (the binary read-out leaves it out)", lambda v: v >= 0),
    "first_copies": (int, f"a count in [1, {MAX_FIRST_COPIES}] of neurons per channel in the first layer "
                     "(spikedet.snn.population)", lambda v: 1 <= v <= MAX_FIRST_COPIES),
    "fine_negative": (bool, "true or false: leaky neurons' negative events worth the slope alpha of a positive one "
                      "(DualErrorSettings.fine_negative)", lambda v: True),
    "steps": (int, "a step count >= 1 (the run's length; replaces --epochs)", lambda v: v >= 1),
    "selection": (int, "a count >= 0 of training images held out to choose recipes on", lambda v: v >= 0),
    "selection_from": (str, "one of the image sources (a folder, dataset YAML or .txt list) given as images",
                       lambda v: bool(v) and Path(v).exists()),
    "selection_seed": (int, "a seed >= 0 of the selection draw (default: the run's seed)", lambda v: v >= 0),
    "select_every": (int, "a step count >= 0 (0: the selection loss at the end only)", lambda v: v >= 0),
    "save_minutes": (float, "minutes > 0 between saves of the resumable state", lambda v: v > 0),
    "max_minutes": (float, "minutes > 0", lambda v: v > 0),
    "threads": (int, "threads in [1, 1024]", lambda v: 1 <= v <= 1024),
    "workers": (int, "workers in [0, 64]", lambda v: 0 <= v <= 64),
    "log": (str, "a writable file path", _writable_file),
    "device": (str, "cpu, cuda or cuda:N present on this machine", _present_device),
}

# what may change when a run is resumed: how it runs, never what it computes
SESSION_OPTIONS = ("max_minutes", "threads", "workers", "log", "save_minutes", "device")


def check_options(options: dict) -> dict:
    """The key=value options of a distillation, converted to their types; a SpikedetError naming the first bad one."""
    checked = {}
    for key, value in options.items():
        if key not in OPTIONS:
            raise SpikedetError(f"distillation takes no option {key!r}; it takes {', '.join(OPTIONS)}")
        kind, what, ok = OPTIONS[key]
        converted = None if value is None else _convert(kind, value)
        if value is not None and (converted is None or not ok(converted)):
            raise SpikedetError(f"{key}={value!r}: expected {what}")
        checked[key] = converted
    return checked


def _convert(kind, value):
    """`value` as `kind`, or None: threads=1.5 is not 1 thread, nan and inf are no numbers, True is no count,
    a switch is true or false (as written on a command line too)."""
    if kind is bool:
        return value if isinstance(value, bool) else {"true": True, "false": False}.get(str(value).lower())
    if isinstance(value, bool):
        return None
    try:
        converted = kind(value)
        if kind is int and converted != float(value):
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    if kind is float and not math.isfinite(converted):
        return None
    return converted
