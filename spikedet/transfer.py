"""Starting a network from another's weights (`train --pretrained`): every tensor whose name and shape agree is
copied, as ultralytics does, and the report says which layers came over and which did not, and why."""
from typing import Dict, List

from torch import nn


def transfer_report(model: nn.Module, source: nn.Module) -> str:
    """Copy into `model` the tensors of `source` with the same name and shape; return what happened, by layer."""
    theirs, ours = source.float().state_dict(), model.state_dict()
    fits = {k: v for k, v in theirs.items() if k in ours and v.shape == ours[k].shape}
    model.load_state_dict(fits, strict=False)
    layers: Dict[str, List[str]] = {}
    for key in ours:
        layers.setdefault(_layer(key), []).append(key)
    whole = [n for n, keys in layers.items() if all(k in fits for k in keys)]
    none = [n for n, keys in layers.items() if not any(k in fits for k in keys)]
    part = [n for n in layers if n not in whole and n not in none]
    text = f"transferred {len(fits)} of {len(ours)} tensors; layers taken whole: {_names(whole)}"
    if part:
        text += f"; in part: {_names(part)}"
    if none:
        text += f"; not transferred: {_names(none)}"
        differs = next((k for n in none for k in layers[n] if k in theirs), None)
        text += (f" (shapes differ, e.g. {differs}: {tuple(theirs[differs].shape)} there, "
                 f"{tuple(ours[differs].shape)} here)" if differs else " (not in the source)")
    return text


def _layer(key: str) -> str:
    """model.13.cv1.conv.weight -> 13 (ultralytics' layer index), else the first name part."""
    parts = key.split(".")
    return parts[1] if parts[0] == "model" and len(parts) > 1 else parts[0]


def _names(layers: List[str]) -> str:
    return ", ".join(layers) if layers else "none"
