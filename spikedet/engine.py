"""The spiking inference engine: a converted network simulated for T steps, read out at any T <= T_max.

One simulation to T_max serves every requested T: the output layers integrate, and their running sums after
each step are kept, so detections at T = 8, 16, ..., T_max all come from the same run. Time advances in
chunks (each layer handles `chunk` steps as one batched operation, then its neuron scan) with state
carried between chunks, so memory is bounded by the chunk length, not by T.
"""
from pathlib import Path
from typing import Dict, Iterable, List, Union

import torch
from torch import nn

from .errors import fail
from .fileio import atomic_torch_save, load_torch_file
from .snn import IFNeuron, Integrator, Recorder, SpikingConv, Static, reset_net

FORMAT = "spikedet-snn"
FORMAT_VERSION = 1
# Energy per operation, 45 nm CMOS (Horowitz, ISSCC 2014): a 32-bit float multiply-accumulate (3.7 pJ
# multiply + 0.9 pJ add) for every ANN MAC and for the SNN's analog input layer; one 0.9 pJ add per
# synaptic operation (a spike arriving at a synapse) elsewhere in the SNN.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9
# Steps per batched layer call. Short chunks keep each layer's working set in cache: on a 2-core CPU,
# yolov3-tiny ran fastest with 2 (416 px batch 1, and 192 px batch 8; tools/benchmark_snn.py), and memory
# grows with the chunk.
DEFAULT_CHUNK = 2


class SpikingNetwork(nn.Module):
    """A converted detector: layers routed like the ANN (ultralytics' `f` / `save` convention) and a head.

    layers[i] reads the previous layer's output (f = -1) or saved outputs of earlier layers (f = j or a
    list); the head reads its feature maps the same way and returns per-level running sums.
    """

    def __init__(self, layers: List[nn.Module], sources: List, save: Iterable[int], head: nn.Module,
                 head_sources: List[int], meta: dict):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.sources, self.saved, self.head_sources = list(sources), set(save), list(head_sources)
        self.head = head
        self.meta = dict(meta)

    # ----- simulation
    def _chunk(self, x):
        outputs = []
        for layer, f in zip(self.layers, self.sources):
            if f != -1:
                x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
            x = layer(x)
            outputs.append(x if len(outputs) in self.saved else None)
        feats = [x if j == -1 else outputs[j] for j in self.head_sources]
        return self.head(feats)

    @torch.no_grad()
    def simulate(self, images: torch.Tensor, timesteps: Iterable[int], chunk: int = DEFAULT_CHUNK,
                 coding: str = "constant", generator: torch.Generator = None,
                 statistics: bool = False) -> Dict[int, torch.Tensor]:
        """Run up to max(timesteps); return {T: decoded predictions (B, 4 + nc, anchors)} for each T.

        coding: "constant" feeds the image as the same input current at every step (the standard for
        detection); "poisson" feeds Bernoulli spikes with the pixel value as probability per step.
        statistics: count spikes for statistics() (costs a pass over every layer's events).
        """
        wanted = sorted({int(t) for t in timesteps})
        if not wanted or wanted[0] < 1:
            raise ValueError(f"timesteps must be positive integers, got {list(timesteps)}")
        if coding not in ("constant", "poisson"):
            raise ValueError(f"coding must be 'constant' or 'poisson', got {coding!r}")
        reset_net(self)
        for m in self.modules():
            if isinstance(m, Recorder):
                m.record = statistics
        results, done = {}, 0
        while done < wanted[-1]:
            steps = min(chunk, wanted[-1] - done)
            if coding == "constant":
                x = Static(images, steps)
            else:
                x = (torch.rand((steps, *images.shape), generator=generator, device=images.device,
                                dtype=images.dtype) < images).to(images.dtype)
            running = self._chunk(x)
            for t in wanted:
                if done < t <= done + steps:
                    results[t] = self.head.decode([r[t - done - 1] / t for r in running])
            done += steps
        self.meta["last_run_steps"] = done
        return results

    # ----- statistics
    def statistics(self, batch_size: int) -> dict:
        """Per-layer firing rates, spikes, synaptic operations and the energy estimate of the last run
        (simulated with statistics=True).

        SOP_l = (input events per input neuron) * MACs_l, i.e. input rate x T x MACs_l per image.
        """
        steps = self.meta.get("last_run_steps", 0)
        rows, ann_macs, snn_mac_energy, sops = [], 0.0, 0.0, 0.0
        for name, m in self.named_modules():
            if not isinstance(m, (SpikingConv, Integrator)) or not getattr(m, "macs", 0):
                continue
            ann_macs += m.macs
            row = {"layer": name, "macs": m.macs}
            if m.input_neurons:  # spike-driven: additions only
                events = m.input_spikes / batch_size
                row["input_rate"] = events / (m.input_neurons * steps) if steps else 0.0
                row["sops"] = events / m.input_neurons * m.macs
                sops += row["sops"]
            else:  # analog input computed once per image (constant-current coding)
                snn_mac_energy += E_MAC_PJ * m.macs
                row["sops"] = 0.0
            neuron = getattr(m, "neuron", None)
            if isinstance(neuron, IFNeuron) and neuron.neurons:
                row["spikes"] = neuron.spike_count / batch_size
                row["firing_rate"] = row["spikes"] / (neuron.neurons * steps) if steps else 0.0
            rows.append(row)
        e_snn = snn_mac_energy + E_AC_PJ * sops
        e_ann = E_MAC_PJ * ann_macs
        return {"timesteps": steps, "layers": rows, "ann_macs": ann_macs, "snn_sops": sops,
                "energy_pj": {"ann": e_ann, "snn": e_snn, "snn_over_ann": e_snn / e_ann if e_ann else None},
                "energy_constants_pj": {"E_MAC": E_MAC_PJ, "E_AC": E_AC_PJ,
                                        "source": "Horowitz 2014, 45 nm, 32-bit float"}}

    # ----- files
    def save(self, path: Union[str, Path], ann: nn.Module = None) -> Path:
        """One file with everything needed to run: the network, its weights and thresholds, meta data,
        and the source ANN (a few MB) so the SNN can always be scored against it."""
        reset_net(self)
        return atomic_torch_save({"format": FORMAT, "version": FORMAT_VERSION, "network": self,
                                  "meta": self.meta, "ann": ann}, path)


def is_snn_file(ckpt) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == FORMAT


def load_snn(path: Union[str, Path], ckpt: dict = None):
    """(SNN, its source ANN) from a converted file, failing clearly on anything that is not one.

    ckpt: the file's content when the caller has already read it.
    """
    ckpt = load_torch_file(path) if ckpt is None else ckpt
    if not is_snn_file(ckpt):
        raise fail(path, "not a spikedet SNN file (convert a checkpoint with tools/convert.py first)")
    if ckpt.get("version") != FORMAT_VERSION:
        raise fail(path, f"SNN file format version {ckpt.get('version')}, this spikedet reads {FORMAT_VERSION}")
    return ckpt["network"].eval(), ckpt.get("ann")
