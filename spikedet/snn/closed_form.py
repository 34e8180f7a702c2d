"""The exact closed form of a burst network: each layer's net event count after T steps in one dense pass.

What this is: an exact shortcut for evaluating burst SNNs, not a different model. A burst neuron's net count
after T steps is clip(floor(total input + v_init), 0, T) (leaky: clip(floor(leaky(total) + v_init), -T, T))
whatever the order in which its input arrived (neurons.IFNeuron), and every other layer is a function of
counts too, so the counts after T steps follow layer by layer from the previous layer's counts:

- a spiking convolution's total input is W c + T b (c: its input counts); for the image, a constant current
  x, it is T (W x + b);
- the count-gated spike max-pool's count is the max of its inputs' counts; pads, nearest upsampling, average
  pools and concatenation are linear, so they apply to counts as they apply to every step;
- an integrator's running sum after T steps is W c + T b, and the head decodes it divided by T.

So the output at T costs one dense pass (about one ANN forward), with no loop over steps. It holds for
burst neurons only: binary and signed neurons' counts depend on when their input arrived.

Rounding: the step simulation sums the same real numbers in another order (step by step, chunk by chunk),
so where a neuron's total lands within float rounding of an integer its count may differ by one. With
u = 2^-24 (float32), n = fan_in + 2 T + 8 additions and S = |W| a + T |b| + 1 (a: the input's absolute
event counts), both sums are within n u S of the exact one (the standard summation bound), so counts of a
layer fed the same input counts are equal unless |total + v_init - k| <= 2 n u S for an integer k, and then
differ by one (tests/test_closed_form.py checks this bound layer by layer). A count that differs moves its
downstream totals by a weight, which is what separates the two end to end: on small networks they agree to
float precision; on yolov3-tiny at 416 px about one neuron per layer in millions sits on a boundary, and
single anchors downstream of it move (decoded boxes by up to ~25 px at T = 16). The step simulation differs
from itself by as much when only its chunk length changes (2 vs 3): neither order is the canonical one.
A deep network spreads such a count (issue 21): on a random yolov8-relu at 64 px (272k spiking neurons, 2 CPU
threads) one count at T = 8 and two at T = 13 sit on a boundary (within 3e-6 of an integer in float64, where
the closed form's count is the float64 one) and, through C2f's residual adds and the neck, move 5% / 23% of
the head's outputs beyond 1e-4 relative (by up to 0.25 at T = 13); with those counts taken from the step
simulation, the closed form gives its outputs to 1e-4.
"""
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Counts:
    """A layer's output in the closed form: net event counts after `steps` steps (an integrator: its running
    sum), or, when `constant`, a current that is the same at every step (the image): its total is steps * x.
    """

    x: torch.Tensor
    steps: int
    constant: bool = False

    def map(self, fn) -> "Counts":
        """A linear, bias-free op (pad, upsample, pool) applies to counts as it applies to every step."""
        return Counts(fn(self.x), self.steps, self.constant)

    def total(self) -> torch.Tensor:
        return self.x * self.steps if self.constant else self.x


def summed_current(conv: nn.Conv2d, x: Counts) -> torch.Tensor:
    """A convolution's input current summed over x.steps steps: T (W x + b) for a constant current (as the step
    simulation scales its one computed current), W c + T b for counts (T b as the convolution's bias)."""
    if x.constant:
        return conv(x.x).mul_(x.steps)
    return conv._conv_forward(x.x, conv.weight, None if conv.bias is None else conv.bias * x.steps)


def check_exact(network: nn.Module):
    """The closed form is exact for neurons whose count does not depend on when input arrived (burst ones):
    refuse any other neuron clearly."""
    from ..errors import SpikedetError
    from .neurons import Neuron

    others = sorted({m.kind for m in network.modules() if isinstance(m, Neuron) and not m.exact_count})
    if others:
        raise SpikedetError(f"the closed form is exact only for burst neurons; this network has {', '.join(others)} "
                            "neurons, whose counts depend on when their input arrives: simulate it with "
                            "method='steps'")
