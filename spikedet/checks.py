"""Checks of user-given values, run before any work: each bad value is a one-line error naming the option.

Used as argparse types by the CLI (argparse then prints `error: argument --x: <message>`, exit 2) and by the
Python API through check_output_path.
"""
import argparse
import math
import os
from pathlib import Path

from .defaults import DEFAULTS
from .errors import SpikedetError, fail


def integer(low: int = None, high: int = None, what: str = "an integer"):
    """An argparse type: an int within [low, high] (either bound may be open)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"expected {what} {bounds}, got {value}")
        return value
    return parse


def number(low: float = None, high: float = None, low_open: bool = False):
    """An argparse type: a finite float within [low, high] ((low, high] when low_open)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            left = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"expected a number in {left}{low}, {high}], got {value:g}")
        return value
    return parse


positive = integer(1, what="a positive integer")


def positive_list(text: str) -> list:
    """An argparse type: one positive integer or several separated by commas (--levels 8,16)."""
    return [positive(part) for part in text.split(",")]


imgsz = integer(32, 8192, "an image size in pixels (a multiple of 32)")


def image_size(text: str) -> int:
    value = imgsz(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"expected a multiple of 32 (the networks' largest stride), got {value}")
    return value


def timesteps(text: str) -> int:
    """A number of time steps: 1 .. max_timesteps (a larger T runs for hours; --allow-long-t lifts it)."""
    return integer(1, None, "a number of time steps")(text)


burn_in = integer(0, None, "a number of time steps")  # steps the read-out leaves out
fraction = number(0, 1)  # conf, v_init
percentile = number(0, 100, low_open=True)
threshold_scale = number(0, 1000, low_open=True)
iou = number(0, 1, low_open=True)
agreement = number(0, 1e6)  # the weight of a fine-tune's agreement term
first_copies = integer(1, DEFAULTS["max_first_copies"], "a count of neurons per channel in the first layer")

# Option name -> check, shared by the CLI's argument types and the Python API (check_values).
OPTION_CHECKS = {"timesteps": timesteps, "imgsz": image_size, "batch": positive, "chunk": positive,
                 "max_images": positive, "calibration_count": positive, "percentile": percentile,
                 "threshold_scale": threshold_scale, "first_copies": first_copies,
                 "v_init": fraction, "conf": fraction, "iou": iou, "burn_in": burn_in, "agreement": agreement}


def check_paths(required: bool = False, **paths):
    """The API's check of path arguments (None: not given, unless required): text or a Path, else a one-line
    SpikedetError."""
    for name, value in paths.items():
        if (required or value is not None) and not isinstance(value, (str, os.PathLike)):
            raise SpikedetError(f"{name}: expected a path, got {type(value).__name__} {value!r}")


def check_values(allow_long_t: bool = False, **values):
    """The API's check of option values (None: not given), as the CLI checks them: one-line SpikedetError."""
    for name, value in values.items():
        for v in (value if isinstance(value, (list, tuple)) else [] if value is None else [value]):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpikedetError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
            try:
                OPTION_CHECKS[name](str(v))
            except argparse.ArgumentTypeError as e:
                raise SpikedetError(f"{name}: {e}") from None
    steps = values.get("timesteps")
    check_timesteps(steps if isinstance(steps, (list, tuple)) else [steps] if steps else [], allow_long_t)


def check_stored(source, **values):
    """Values read from a file, held to the checks of the options of the same name (None: not stored); a stored
    value must be a number, not text that reads as one. One-line error naming the file."""
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(source, f"stored {name} must be a number, got {value!r}")
        try:
            OPTION_CHECKS[name](str(value))
        except argparse.ArgumentTypeError as e:
            raise fail(source, f"stored {name}: {e}") from None


def check_timesteps(values, allow_long: bool, parser: argparse.ArgumentParser = None, source=None):
    """T above max_timesteps is refused unless allow_long, whether given (a SpikedetError, not parser.error: the
    CLI's main() turns it into the same one-line `error: argument --timesteps: ...` and returns 2 instead of
    exiting) or stored in the network file `source`."""
    limit = DEFAULTS["max_timesteps"]
    if values and not allow_long and max(values) > limit:
        where = f"{source}: its stored time steps" if source else "argument --timesteps"
        raise SpikedetError(f"{where}: T = {max(values)} is above {limit} (hours per image on a "
                            "CPU); add --allow-long-t to run it anyway")


def check_weight_memory(source, parameters: int):
    """A network from a file or config is refused before it is allocated when its float32 weights would need
    more than max_weight_gb (a layer with a million channels asks for hundreds of GB)."""
    gb = 4 * parameters / 1e9
    if gb > DEFAULTS["max_weight_gb"]:
        raise fail(source, f"the network would need {gb:.1f} GB for its weights (limit {DEFAULTS['max_weight_gb']} "
                           "GB): its channels or kernel sizes are too large")


def device(text: str) -> str:
    """cpu, cuda, cuda:N or mps, and present on this machine (torch would raise a traceback mid-run)."""
    kind, colon, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and (kind != "cuda" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count()  # 0 without a driver, without raising
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: no CUDA device on this machine (use --device cpu)")
        if index and int(index) >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA device(s), cuda:0 .. "
                                             f"cuda:{count - 1}")
    if kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text}: no MPS device on this machine (use --device cpu)")
    return text


def training_device(text: str) -> str:
    """ultralytics' training devices: those of device(), or CUDA indices such as 0 or 0,1 (several: DDP; -1:
    ultralytics picks idle ones), present on this machine."""
    parts = text.replace(" ", "").split(",")
    if not all(p.isdigit() or p == "-1" for p in parts):
        return device(text)
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device on this machine (use --device cpu)")
    if any(p != "-1" and int(p) >= count for p in parts):
        raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA device(s), 0 .. {count - 1}")
    return text


def existing_file(text: str) -> str:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, expected a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: file not found")
    return text


def existing_path(text: str) -> str:
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return text


def existing_dir(text: str) -> str:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'is a file, expected a' if path.exists() else 'no such'} folder")
    return text


def output_file(text: str) -> str:
    """A path a new file can be written to: nothing there yet (outputs are never silently overwritten), no file
    among its parents, a writable folder."""
    problem = output_problem(Path(text))
    if problem is None and Path(text).exists():
        problem = "already exists: give another name, or remove it first"
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return text


def output_dir(text: str) -> str:
    """A folder outputs can be written into (it may not exist yet): not a file, none of its parents a file,
    and writable (its nearest existing parent when it does not exist yet)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, expected a folder for outputs")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot be written: {parent} is not writable")
    return text


def output_problem(path: Path):
    """Why a file cannot be written at `path` (None when it can), without creating anything."""
    if path.is_dir():
        return "is a directory, expected a file path"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be written: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be written: {parent} is not writable"
    return None


def boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def key_value(text: str):
    """An ultralytics training argument given as key=value; the value is read as YAML (0.001, false, AdamW)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value (an ultralytics train argument), got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {text!r}") from None
