"""The head loss of a distilled network at each level with every threshold times s: which threshold scale to
convert it with for a given T (`convert --threshold-scale`).

Why: a threshold trades the two errors. A higher one clips less and quantizes coarser, and which trade is best
depends on the number of levels; a network trained for several levels shares one set of thresholds, and a
converted SNN runs at one T. The dual-error network at L = T with its thresholds times s is exactly the burst
SNN converted with threshold_scale s, so this loss is the SNN's, measured without simulating it."""
from functools import partial
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from ..errors import SpikedetError
from .losses import mean_head_losses
from .student import leaky_activations, set_levels


def _put(student: torch.nn.Module, units, base, level: int, scale: float) -> None:
    set_levels(student, level)
    for unit, lam in zip(units, base):
        unit.lam.copy_(lam * scale)


@torch.no_grad()
def threshold_scale_losses(student: torch.nn.Module, teacher: torch.nn.Module, paths: Sequence[Path],
                           imgsz: int, levels: Sequence[int], scales: Sequence[float],
                           batch: int = 8) -> Dict[str, List[dict]]:
    """{"L": [{"scale": s, "loss": head loss}, ...] in the order of `scales`} over `paths` (mean_head_loss's
    average; each image loaded and the teacher run once for every setting). The student's thresholds are
    restored afterwards, and it is left at its smallest level."""
    if not scales or min(scales) <= 0:
        raise SpikedetError(f"threshold scales must be positive numbers, got {list(scales)}")
    units = leaky_activations(student)
    base = [unit.lam.detach().clone() for unit in units]
    settings = {f"{L}/{s!r}": partial(_put, student, units, base, L, s) for L in levels for s in scales}
    try:
        losses = mean_head_losses(student, teacher, paths, imgsz, settings, batch)
    finally:
        _put(student, units, base, min(levels), 1.0)
    return {str(L): [{"scale": s, "loss": losses[f"{L}/{s!r}"]["loss"]} for s in scales] for L in levels}


def least_loss_scale(rows: Sequence[dict]) -> float:
    """The scale of the least loss (the first of equal ones, so list the scales in the order to prefer)."""
    return min(rows, key=lambda row: row["loss"])["scale"]
