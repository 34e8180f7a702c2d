"""An exported NIR graph read back (nir.read) and run in Norse, its head outputs decoded by spikedet.

Norse (PyPI `norse`, through nirtorch) is the simulator: it installs beside torch 2.14 and nir 1.0.8 without
pulling another torch (sinabs pins nir 1.0.4), and it imports NIR's IF as the IF neuron NIR defines (v += I,
a spike when v > v_threshold, v reset to v_reset), whereas snnTorch 1.0 imports IF as a leaky neuron
(beta 0.9). Norse 1.1 has no importer for two of the nodes spikedet writes: `I` gets Integrate below (v += I;
the output is v) and AvgPool2d torch's AvgPool2d (the window mean NIR defines); every other node is Norse's
own (Conv2d, IF, SumPool2d) and nirtorch executes the graph step by step.
"""
import warnings
from typing import Dict, Iterable, List

import torch
from torch import nn


class Integrate(nn.Module):
    """NIR's I node with R = 1 in steps of 1: v += input, output v (state passed as nirtorch expects)."""

    def forward(self, x, state=None):
        v = x if state is None else state + x
        return v, v


def load_norse(path):
    """The NIR file at `path` as a Norse module (nirtorch's GraphExecutor)."""
    import nir
    import nirtorch
    from norse.torch.utils.import_nir import _import_norse_module

    graph = nir.read(str(path))

    def node_map(node):
        if isinstance(node, nir.I):
            return Integrate()
        if isinstance(node, nir.AvgPool2d):
            return nn.AvgPool2d(tuple(int(k) for k in node.kernel_size), tuple(int(s) for s in node.stride))
        return _import_norse_module(node)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nirtorch.load: Norse's own loading path
        return nirtorch.load(graph, node_map), graph


def _key(name: str) -> str:
    return name.replace(".", "_")  # nirtorch's module names


class NorseRun:
    """Runs a loaded NIR module for up to max(timesteps) steps on a batch of images under constant-current
    coding; reads the named outputs at each wanted T and counts each IF node's spikes per image."""

    def __init__(self, module, graph, outputs: Iterable[str]):
        import nir

        self.module, self.outputs = module, list(outputs)
        self.neurons = [name for name, node in graph.nodes.items() if isinstance(node, nir.IF)]
        self.spikes: Dict[str, float] = {name: 0.0 for name in self.neurons}
        self.images = 0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, timesteps: List[int], burn_in: int = 0) -> Dict[int, List[torch.Tensor]]:
        """{T: [output potential / T, ...]} in self.outputs' order; with burn_in K, (potential after T - after
        K) / (T - K), spikedet's burn-in read-out."""
        wanted, results, state = sorted(set(timesteps)), {}, None
        before = [0.0] * len(self.outputs)
        for t in range(1, wanted[-1] + 1):
            _, state = self.module(images, state)
            for name in self.neurons:
                self.spikes[name] += float(state.cache[_key(name)].sum())
            if t == burn_in:
                before = [state.cache[_key(name)].clone() for name in self.outputs]
            if t in wanted:
                results[t] = [(state.cache[_key(name)] - b) / (t - burn_in) for name, b in zip(self.outputs, before)]
        self.images += len(images)
        return results

    def spikes_per_image(self) -> Dict[str, float]:
        """IF node -> spikes per image, keyed by the SNN module the node came from (the name without .neuron)."""
        return {name.rsplit(".", 1)[0]: count / max(self.images, 1) for name, count in self.spikes.items()}
