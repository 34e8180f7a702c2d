"""Reading and writing files safely: atomic writes with the user's permissions, and loads that cannot run code.

A write goes to a temporary file beside the target, then is renamed over it, so a file appears complete or
not at all and an interrupted run loses nothing already saved; an output that must be new is moved into place
only if its name is still free at that moment. Every read failure is a one-line error that
names the file.
"""
import io
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import fail


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes, replace: bool = True) -> Path:
    """Write `data` to a temporary file beside `path`, then move it into place (mode 0666 less the umask, as
    open() would give; the temporary file is removed on any failure). replace=False: `path` must not exist at
    the moment of the move (checked by the move itself, so of two runs writing one output only one succeeds)."""
    path = Path(path)
    if path.is_dir():
        raise fail(path, "is a directory, expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise fail(path, "cannot be written: a parent of it is a file") from None
    except PermissionError:
        raise fail(path, "cannot be written: permission denied") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if replace:
            os.replace(tmp, path)
        else:
            _move_new(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _move_new(tmp: str, path: Path):
    """Move tmp to a path that must not exist: a hard link fails if it does (then tmp is removed). Where the
    file system has no hard links, the name is first claimed with O_EXCL, then replaced."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise fail(path, "already exists (written by another run meanwhile): nothing was overwritten") from None
    except OSError:  # no hard links here
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise fail(path, "already exists (written by another run meanwhile): nothing was overwritten") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_text(path, text: str, replace: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), replace)


def atomic_write_json(path, obj, indent: int = 2, replace: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n", replace)


def atomic_torch_save(obj, path, replace: bool = True) -> Path:
    """torch.save through a temporary file, so a checkpoint is never half-written."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue(), replace)


def load_torch_file(path):
    """torch.load(weights_only=True) onto the CPU: tensors, numbers, strings and containers only, so
    nothing in the file runs. A pickled object (an ultralytics or other PyTorch checkpoint) is refused."""
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise fail(path, "is a directory, expected a file")
    if not path.is_file():
        raise fail(path, "file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # not a pickle of objects at all: damaged or another format
            raise fail(path, "not a readable PyTorch file (UnpicklingError)") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(e))  # the first object torch refused, named, never built
        what = found.group(1) if found else "unknown"
        if what.split(".")[0] == "spikedet":  # spikedet <= 0.1 pickled whole networks
            raise fail(path, f"holds pickled Python objects ({what}): a file of an older spikedet, before its "
                             "versioned formats, which can run code when opened; this spikedet reads its files of "
                             "tensors and plain values only: convert (or train) again with this spikedet") from None
        raise fail(path, f"holds pickled Python objects ({what}: an ultralytics or other PyTorch checkpoint), "
                         "which can run code when opened; spikedet reads only its own files of tensors and plain "
                         "values: train with tools/train.py, or save a state dict from a file you trust") from None
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise fail(path, f"not a readable PyTorch file ({e.__class__.__name__})") from None


def _read_text(path: Path, what: str) -> str:
    if path.is_dir():
        raise fail(path, f"is a directory, expected a {what}")
    try:
        return path.read_text()
    except FileNotFoundError:
        raise fail(path, f"{what} not found") from None
    except UnicodeDecodeError:
        raise fail(path, f"not a text file, expected a {what}") from None


def read_yaml(path, what: str = "file"):
    """Parsed YAML, with a one-line error naming the file when it is missing or not YAML."""
    import yaml

    path = Path(path)
    text = _read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise fail(path, f"not valid YAML{where} ({e.__class__.__name__})") from None


def read_json(path, what: str = "file"):
    """Parsed JSON, with a one-line error naming the file when it is missing or not JSON."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(path, f"not valid JSON ({e})") from None
