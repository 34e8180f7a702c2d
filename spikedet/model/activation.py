"""The dual-error surrogate: a ReLU that already makes the two errors an IF neuron will make.

An IF neuron with threshold lambda, reset by subtraction and initial potential lambda/2, fed a constant
current x for L steps, emits exactly clip(floor(x * L / lambda + 0.5), 0, L) spikes. Its output rate times
lambda is therefore

    y = lambda * clip(floor(x * L / lambda + 0.5) / L, 0, 1)

which carries both conversion errors: *clipping* (nothing above lambda survives) and *quantization* (L + 1
levels). Training the ANN through this function (Bu et al., QCFS, ICLR 2022; the dual-error method of Liu
et al., 2023) lets it adapt to the errors before conversion. Each error can be switched off; with both off
the module is a plain ReLU, the baseline of the ablation.

The neuron NIR describes (and chips often build) resets to zero and starts at 0: fed x per step it fires
every k = ceil(lambda / x) steps, floor(L / k) spikes in L, and the residue above threshold is lost at each
spike: a rate of 0.6 lambda fires every other step, as 0.5 does. `reset="zero"` trains through that count,

    y = lambda * floor(L / ceil(lambda / x)) / L    (x > 0; 0 otherwise),

so that the ANN learns the neuron it will become (exact for constant input, the first layer; a rate model
deeper in).
"""
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn

from ..defaults import CHOICES, DEFAULTS
from .calibration import PercentileObserver

GRANULARITIES = CHOICES["granularity"]
LAMBDA_GRADS = CHOICES["lambda_grad"]


@dataclass(frozen=True)
class DualErrorSettings:
    """Everything that defines the activation; recorded in checkpoints so a network can be rebuilt.

    levels: L, the number of time steps the SNN is meant to run (L + 1 output levels).
    granularity: one learned lambda per layer, or one per output channel (matching channel-wise
        normalization at conversion).
    clip / quantize: inject the clipping / the quantization error. Both off = plain ReLU.
    init_percentile: lambda starts at this percentile of the activations seen during calibration.
    reset: the neuron the ANN is trained for: "subtract" (from lambda / 2, the function above) or "zero"
        (from 0, the count of the reset-to-zero neuron; both errors on, or both off; ReLU units).
    lambda_grad: gradient of y w.r.t. lambda inside (0, lambda): the rounding residue (y - x) / lambda
        (as in LSQ step-size learning), or zero. Above lambda it is always 1.
    first_copies: k neurons per channel in the first layer (the one fed the image), with staggered initial
        potentials, that together count k * L levels in L steps (spikedet.snn.population): the first unit
        quantizes to k * L levels, the others to L.
    fine_negative: leaky units' negative events are worth alpha (the slope) of a positive one instead of one
        (burst neurons with graded negative events, Neuron.negative_worth): their negative side quantizes in
        steps of alpha * lambda / L instead of lambda / L, to the same floor -lambda. Without it most of a leaky
        unit's negative values, alpha times the input, round to zero.
    """

    levels: int = 16
    granularity: str = "channel"
    clip: bool = True
    quantize: bool = True
    init_percentile: float = 99.9
    lambda_grad: str = "residue"
    reset: str = "subtract"
    first_copies: int = 1
    fine_negative: bool = False

    def __post_init__(self):
        """Types and ranges checked, as these settings also come from files."""
        levels, percentile = self.levels, self.init_percentile
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= DEFAULTS["max_timesteps"]:
            raise ValueError(f"dual-error levels must be an integer in 1..{DEFAULTS['max_timesteps']}, got {levels!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"dual-error granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.lambda_grad not in LAMBDA_GRADS:
            raise ValueError(f"dual-error lambda_grad must be one of {LAMBDA_GRADS}, got {self.lambda_grad!r}")
        if not all(isinstance(v, bool) for v in (self.clip, self.quantize, self.fine_negative)):
            raise ValueError(f"dual-error clip, quantize and fine_negative must be true or false, got {self.clip!r}, "
                             f"{self.quantize!r}, {self.fine_negative!r}")
        if self.reset not in CHOICES["reset"]:
            raise ValueError(f"dual-error reset must be one of {CHOICES['reset']}, got {self.reset!r}")
        if self.reset == "zero" and self.clip != self.quantize:
            raise ValueError("dual-error reset zero models the neuron's count: clip and quantize on (or both off: "
                             "the float network)")
        copies, most = self.first_copies, DEFAULTS["max_first_copies"]
        if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= most:
            raise ValueError(f"dual-error first_copies must be an integer in 1..{most}, got {copies!r}")
        if (isinstance(percentile, bool) or not isinstance(percentile, (int, float))
                or not 0 < percentile <= 100):  # NaN fails the comparison too
            raise ValueError(f"dual-error init_percentile must be in (0, 100], got {percentile!r}")

    @property
    def is_relu(self) -> bool:
        return not (self.clip or self.quantize)

    @classmethod
    def from_dict(cls, d: dict) -> "DualErrorSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown dual-error settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def dual_error(x: torch.Tensor, lam: torch.Tensor, levels: int, clip: bool = True, quantize: bool = True,
               lambda_grad: str = "residue", signed: bool = False, negative_step: float = 1.0) -> torch.Tensor:
    """y = lambda * clip(floor(x * L / lambda + 0.5) / L, 0, 1), with either error switchable off.

    signed: the clip is to [-1, 1] instead of [0, 1] (for x = leaky_relu(input): the count of a leaky
    neuron with burst events, which fires negative events too). negative_step (signed only): the negative
    side's step as a fraction of lambda / L (alpha for fine negative events, DualErrorSettings.fine_negative).
    lam broadcasts against x (a scalar, or shape (C, 1, 1) for per-channel thresholds).
    """
    return _DualError.apply(x, lam, int(levels), bool(clip), bool(quantize), lambda_grad == "residue",
                            bool(signed), float(negative_step))


