"""Running percentiles of activations over calibration batches: one observer for the dual-error
activation's initial lambda and for the converter's normalization scales.

Each batch contributes its own percentile per channel (and over the whole layer), and batches are
averaged; at q = 100 the maximum is kept instead, since p100 means the largest activation seen. Memory
stays at one batch of activations (peers that keep all activations need tens of GB).
"""
from typing import Optional

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
