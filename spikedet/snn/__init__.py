"""The spiking side: IF neurons, spiking layers, ANN -> SNN conversion, the multi-step engine, statistics."""
from .convert import convert, leaky_to_relu, rebuild, reference_ann
from .engine import SpikingNetwork
from .layers import ConcatChannels, Integrator, PerStep, SpikeMaxPool, SpikingConv
from .neurons import SPIKE_MODES, IFNeuron, Static, reset_net
from .statistics import SpikeMonitor

__all__ = ["convert", "leaky_to_relu", "rebuild", "reference_ann", "SpikingNetwork", "ConcatChannels", "Integrator",
           "PerStep", "SpikeMaxPool", "SpikingConv", "SPIKE_MODES", "IFNeuron", "Static", "reset_net", "SpikeMonitor"]
