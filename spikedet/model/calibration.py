"""Calibration observers: from activations seen over calibration batches, a scale (threshold) per channel or
per layer, for the dual-error activation's initial lambda and for the converter's normalization.

PercentileObserver: each batch contributes its own percentile per channel (and over the whole layer), and
batches are averaged; at q = 100 the maximum is kept instead, since p100 means the largest activation seen.
Memory stays at one batch of activations (peers that keep all activations need tens of GB).

LeastErrorObserver: the threshold whose count function after T steps (clip and quantization to T levels:
the burst neuron's, i.e. the dual-error unit's) has the least squared error against the activations. At a
few steps it sits far below a high percentile (about half the maximum at T = 8 on yolov3-tiny): a high
threshold spends the few levels on rare large values and rounds most activity to zero. It keeps a random
sample of each channel's activations (a few thousand per image).
"""
from typing import Optional, Sequence

import torch


def percentile(rows: torch.Tensor, q: float) -> torch.Tensor:
    """q-th percentile of each row (kthvalue: unlike torch.quantile it has no input-size limit)."""
    n = rows.shape[1]
    k = min(max(int(round(q / 100.0 * n)), 1), n)
    return rows.kthvalue(k, dim=1).values


class PercentileObserver:
    """Per-channel and per-layer q-th percentile of (N, C, H, W) activations, over the batches seen."""

    def __init__(self, q: float):
        self.q, self.batches = float(q), 0
        self.source = f"p{self.q:g} of activations"
        self.per_channel: Optional[torch.Tensor] = None
        self.per_layer: Optional[torch.Tensor] = None

    @torch.no_grad()
    def update(self, x: torch.Tensor):
        rows = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)
        self.per_channel = self._merge(self.per_channel, percentile(rows, self.q))
        self.per_layer = self._merge(self.per_layer, percentile(rows.reshape(1, -1), self.q))
        self.batches += 1

    def _merge(self, previous, current):
        if previous is None:
            return current
        if self.q >= 100:
            return torch.maximum(previous, current)
        return (previous * self.batches + current) / (self.batches + 1)

    def scale(self, granularity: str) -> torch.Tensor:
        return self.per_channel if granularity == "channel" else self.per_layer


def count_error(z: torch.Tensor, lam: torch.Tensor, levels: int, negative_step: float = 1.0) -> torch.Tensor:
    """Mean squared error per row of the signed dual-error unit (activation.dual_error: the net count of a burst
    neuron after L steps, leaky units' negative counts included, in steps of negative_step * lam / L; ReLU
    outputs never reach below zero) against z."""
    from .activation import dual_error  # activation imports this module for PercentileObserver

    return (dual_error(z, lam, levels, signed=True, negative_step=negative_step) - z).pow(2).mean(1)


def least_error_scale(rows: torch.Tensor, levels: Sequence[int], grid: int = 96,
                      negative_step: float = 1.0) -> torch.Tensor:
    """Per row of (R, N) activations, the threshold among `grid` fractions of the row's largest magnitude with
    the least count_error summed over `levels`."""
    peak = rows.abs().max(1).values.clamp(min=1e-3)[:, None]
    fractions = torch.linspace(1.0 / grid, 1.0, grid)
    errors = torch.stack([sum(count_error(rows, peak * f, int(L), negative_step) for L in levels)
                          for f in fractions])
    return peak[:, 0] * fractions[errors.argmin(0)]


class LeastErrorObserver:
    """Per-channel and per-layer thresholds with the least count_error at `levels`, from a random sample of
    `samples` activations per channel and image (seeded: the same images give the same scales); negative_step:
    count_error's, for leaky units with fine negative events."""

    def __init__(self, levels: Sequence[int], samples: int = 2048, seed: int = 0, negative_step: float = 1.0):
        self.levels, self.samples = [int(L) for L in levels], int(samples)
        self.negative_step = float(negative_step)
        self.generator = torch.Generator().manual_seed(seed)
        self.kept = []
        self.source = f"least count error at T = {', '.join(map(str, self.levels))}"
        self._scales = {}

    @torch.no_grad()
    def update(self, x: torch.Tensor):
        rows = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)
        count = min(rows.shape[1], self.samples * x.shape[0])
        self.kept.append(rows[:, torch.randint(0, rows.shape[1], (count,), generator=self.generator)])
        self._scales = {}

    def scale(self, granularity: str) -> torch.Tensor:
        if granularity not in self._scales:
            rows = torch.cat(self.kept, 1)
            self._scales[granularity] = least_error_scale(rows if granularity == "channel" else rows.reshape(1, -1),
                                                          self.levels, negative_step=self.negative_step)
        return self._scales[granularity]
