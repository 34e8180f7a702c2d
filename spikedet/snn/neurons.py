"""Integrate-and-fire neuron kinds, simulated a chunk of time steps at a time.

A chunk is either a `Static` input (the same current at every step: the image under constant-current
coding) or a tensor shaped (t, B, C, H, W) holding t consecutive steps. State (membrane potentials, spike
counts) lives in the module as registered memories, carried from one chunk to the next until `reset()`, as
in SpikingJelly's multi-step mode, so memory is bounded by the chunk length, not by T.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Type

import torch
import torch.nn.functional as F
from torch import nn

from . import fused


@dataclass
class Static:
    """A current that is the same at every step; layers compute on it once instead of t times."""

    x: torch.Tensor
    steps: int


def fold_time(x: torch.Tensor) -> torch.Tensor:
    """(t, B, ...) -> (t * B, ...), so a chunk of steps runs as one batched operation."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold_time(y: torch.Tensor, t: int) -> torch.Tensor:
    return y.reshape(t, y.shape[0] // t, *y.shape[1:])


class _StepSums(torch.autograd.Function):
    """x.cumsum(0) as T - 1 in-place additions of whole steps (backward: the same, reversed). On the CPU,
    torch.cumsum along the outermost dimension of a (T, B, C, H, W) chunk runs several times slower than T
    vectorized adds; the count-gated pools spent a fifth of a binary distillation step in it
    (tools/benchmark_distill.py --binary-steps 32)."""

    @staticmethod
    def forward(ctx, x):
        out = x.clone()
        for t in range(1, out.shape[0]):
            out[t] += out[t - 1]
        return out

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone()
        for t in range(g.shape[0] - 2, -1, -1):
            g[t] += g[t + 1]
        return g


def cumsum_steps(x: torch.Tensor) -> torch.Tensor:
    """The running sum over the steps (dim 0) of a chunk: x.cumsum(0), exactly so for integer counts."""
    return _StepSums.apply(x)


def apply_per_step(fn, x):
    """Apply a stateless spatial op to every step of a chunk (or once to a static current)."""
    if isinstance(x, Static):
        return Static(fn(x.x), x.steps)
    return unfold_time(fn(fold_time(x)), x.shape[0])


class MemoryModule(nn.Module):
    """A module with state across steps: each memory is registered with its value at reset (SpikingJelly's
    register_memory), and reset() restores them all, so no state is created anywhere else."""

    def __init__(self):
        super().__init__()
        self._memories = {}

    def register_memory(self, name: str, initial):
        self._memories[name] = initial
        setattr(self, name, initial)

    def reset(self):
        for name, initial in self._memories.items():
            setattr(self, name, initial)


def reset_net(module: nn.Module):
    """Reset the state of every stateful layer (call between images)."""
    for m in module.modules():
        if isinstance(m, MemoryModule):
            m.reset()


NEURON_KINDS: Dict[str, Type["Neuron"]] = {}  # kind name (the `spikes` option, stored in SNN files) -> class


def neuron_kinds() -> tuple:
    return tuple(NEURON_KINDS)


def make_neuron(kind: str, v_init: float = 0.5, reset: str = "subtract",
                negative_slope: Optional[float] = None, fine_negative: bool = False) -> "Neuron":
    """The neuron of a kind by its name (a conversion option), or ValueError naming the known kinds."""
    if kind not in NEURON_KINDS:
        raise ValueError(f"spikes must be one of {neuron_kinds()}, got {kind!r}")
    return NEURON_KINDS[kind](v_init, reset, negative_slope, fine_negative)


class Neuron(MemoryModule):
    """An integrate-and-fire neuron with unit threshold (weights are normalized, normalize.py): per step it
    charges (v += I_t), fires an event s_t and resets (v -= s_t), with v starting at v_init (0.5, half the
    threshold, centres the quantization error; or 0). A kind is a subclass: its three steps, and what the
    engine, the closed form, the converter and the exporters ask of it (the class attributes below), so no
    code outside this module compares kind names. Subclassing registers the kind under `kind`.

    negative_slope = alpha makes a neuron for leaky ReLU units (kinds with leaky_ok only). Synaptic operations
    count |s_t|: a burst of k costs what k spikes cost. fine_negative (kinds with fine_ok only): its negative
    events are worth alpha of a positive one (`negative_worth`), so below zero it counts its input itself, not
    alpha times it (DualErrorSettings.fine_negative).
    """

    kind: str = ""  # the name of the `spikes` conversion option
    leaky_ok = False  # has a variant for leaky ReLU units (negative_slope)
    fine_ok = False  # its leaky variant may emit graded negative events worth alpha (fine_negative)
    resets = ("subtract",)  # reset modes it supports: "subtract" (the residue is kept) or "zero"
    multi_events = False  # may emit more than one spike per step
    negative_events = False  # may emit negative events (leaky neurons always do)
    exact_count = False  # count() is its net count after T steps whatever the order its input arrived in
    counts_in_step = False  # fire() reads and updates the net count at every step

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            NEURON_KINDS[cls.kind] = cls

    def __init__(self, v_init: float = 0.5, reset: str = "subtract", negative_slope: Optional[float] = None,
                 fine_negative: bool = False):
        super().__init__()
        if reset not in self.resets:
            raise ValueError(f"{self.kind} neurons reset by {' or '.join(self.resets)}, not {reset!r}")
        if negative_slope is not None and not (self.leaky_ok and 0 < negative_slope < 1 and reset == "subtract"):
            raise ValueError(f"leaky neurons need 0 < negative_slope < 1, reset by subtraction and a kind with a "
                             f"leaky variant ({', '.join(k for k, c in NEURON_KINDS.items() if c.leaky_ok)}), "
                             f"got {self.kind} with {negative_slope!r}")
        if fine_negative and (negative_slope is None or not self.fine_ok):
            raise ValueError(f"fine negative events are for leaky neurons of a kind with graded events "
                             f"({', '.join(k for k, c in NEURON_KINDS.items() if c.fine_ok)}), got {self.kind} with "
                             f"negative_slope {negative_slope!r}")
        self.v_init, self.reset_mode, self.negative_slope = float(v_init), reset, negative_slope
        self.negative_worth = float(negative_slope) if fine_negative else 1.0  # one negative event, in positive ones
        self.negative_events = self.negative_events or negative_slope is not None
        # per-neuron initial potentials (C, 1, 1) in place of v_init: a first-layer population (population.py);
        # derived from the conversion options, so not saved
        self.register_buffer("staggered", None, persistent=False)
        self.register_memory("v", None)  # membrane potential, created at the first chunk's shape
        self.register_memory("net", None)  # net spike count so far
        self.register_memory("steps", 0)
        self.register_memory("constant_input", True)  # every chunk so far was a Static current

    def extra_repr(self):
        start = "staggered" if self.staggered is not None else self.v_init
        fine = f", negative_worth={self.negative_worth}" if self.negative_worth != 1.0 else ""
        return f"v_init={start}, reset={self.reset_mode}, negative_slope={self.negative_slope}{fine}"

    def initial_potential(self):
        """v_init, or the population's per-neuron initial potentials (a tensor broadcasting over (N, C, H, W))."""
        return self.v_init if self.staggered is None else self.staggered

    # ----- the step, in place on the state: v (membrane), s (this step's events), net (count so far)
    def step_params(self) -> dict:
        """What the kind's step needs besides the state (constants: the fused step is compiled per value)."""
        return {}

    @staticmethod
    def neuronal_charge(v, x, **params):
        v.add_(x)

    @staticmethod
    def neuronal_fire(v, s, net, **params):
        raise NotImplementedError

    @staticmethod
    def neuronal_reset(v, s, **params):
        v.sub_(s)

    @classmethod
    def step(cls, v, x, s, net, **params):
        cls.neuronal_charge(v, x, **params)
        cls.neuronal_fire(v, s, net, **params)
        cls.neuronal_reset(v, s, **params)

    # ----- closed forms
    def exact_if_constant(self) -> bool:
        """Whether count() is the net count while the input has been one constant current since reset."""
        return self.exact_count

    def count(self, total: torch.Tensor, t) -> torch.Tensor:
        """The quantized activation: clip(floor(total + v_init), 0, t), leaky: clip(floor(leaky(total) +
        v_init), -t, t), fine negative events: c = floor(total + v_init), min(c, t) or max(alpha c, -t) below
        zero. The net count after t steps whose input summed to `total`, where exact (in positive events)."""
        v_init = self.initial_potential()
        if self.negative_slope is None:
            return torch.minimum(torch.floor(total + v_init).clamp(min=0), t)
        if self.negative_worth != 1.0:
            c = torch.floor(total + v_init)
            return torch.where(c < 0, torch.maximum(c * self.negative_worth, -t), torch.minimum(c, t))
        leaky = torch.where(total >= 0, total, self.negative_slope * total)
        return torch.maximum(torch.minimum(torch.floor(leaky + v_init), t), -t)

    def counts(self, total: torch.Tensor, steps: int) -> torch.Tensor:
        """count() after `steps` steps computed in place in `total` (the closed form, closed_form.py: the same
        values; leaky_relu is the where() above, clamp the minimum and maximum), no state."""
        if not self.exact_count:
            raise ValueError(f"the closed form is exact only for neurons whose count does not depend on when their "
                             f"input arrived (burst ones), not for {self.kind} ones")
        v_init = self.initial_potential()
        if self.negative_slope is None:
            return total.add_(v_init).floor_().clamp_(0, steps)
        if self.negative_worth != 1.0:
            c = total.add_(v_init).floor_()
            return torch.where(c < 0, c.mul(self.negative_worth).clamp_(min=-steps), c.clamp_(max=steps))
        return F.leaky_relu(total, self.negative_slope, inplace=True).add_(v_init).floor_().clamp_(-steps, steps)

    def monotone_in_constant_current(self) -> bool:
        """Whether, fed one constant current since reset, the count after every step is a non-decreasing
        function of that current (count() of t * x): then the max of several neurons' counts is the count of
        the neuron with the largest current (layers.SpikingConv.fire_pooled)."""
        return self.constant_input and self.exact_if_constant()

    # ----- a chunk of steps
    def forward(self, current) -> torch.Tensor:
        static = isinstance(current, Static)
        steps = current.steps if static else current.shape[0]
        if self.v is None:
            first = current.x if static else current[0]
            self.v, self.net = torch.zeros_like(first).add_(self.initial_potential()), torch.zeros_like(first)
        self.constant_input = self.constant_input and static
        if self.exact_count or (self.constant_input and self.exact_if_constant()):
            return self._cumulative(current, steps)
        return self._step_loop(current, steps)

    def _step_loop(self, current, steps: int) -> torch.Tensor:
        """Step by step, updating the state in place and writing each step's events straight into the output.
        Large layers take the fused step (one pass over memory per step) where torch.compile works here."""
        static = isinstance(current, Static)
        out = torch.empty((steps, *self.v.shape), dtype=self.v.dtype, device=self.v.device)
        v = self.v  # the neuron's own tensor (created here or by _cumulative), updated in place
        net = self.net.clone() if self.counts_in_step else None
        params = self.step_params()
        step = fused.fused_step(type(self), params, v) if v.numel() >= fused.FUSED_MIN_NUMEL else None
        step = step or (lambda *state: self.step(*state, **params))
        for k in range(steps):
            step(v, current.x if static else current[k], out[k], net)
        self.v, self.steps = v, self.steps + steps
        self.net = net if self.counts_in_step else self.net + out.sum(0)
        return out

    def _cumulative(self, current, steps: int) -> torch.Tensor:
        """Events from count(): the net count after step t is the count of the input summed so far, so a whole
        chunk is one cumulative sum, with no loop over steps (exact_count, or exact_if_constant while the
        input has been one constant since reset)."""
        like = current.x if isinstance(current, Static) else current[0]
        t = torch.arange(self.steps + 1, self.steps + steps + 1, dtype=like.dtype, device=like.device)
        t = t.view(-1, *([1] * like.dim()))
        if isinstance(current, Static) and self.constant_input:
            total = t * current.x  # input summed since reset, as the closed form computes it: monotone in x
        elif isinstance(current, Static):
            total = (self.v + self.net - self.initial_potential()) + (t - self.steps) * current.x
        else:
            total = (self.v + self.net - self.initial_potential()) + current.cumsum(0)
        counts = self.count(total, t)
        out = torch.diff(counts, dim=0, prepend=self.net.unsqueeze(0))
        self.steps += steps
        self.net = counts[-1]
        self.v = self.initial_potential() + total[-1] - self.net
        return out


class BinaryNeuron(Neuron):
    """One unit event where v >= 1 (Spiking-YOLO, the dual-error paper). Its count after T steps depends on
    when input arrives: in deep layers early spikes later input does not support, and input arriving too late
    to be answered, are the "unevenness error". Fed one constant current (the image) with reset by
    subtraction, it fires what the burst neuron fires.

    Leaky (negative_slope = alpha): Spiking-YOLO's imbalanced threshold, also -1 where v <= -1/alpha, and then
    v += 1/alpha.
    """

    kind, leaky_ok, resets = "binary", True, ("subtract", "zero")

    def exact_if_constant(self) -> bool:
        return self.reset_mode == "subtract" and self.negative_slope is None

    def step_params(self) -> dict:
        slope = self.negative_slope
        return dict(reset_zero=self.reset_mode == "zero", threshold=None if slope is None else -1.0 / slope,
                    give_back=None if slope is None else give_back(slope))

    @staticmethod
    def neuronal_fire(v, s, net, threshold=None, **params):
        torch.ge(v, 1.0, out=s)
        if threshold is not None:
            s.sub_((v <= threshold).to(v.dtype))

    @staticmethod
    def neuronal_reset(v, s, reset_zero=False, threshold=None, give_back=None):
        if threshold is not None:  # a +1 event takes 1 from v, a -1 event gives 1/alpha back
            torch.where(s < 0, v + give_back, v - s, out=v)
        elif reset_zero:
            v.mul_(1.0 - s)
        else:
            v.sub_(s)


class SignedNeuron(BinaryNeuron):
    """Also -1 where v < 0 and the neuron has a spike to take back (signed spikes, Fast-SNN, Hu et al. 2023;
    TerMapping's double threshold, Yu et al. 2020): over-firing is corrected."""

    kind, leaky_ok, resets, negative_events, counts_in_step = "signed", False, ("subtract",), True, True

    @staticmethod
    def neuronal_fire(v, s, net, **params):
        torch.ge(v, 1.0, out=s)
        s.sub_(((v < 0) & (net > 0)).to(v.dtype))
        net.add_(s)


class BurstNeuron(Neuron):
    """s_t = the integer event that keeps the net count at count(input summed so far): floor(v) events at
    once, kept within 0 <= net count <= steps so far (burst / augmented spikes, Li & Zeng 2022; AugMapping,
    Yu et al. 2020). After T steps the net count is exactly clip(floor(total input + v_init), 0, T): the
    dual-error activation with L = T, whatever the order in which the input arrived. Leaky: the net count is
    clip(floor(leaky(total input) + v_init), -t, t), the leaky activation quantized to 1/T. Every chunk is one
    cumulative sum of count() (Neuron._cumulative), so it needs no per-step fire."""

    kind, leaky_ok, fine_ok, multi_events, exact_count = "burst", True, True, True, True


def negative_worth(network) -> float:
    """What one negative event is worth in `network`, in positive ones: the alpha its fine-event neurons share, else
    1. ValueError when they have several (an event count needs one: statistics.SpikeMonitor)."""
    worths = {m.negative_worth for m in network.modules() if isinstance(m, Neuron)} - {1.0}
    if len(worths) > 1:
        raise ValueError(f"fine negative events need one slope for every leaky unit, got {sorted(worths)}")
    return worths.pop() if worths else 1.0


def give_back(slope: float) -> float:
    """1/alpha as the float32 division computes it: `negative / alpha` for negative = 1, so adding it (exactly,
    times 0 or 1) equals the division."""
    return float(torch.div(torch.ones(64), slope)[0])
