"""Atomic writes: a file appears complete or not at all, so an interrupted run loses nothing already saved."""
import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_torch_save(obj, path) -> Path:
    """torch.save through a temporary file, so a checkpoint is never half-written."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_torch_file(path):
    """torch.load onto the CPU, with a one-line error for a missing, corrupt or foreign file."""
    import torch

    from .errors import fail

    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise fail(path, f"not a readable PyTorch file ({e.__class__.__name__})") from None


def read_yaml(path, what: str = "file"):
    """Parsed YAML, with a one-line error naming the file when it is missing or not YAML."""
    import yaml

    from .errors import fail

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise fail(path, f"{what} not found") from None
    except yaml.YAMLError as e:
        raise fail(path, f"not valid YAML ({e.__class__.__name__})") from None


def read_json(path, what: str = "file"):
    """Parsed JSON, with a one-line error naming the file when it is missing or not JSON."""
    from .errors import fail

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise fail(path, f"{what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(path, f"not valid JSON ({e})") from None
