"""Spike statistics and the energy estimate, gathered by forward hooks only while a monitor is attached.

SOP_l = (input events per input neuron) * MACs_l, i.e. input rate x T x MACs_l per image; a burst of k
counts as k spikes, and a fine negative event (worth alpha, Neuron.negative_worth) as one: a step in which a
neuron's count crosses zero is counted by its net change, fewer than the events it makes. E_SNN = E_MAC *
MACs(analog input layers) + E_AC * sum SOP, E_ANN = E_MAC * MACs of the ANN the SNN converts (a first-layer
population has k times its MACs and its reader's: population.py).
"""
from collections import defaultdict

from ..monitor import ActivationMonitor
from .layers import Integrator, SpikingConv
from .neurons import Neuron, Static, negative_worth

# Energy per operation, 45 nm CMOS (Horowitz, ISSCC 2014): a 32-bit float multiply-accumulate (3.7 pJ
# multiply + 0.9 pJ add) for every ANN MAC and for the SNN's analog input layer; one 0.9 pJ add per
# synaptic operation (a spike arriving at a synapse) elsewhere in the SNN.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def events(s, negative_worth: float = 1.0) -> float:
    """The events in an event tensor: its positive values, and its negative ones in units of negative_worth."""
    if negative_worth == 1.0:
        return float(s.abs().sum())
    return float(s.clamp(min=0).sum()) + float(s.clamp(max=0).sum()) / -negative_worth


class SpikeMonitor:
    """Context manager: counts, per layer, the events arriving at its synapses, its MACs per image and the
    spikes its neurons emit, for every simulation run while attached (SpikingJelly's monitors)."""

    def __init__(self, network):
        self.network = network
        self.layers = {}  # name -> counters, in module order

    def __enter__(self):
        for name, m in self.network.named_modules():
            if isinstance(m, (SpikingConv, Integrator)):
                self.layers[name] = defaultdict(float)
        self.negative_worth = negative_worth(self.network)  # of the events arriving at synapses
        self.monitor = ActivationMonitor(self.network, lambda name, m: isinstance(m, (SpikingConv, Integrator, Neuron)),
                                         self._record)
        return self

    def __exit__(self, *exc):
        self.monitor.remove()
        return False

    def _record(self, name: str, m, inputs, output):
        """A layer: its MACs and the events arriving at its synapses; a neuron: the spikes it emits."""
        if isinstance(m, Neuron):
            row = self.layers[name.rsplit(".", 1)[0]]  # the SpikingConv holding it
            row["spikes"] += events(output, m.negative_worth)
            row["neurons"] = output[0, 0].numel()
            return
        row, conv, x = self.layers[name], m.conv, inputs[0]
        fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        row["macs"] = output[0, 0].numel() * fan_in
        row["ann_macs"] = row["macs"] * getattr(m, "ann_share", 1.0)
        if not isinstance(x, Static):  # spike-driven: count arriving events
            row["input_events"] += events(x, self.negative_worth)
            row["input_neurons"] = x[0, 0].numel()

    def clear(self):
        """Start counting afresh (e.g. per image)."""
        for row in self.layers.values():
            row.clear()

    def report(self, steps: int, batch_size: int) -> dict:
        """Per-layer firing rates, spikes, synaptic operations and the energy estimate of what was run."""
        rows, ann_macs, snn_mac_energy, sops = [], 0.0, 0.0, 0.0
        for name, c in self.layers.items():
            if not c["macs"]:
                continue
            ann_macs += c["ann_macs"]
            row = {"layer": name, "macs": c["macs"]}
            if c["input_neurons"]:  # spike-driven: additions only
                events = c["input_events"] / batch_size
                row["input_rate"] = events / (c["input_neurons"] * steps) if steps else 0.0
                row["sops"] = events / c["input_neurons"] * c["macs"]
                sops += row["sops"]
            else:  # analog input computed once per image (constant-current coding)
                snn_mac_energy += E_MAC_PJ * c["macs"]
                row["sops"] = 0.0
            if c["neurons"]:
                row["spikes"] = c["spikes"] / batch_size
                row["firing_rate"] = row["spikes"] / (c["neurons"] * steps) if steps else 0.0
            rows.append(row)
        e_snn = snn_mac_energy + E_AC_PJ * sops
        e_ann = E_MAC_PJ * ann_macs
        return {"timesteps": steps, "layers": rows, "ann_macs": ann_macs, "snn_sops": sops,
                "energy_pj": {"ann": e_ann, "snn": e_snn, "snn_over_ann": e_snn / e_ann if e_ann else None},
                "energy_constants_pj": {"E_MAC": E_MAC_PJ, "E_AC": E_AC_PJ,
                                        "source": "Horowitz 2014, 45 nm, 32-bit float"}}
