"""ANN -> SNN conversion: fold batch-norm, normalize (normalize.py), replace activations by IF neurons.

The converter follows ultralytics' layer routing (`f`, `i`, `save`), which the darknet importer also
produces, and converts each layer by the table in registry.py (module type -> spiking counterpart and scale
rule), not by model family. A layer's scale lambda comes from the learned clip threshold of a clipping
dual-error activation (its exact scale), or else from a percentile of the ANN's activations over calibration
images.
"""
import copy
from typing import Callable, Dict, Iterable, Optional, Union

import torch
from torch import nn

from ..darknet import DarknetModel
from ..defaults import CHOICES, DEFAULTS
from ..errors import SpikedetError
from ..model.activation import DualErrorReLU
from ..model.calibration import LeastErrorObserver, PercentileObserver
from ..monitor import ActivationMonitor
from ..routing import routed_input
from .engine import SpikingNetwork
from .heads import DecodingHead, SpikingDetect
from .layers import Integrator, SpikeMaxPool, SpikingConv
from .neurons import NEURON_KINDS, Neuron, make_neuron, negative_worth
from .normalize import fold_batchnorm, normalize_conv
from .population import make_population
from .registry import convert_module

NORMALIZATIONS = CHOICES["normalization"]
LEAKY_MODES = CHOICES["leaky"]
REBUILD = "rebuild"  # a network only rebuilt, its weights to be loaded from a saved SNN
# the conversion options an SNN file records (besides the T it was meant for)
OPTION_KEYS = ("normalization", "scales", "percentile", "threshold_scale", "v_init", "reset", "spikes", "leaky",
               "first_copies", "negative_events")
Observer = Union[PercentileObserver, LeastErrorObserver]


def leaky_to_relu(model: nn.Module) -> nn.Module:
    """A copy of the model with every leaky ReLU replaced by ReLU: Spiking-YOLO's baseline for leaky networks
    (the converted SNN then needs no negative spikes, at the cost of changing the network it copies)."""
    model = copy.deepcopy(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.LeakyReLU):
                setattr(parent, name, nn.ReLU())
    return model


def activation_of(block: nn.Module) -> Optional[nn.Module]:
    """The nonlinearity of a conv block, or None for a linear one."""
    act = getattr(block, "act", None)
    return None if act is None or isinstance(act, nn.Identity) else act


def observe_activations(model: nn.Module, images: torch.Tensor, make_observer: Callable[[nn.Module], Observer],
                        batch_size: int = 8) -> Dict[nn.Module, Observer]:
    """An observer (calibration.PercentileObserver or LeastErrorObserver) per activation module, made for it (in
    module order) and fed its outputs over the calibration images by hooks."""
    observers = {act: make_observer(act) for act in map(activation_of, model.modules()) if act is not None}
    with ActivationMonitor(model, lambda _, m: m in observers, lambda _, m, __, out: observers[m].update(out)):
        for k in range(0, len(images), batch_size):
            model(images[k:k + batch_size].float())
    return observers


