"""The spiking side: IF neurons, spiking layers, ANN -> SNN conversion, the multi-step engine, statistics."""
from .convert import convert, leaky_to_relu, rebuild, reference_ann
from .engine import SpikingNetwork
from .layers import ConcatChannels, Integrator, PerStep, SpikeMaxPool, SpikingConv
from .neurons import (NEURON_KINDS, BinaryNeuron, BurstNeuron, Neuron, SignedNeuron, Static, make_neuron,
                      neuron_kinds, reset_net)
from .statistics import SpikeMonitor

__all__ = ["convert", "leaky_to_relu", "rebuild", "reference_ann", "SpikingNetwork", "ConcatChannels", "Integrator",
           "PerStep", "SpikeMaxPool", "SpikingConv", "NEURON_KINDS", "BinaryNeuron", "BurstNeuron", "Neuron",
           "SignedNeuron", "Static", "make_neuron", "neuron_kinds", "reset_net", "SpikeMonitor"]
