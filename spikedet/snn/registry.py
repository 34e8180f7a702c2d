"""The conversion table: each ANN module type -> its spiking counterpart and its scale rule.

A rule takes (converter, path, module, input scale) and returns (spiking module, output scale). A scale is
lambda per channel: one spike of that channel stands for lambda of ANN activity (None: an integrator's analog
running sum, which only the head may read). The rules:

- conv (+BN) (+activation): ultralytics Conv and DWConv, darknet [convolutional], nn.Conv2d -> SpikingConv,
  weights W * lam_in / lam_out and bias / lam_out, scale lam_out of its activation; linear -> Integrator,
  scale None;
- nn.MaxPool2d -> SpikeMaxPool (count-gated); nn.AvgPool2d, nn.ZeroPad2d, nn.ReplicationPad2d, nn.Upsample,
  nn.Identity -> PerStep: the input's scale;
- Concat (darknet's [route] of several layers too) -> ConcatChannels: the inputs' scales concatenated;
- residual adds, Bottleneck with shortcut and darknet's linear [shortcut] -> WeightedSum: the two inputs
  brought to one scale, the first's, the second's events weighted per channel by lam_b / lam_a;
- C2f -> SpikingC2f (its halves PerStep(ChannelSlice)), SPPF -> SpikingSPPF (a SpikeMaxPool per pool):
  the scales of their parts by the rules above;
- Detect -> SpikingDetect, darknet's [yolo] head -> DecodingHead.

A type not in the table (nor a subclass of one in it) is refused in one line naming it and its path.
"""
import copy
from typing import Callable, Dict

import torch
from torch import nn
from ultralytics.nn.modules import SPPF, Bottleneck, C2f, Concat, Conv, Detect

from ..darknet.model import ConvBlock, DarknetHead, Shortcut
from ..errors import SpikedetError
from .blocks import SpikingBottleneck, SpikingC2f, SpikingSPPF
from .heads import DecodingHead, SpikingDetect
from .layers import ChannelSlice, ConcatChannels, PerStep, SpikeMaxPool, WeightedSum

RULES: Dict[type, Callable] = {}


def rule(*types):
    """Register a rule for these ANN module types (and their subclasses)."""
    def register(fn):
        for t in types:
            RULES[t] = fn
        return fn
    return register


def convert_module(c, path: str, m: nn.Module, in_scale):
    """The spiking counterpart of `m` (at `path` in the model) and its output scale, by the table."""
    fn = next((RULES[t] for t in type(m).__mro__ if t in RULES), None)
    if fn is None:
        known = ", ".join(sorted(t.__name__ for t in RULES))
        raise SpikedetError(f"cannot convert {path}: {type(m).__module__}.{type(m).__name__} has no spiking "
                            f"counterpart (spikedet.snn.registry converts {known})")
    return fn(c, path, m, in_scale)


@rule(Conv, ConvBlock, nn.Conv2d)
def _conv(c, path, m, in_scale):
    return c.conv_block(path, m, in_scale)


@rule(nn.MaxPool2d)
def _max_pool(c, path, m, in_scale):
    return SpikeMaxPool(m), in_scale


@rule(nn.AvgPool2d, nn.ZeroPad2d, nn.ReplicationPad2d, nn.Upsample, nn.Identity)
def _per_step(c, path, m, in_scale):
    return PerStep(copy.deepcopy(m)), in_scale


@rule(nn.Sequential)
def _sequential(c, path, m, in_scale):
    """One routed layer made of several ops (e.g. darknet's padded pool)."""
    parts = []
    for k, part in enumerate(m):
        converted, in_scale = convert_module(c, f"{path}.{k}", part, in_scale)
        parts.append(converted)
    return nn.Sequential(*parts), in_scale


@rule(Concat)
def _concat(c, path, m, in_scale):
    if m.d != 1:
        raise SpikedetError(f"cannot convert {path}: concat along dim {m.d}")
    return ConcatChannels(), torch.cat(in_scale)


def residual(path: str, a: torch.Tensor, b: torch.Tensor) -> WeightedSum:
    """a + b with both brought to a's scale: b's events weighted by lam_b / lam_a."""
    if a is None or b is None or len(b) > len(a):
        raise SpikedetError(f"cannot convert {path}: a residual add needs two spiking inputs, the second no wider")
    return WeightedSum(b / a[:len(b)])


@rule(Shortcut)
def _shortcut(c, path, m, in_scale):
    if not isinstance(m.act, nn.Identity):
        raise SpikedetError(f"cannot convert {path}: a [shortcut] with activation {type(m.act).__name__} (only "
                            "linear shortcuts convert)")
    return residual(path, *in_scale), in_scale[0]


@rule(Bottleneck)
def _bottleneck(c, path, m, in_scale):
    cv1, scale = c.conv_block(f"{path}.cv1", m.cv1, in_scale)
    cv2, scale = c.conv_block(f"{path}.cv2", m.cv2, scale)
    if not m.add:
        return SpikingBottleneck(cv1, cv2, None), scale
    return SpikingBottleneck(cv1, cv2, residual(path, in_scale, scale)), in_scale


@rule(C2f)
def _c2f(c, path, m, in_scale):
    cv1, scale = c.conv_block(f"{path}.cv1", m.cv1, in_scale)
    halves = [PerStep(ChannelSlice(0, m.c)), PerStep(ChannelSlice(m.c, 2 * m.c))]
    scales, blocks = [scale[:m.c], scale[m.c:]], []
    for k, bottleneck in enumerate(m.m):
        block, s = convert_module(c, f"{path}.m.{k}", bottleneck, scales[-1])
        blocks.append(block)
        scales.append(s)
    cv2, scale = c.conv_block(f"{path}.cv2", m.cv2, torch.cat(scales))
    return SpikingC2f(cv1, halves, blocks, cv2), scale


@rule(SPPF)
def _sppf(c, path, m, in_scale):
    if getattr(m, "add", False):
        raise SpikedetError(f"cannot convert {path}: SPPF with a shortcut")
    cv1, scale = c.conv_block(f"{path}.cv1", m.cv1, in_scale)
    if scale is None:
        raise SpikedetError(f"cannot convert {path}: SPPF's cv1 is linear (spikedet's yolov8-relu activates it)")
    pools = [SpikeMaxPool(m.m) for _ in range(getattr(m, "n", 3))]
    cv2, out = c.conv_block(f"{path}.cv2", m.cv2, torch.cat([scale] * (len(pools) + 1)))
    return SpikingSPPF(cv1, pools, cv2), out


@rule(Detect)
def _detect(c, path, m, in_scale):
    """Detect's branches become spiking, each ending in an integrator; Detect's decoding is kept."""
    if m.end2end:
        raise SpikedetError(f"cannot convert {path}: end-to-end (NMS-free) heads are not supported")
    return SpikingDetect(m, [c.branch(f"{path}.cv2.{k}", m.cv2[k], s) for k, s in enumerate(in_scale)],
                         [c.branch(f"{path}.cv3.{k}", m.cv3[k], s) for k, s in enumerate(in_scale)]), None


@rule(DarknetHead)
def _darknet_head(c, path, m, in_scale):
    """darknet's [yolo] / [region] layers decode the mean potentials of the integrating convolutions before."""
    if any(s is not None for s in in_scale):
        raise SpikedetError(f"cannot convert {path}: the {type(m).__name__} head must read linear convolutions")
    return DecodingHead(m), None