def reset_zero_error(x: torch.Tensor, lam: torch.Tensor, levels: int) -> torch.Tensor:
    """y = lambda * floor(L / ceil(lambda / x)) / L for x > 0, else 0: the count of the reset-to-zero neuron.

    Backward: the staircase's mean slope, not 1. Over many steps the neuron's rate r' = 1 / ceil(1 / r) (r =
    x / lambda) runs about r / (1 + r / 2) (ceil(u) is u + 1/2 on average), whose slope 1 / (1 + r / 2)^2
    falls from 1 to 4/9 at r = 1: the gradient tells the network that a larger activation buys less. d y / d
    lambda is LSQ's y / lambda - r * slope inside, 1 above lambda."""
    return _ResetZeroError.apply(x, lam, int(levels))


class _ResetZeroError(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam, levels):
        compute = torch.promote_types(x.dtype, torch.float32)
        xf, lf = x.to(compute), lam.to(compute)
        period = torch.ceil(lf / xf.clamp(min=torch.finfo(compute).tiny))
        y = torch.where(xf > 0, torch.floor(levels / period) * (lf / levels), 0.0)
        ctx.save_for_backward(xf, lf, y)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        xf, lf, y = ctx.saved_tensors
        g = grad_y.to(xf.dtype)
        r = xf / lf
        inside = (xf > 0) & (xf < lf)
        slope = torch.where(inside, 1.0 / (1.0 + r / 2) ** 2, 0.0)
        grad_x = (g * slope).to(grad_y.dtype)
        grad_lam = None
        if ctx.needs_input_grad[1]:
            d = torch.where(inside, y / lf - r * slope, (xf >= lf).to(xf.dtype))
            grad_lam = _sum_to_shape(d * g, lf.shape).to(lf.dtype)
        return grad_x, grad_lam, None


