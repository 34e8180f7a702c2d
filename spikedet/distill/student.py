"""The student: a copy of the darknet teacher whose leaky units are dual-error leaky units, lambda per channel
from the teacher's activations."""
import copy
from dataclasses import replace
from typing import List, Sequence

import torch
from torch import nn

from ..errors import SpikedetError
from ..model.activation import DualErrorLeakyReLU, DualErrorReLU, DualErrorSettings, install_leaky_dual_error
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
    observers = observe_activations(model, images, q, batch_size)
    scales = []
    for act in leaky_activations(model):
        lam = observers[act].scale("channel").float()
        scales.append(torch.where(lam > 0, lam, torch.ones_like(lam)))
    return scales


@torch.no_grad()
def mse_scales(model: nn.Module, images: torch.Tensor, levels: Sequence[int], batch_size: int = 8,
               samples: int = 16384, grid: int = 96, seed: int = 0) -> List[torch.Tensor]:
    """Per leaky layer and channel, the lam that minimizes the squared error of the dual-error unit against the
    float activation, summed over `levels`, searched over `grid` fractions of the channel's maximum.

    At a few levels the best threshold is far below a high percentile (about half the maximum at L = 8 on
    yolov3-tiny): a high lam spends the few levels on rare large values and rounds most activity to zero.
    `samples` activations per channel are kept (drawn at random over all images) to bound memory and time.
    """
    acts = leaky_activations(model)
    kept = {act: [] for act in acts}
    generator = torch.Generator().manual_seed(seed)

    def keep(module, _, out):
        flat = out.detach().float().transpose(0, 1).reshape(out.shape[1], -1)
        count = min(flat.shape[1], -(-samples * out.shape[0] // len(images)))
        index = torch.randint(0, flat.shape[1], (count,), generator=generator)
        kept[module].append(flat[:, index])

    hooks = [act.register_forward_hook(keep) for act in acts]
    try:
        for k in range(0, len(images), batch_size):
            model(images[k:k + batch_size].float())
    finally:
        for h in hooks:
            h.remove()
    fractions = torch.linspace(1.0 / grid, 1.0, grid)
    scales = []
    for act in acts:
        z = torch.cat(kept[act], 1)  # (C, N)
        peak = z.abs().max(1).values.clamp(min=1e-3)
        errors = torch.stack([sum(_squared_error(z, peak[:, None] * f, int(L)) for L in levels) for f in fractions])
        scales.append(peak * fractions[errors.argmin(0)])
    return scales


def _squared_error(z: torch.Tensor, lam: torch.Tensor, levels: int) -> torch.Tensor:
    """Mean squared error per channel of the signed dual-error unit (forward only) against z."""
    y = torch.floor(z * levels / lam + 0.5) * (lam / levels)
    return (torch.minimum(torch.maximum(y, -lam), lam) - z).pow(2).mean(1)


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


def set_levels(model: nn.Module, levels: int) -> nn.Module:
    """Make every dual-error unit quantize to `levels` (= the burst SNN at T = levels), keeping each lam; the
    model's recorded settings follow."""
    for m in model.modules():
        if isinstance(m, DualErrorReLU):
            m.settings = replace(m.settings, levels=int(levels))
    if getattr(model, "dual_error", None):
        model.dual_error = {**model.dual_error, "levels": int(levels)}
    return model
