"""Spiking layers, simulated a chunk of time steps at a time.

Every layer takes and returns either a `Static` input (the same current at every step: the image under
constant-current coding) or a tensor shaped (t, B, C, H, W) holding t consecutive steps. State (membrane
potentials, spike counts, accumulators) lives in the modules and carries over from one chunk to the next
until `reset()`, as in SpikingJelly's multi-step mode, so memory is bounded by the chunk length.

Weights are stored normalized (Diehl et al. 2015; channel-wise as in Spiking-YOLO, Kim et al. 2020): each
spiking layer's thresholds are 1 and its spikes are unit events, so the network can go to hardware with
fixed thresholds. `threshold_form()` gives the equivalent unnormalized weights with per-channel thresholds.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Static:
    """A current that is the same at every step; layers compute on it once instead of t times."""

    x: torch.Tensor
    steps: int


def _fold_time(x: torch.Tensor):
    """(t, B, ...) -> (t * B, ...), so a chunk of steps runs as one batched operation."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _unfold_time(y: torch.Tensor, t: int):
    return y.reshape(t, y.shape[0] // t, *y.shape[1:])


class Recorder:
    """Spike statistics cost a pass over every layer's events, so they are only gathered when asked for."""

    record = False

    def count(self, events) -> float:
        return float(events.abs().sum()) if self.record else 0.0


def apply_per_step(fn, x):
    """Apply a stateless spatial op to every step of a chunk (or once to a static current)."""
    if isinstance(x, Static):
        return Static(fn(x.x), x.steps)
    return _unfold_time(fn(_fold_time(x)), x.shape[0])


def _conv(conv: nn.Conv2d, x):
    """Run conv on a chunk or a static current; return the current and the MACs per image it costs."""
    y = apply_per_step(conv, x)
    out = y.x if isinstance(y, Static) else y[0]
    per_output = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    return y, out[0].numel() * per_output


SPIKE_MODES = ("binary", "signed", "burst")


class IFNeuron(Recorder, nn.Module):
    """Integrate-and-fire neurons with unit threshold and reset by subtraction (or to zero).

    Per step: v += I_t, then the neuron emits s_t and v -= s_t. v starts at v_init (0.5, half threshold,
    centres the quantization error; or 0). What s_t may be:

    - "binary": 1 where v >= 1, else 0 (Spiking-YOLO, the dual-error paper). Its count after T steps
      depends on when input arrives: in deep layers early spikes later input does not support, and input
      arriving too late to be answered, are the "unevenness error".
    - "signed": also -1 where v < 0 and the neuron has a spike to take back (signed spikes, Fast-SNN, Hu et
      al. 2023; TerMapping's double threshold, Yu et al. 2020): over-firing is corrected.
    - "burst": s_t = floor(v), an integer event standing for that many spikes (burst / augmented spikes,
      Li & Zeng 2022; AugMapping, Yu et al. 2020), kept so that 0 <= net count <= steps so far. After T
      steps the net count is exactly clip(floor(total input + v_init), 0, T): the dual-error activation
      with L = T, whatever the order in which the input arrived.

    negative_slope = alpha: neurons for leaky ReLU. "binary" is then the signed neuron of Spiking-YOLO with
    the imbalanced threshold: it also fires -1 when v <= -1/alpha, and v += 1/alpha. "burst" keeps the net
    count at clip(floor(leaky(total input) + v_init), -t, t): the leaky activation quantized to 1/T.
    Synaptic operations count |s_t|: a burst of k costs what k spikes cost.
    """

    def __init__(self, v_init: float = 0.5, reset: str = "subtract", spikes: str = "binary",
                 negative_slope: float = None):
        super().__init__()
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', got {reset!r}")
        if spikes not in SPIKE_MODES:
            raise ValueError(f"spikes must be one of {SPIKE_MODES}, got {spikes!r}")
        if (spikes != "binary" or negative_slope is not None) and reset != "subtract":
            raise ValueError("signed, burst and leaky neurons need reset by subtraction")
        if negative_slope is not None and not (0 < negative_slope < 1 and spikes != "signed"):
            raise ValueError("leaky neurons need 0 < negative_slope < 1 and binary (Spiking-YOLO's imbalanced "
                             "threshold) or burst events")
        self.v_init, self.reset_mode, self.spikes = float(v_init), reset, spikes
        self.negative_slope = negative_slope
        self.reset()

    def reset(self):
        self.v, self.net, self.steps, self.spike_count, self.neurons = None, None, 0, 0.0, 0

    def extra_repr(self):
        return (f"v_init={self.v_init}, reset={self.reset_mode}, spikes={self.spikes}, "
                f"negative_slope={self.negative_slope}")

    def forward(self, current) -> torch.Tensor:
        static = isinstance(current, Static)
        steps = current.steps if static else current.shape[0]
        first = current.x if static else current[0]
        if self.v is None:
            self.v, self.net = torch.full_like(first, self.v_init), torch.zeros_like(first)
            self.neurons = first[0].numel()
            self.constant_input = static
        self.constant_input = self.constant_input and static
        if self.spikes == "burst":
            out = self._burst(current, steps)
        elif self.constant_input and self.reset_mode == "subtract" and self.negative_slope is None:
            out = self._burst(current, steps)  # constant input: binary and signed counts equal the burst's
        else:
            out = self._step_loop(current, steps)
        self.spike_count += self.count(out)
        return out

    def _step_loop(self, current, steps: int) -> torch.Tensor:
        static = isinstance(current, Static)
        out = torch.empty((steps, *self.v.shape), dtype=self.v.dtype, device=self.v.device)
        v, net = self.v, self.net
        for k in range(steps):
            v = v + (current.x if static else current[k])
            s = (v >= 1.0).to(v.dtype)
            if self.spikes == "signed":
                s = s - ((v < 0) & (net > 0)).to(v.dtype)
            if self.negative_slope is not None:  # a +1 spike takes 1 from v, a -1 spike gives 1/alpha back
                negative = (v <= -1.0 / self.negative_slope).to(v.dtype)
                v = v - s + negative / self.negative_slope
                s = s - negative
            elif self.reset_mode == "subtract":
                v = v - s
            else:
                v = v * (1.0 - s)
            net = net + s
            out[k] = s
        self.v, self.net, self.steps = v, net, self.steps + steps
        return out

    def _burst(self, current, steps: int) -> torch.Tensor:
        """Burst events in closed form: the net count after step t is the quantized activation of the input
        summed so far, so a whole chunk is one cumulative sum, with no loop over steps.

        It is also the count of binary and signed neurons while the input has been one constant since reset
        (then v never goes below its start, no spike is taken back and none would be above 1 per step).
        """
        if isinstance(current, Static):
            k = torch.arange(1, steps + 1, dtype=current.x.dtype, device=current.x.device)
            increments = k.view(-1, *([1] * current.x.dim())) * current.x
        else:
            increments = current.cumsum(0)
        total = (self.v + self.net - self.v_init) + increments  # input summed since reset, per step
        t = torch.arange(self.steps + 1, self.steps + steps + 1, dtype=total.dtype, device=total.device)
        t = t.view(-1, *([1] * (total.dim() - 1)))
        if self.negative_slope is None:
            counts = torch.minimum(torch.floor(total + self.v_init).clamp(min=0), t)
        else:
            leaky = torch.where(total >= 0, total, self.negative_slope * total)
            counts = torch.maximum(torch.minimum(torch.floor(leaky + self.v_init), t), -t)
        out = torch.diff(counts, dim=0, prepend=self.net.unsqueeze(0))
        self.steps += steps
        self.net = counts[-1]
        self.v = self.v_init + total[-1] - self.net
        return out


class SpikingConv(Recorder, nn.Module):
    """A convolution (batch-norm folded, weights normalized) driving IF neurons."""

    def __init__(self, conv: nn.Conv2d, neuron: IFNeuron):
        super().__init__()
        self.conv, self.neuron = conv, neuron
        self.reset()

    def reset(self):
        self.neuron.reset()
        self.input_spikes, self.input_neurons, self.macs = 0.0, 0, 0  # for synaptic-operation counts

    def forward(self, x):
        if not isinstance(x, Static):
            self.input_spikes += self.count(x)
            self.input_neurons = x[0, 0].numel()
        current, self.macs = _conv(self.conv, x)
        return self.neuron(current)


class Integrator(Recorder, nn.Module):
    """Non-spiking output convolution: accumulates its input current; the read-out is the mean per step.

    Returns the running sum after every step of the chunk, so any-time read-outs at any step are free.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.reset()

    def reset(self):
        self.total, self.input_spikes, self.input_neurons, self.macs = None, 0.0, 0, 0

    def forward(self, x) -> torch.Tensor:
        if not isinstance(x, Static):
            self.input_spikes += self.count(x)
            self.input_neurons = x[0, 0].numel()
        current, self.macs = _conv(self.conv, x)
        if isinstance(current, Static):
            current = current.x.unsqueeze(0).expand(current.steps, *current.x.shape)
        running = current.cumsum(0)
        if self.total is not None:
            running = running + self.total
        self.total = running[-1]
        return running


class SpikeMaxPool(nn.Module):
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
        self.reset()

    def reset(self):
        self.counts, self.leader_counts = None, None

    def forward(self, x):
        if isinstance(x, Static):
            return Static(F.max_pool2d(x.x, self.kernel_size, self.stride, self.padding), x.steps)
        counts = torch.cumsum(x, 0)
        if self.counts is not None:
            counts = counts + self.counts
        self.counts = counts[-1]
        highest = _unfold_time(F.max_pool2d(_fold_time(counts), self.kernel_size, self.stride, self.padding),
                               x.shape[0])
        before = torch.zeros_like(highest[:1]) if self.leader_counts is None else self.leader_counts[None]
        self.leader_counts = highest[-1]
        return torch.diff(highest, dim=0, prepend=before)


class PerStep(nn.Module):
    """A stateless linear spatial op (zero-pad, nearest upsample, average pool) applied to every step."""

    def __init__(self, op: nn.Module):
        super().__init__()
        self.op = op

    def forward(self, x):
        return apply_per_step(self.op, x)


class ConcatChannels(nn.Module):
    """Concatenate feature maps along channels (dim 2 of a (t, B, C, H, W) chunk)."""

    def forward(self, xs):
        if all(isinstance(x, Static) for x in xs):
            return Static(torch.cat([x.x for x in xs], 1), xs[0].steps)
        steps = next(x.shape[0] for x in xs if not isinstance(x, Static))
        full = [x.x.unsqueeze(0).expand(steps, *x.x.shape) if isinstance(x, Static) else x for x in xs]
        return torch.cat(full, 2)


def reset_net(module: nn.Module):
    """Reset the state of every spiking layer (call between images)."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset"):
            m.reset()
