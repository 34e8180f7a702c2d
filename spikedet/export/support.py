"""What of a converted network NIR 1.0 can express, checked before anything is written.

NIR's IF neuron integrates, fires one unit event when v > v_threshold and resets *to* v_reset; a graph has
no max-pool, upsample or concat node, no multi-spike (burst) or negative events and no initial membrane
potential. Each layer NIR cannot express is named (its path in the SNN, where layers.i is the config's
model.i) with the spikedet options that avoid it. Three neuron options have a stated substitute that
--allow-approximations accepts (SUBSTITUTES); the layer kinds have none and are always refused.
"""
from dataclasses import dataclass
from typing import List

from torch import nn

from ..snn.heads import SpikingDetect
from ..snn.layers import ConcatChannels, Integrator, PerStep, SpikeMaxPool, SpikingConv
from ..snn.neurons import Neuron

# a structural kind -> how to avoid it
AVOID = {
    "max-pool": "train with --pool conv or avg (configs/yolov2-tiny-nir.yaml)",
    "upsample": "a one-scale chain config such as configs/yolov2-tiny-nir.yaml",
    "concat": "a one-scale chain config such as configs/yolov2-tiny-nir.yaml",
    "route": "a chain-shaped config: every layer reads the one before it",
    "padding": "convolution padding instead of a padding layer",
    "negative spikes": "convert with --leaky relu (or train ReLU units)",
    "head": "an ultralytics Detect head (spikedet-trained configs)",
    "first-layer population": "convert with --first-copies 1 (NIR has no initial potential per neuron)",
}
# a neuron option -> (how to avoid it, what --allow-approximations writes instead)
SUBSTITUTES = {
    "burst events": ("convert with --spikes binary", "one unit event per step (NIR IF)"),
    "reset by subtraction": ("convert with --reset zero", "reset to zero (NIR IF's v_reset = 0)"),
    "v_init > 0": ("convert with --v-init 0",
                   "v_init / T added to each bias: the same input summed over T steps, spread over the steps"),
}


@dataclass
class Problem:
    path: str  # module path in the SNN (layers.i is the config's model.i)
    kind: str  # a key of AVOID or SUBSTITUTES

    @property
    def approximable(self) -> bool:
        return self.kind in SUBSTITUTES


def nir_problems(snn) -> List[Problem]:
    """Every layer of a SpikingNetwork that NIR 1.0 cannot express as it is, in network order."""
    problems = []
    for i, (layer, source) in enumerate(zip(snn.layers, snn.sources)):
        path = f"layers.{i}"
        if source != -1:
            kind = "concat" if isinstance(layer, ConcatChannels) else "route"
            problems.append(Problem(path, kind))
            continue
        problems += _layer_problems(path, layer)
    if not isinstance(snn.head, SpikingDetect):
        problems.append(Problem("head", "head"))
        return problems
    for name, branch in snn.head.named_children():
        if isinstance(branch, nn.ModuleList):
            for k, levels in enumerate(branch):
                for j, layer in enumerate(levels):
                    problems += _layer_problems(f"head.{name}.{k}.{j}", layer)
    return problems


def _layer_problems(path: str, layer: nn.Module) -> List[Problem]:
    if isinstance(layer, SpikingConv):
        return [Problem(path, kind) for kind in _neuron_kinds(layer.neuron)]
    if isinstance(layer, Integrator):
        return []
    if isinstance(layer, SpikeMaxPool):
        return [Problem(path, "max-pool")]
    if isinstance(layer, PerStep):
        op = layer.op
        if isinstance(op, nn.Upsample):
            return [Problem(path, "upsample")]
        if isinstance(op, (nn.ZeroPad2d, nn.ReplicationPad2d)):
            return [Problem(path, "padding")]
        if isinstance(op, nn.AvgPool2d) and _padded(op):
            return [Problem(path, "padding")]
        return []
    if isinstance(layer, nn.Sequential):
        return [p for k, part in enumerate(layer) for p in _layer_problems(f"{path}.{k}", part)]
    if isinstance(layer, ConcatChannels):
        return [Problem(path, "concat")]
    return [Problem(path, type(layer).__name__)]


def _neuron_kinds(neuron: Neuron) -> List[str]:
    if neuron.negative_events:
        return ["negative spikes"]
    kinds = []
    if neuron.multi_events:
        kinds.append("burst events")
    if neuron.reset_mode == "subtract":
        kinds.append("reset by subtraction")
    if neuron.v_init > 0:
        kinds.append("v_init > 0")
    if neuron.staggered is not None:
        kinds.append("first-layer population")
    return kinds


def _padded(pool: nn.AvgPool2d) -> bool:
    """NIR's AvgPool2d has no count_include_pad or ceil_mode: only an unpadded floor-mode pool maps exactly."""
    padding = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,)
    return any(padding) or pool.ceil_mode


def refusal(problems: List[Problem], allow_approximations: bool) -> str:
    """One line: each layer NIR cannot express, grouped by kind, and the options that avoid them; empty when
    nothing is left to refuse."""
    left = [p for p in problems if not (allow_approximations and p.approximable)]
    if not left:
        return ""
    kinds = sorted(dict.fromkeys(p.kind for p in left), key=lambda kind: kind in SUBSTITUTES)  # layers first
    named = "; ".join(f"{kind}: {_paths([p.path for p in left if p.kind == kind])}" for kind in kinds)
    avoid = "; ".join(f"{kind}: {AVOID.get(kind) or SUBSTITUTES.get(kind, ('unsupported layer',))[0]}"
                      for kind in kinds)
    hint = "" if allow_approximations or not any(k in SUBSTITUTES for k in kinds) else \
        " (or --allow-approximations for the neuron options)"
    return f"NIR 1.0 cannot express {named}. Avoid with {avoid}{hint}"


def _paths(paths: List[str], shown: int = 6) -> str:
    more = len(paths) - shown
    return ", ".join(paths[:shown]) + (f" and {more} more" if more > 0 else "")


def substitutions(problems: List[Problem]) -> List[str]:
    """The substitutions an approximate export makes, one line per neuron option, with the layer count."""
    out = []
    for kind, (_, instead) in SUBSTITUTES.items():
        count = sum(p.kind == kind for p in problems)
        if count:
            out.append(f"{kind} in {count} layers -> {instead}")
    return out
