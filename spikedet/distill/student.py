"""The student: a copy of the darknet teacher whose leaky units are dual-error leaky units, lambda per channel
from the teacher's activations."""
import copy
from dataclasses import replace
from typing import List, Optional, Sequence

import torch
from torch import nn

from ..errors import SpikedetError
from ..model.activation import DualErrorLeakyReLU, DualErrorReLU, DualErrorSettings, install_leaky_dual_error
from ..model.calibration import LeastErrorObserver, PercentileObserver
from ..snn.convert import observe_activations

INIT_PERCENTILE = 99.99
CALIBRATION_COUNT = 32


def leaky_activations(model: nn.Module) -> List[nn.Module]:
    """The leaky activation module of every conv block, in order (teacher: LeakyReLU; student: dual error)."""
    acts = []
    for block in model.modules():
        act = getattr(block, "act", None)
        if isinstance(getattr(block, "conv", None), nn.Conv2d) and isinstance(act, (nn.LeakyReLU, DualErrorLeakyReLU)):
            acts.append(act)
    return acts


@torch.no_grad()
def channel_scales(model: nn.Module, images: torch.Tensor, q: float = INIT_PERCENTILE,
                   batch_size: int = 8) -> List[torch.Tensor]:
    """Per leaky layer, the q-th percentile per channel of the float network's activations (the converter's
    channel-wise normalization of a network without learned thresholds)."""
    return _scales(model, images, lambda: PercentileObserver(q), batch_size)


@torch.no_grad()
def mse_scales(model: nn.Module, images: torch.Tensor, levels: Sequence[int], batch_size: int = 8,
               samples: int = 2048) -> List[torch.Tensor]:
    """Per leaky layer, the lam per channel whose dual-error unit has the least mean squared error against the
    float network's activations, summed over `levels` (calibration.LeastErrorObserver, `samples` activations
    per channel and image)."""
    return _scales(model, images, lambda: LeastErrorObserver(levels, samples), batch_size)


def _scales(model, images, make_observer, batch_size) -> List[torch.Tensor]:
    observers = observe_activations(model, images, make_observer, batch_size)
    scales = []
    for act in leaky_activations(model):
        lam = observers[act].scale("channel").float()
        scales.append(torch.where(lam > 0, lam, torch.ones_like(lam)))
    return scales


def make_student(teacher: nn.Module, levels: int, scales: Sequence[torch.Tensor],
                 init_percentile: float = INIT_PERCENTILE) -> nn.Module:
    """A copy of the teacher whose leaky units are dual-error leaky units with lam = scales."""

    student = copy.deepcopy(teacher)
    settings = DualErrorSettings(levels=int(levels), granularity="channel", clip=True, quantize=True,
                                 init_percentile=init_percentile, lambda_grad="residue")
    install_leaky_dual_error(student, settings)
    acts = leaky_activations(student)
    if len(acts) != len(scales):
        raise SpikedetError(f"{len(scales)} scales for {len(acts)} dual-error layers")
    with torch.no_grad():
        for act, lam in zip(acts, scales):
            act.lam.copy_(lam)
    return student


def set_levels(model: nn.Module, levels: Optional[int]) -> nn.Module:
    """Make every dual-error unit quantize to `levels` (= the burst SNN at T = levels), keeping each lam; the
    model's recorded settings follow. levels=None: both errors off (the student's float network, plain leaky
    units), until the next call with a number."""
    on = levels is not None
    change = dict(clip=on, quantize=on, **({"levels": int(levels)} if on else {}))
    for m in model.modules():
        if isinstance(m, DualErrorReLU):
            m.settings = replace(m.settings, **change)
    if getattr(model, "dual_error", None):
        model.dual_error = {**model.dual_error, **change}
    return model
