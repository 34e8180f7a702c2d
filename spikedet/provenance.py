"""What a reported number is about: which network (in words), which file (sha256), which versions.

A score means little without it: "SNN / ANN = 100%" is a different claim against a network's own dual-error
ANN than against the float network it was distilled from, so every report names its reference row.
"""
import hashlib
import platform
from pathlib import Path
from typing import Optional

from torch import nn

from .model.activation import dual_error_modules
from .networks import is_darknet, is_snn


def sha256(path) -> Optional[str]:
    """The file's sha256 (None for anything that is not a file, e.g. an in-memory conversion)."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(network: nn.Module) -> str:
    """The network in a few words: 'dual-error ANN (L = 16)', 'float ANN (darknet)', 'SNN (burst neurons, ...)'."""
    family = " (darknet)" if is_darknet(network) else ""
    if is_snn(network):
        options = network.meta.get("options", {})
        return (f"SNN{family} ({options.get('spikes', '?')} neurons, {options.get('normalization', '?')}-wise "
                f"normalization, converted for T = {network.meta.get('timesteps') or '?'})")
    units = [m.settings for m in dual_error_modules(network) if not m.settings.is_relu]
    if not units:
        return f"float ANN{family}"
    levels = sorted({s.levels for s in units})
    return f"dual-error ANN{family} (L = {'/'.join(map(str, levels))})"


def versions() -> dict:
    import torch
    import ultralytics

    from . import __version__

    return {"spikedet": __version__, "torch": torch.__version__, "ultralytics": ultralytics.__version__,
            "python": platform.python_version()}


def network_record(network: nn.Module, source, role: str) -> dict:
    """{"role", "network" (in words), "file", "sha256"} of one scored network."""
    return {"role": role, "network": describe(network), "file": str(source), "sha256": sha256(source)}
