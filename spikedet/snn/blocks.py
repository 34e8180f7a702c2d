"""Spiking counterparts of ultralytics' composite blocks (YOLOv8's C2f, Bottleneck and SPPF), made of the
layers in layers.py: each takes and returns whatever those take (a chunk, a constant current, or closed-form
counts), so the step simulation and the closed form both run them. The scale rules live in registry.py."""
from typing import List, Optional

from torch import nn

from .layers import ConcatChannels, PerStep, SpikeMaxPool, SpikingConv, WeightedSum


class SpikingBottleneck(nn.Module):
    """Two spiking convolutions, and with a shortcut the residual add of its input and their output."""

    def __init__(self, cv1: SpikingConv, cv2: SpikingConv, add: Optional[WeightedSum]):
        super().__init__()
        self.cv1, self.cv2, self.add = cv1, cv2, add

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return y if self.add is None else self.add([x, y])


class SpikingC2f(nn.Module):
    """C2f: the first convolution's output split in two halves, bottlenecks chained on the second, every part
    concatenated into the last convolution."""

    def __init__(self, cv1: SpikingConv, halves: List[PerStep], m: List[SpikingBottleneck], cv2: SpikingConv):
        super().__init__()
        self.cv1, self.halves, self.m, self.cv2 = cv1, nn.ModuleList(halves), nn.ModuleList(m), cv2
        self.cat = ConcatChannels()

    def forward(self, x):
        y = self.cv1(x)
        parts = [half(y) for half in self.halves]
        for bottleneck in self.m:
            parts.append(bottleneck(parts[-1]))
        return self.cv2(self.cat(parts))


class SpikingSPPF(nn.Module):
    """SPPF: a convolution, n chained spike max-pools (each with its own counts), all concatenated into the
    second convolution."""

    def __init__(self, cv1: SpikingConv, pools: List[SpikeMaxPool], cv2: SpikingConv):
        super().__init__()
        self.cv1, self.pools, self.cv2 = cv1, nn.ModuleList(pools), cv2
        self.cat = ConcatChannels()

    def forward(self, x):
        parts = [self.cv1(x)]
        for pool in self.pools:
            parts.append(pool(parts[-1]))
        return self.cv2(self.cat(parts))
