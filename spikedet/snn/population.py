"""The first layer as a population: k IF neurons per channel whose staggered initial potentials make them count,
together, k * T levels in T steps.

Why: the first layer is fed the image, a constant current u per step, and fed a constant current an IF neuron's
count after T steps is floor(T u + v_init) (burst neurons; binary ones with reset by subtraction, on the positive
side). k neurons with the same weights and initial potentials (j + v_init) / k, j = 0 .. k-1, count together

    sum_j floor(T u + (j + v_init) / k) = floor(k T u + v_init)        (Hermite's identity)

(each neuron's clip at 0 and T is the sum's at 0 and k T), which is the count of one neuron run for k T steps.
Each event then stands for 1/k of the channel's scale, so the layers reading them take the channel's weights
divided by k. That is the dual-error unit at k L levels (DualErrorSettings.first_copies) made exact in T = L
steps, for k times that layer's events. Deeper layers are fed spikes, not a constant, so only the first layer is
a population. The max-pool after it stays exact: every copy's count is monotone in the same current, so the
window's largest current gives each copy's largest count.
"""
import torch
from torch import nn

from ..errors import SpikedetError
from .layers import PerStep, SpikeMaxPool, SpikingConv

# layers between the first layer and the convolutions reading it that act on each channel alone
_PER_CHANNEL = (SpikeMaxPool, PerStep)


def staggered_v_init(channels: int, copies: int, v_init: float) -> torch.Tensor:
    """Initial potentials (channels * copies, 1, 1), channel-major: copy j of every channel starts at
    (j + v_init) / copies."""
    offsets = (torch.arange(copies, dtype=torch.float32) + float(v_init)) / copies
    return offsets.repeat(channels).view(-1, 1, 1)


def make_population(layers, sources, saved, copies: int) -> None:
    """Make the first layer (layers[0], a SpikingConv fed the image) `copies` neurons per channel, in place, and
    the convolutions reading it take each copy's events at 1/copies of the channel's weight. A one-line error
    where its output reaches anything but max-pools, per-step ops and convolutions in a chain."""
    if copies == 1:
        return
    first = layers[0]
    if not isinstance(first, SpikingConv) or sources[0] != -1:
        raise SpikedetError("first_copies needs a network whose first layer is a spiking convolution fed the image")
    conv, neuron = first.conv, first.neuron
    channels = conv.out_channels
    with torch.no_grad():
        first.conv = _repeat_outputs(conv, copies)
    first.ann_share = 1 / copies
    neuron.staggered = staggered_v_init(channels, copies, neuron.v_init).to(first.conv.weight.device)
    for i in range(1, len(layers)):
        if i - 1 in saved or sources[i] != -1:
            raise SpikedetError(f"first_copies: layer {i - 1} (the first layer's output) is read by a routed layer; "
                                "only a chain of max-pools and per-step ops to a convolution can read it")
        layer = layers[i]
        if isinstance(layer, _PER_CHANNEL):
            continue
        if isinstance(layer, SpikingConv) and layer.conv.groups == 1:
            with torch.no_grad():
                layer.conv = _repeat_inputs(layer.conv, copies)
            layer.ann_share = 1 / copies
            return
        raise SpikedetError(f"first_copies: layer {i} ({type(layer).__name__}) reads the first layer's output; "
                            "only max-pools and per-step ops to a convolution can")
    raise SpikedetError("first_copies: no convolution reads the first layer's output")


def _repeat_outputs(conv: nn.Conv2d, copies: int) -> nn.Conv2d:
    """The convolution with every output channel repeated `copies` times in a row (the same current for each)."""
    out = _like(conv, conv.in_channels, conv.out_channels * copies)
    out.weight.copy_(conv.weight.repeat_interleave(copies, 0))
    out.bias.copy_(conv.bias.repeat_interleave(copies, 0))
    return out


def _repeat_inputs(conv: nn.Conv2d, copies: int) -> nn.Conv2d:
    """The convolution reading every input channel as `copies` channels in a row, each at 1/copies the weight."""
    out = _like(conv, conv.in_channels * copies, conv.out_channels)
    out.weight.copy_(conv.weight.repeat_interleave(copies, 1) / copies)
    out.bias.copy_(conv.bias)
    return out


def _like(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     bias=True, padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
