"""Where a distilled network's level loss sits, layer by layer: its head loss against the teacher with one
dual-error unit quantized and every other unit exact ("alone"), and with every unit quantized but that one
("all but").

Why: a run reports one loss per level; a researcher deciding where to spend training (or what to try next)
needs to know which layers make it. "alone" is what a layer's errors cost by themselves, "all but" what making
that layer exact would give back. The errors interact, so neither column sums to the whole loss."""
from functools import partial
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from .losses import mean_head_losses
from .student import leaky_activations, set_levels, set_unit_levels


def unit_names(model: torch.nn.Module) -> List[str]:
    """The module path of each dual-error unit, in the order leaky_activations() gives them."""
    names = {id(m): name for name, m in model.named_modules()}
    return [names[id(unit)] for unit in leaky_activations(model)]


@torch.no_grad()
def layer_losses(student: torch.nn.Module, teacher: torch.nn.Module, paths: Sequence[Path], imgsz: int,
                 levels: Sequence[int], batch: int = 8) -> Dict[str, object]:
    """{"layers": [{"name", "channels"}], "float": loss, "levels": {"L": {"all": loss, "alone": [loss per
    layer], "all_but": [loss per layer]}}}, the head loss averaged over `paths` as mean_head_loss does; each
    image is loaded and the teacher run once for every setting. Leaves the student at its smallest level."""
    units = leaky_activations(student)
    n = len(units)
    settings = {"float": partial(set_unit_levels, units, [None] * n)}
    for L in levels:
        settings[f"{L}/all"] = partial(set_unit_levels, units, [L] * n)
        for i in range(n):
            settings[f"{L}/alone/{i}"] = partial(set_unit_levels, units, [L if j == i else None for j in range(n)])
            settings[f"{L}/all_but/{i}"] = partial(set_unit_levels, units, [None if j == i else L for j in range(n)])
    losses = {name: value["loss"] for name, value in mean_head_losses(student, teacher, paths, imgsz, settings,
                                                                      batch).items()}
    set_levels(student, min(levels))
    return {"layers": [{"name": name, "channels": unit.lam.numel()} for name, unit in zip(unit_names(student), units)],
            "float": losses["float"],
            "levels": {str(L): {"all": losses[f"{L}/all"],
                                "alone": [losses[f"{L}/alone/{i}"] for i in range(n)],
                                "all_but": [losses[f"{L}/all_but/{i}"] for i in range(n)]} for L in levels}}