class Converter:
    """Builds a SpikingNetwork from an ultralytics-style model (see convert() for the options).

    observers: activation percentiles from calibration images, or REBUILD for a network whose weights will be
    loaded from a saved SNN (every scale is then 1; the structure is the same).
    """

    def __init__(self, model: nn.Module, normalization: str, observers, v_init: float, reset: str, spikes: str,
                 threshold_scale: float = DEFAULTS["threshold_scale"], negative_events: str = "whole"):
        if normalization not in NORMALIZATIONS:
            raise SpikedetError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if negative_events not in CHOICES["negative_events"]:
            raise SpikedetError(f"negative_events must be one of {CHOICES['negative_events']}, got {negative_events!r}")
        kind = NEURON_KINDS.get(spikes)
        if negative_events == "fine" and kind is not None and not kind.fine_ok:
            fine = ", ".join(k for k, c in NEURON_KINDS.items() if c.fine_ok)
            raise SpikedetError(f"fine negative events are graded events of {fine} neurons, not {spikes} ones: "
                                "convert with negative_events='whole'")
        self.model, self.normalization, self.observers = model, normalization, observers
        self.threshold_scale, self.fine_negative = float(threshold_scale), negative_events == "fine"
        self.v_init, self.reset, self.spikes = v_init, reset, spikes
        self.scale_sources = []  # one entry per spiking layer: where its scale came from

    def scale_of(self, name: str, act: nn.Module, channels: int) -> torch.Tensor:
        """lambda for the activation `act` (output channels `channels`)."""
        if self.observers is REBUILD:
            return torch.ones(channels)
        if isinstance(act, DualErrorReLU) and act.settings.clip:
            lam = (act.lam.detach().float().abs() * self.threshold_scale).clamp(min=1e-4).expand(channels).clone()
            source = "learned lambda"
            if self.normalization == "layer":
                lam = lam.max().expand(channels).clone()
        else:
            if not self.observers or act not in self.observers:
                raise SpikedetError(f"layer {name} has no clip threshold: conversion needs calibration images")
            observer = self.observers[act]
            lam = observer.scale(self.normalization).float().expand(channels).clone()
            lam = torch.where(lam > 0, lam * self.threshold_scale, torch.ones_like(lam))  # never active: any works
            source = observer.source
        self.scale_sources.append({"layer": name, "source": source, "scale_min": float(lam.min()),
                                   "scale_max": float(lam.max())})
        return lam

    def neuron_for(self, act: nn.Module) -> Neuron:
        slope = getattr(act, "negative_slope", None) or None
        kind = NEURON_KINDS.get(self.spikes)
        if slope and kind is not None and not kind.leaky_ok:
            leaky = ", ".join(k for k, c in NEURON_KINDS.items() if c.leaky_ok)
            raise SpikedetError(f"leaky ReLU units convert with {leaky} neurons (binary: Spiking-YOLO's imbalanced "
                                "threshold); or replace them by ReLU (leaky='relu')")
        return make_neuron(self.spikes, self.v_init, "subtract" if slope else self.reset, slope,
                           bool(slope) and self.fine_negative)

    def conv_block(self, name: str, block: nn.Module, in_scale: torch.Tensor):
        """A conv(+bn)(+activation) block -> (SpikingConv or Integrator, output scale)."""
        conv = block.conv if hasattr(block, "conv") else block
        if not isinstance(conv, nn.Conv2d):
            raise SpikedetError(f"cannot convert layer {name}: {type(block).__name__} is not a convolution block")
        fused = fold_batchnorm(conv, getattr(block, "bn", None))
        act = activation_of(block)
        if act is None:  # linear: a non-spiking integrator, whose mean potential is the ANN's output
            return Integrator(normalize_conv(fused, in_scale, torch.ones(fused.out_channels))), None
        lam = self.scale_of(name, act, fused.out_channels)
        return SpikingConv(normalize_conv(fused, in_scale, lam), self.neuron_for(act)), lam

    def branch(self, name: str, modules: Iterable[nn.Module], in_scale):
        """A head branch (nested Sequentials of conv blocks) -> nn.Sequential ending in an Integrator."""
        layers = []
        for k, m in enumerate(_flatten(modules)):
            layer, in_scale = convert_module(self, f"{name}.{k}", m, in_scale)
            layers.append(layer)
        if not isinstance(layers[-1], Integrator):
            raise SpikedetError(f"head branch {name} must end in a linear (non-spiking) convolution")
        return nn.Sequential(*layers)

    def build(self) -> SpikingNetwork:
        """Every routed layer and the head through the registry's table (registry.py), scales passed along."""
        *body, head = self.model.model
        scales, layers, sources = [], [], []
        x_scale = torch.ones(getattr(self.model, "yaml", {}).get("channels", 3))  # the image: analog current
        analog = []  # per layer: does its output carry an integrator's running sum rather than spikes?
        for m in body:
            layer, x_scale = convert_module(self, f"model.{m.i}", m, routed_input(x_scale, m.f, scales))
            analog.append(_reads_analog(m, layer, analog))
            layers.append(layer)
            sources.append(m.f)
            scales.append(x_scale)
        meta = {"names": dict(getattr(self.model, "names", {})), "stride": self.model.stride.tolist(),
                "scales": self.scale_sources}
        spiking_head, _ = convert_module(self, f"model.{head.i}", head, routed_input(x_scale, list(head.f), scales))
        if not isinstance(spiking_head, (SpikingDetect, DecodingHead)):
            raise SpikedetError(f"the last layer must be a detection head, got {type(head).__name__}")
        return SpikingNetwork(layers, sources, self.model.save, spiking_head, list(head.f), meta)


def _reads_analog(m: nn.Module, layer: nn.Module, analog) -> bool:
    """Whether this layer's output is analog; only pass-through layers and the head may read analog input
    (an integrator's output is a running sum, not spikes)."""
    sources = [m.f] if isinstance(m.f, int) else m.f
    reads = bool(analog) and any(analog[j] for j in sources)
    if reads and isinstance(layer, (SpikingConv, SpikeMaxPool, Integrator)):
        raise SpikedetError(f"layer {m.i} ({type(m).__name__}) reads the non-spiking output of a linear "
                            "convolution; only the detection head may")
    return reads or isinstance(layer, Integrator)


def _flatten(modules):
    for m in modules:
        if isinstance(m, nn.Sequential):
            yield from _flatten(m)
        else:
            yield m


def conversion_options(**given) -> dict:
    """The full set of conversion options (DEFAULTS for those not given): what an SNN file records."""
    unknown = set(given) - set(OPTION_KEYS) - {"timesteps"}
    if unknown:
        raise SpikedetError(f"unknown conversion options {sorted(unknown)}")
    options = {k: given.get(k) if given.get(k) is not None else DEFAULTS[k] for k in OPTION_KEYS}
    options["timesteps"] = given.get("timesteps")
    return options