class _DualError(torch.autograd.Function):
    """Forward in float32 or wider (a half-precision floor puts values on the wrong level); straight-through backward.

    d y / d x = 1 inside the clip range (0 < x < lambda, or -lambda < x < lambda when signed), else 0.
    d y / d lambda = 1 where x >= lambda, -1 where x <= -lambda (signed), and (y - x) / lambda inside when
    the residue estimator is on. All three cases are (y - x * inside) / lambda (outside, y = +-lambda or 0), and
    (y - y * inside) / lambda without the residue; lambda is constant over the summed axes, so the division
    comes after the sum (a finer negative step keeps y = lambda * f(x / lambda), so the same holds). Written with
    few passes over the maps: the activation is most of a distillation step's elementwise work
    (tools/benchmark_distill.py).
    """

    @staticmethod
    def forward(ctx, x, lam, levels, clip, quantize, residue_grad, signed, negative_step):
        compute = torch.promote_types(x.dtype, torch.float32)  # never below float32, float64 stays
        xf, lf = x.to(compute), lam.to(compute)
        if quantize and signed and negative_step != 1.0:  # the step is negative_step * lam / L below zero
            step = torch.where(xf < 0, lf * negative_step, lf).div_(levels)
            y = xf.div(step).add_(0.5).floor_().mul_(step)
        elif quantize:  # floor(x * L / lam + 0.5) * (lam / L): the same operations in the same order, in place
            y = (xf * levels).div_(lf).add_(0.5).floor_().mul_(lf / levels)
        else:
            y = xf.clone()
        low = (-lf if clip else None) if signed else torch.zeros_like(lf)
        high = lf if clip else None
        if low is not None or high is not None:
            y.clamp_(min=low, max=high)
        ctx.save_for_backward(xf, lf, y)
        ctx.flags = (clip, quantize, residue_grad, signed)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        xf, lf, y = ctx.saved_tensors
        clip, quantize, residue_grad, signed = ctx.flags
        g = grad_y.to(xf.dtype)
        if clip:
            inside = (xf < lf) & ((xf > -lf) if signed else (xf > 0))
        else:
            inside = None if signed else xf > 0  # None: everywhere
        grad_x = (g if inside is None else torch.where(inside, g, 0.0)).to(grad_y.dtype)
        grad_lam = None
        if ctx.needs_input_grad[1]:
            inner = xf if quantize and residue_grad else y
            d = y - (inner if inside is None else torch.where(inside, inner, 0.0))
            grad_lam = (_sum_to_shape(d.mul_(g), lf.shape) / lf).to(lf.dtype)
        return grad_x, grad_lam, None, None, None, None, None, None


def _sum_to_shape(t: torch.Tensor, shape) -> torch.Tensor:
    """Reduce a broadcast gradient back to the parameter's shape."""
    while t.dim() > len(shape):
        t = t.sum(0)
    for dim, size in enumerate(shape):
        if size == 1 and t.shape[dim] != 1:
            t = t.sum(dim, keepdim=True)
    return t


class DualErrorReLU(nn.Module):
    """Hidden-layer activation with a learned threshold lambda (per layer or per output channel).

    Before training, `calibrate_thresholds` sets lambda from a percentile of the activations it sees.
    `copies` > 1 (the first unit of a network with first_copies, set by mark_first_copies): the unit is run by
    that many neurons per channel, so it quantizes to copies * L levels.
    """

    def __init__(self, channels: int, settings: DualErrorSettings = DualErrorSettings()):
        super().__init__()
        self.settings = settings
        n = channels if settings.granularity == "channel" else 1
        self.lam = nn.Parameter(torch.ones(n), requires_grad=not settings.is_relu)
        self.observer = None  # a PercentileObserver while calibrating
        self.copies = 1

    def extra_repr(self) -> str:
        s = self.settings
        return (f"channels={self.lam.numel()}, L={s.levels}, granularity={s.granularity}, "
                f"clip={s.clip}, quantize={s.quantize}" + (f", copies={self.copies}" if self.copies > 1 else ""))

    @property
    def levels(self) -> int:
        """The levels this unit quantizes to: L, times its neurons per channel."""
        return self.settings.levels * self.copies

    def threshold(self) -> torch.Tensor:
        """lambda shaped to broadcast over (N, C, H, W)."""
        return self.lam.view(-1, 1, 1)

    def positive_threshold(self) -> torch.Tensor:
        """threshold() as the neurons use it: its magnitude, at least 1e-4 (a threshold must stay positive)."""
        return self.threshold().abs().clamp(min=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.update(torch.relu(x))
            with torch.no_grad():
                self.lam.copy_(self.observer.scale(self.settings.granularity).clamp(min=1e-3))
        s = self.settings
        if s.is_relu:
            return torch.relu(x)
        lam = self.positive_threshold()
        if s.reset == "zero":  # both errors on (checked by the settings)
            return reset_zero_error(x, lam, self.levels)
        return dual_error(x, lam, self.levels, s.clip, s.quantize, s.lambda_grad)


def dual_error_modules(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, DualErrorReLU)]


