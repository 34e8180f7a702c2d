"""Run folders: runs/<task>/exp, exp2, exp3, ..., one per run, named the same way for detection and training
(ultralytics 8.4 alone would name training runs exp-2); an earlier run's folder is never reused."""
from pathlib import Path
from typing import Union

from .defaults import DEFAULTS
from .errors import SpikedetError, fail


def next_run_folder(project: Union[str, Path], name: str = DEFAULTS["name"]) -> Path:
    """project/name, or name2, name3, ...: the first that does not exist, created with mkdir. Unlike
    ultralytics' increment_path (which checks, then creates), mkdir either creates a folder or fails, so two
    runs started at once never share a folder and overwrite each other's files."""
    project = Path(project)
    if not name or name in (".", "..") or Path(name).name != name:
        raise SpikedetError(f"run name {name!r} must be a plain folder name (no path separators)")
    try:
        project.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise fail(project, "is a file, expected a folder for run outputs") from None
    except PermissionError:
        raise fail(project, "cannot be created: permission denied") from None
    for n in range(1, 10000):
        folder = project / (name if n == 1 else f"{name}{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except PermissionError:
            raise fail(project, "cannot be written: permission denied") from None
    raise fail(project, f"no free run folder name for {name!r}")