@torch.no_grad()
def convert(model: nn.Module, calibration_images: Optional[torch.Tensor] = None, batch_size: int = 8,
            **options) -> SpikingNetwork:
    """Convert a trained ANN detector into a SpikingNetwork.

    calibration_images: (N, 3, H, W) in [0, 1]; needed when some activation has no learned clip threshold
        (plain ReLU, leaky ReLU, dual error without clipping), or layer-wise scales are wanted from data.
    options (defaults in spikedet.defaults):
    normalization: "channel" (one scale per output channel) or "layer" (one per layer).
    scales: for layers without a learned threshold, "percentile" of the calibration activations, or
        "mse": the threshold with the least mean squared error of the neurons' count after `timesteps` steps
        (calibration.LeastErrorObserver; far better at a few steps; needs timesteps).
    percentile: the activation percentile used as scale (100 = max; 99.99 and 99.9 are robust choices).
    threshold_scale: every layer's scale (learned or from images) times this. A higher threshold clips less
        and quantizes coarser, so the best one depends on T; choose it per T on held-out images
        (`spikedet distill-loss --threshold-scales`), never on an evaluation set. The burst SNN at T equals
        the dual-error network at L = T with its thresholds times this.
    v_init: initial membrane potential as a fraction of threshold (0.5 or 0). reset: "subtract" or "zero".
    spikes: "burst" (default), "signed" or "binary" events, or any neurons.NEURON_KINDS; "binary" is the plain IF
        neuron of Spiking-YOLO and the dual-error paper.
    timesteps: the T the network is meant for (default: the dual-error L), recorded in the file.
    leaky: "keep" (leaky ReLU units become leaky neurons) or "relu" (replaced by ReLU first).
    first_copies: k neurons per channel in the first layer, counting k * T levels in T steps (population.py);
        default: what the network was trained for (its dual-error record), else 1.
    negative_events: "whole" (a leaky neuron's negative events are worth a positive one) or "fine" (worth its
        slope alpha: burst neurons only; neurons.Neuron.negative_worth); default: "fine" for burst neurons of
        a network trained for it (DualErrorSettings.fine_negative), else "whole".
    """
    o = conversion_options(**options)
    model = reference_ann(model, o["leaky"])
    observers = None
    if o["scales"] not in CHOICES["scales"]:
        raise SpikedetError(f"scales must be one of {CHOICES['scales']}, got {o['scales']!r}")
    if o["scales"] == "mse" and not o["timesteps"]:
        raise SpikedetError("scales='mse' fits the thresholds to a number of steps: give timesteps")
    if calibration_images is not None:
        o["negative_events"] = _negative_events(model, o)
        fine = o["negative_events"] == "fine"
        make = ((lambda act: PercentileObserver(o["percentile"])) if o["scales"] == "percentile" else
                (lambda act: LeastErrorObserver([o["timesteps"]], negative_step=getattr(act, "negative_slope", 1.0)
                                                if fine else 1.0)))
        observers = observe_activations(model, calibration_images, make, batch_size)
    return _build(model, observers, o)


def rebuild(model: nn.Module, options: dict) -> SpikingNetwork:
    """The structure convert() gives for these options, with every scale 1: the shape a saved SNN's state dict
    is loaded into (no calibration images needed)."""
    o = conversion_options(**options)
    return _build(reference_ann(model, o["leaky"]), REBUILD, o)


def reference_ann(model: nn.Module, leaky: str = DEFAULTS["leaky"]) -> nn.Module:
    """The ANN an SNN converted with these options approximates, as a float32 eval-mode copy: the model
    itself, or with leaky="relu" the model with ReLU in place of leaky ReLU (what an SNN file keeps as its
    reference)."""
    if leaky not in LEAKY_MODES:
        raise SpikedetError(f"leaky must be one of {LEAKY_MODES}, got {leaky!r}")
    return (leaky_to_relu(model) if leaky == "relu" else copy.deepcopy(model)).float().eval()


def _dual_error_record(model: nn.Module) -> dict:
    return getattr(model, "dual_error", None) or getattr(model, "yaml", {}).get("dual_error") or {}


def _negative_events(model: nn.Module, o: dict) -> str:
    """The negative_events option, or its default: fine for burst neurons of a network trained for them."""
    trained_fine = _dual_error_record(model).get("fine_negative", False) and o["spikes"] == "burst"
    return o["negative_events"] or ("fine" if trained_fine else "whole")


def _build(model: nn.Module, observers, o: dict) -> SpikingNetwork:
    dual_error = _dual_error_record(model)
    o["negative_events"] = _negative_events(model, o)
    snn = Converter(model, o["normalization"], observers, o["v_init"], o["reset"], o["spikes"],
                    o["threshold_scale"], o["negative_events"]).build()
    try:
        negative_worth(snn)  # the energy report counts events of one worth
    except ValueError as e:
        raise SpikedetError(f"{e}: convert with negative_events='whole'") from None
    o["first_copies"] = int(o["first_copies"] or dual_error.get("first_copies", 1))
    make_population(snn.layers, snn.sources, snn.saved, o["first_copies"])
    o["timesteps"] = o["timesteps"] or dual_error.get("levels")
    snn.meta.update(options=o, timesteps=o["timesteps"],
                    family="darknet" if isinstance(model, DarknetModel) else "yolo")
    return snn
