"""Integrate-and-fire neurons, simulated a chunk of time steps at a time.

A chunk is either a `Static` input (the same current at every step: the image under constant-current
coding) or a tensor shaped (t, B, C, H, W) holding t consecutive steps. State (membrane potentials, spike
counts) lives in the module as registered memories, carried from one chunk to the next until `reset()`, as
in SpikingJelly's multi-step mode, so memory is bounded by the chunk length, not by T.
"""
import functools
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import CHOICES

SPIKE_MODES = CHOICES["spikes"]
RESET_MODES = CHOICES["reset"]


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


class IFNeuron(MemoryModule):
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
        if reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {reset!r}")
        if spikes not in SPIKE_MODES:
            raise ValueError(f"spikes must be one of {SPIKE_MODES}, got {spikes!r}")
        if (spikes != "binary" or negative_slope is not None) and reset != "subtract":
            raise ValueError("signed, burst and leaky neurons need reset by subtraction")
        if negative_slope is not None and not (0 < negative_slope < 1 and spikes != "signed"):
            raise ValueError("leaky neurons need 0 < negative_slope < 1 and binary (Spiking-YOLO's imbalanced "
                             "threshold) or burst events")
        self.v_init, self.reset_mode, self.spikes = float(v_init), reset, spikes
        self.negative_slope = negative_slope
        self.register_memory("v", None)  # membrane potential, created at the first chunk's shape
        self.register_memory("net", None)  # net spike count so far
        self.register_memory("steps", 0)
        self.register_memory("constant_input", True)  # every chunk so far was a Static current

    def extra_repr(self):
        return (f"v_init={self.v_init}, reset={self.reset_mode}, spikes={self.spikes}, "
                f"negative_slope={self.negative_slope}")

    def forward(self, current) -> torch.Tensor:
        static = isinstance(current, Static)
        steps = current.steps if static else current.shape[0]
        if self.v is None:
            first = current.x if static else current[0]
            self.v, self.net = torch.full_like(first, self.v_init), torch.zeros_like(first)
        self.constant_input = self.constant_input and static
        if self.spikes == "burst":
            return self._burst(current, steps)
        if self.constant_input and self.reset_mode == "subtract" and self.negative_slope is None:
            return self._burst(current, steps)  # constant input: binary and signed counts equal the burst's
        return self._step_loop(current, steps)

    def _step_loop(self, current, steps: int) -> torch.Tensor:
        """Step by step, updating the state in place and writing each step's spikes straight into the output.
        Large layers take the fused step (one pass over memory per step) where torch.compile works here."""
        static = isinstance(current, Static)
        out = torch.empty((steps, *self.v.shape), dtype=self.v.dtype, device=self.v.device)
        v = self.v  # the neuron's own tensor (created here or by _burst), updated in place
        signed = self.spikes == "signed"
        net = self.net.clone() if signed else None  # signed spikes need the count so far at every step
        options = self.step_options()
        step = fused_step(options, v) if v.numel() >= FUSED_MIN_NUMEL else None
        if step is None:
            negative = torch.empty_like(v) if self.negative_slope is not None else None
            step = functools.partial(eager_step, negative=negative, **options)
        for k in range(steps):
            step(v, current.x if static else current[k], out[k], net)
        self.v, self.steps = v, self.steps + steps
        self.net = net if signed else self.net + out.sum(0)
        return out

    def monotone_in_constant_current(self) -> bool:
        """Whether, fed one constant current since reset, the count after every step is a non-decreasing
        function of that current (the burst closed form, t * x then burst_count): then the max of several
        neurons' counts is the count of the neuron with the largest current (layers.SpikingConv.fire_pooled)."""
        return self.constant_input and (self.spikes == "burst" or (
            self.reset_mode == "subtract" and self.negative_slope is None))

    def step_options(self) -> dict:
        slope = self.negative_slope
        return dict(signed=self.spikes == "signed", reset_zero=self.reset_mode == "zero",
                    threshold=None if slope is None else -1.0 / slope,
                    give_back=None if slope is None else give_back(slope))

    def _burst(self, current, steps: int) -> torch.Tensor:
        """Burst events in closed form: the net count after step t is the quantized activation of the input
        summed so far, so a whole chunk is one cumulative sum, with no loop over steps.

        It is also the count of binary and signed neurons while the input has been one constant since reset
        (then v never goes below its start, no spike is taken back and none would be above 1 per step).
        """
        like = current.x if isinstance(current, Static) else current[0]
        t = torch.arange(self.steps + 1, self.steps + steps + 1, dtype=like.dtype, device=like.device)
        t = t.view(-1, *([1] * like.dim()))
        if isinstance(current, Static) and self.constant_input:
            total = t * current.x  # input summed since reset, as the closed form computes it: monotone in x
        elif isinstance(current, Static):
            total = (self.v + self.net - self.v_init) + (t - self.steps) * current.x
        else:
            total = (self.v + self.net - self.v_init) + current.cumsum(0)
        counts = self.burst_count(total, t)
        out = torch.diff(counts, dim=0, prepend=self.net.unsqueeze(0))
        self.steps += steps
        self.net = counts[-1]
        self.v = self.v_init + total[-1] - self.net
        return out

    def burst_count(self, total: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A burst neuron's net count after t steps whose input summed to `total`: the quantized activation."""
        if self.negative_slope is None:
            return torch.minimum(torch.floor(total + self.v_init).clamp(min=0), t)
        leaky = torch.where(total >= 0, total, self.negative_slope * total)
        return torch.maximum(torch.minimum(torch.floor(leaky + self.v_init), t), -t)

    def counts(self, total: torch.Tensor, steps: int) -> torch.Tensor:
        """The closed form (closed_form.py): burst_count after `steps` steps, computed in place in `total`
        (the same values: leaky_relu is the where() above, clamp the minimum and maximum), no state."""
        if self.spikes != "burst":
            raise ValueError(f"the closed form is exact only for burst neurons, not {self.spikes!r} ones")
        if self.negative_slope is None:
            return total.add_(self.v_init).floor_().clamp_(0, steps)
        return F.leaky_relu(total, self.negative_slope, inplace=True).add_(self.v_init).floor_().clamp_(-steps, steps)


# ----- one neuron step: eager (in place) and fused
def eager_step(v, x, s, net, signed: bool, reset_zero: bool, threshold, give_back, negative=None):
    """One IF step in place: v += x, spikes into s (the same float operations, in the same order, as
    v = v + x; s = v >= 1; v = v - s, with each intermediate written over the last)."""
    v.add_(x)
    torch.ge(v, 1.0, out=s)
    if signed:  # take a spike back where v < 0 and the neuron has one to take back
        s.sub_(((v < 0) & (net > 0)).to(v.dtype))
        net.add_(s)
    if threshold is not None:  # leaky: a +1 spike takes 1 from v, a -1 spike (v <= -1/alpha) gives 1/alpha back
        torch.le(v, threshold, out=negative)
        v.sub_(s).add_(negative, alpha=give_back)
        s.sub_(negative)
    elif reset_zero:
        v.mul_(1.0 - s)
    else:
        v.sub_(s)


def fused_if_step(v, x, s, net, signed: bool, reset_zero: bool, threshold, give_back):
    """eager_step written functionally for torch.compile: one kernel, one pass over memory."""
    v_new = v + x
    spike = (v_new >= 1.0).to(v.dtype)
    if signed:
        spike = spike - ((v_new < 0) & (net > 0)).to(v.dtype)
        net.copy_(net + spike)
    if threshold is not None:
        negative = (v_new <= threshold).to(v.dtype)
        v.copy_(v_new - spike + negative * give_back)
        spike = spike - negative
    elif reset_zero:
        v.copy_(v_new * (1.0 - spike))
    else:
        v.copy_(v_new - spike)
    s.copy_(spike)


def give_back(slope: float) -> float:
    """1/alpha as the float32 division computes it: `negative / alpha` for negative = 1, so adding it (exactly,
    times 0 or 1) equals the division."""
    return float(torch.div(torch.ones(64), slope)[0])


# The fused step (torch.compile, inductor) for layers of at least FUSED_MIN_NUMEL neurons per step: small ones
# gain little and the test suite pays no compile time. Each kind of step is compiled at its first use and
# checked against eager_step on a probe; where compiling fails (no C++ compiler, ...) or the probe differs,
# the eager step is used for good. SPIKEDET_FUSED=0 turns fusion off.
FUSED_MIN_NUMEL = 1 << 18
_fused = {"disabled": os.environ.get("SPIKEDET_FUSED", "1") == "0", "compiled": None, "checked": {}}


def fused_step(options: dict, like: torch.Tensor):
    """The compiled step for these options (bound to them), or None where fusion is off or unavailable."""
    key = tuple(sorted(options.items())) + (like.dtype, like.device.type, like.dim())
    if _fused["disabled"] or not hasattr(torch, "compile"):
        return None
    if key not in _fused["checked"]:
        try:
            _fused["compiled"] = _fused["compiled"] or torch.compile(fused_if_step, dynamic=True)
            step = functools.partial(_fused["compiled"], **options)
            _fused["checked"][key] = _probe(step, options, like)
        except Exception as e:  # noqa: BLE001 -- any failure to compile means: no fusion here
            _fused["disabled"] = True
            warnings.warn(f"fused neuron step unavailable ({type(e).__name__}: {str(e)[:200]}); "
                          "using the eager step")
            return None
        if not _fused["checked"][key]:
            warnings.warn("the fused neuron step differs from the eager step here; using the eager step")
    return functools.partial(_fused["compiled"], **options) if _fused["checked"][key] else None


def _probe(step, options: dict, like: torch.Tensor) -> bool:
    """Two steps on random currents (both spike kinds, boundaries included): fused == eager, bit for bit."""
    g = torch.Generator().manual_seed(0)
    shape = (2, 3, 16, 32)[-like.dim():] if like.dim() <= 4 else (2, 3, 16, 32) + (2,) * (like.dim() - 4)
    x = (torch.randn((2, *shape), generator=g) * 8).round(decimals=1).to(like.dtype).to(like.device)
    states = []
    for fn in (step, functools.partial(eager_step, negative=torch.empty_like(x[0]), **options)):
        v, net, out = torch.full_like(x[0], 0.5), torch.zeros_like(x[0]), torch.empty_like(x)
        for k in range(len(x)):
            fn(v, x[k], out[k], net)
        states.append((v, net, out))
    return all(torch.equal(a, b) for a, b in zip(*states))
