"""The student: a copy of the darknet teacher whose leaky units are dual-error leaky units, lambda per channel
from the teacher's activations."""
import copy
from dataclasses import replace
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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
    return _scales(model, images, lambda act: PercentileObserver(q), batch_size)


@torch.no_grad()
def mse_scales(model: nn.Module, images: torch.Tensor, levels: Sequence[int], batch_size: int = 8,
               samples: int = 2048, first_copies: int = 1, fine_negative: bool = False) -> List[torch.Tensor]:
    """Per leaky layer, the lam per channel whose dual-error unit has the least mean squared error against the
    float network's activations, summed over `levels` (calibration.LeastErrorObserver, `samples` activations
    per channel and image); the first layer's over its first_copies * levels (DualErrorSettings.first_copies),
    the negative side in steps of the slope's share with fine_negative."""
    made = []

    def observer(act):  # called once per activation, in module order: the first is the first layer's
        copies = 1 if made else first_copies
        made.append(copies)
        step = getattr(act, "negative_slope", 1.0) if fine_negative else 1.0
        return LeastErrorObserver([L * copies for L in levels], samples, negative_step=step)

    return _scales(model, images, observer, batch_size)


def _scales(model, images, make_observer, batch_size) -> List[torch.Tensor]:
    observers = observe_activations(model, images, make_observer, batch_size)
    scales = []
    for act in leaky_activations(model):
        lam = observers[act].scale("channel").float()
        scales.append(torch.where(lam > 0, lam, torch.ones_like(lam)))
    return scales


def make_student(teacher: nn.Module, levels: int, scales: Sequence[torch.Tensor],
                 init_percentile: float = INIT_PERCENTILE, first_copies: int = 1,
                 fine_negative: bool = False) -> nn.Module:
    """A copy of the teacher whose leaky units are dual-error leaky units with lam = scales (the first one run by
    `first_copies` neurons per channel, fine negative events or not: DualErrorSettings)."""

    student = copy.deepcopy(teacher)
    settings = DualErrorSettings(levels=int(levels), granularity="channel", clip=True, quantize=True,
                                 init_percentile=init_percentile, lambda_grad="residue",
                                 first_copies=int(first_copies), fine_negative=bool(fine_negative))
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
    change = _errors_at(levels)
    for m in model.modules():
        if isinstance(m, DualErrorReLU):
            m.settings = replace(m.settings, **change)
    if getattr(model, "dual_error", None):
        model.dual_error = {**model.dual_error, **change}
    return model


def set_unit_levels(units: Sequence[nn.Module], levels: Sequence[Optional[int]]) -> None:
    """Give each dual-error unit its own levels (None: that unit float), e.g. one unit quantized and the rest
    exact, to see what one layer's errors cost (layer_loss.py). The model's recorded settings are left as they
    are: set_levels(model, L) puts every unit back at one level."""
    if len(units) != len(levels):
        raise SpikedetError(f"{len(levels)} levels for {len(units)} dual-error units")
    for unit, L in zip(units, levels):
        unit.settings = replace(unit.settings, **_errors_at(L))


def _errors_at(levels: Optional[int]) -> dict:
    """The settings change that quantizes to `levels`, or turns both errors off for None."""
    on = levels is not None
    return dict(clip=on, quantize=on, **({"levels": int(levels)} if on else {}))


def weight_average(student: nn.Module, decay: float) -> Optional[AveragedModel]:
    """An exponential moving average of the student's parameters (torch's AveragedModel, `decay` per step;
    update_parameters(student) after each step), or None for decay 0. Its `.module` is the network a run
    measures and writes.

    Why: with batches of 8 views and Adam, the last step's weights carry that step's noise; an average over the
    last ~1 / (1 - decay) steps sits nearer the middle of where the run has been (ultralytics' ModelEMA, SWA).
    Made before any hook is put on the student: the copy would carry it."""
    if not decay:
        return None
    average = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(float(decay)))
    average.module.eval()
    return average


class QuantDrop:
    """QDrop (Wei et al., ICLR 2022) while training: each dual-error leaky unit passes its float output (plain
    leaky, neither error) at a random share `p` of its elements and the dual-error output elsewhere.

    Why: with a few hundred training images the student learns to pay back the quantization error of those
    images' activations rather than in general; seeing the error at a random half of the positions, the
    network has to work for any mix of exact and quantized inputs, a flatter fit that carries over to new
    images (QDrop's finding for post-training quantization from 1024 images). Forward hooks, removed by
    `remove()`; steps with the errors off (set_levels(model, None)) pass through unchanged."""

    def __init__(self, acts: Sequence[nn.Module], p: float):
        self.p, self.active = float(p), True  # active: False while held-out images are scored
        self.hooks = [act.register_forward_hook(self._hook) for act in acts] if self.p > 0 else []

    def _hook(self, module, inputs, out):
        if module.settings.is_relu or not self.active:
            return None
        exact = F.leaky_relu(inputs[0], module.negative_slope)
        return torch.where(torch.rand_like(out) < self.p, exact, out)

    def remove(self):
        for h in self.hooks:
            h.remove()
