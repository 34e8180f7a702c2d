"""A converted network as a NIR graph: each node named by the module it comes from in the SNN.

    Input (3, H, W) -> [Conv2d -> IF | AvgPool2d] ... -> per Detect branch: [Conv2d -> IF] ... Conv2d -> I -> Output

Conv2d carries the SNN's weights as they are: batch-norm folded and channel-wise normalized, so every
neuron's threshold is 1 (the spike stands for lambda of ANN activity; a per-channel threshold array of
ones, one value per neuron as NIR's IF wants). NIR's IF fires when v > v_threshold, spikedet's when
v >= 1, so the threshold is written as the largest float32 below 1: for float32 potentials the two tests
then agree on every value, ties included.

The head's last 1x1 convolutions do not spike: each drives a NIR `I` node (dv/dt = R I, R = 1: the exact
integrator, no leak, no threshold), whose potential after T steps is the running sum spikedet's Integrator
keeps; the read-out is that potential / T, decoded by spikedet (the sidecar says so). LI would leak and an
IF with an unreachable threshold would hide its potential behind spikes.
"""
from typing import Dict, List, Tuple

import numpy as np
from torch import nn

from ..snn.layers import Integrator, PerStep, SpikingConv

THRESHOLD = np.nextafter(np.float32(1), np.float32(0))  # v > THRESHOLD <=> v >= 1 for float32 v


class GraphBuilder:
    """Nodes and edges of a chain-shaped SpikingNetwork; bias_offset (v_init / T when approximating a
    membrane that starts above 0) is added to every spiking convolution's bias."""

    def __init__(self, imgsz: int, bias_offset: float = 0.0):
        import nir

        self.nir = nir
        self.nodes = {"input": nir.Input(input_type=np.array([3, imgsz, imgsz]))}
        self.edges: List[Tuple[str, str]] = []
        self.bias_offset = bias_offset

    def add(self, name: str, node, source: str) -> str:
        self.nodes[name] = node
        self.edges.append((source, name))
        return name

    def conv(self, name: str, conv: nn.Conv2d, source: str, shape, offset: float) -> Tuple[str, tuple]:
        """A Conv2d node; returns its name and output shape (C, H, W)."""
        weight = conv.weight.detach().float().numpy().copy()
        bias = conv.bias.detach().float().numpy().copy() + np.float32(offset)
        node = self.nir.Conv2d(input_shape=tuple(int(s) for s in shape[1:]), weight=weight,
                               stride=tuple(conv.stride), padding=tuple(conv.padding),
                               dilation=tuple(conv.dilation), groups=conv.groups, bias=bias)
        return self.add(f"{name}.conv", node, source), tuple(int(s) for s in node.output_type["output"])

    def layer(self, name: str, layer: nn.Module, source: str, shape) -> Tuple[str, tuple]:
        """One SNN layer -> its last node's name and output shape."""
        if isinstance(layer, SpikingConv):
            conv, shape = self.conv(name, layer.conv, source, shape, self.bias_offset)
            ones = np.ones(shape, dtype=np.float32)
            neuron = self.nir.IF(r=ones, v_threshold=np.full(shape, THRESHOLD, dtype=np.float32),
                                 v_reset=np.zeros(shape, dtype=np.float32))
            return self.add(f"{name}.neuron", neuron, conv), shape
        if isinstance(layer, Integrator):
            conv, shape = self.conv(name, layer.conv, source, shape, 0.0)
            return self.add(f"{name}.integrator", self.nir.I(r=np.ones(shape, dtype=np.float32)), conv), shape
        if isinstance(layer, PerStep) and isinstance(layer.op, nn.AvgPool2d):
            k, s = _pair(layer.op.kernel_size), _pair(layer.op.stride or layer.op.kernel_size)
            pool = self.nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array([0, 0]))
            out = (shape[0], (shape[1] - k[0]) // s[0] + 1, (shape[2] - k[1]) // s[1] + 1)
            return self.add(f"{name}.pool", pool, source), out
        if isinstance(layer, nn.Sequential):
            for k, part in enumerate(layer):
                source, shape = self.layer(f"{name}.{k}", part, source, shape)
            return source, shape
        return source, shape  # a pass-through (Identity): nothing to write

    def output(self, name: str, source: str, shape) -> str:
        return self.add(name, self.nir.Output(output_type=np.array(shape)), source)

    def graph(self):
        return self.nir.NIRGraph(nodes=self.nodes, edges=self.edges)


def build_graph(snn, imgsz: int, bias_offset: float = 0.0) -> Tuple[object, Dict[str, str]]:
    """(the NIRGraph of a checked SpikingNetwork with a Detect head, {output node: what it holds}).

    Outputs are named box.k and cls.k (Detect level k): the I node potentials of its box (DFL) and class
    branches, in the order the decoder takes them."""
    b = GraphBuilder(imgsz, bias_offset)
    source, shape = "input", (3, imgsz, imgsz)
    ends = []
    for i, layer in enumerate(snn.layers):
        source, shape = b.layer(f"layers.{i}", layer, source, shape)
        ends.append((source, shape))
    outputs = {}
    for kind, branches in (("box", snn.head.box_branches), ("cls", snn.head.cls_branches)):
        for k, (branch, j) in enumerate(zip(branches, snn.head_sources)):
            last, out_shape = b.layer(f"head.{kind}_branches.{k}", branch, *ends[j])
            outputs[b.output(f"{kind}.{k}", last, out_shape)] = last
    return b.graph(), outputs


def _pair(v) -> Tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))
