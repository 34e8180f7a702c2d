"""The layers of a converted network: spiking convolutions, integrating outputs, the spike max-pool, and
stateless per-step ops. Each takes and returns a chunk (see neurons.py).

Weights are stored normalized (Diehl et al. 2015; channel-wise as in Spiking-YOLO, Kim et al. 2020): each
spiking layer's thresholds are 1 and its spikes are unit events, so the network can go to hardware with
fixed thresholds.

Each layer also takes closed_form.Counts (the counts after T steps, for burst networks) and returns the
counts after T steps, without touching its state.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .closed_form import Counts, summed_current
from .neurons import MemoryModule, Neuron, Static, apply_per_step, cumsum_steps, fold_time, unfold_time


@dataclass
class Pooled:
    """Spikes of a SpikingConv that max-pooled its current before firing (fire_pooled): the SpikeMaxPool
    reading them passes them on."""

    spikes: torch.Tensor


class SpikingConv(nn.Module):
    """A convolution (batch-norm folded, weights normalized) driving IF neurons."""

    def __init__(self, conv: nn.Conv2d, neuron: Neuron):
        super().__init__()
        self.conv, self.neuron = conv, neuron
        self.ann_share = 1.0  # this layer's MACs in the ANN it converts, per MAC here (population.py: 1 / k)

    def forward(self, x):
        if isinstance(x, Counts):
            return Counts(self.neuron.counts(summed_current(self.conv, x), x.steps), x.steps)
        return self.neuron(apply_per_step(self.conv, x))

    def fire_pooled(self, x, pool: "SpikeMaxPool"):
        """This layer followed by `pool`, for a constant input current (the image): where the neurons' counts
        are monotone in a constant current, the pooled count (the max of a window's counts) is the count of
        the window's largest current, so the current is pooled first and only the pooled neurons fire: the
        same spikes out of the pool, for a quarter of the neurons (2x2 windows). The neurons then hold the
        pooled shape, so a spike monitor must not watch this (the engine takes this path only unobserved).
        Returns Pooled spikes, or None where it does not apply."""
        if not (isinstance(x, Static) and self.neuron.monotone_in_constant_current()):
            return None
        current = apply_per_step(self.conv, x)
        return Pooled(self.neuron(Static(pool.pool(current.x), current.steps)))


class Integrator(MemoryModule):
    """Non-spiking output convolution: accumulates its input current; the read-out is the mean per step.

    Returns the running sum after every step of the chunk, so any-time read-outs at any step are free.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.register_memory("total", None)

    def forward(self, x) -> torch.Tensor:
        if isinstance(x, Counts):  # the running sum after x.steps steps
            return Counts(summed_current(self.conv, x), x.steps)
        current = apply_per_step(self.conv, x)
        if isinstance(current, Static):
            current = current.x.unsqueeze(0).expand(current.steps, *current.x.shape)
        running = current.cumsum(0)
        if self.total is not None:
            running = running + self.total
        self.total = running[-1]
        return running


class SpikeMaxPool(MemoryModule):
    """Max-pooling of spikes gated by spike counts (Rueckauer et al. 2017, sec. 2.4; sinabs' count-gated pool).

    Each window passes, at each step, the spike of the input neuron with the highest spike count so far,
    where a neuron that merely draws level with the current leader does not take the lead. That is the
    same as emitting a spike exactly when the window's highest count rises, so the output count equals
    the maximum input count after every step: the max-pool of the rates, with no overcounting on ties.
    (A plain max of spikes per step passes any neuron's spike and overestimates.)
    """

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool.kernel_size, pool.stride, pool.padding
        self.register_memory("counts", None)  # each input neuron's spike count so far
        self.register_memory("leader_counts", None)  # each window's highest count so far

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def forward(self, x):
        if isinstance(x, Counts):  # the output count is the max input count
            return x.map(self.pool)
        if isinstance(x, Static):
            return Static(self.pool(x.x), x.steps)
        if isinstance(x, Pooled):
            return x.spikes
        counts = cumsum_steps(x)
        if self.counts is not None:
            counts = counts + self.counts
        self.counts = counts[-1]
        pooled = self.pool(fold_time(counts))
        highest = unfold_time(pooled, x.shape[0])
        before = torch.zeros_like(highest[:1]) if self.leader_counts is None else self.leader_counts[None]
        self.leader_counts = highest[-1]
        return torch.diff(highest, dim=0, prepend=before)


class PerStep(nn.Module):
    """A stateless linear op (zero-pad, nearest upsample, average pool, channel slice) applied to every step."""

    def __init__(self, op: nn.Module):
        super().__init__()
        self.op = op

    def forward(self, x):
        if isinstance(x, Counts):
            return x.map(self.op)
        return apply_per_step(self.op, x)


def joint(fn, xs):
    """A linear, bias-free op of several (B, C, H, W) maps applied to chunks, constant currents or counts: once
    to constant currents, to every step of a chunk (a constant input expanded to the chunk's steps), and to
    summed counts as it applies to every step."""
    if isinstance(xs[0], Counts):
        if all(x.constant for x in xs):
            return Counts(fn([x.x for x in xs]), xs[0].steps, constant=True)
        return Counts(fn([x.total() for x in xs]), xs[0].steps)
    if all(isinstance(x, Static) for x in xs):
        return Static(fn([x.x for x in xs]), xs[0].steps)
    steps = next(x.shape[0] for x in xs if not isinstance(x, Static))
    full = [x.x.unsqueeze(0).expand(steps, *x.x.shape) if isinstance(x, Static) else x for x in xs]
    return unfold_time(fn([fold_time(x) for x in full]), steps)


class ConcatChannels(nn.Module):
    """Concatenate feature maps along channels."""

    def forward(self, xs):
        return joint(lambda maps: torch.cat(maps, 1), xs)


class WeightedSum(nn.Module):
    """A residual add of spike trains brought to one scale: the first input's events pass as they are, the
    second's are weighted per channel by its scale over the first's (lambda_b / lambda_a), so the sum, in units
    of lambda_a, is the ANN's a + b. A second input with fewer channels adds to the first's leading channels
    (darknet's partial residuals)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.float().view(-1, 1, 1))

    def add(self, maps):
        a, b = maps
        c = b.shape[1]
        return torch.cat([a[:, :c] + b * self.weight, a[:, c:]], 1) if c < a.shape[1] else a + b * self.weight

    def forward(self, xs):
        return joint(self.add, xs)


class ChannelSlice(nn.Module):
    """Channels [start, stop) of a map (ultralytics' C2f splits its first convolution's output in two)."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def extra_repr(self):
        return f"start={self.start}, stop={self.stop}"

    def forward(self, x):
        return x[:, self.start:self.stop]