def mark_first_copies(model: nn.Module, copies: int) -> nn.Module:
    """Make the first dual-error unit (the first layer's, fed the image) one of `copies` neurons per channel and
    every other unit one neuron; returns the model."""
    units = dual_error_modules(model)
    for k, unit in enumerate(units):
        unit.copies = int(copies) if k == 0 else 1
    return model


def mark_fine_negative(model: nn.Module, fine: bool) -> nn.Module:
    """Give every leaky dual-error unit of `model` fine negative events (DualErrorSettings.fine_negative) or not;
    returns the model."""
    for unit in dual_error_modules(model):
        if isinstance(unit, DualErrorLeakyReLU):
            unit.settings = replace(unit.settings, fine_negative=bool(fine))
    if isinstance(getattr(model, "dual_error", None), dict):
        model.dual_error = {**model.dual_error, "fine_negative": bool(fine)}
    return model


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, lams) -> None:
    """One optimizer step on `loss`, then every trained threshold kept >= 1e-3: a threshold driven to zero or
    below would make its neuron fire on any input (training through the dual error or through the spikes)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for lam in lams:
            lam.clamp_(min=1e-3)


class calibrate_thresholds:
    """Context manager: inside it, every DualErrorReLU sets its lambda from a running percentile of the
    activations it sees (each layer sees the already-clipped output of the layers before it)."""

    def __init__(self, model: nn.Module):
        self.modules = dual_error_modules(model)

    def __enter__(self):
        for m in self.modules:
            m.observer = PercentileObserver(m.settings.init_percentile)
        return self

    def __exit__(self, *exc):
        for m in self.modules:
            m.observer = None
        return False


class DualErrorLeakyReLU(DualErrorReLU):
    """The dual error for a leaky ReLU unit: lambda * clip(floor(leaky(x) * L / lambda + 0.5) / L, -1, 1),
    exactly the count function of spikedet's leaky neuron with burst events after L steps (net count
    clip(floor(leaky(input) + 1/2), -L, L) in units of lambda / L).

    `negative_slope` is the attribute the converter reads to give the neuron its negative events.
    """

    def __init__(self, channels: int, settings: DualErrorSettings = DualErrorSettings(),
                 negative_slope: float = 0.1):
        if settings.reset != "subtract":
            raise ValueError("leaky units need neurons that reset by subtraction (dual-error reset: subtract)")
        super().__init__(channels, settings)
        self.negative_slope = float(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.leaky_relu(x, self.negative_slope)
        if self.observer is not None:
            self.observer.update(z)
            with torch.no_grad():
                self.lam.copy_(self.observer.scale(self.settings.granularity).clamp(min=1e-3))
        s = self.settings
        if s.is_relu:
            return z
        lam = self.positive_threshold()
        return dual_error(z, lam, self.levels, s.clip, s.quantize, s.lambda_grad, signed=True,
                          negative_step=self.negative_slope if s.fine_negative else 1.0)


def install_leaky_dual_error(model: nn.Module, settings: DualErrorSettings) -> nn.Module:
    """Replace every leaky ReLU after a convolution (a block with .conv and .act, as darknet's) by a
    DualErrorLeakyReLU with its channel count and slope; returns the model (changed in place)."""
    for block in model.modules():
        act = getattr(block, "act", None)
        if isinstance(act, nn.LeakyReLU) and isinstance(getattr(block, "conv", None), nn.Conv2d):
            block.act = DualErrorLeakyReLU(block.conv.out_channels, settings, act.negative_slope)
    model.dual_error = settings.to_dict()
    return mark_first_copies(model, settings.first_copies)
