"""ANN -> SNN conversion: fold batch-norm, normalize, replace activations by IF neurons.

The converter walks the model's modules (Conv / BatchNorm / activation blocks, max and average pools, zero
padding, upsampling, concatenation, the detection head), not one model family, and follows ultralytics'
layer routing (`f`, `i`, `save`), which the darknet importer also produces.

Normalization (Diehl et al. 2015; Rueckauer et al. 2017; channel-wise: Kim et al., Spiking-YOLO 2020):
each spiking layer l gets an output scale lambda_l (one per output channel, or one per layer), and
    W_l[o, i] <- W_l[o, i] * lambda_{l-1}[i] / lambda_l[o],   b_l[o] <- b_l[o] / lambda_l[o],
so every neuron has threshold 1 and a spike stands for lambda_l[o] of ANN activity. lambda comes from the
learned clip threshold of a clipping dual-error activation (its exact scale), or else from a percentile of
the ANN's activations over calibration images.
"""
import copy
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from .activation import DualErrorReLU, percentile
from .engine import SpikingNetwork
from .errors import SpikedetError
from .snn import ConcatChannels, IFNeuron, Integrator, PerStep, SpikeMaxPool, SpikingConv

NORMALIZATIONS = ("channel", "layer")
LEAKY_MODES = ("keep", "relu")


def leaky_to_relu(model: nn.Module) -> nn.Module:
    """A copy of the model with every leaky ReLU replaced by ReLU: Spiking-YOLO's baseline for leaky networks
    (the converted SNN then needs no negative spikes, at the cost of changing the network it copies)."""
    model = copy.deepcopy(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.LeakyReLU):
                setattr(parent, name, nn.ReLU())
    return model


def fold_batchnorm(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d]) -> nn.Conv2d:
    """A new Conv2d (with bias) computing bn(conv(x)) in eval mode."""
    w = conv.weight.detach().float().clone()
    b = conv.bias.detach().float().clone() if conv.bias is not None else torch.zeros(w.shape[0])
    if bn is not None:
        scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
        w = w * scale.view(-1, 1, 1, 1)
        b = (b - bn.running_mean.float()) * scale + bn.bias.detach().float()
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused.weight.data, fused.bias.data = w, b
    return fused


def normalize_conv(conv: nn.Conv2d, in_scale: torch.Tensor, out_scale: torch.Tensor) -> nn.Conv2d:
    """Rescale so input spikes worth in_scale[i] and unit thresholds represent out_scale[o] (in place)."""
    out_ch, in_per_group = conv.weight.shape[:2]
    group_of_out = torch.arange(out_ch) // (out_ch // conv.groups)
    in_index = group_of_out.view(-1, 1) * in_per_group + torch.arange(in_per_group).view(1, -1)
    conv.weight.data *= in_scale[in_index].view(out_ch, in_per_group, 1, 1) / out_scale.view(-1, 1, 1, 1)
    conv.bias.data /= out_scale
    return conv


class ActivationStatistics:
    """Percentiles of each activation module's output over calibration images, per channel and per layer.

    Each batch contributes its own percentile and batches are averaged (the maximum when q = 100), so
    memory stays at one batch of activations (peers that keep all activations need tens of GB).
    """

    def __init__(self, q: float):
        self.q, self.per_channel, self.per_layer, self.batches = q, {}, {}, {}

    def hook(self, key: nn.Module):
        def record(_, __, out):
            a = out.detach().float().transpose(0, 1).reshape(out.shape[1], -1)
            for store, rows in ((self.per_channel, a), (self.per_layer, a.reshape(1, -1))):
                p = percentile(rows, self.q)
                n = self.batches.get(key, 0)
                if key in store:
                    p = torch.maximum(store[key], p) if self.q >= 100 else (store[key] * n + p) / (n + 1)
                store[key] = p
            self.batches[key] = self.batches.get(key, 0) + 1
        return record


def _activation_of(block: nn.Module):
    act = getattr(block, "act", None)
    return None if act is None or isinstance(act, nn.Identity) else act


class Converter:
    """Builds a SpikingNetwork from an ultralytics-style model (see convert() for the options)."""

    def __init__(self, model: nn.Module, normalization: str, stats: Optional[ActivationStatistics],
                 v_init: float, reset: str, spikes: str):
        if normalization not in NORMALIZATIONS:
            raise SpikedetError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.model, self.normalization, self.stats = model, normalization, stats
        self.v_init, self.reset, self.spikes = v_init, reset, spikes
        self.record = []  # one entry per spiking layer: where its scale came from

    def scale_of(self, name: str, act: nn.Module, channels: int) -> torch.Tensor:
        """lambda for the activation `act` (output channels `channels`)."""
        if isinstance(act, DualErrorReLU) and act.settings.clip:
            lam = act.lam.detach().float().abs().clamp(min=1e-4).expand(channels).clone()
            source = "learned lambda"
            if self.normalization == "layer":
                lam = lam.max().expand(channels).clone()
        else:
            if self.stats is None or act not in self.stats.per_channel:
                raise SpikedetError(f"layer {name} has no clip threshold: conversion needs calibration images")
            store = self.stats.per_channel if self.normalization == "channel" else self.stats.per_layer
            lam = store[act].float().expand(channels).clone()
            lam = torch.where(lam > 0, lam, torch.ones_like(lam))  # a channel never active: any scale works
            source = f"p{self.stats.q} of activations"
        self.record.append({"layer": name, "source": source, "scale_min": float(lam.min()),
                            "scale_max": float(lam.max())})
        return lam

    def neuron_for(self, act: nn.Module) -> IFNeuron:
        slope = getattr(act, "negative_slope", None)
        if not slope:
            return IFNeuron(self.v_init, self.reset, spikes=self.spikes)
        if self.spikes == "signed":
            raise SpikedetError("leaky ReLU units convert with binary events (Spiking-YOLO's imbalanced threshold) "
                                "or burst events; or replace them by ReLU (leaky='relu')")
        return IFNeuron(self.v_init, "subtract", spikes=self.spikes, negative_slope=slope)

    def conv_block(self, name: str, block: nn.Module, in_scale: torch.Tensor):
        """A conv(+bn)(+activation) block -> (SpikingConv or Integrator, output scale)."""
        conv = block.conv if hasattr(block, "conv") else block
        if not isinstance(conv, nn.Conv2d):
            raise SpikedetError(f"cannot convert layer {name}: {type(block).__name__} is not a convolution block")
        fused = fold_batchnorm(conv, getattr(block, "bn", None))
        act = _activation_of(block)
        if act is None:  # linear: a non-spiking integrator, whose mean potential is the ANN's output
            return Integrator(normalize_conv(fused, in_scale, torch.ones(fused.out_channels))), None
        lam = self.scale_of(name, act, fused.out_channels)
        return SpikingConv(normalize_conv(fused, in_scale, lam), self.neuron_for(act)), lam

    def layer(self, name: str, m: nn.Module, in_scale):
        """One routed layer -> (spiking layer, output scale)."""
        from ultralytics.nn.modules import Concat

        if isinstance(m, nn.MaxPool2d):
            return SpikeMaxPool(m), in_scale
        if isinstance(m, (nn.ZeroPad2d, nn.ReplicationPad2d, nn.Upsample, nn.AvgPool2d, nn.Identity)):
            return PerStep(copy.deepcopy(m)), in_scale
        if isinstance(m, nn.Sequential):  # one routed layer made of several ops (e.g. darknet's padded pool)
            parts = []
            for k, part in enumerate(m):
                converted, in_scale = self.layer(f"{name}.{k}", part, in_scale)
                parts.append(converted)
            return nn.Sequential(*parts), in_scale
        if isinstance(m, Concat):
            if m.d != 1:
                raise SpikedetError(f"cannot convert layer {name}: concat along dim {m.d}")
            return ConcatChannels(), torch.cat(in_scale)
        return self.conv_block(name, m, in_scale)

    def branch(self, name: str, modules: Iterable[nn.Module], in_scale):
        """A head branch (nested Sequentials of conv blocks) -> nn.Sequential ending in an Integrator."""
        flat = list(_flatten(modules))
        layers = []
        for k, m in enumerate(flat):
            layer, in_scale = self.conv_block(f"{name}.{k}", m, in_scale)
            layers.append(layer)
        if not isinstance(layers[-1], Integrator):
            raise SpikedetError(f"head branch {name} must end in a linear (non-spiking) convolution")
        return nn.Sequential(*layers)

    def build(self) -> SpikingNetwork:
        *body, head = self.model.model
        scales, layers, sources = [], [], []
        x_scale = torch.ones(getattr(self.model, "yaml", {}).get("channels", 3))  # the image: analog current
        analog = []  # per layer: does its output carry an integrator's running sum rather than spikes?
        for m in body:
            in_scale = x_scale if m.f == -1 else (scales[m.f] if isinstance(m.f, int) else
                                                  [x_scale if j == -1 else scales[j] for j in m.f])
            layer, x_scale = self.layer(f"model.{m.i}", m, in_scale)
            analog.append(_reads_analog(m, layer, analog))
            layers.append(layer)
            sources.append(m.f)
            scales.append(x_scale)
        meta = {"names": dict(getattr(self.model, "names", {})), "stride": self.model.stride.tolist(),
                "normalization": self.normalization, "v_init": self.v_init, "reset": self.reset,
                "spikes": self.spikes, "scales": self.record}
        head_scales = [x_scale if j == -1 else scales[j] for j in head.f]
        return SpikingNetwork(layers, sources, self.model.save, self.head(head, head_scales), list(head.f), meta)

    def head(self, head: nn.Module, head_scales):
        """ultralytics' Detect: its branches become spiking; a head with .decode (darknet's YOLO layers) reads
        the integrating linear convolutions before it and decodes their mean potentials."""
        from ultralytics.nn.modules import Detect

        if isinstance(head, Detect):
            if getattr(head, "end2end", False):
                raise SpikedetError("end-to-end (NMS-free) heads are not supported by the converter")
            return SpikingDetect(
                head,
                [self.branch(f"model.{head.i}.cv2.{k}", head.cv2[k], s) for k, s in enumerate(head_scales)],
                [self.branch(f"model.{head.i}.cv3.{k}", head.cv3[k], s) for k, s in enumerate(head_scales)],
            )
        if hasattr(head, "decode"):
            if any(s is not None for s in head_scales):
                raise SpikedetError(f"the {type(head).__name__} head must read linear (non-spiking) convolutions")
            return DecodingHead(head)
        raise SpikedetError(f"the last layer must be a detection head, got {type(head).__name__}")


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


class DecodingHead(nn.Module):
    """A head that only decodes: its inputs are already the running sums of integrating convolutions."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.decoder = copy.deepcopy(head)

    def forward(self, feats):
        return list(feats)

    def decode(self, means):
        return self.decoder.decode(means)


class SpikingDetect(nn.Module):
    """ultralytics' Detect head: spiking branches ending in integrators, decoded by Detect's own code."""

    def __init__(self, detect: nn.Module, box_branches, cls_branches):
        super().__init__()
        self.box_branches, self.cls_branches = nn.ModuleList(box_branches), nn.ModuleList(cls_branches)
        self.decoder = copy.deepcopy(detect)
        self.decoder.cv2 = self.decoder.cv3 = None  # only the decoding (DFL, anchors, strides) is kept

    def forward(self, feats):
        """Running sums, per level: box outputs then class outputs."""
        return [b(f) for b, f in zip(self.box_branches, feats)] + [c(f) for c, f in zip(self.cls_branches, feats)]

    def decode(self, means):
        """Mean output currents per level -> (B, 4 + nc, anchors), exactly as the ANN head decodes."""
        nl = len(self.box_branches)
        boxes, scores = means[:nl], means[nl:]
        bs = boxes[0].shape[0]
        preds = {"boxes": torch.cat([b.reshape(bs, b.shape[1], -1) for b in boxes], -1),
                 "scores": torch.cat([s.reshape(bs, s.shape[1], -1) for s in scores], -1),
                 "feats": boxes}
        return self.decoder._inference(preds)


@torch.no_grad()
def convert(model: nn.Module, calibration_images: Optional[torch.Tensor] = None, normalization: str = "channel",
            percentile_q: float = 99.99, v_init: float = 0.5, reset: str = "subtract", spikes: str = "burst",
            timesteps: Optional[int] = None, leaky: str = "keep", batch_size: int = 8) -> SpikingNetwork:
    """Convert a trained ANN detector into a SpikingNetwork.

    calibration_images: (N, 3, H, W) in [0, 1]; needed when some activation has no learned clip threshold
        (plain ReLU, leaky ReLU, dual error without clipping), or layer-wise scales are wanted from data.
    normalization: "channel" (one scale per output channel) or "layer" (one per layer).
    percentile_q: the activation percentile used as scale (100 = max; 99.99 and 99.9 are robust choices).
    v_init: initial membrane potential as a fraction of threshold (0.5 or 0). reset: "subtract" or "zero".
    spikes: "burst" (default), "signed" or "binary" events (see snn.IFNeuron); "binary" is the plain IF
        neuron of Spiking-YOLO and the dual-error paper.
    timesteps: the T the network is meant for (default: the dual-error L), recorded in the file.
    leaky: "keep" (leaky ReLU units become leaky neurons, see snn.IFNeuron) or "relu" (replaced by ReLU first).
    """
    if leaky not in LEAKY_MODES:
        raise SpikedetError(f"leaky must be one of {LEAKY_MODES}, got {leaky!r}")
    model = (leaky_to_relu(model) if leaky == "relu" else copy.deepcopy(model)).float().eval()
    stats = None
    if calibration_images is not None:
        stats = ActivationStatistics(percentile_q)
        hooks = [block.act.register_forward_hook(stats.hook(block.act)) for block in model.modules()
                 if _activation_of(block) is not None]
        for k in range(0, len(calibration_images), batch_size):
            model(calibration_images[k:k + batch_size].float())
        for h in hooks:
            h.remove()
    snn = Converter(model, normalization, stats, v_init, reset, spikes).build()
    settings = getattr(model, "yaml", {}).get("dual_error", {})
    snn.meta.update(timesteps=timesteps or settings.get("levels"), percentile=percentile_q, leaky=leaky,
                    ann_config=getattr(model, "yaml", None))
    return snn


def calibration_images(source, imgsz: int, count: int = 32, resize: str = "letterbox") -> torch.Tensor:
    """The first `count` images (sorted, so reproducible) of a dataset YAML's train split or of a folder."""
    from .data.yolo import read_yolo
    from .predict import IMAGE_SUFFIXES, load_image, preprocess

    source = Path(source)
    if source.suffix in (".yaml", ".yml"):
        paths = sorted(r.path for r in read_yolo(source, "train"))
    elif source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise SpikedetError(f"{source}: calibration source must be a dataset YAML or a folder of images")
    if not paths:
        raise SpikedetError(f"{source}: no calibration images found")
    return torch.stack([preprocess(load_image(p), imgsz, resize) for p in paths[:count]])


def convert_checkpoint(weights, output, calibration=None, imgsz: int = 416, calibration_count: int = 32,
                       cfg=None, names=None, **convert_args):
    """Checkpoint file (or darknet .weights with its cfg) -> SNN file (options: see convert()); returns the SNN.

    The file keeps the ANN the SNN copies (with leaky="relu", the network with ReLU) as its reference."""
    from .predict import default_resize, load_network

    ann, source = load_network(weights, cfg, names)
    if source is not None:
        raise SpikedetError(f"{weights}: already an SNN file")
    if convert_args.get("leaky") == "relu":
        ann = leaky_to_relu(ann)
    resize = default_resize(ann)
    images = calibration_images(calibration, imgsz, calibration_count, resize) if calibration else None
    snn = convert(ann, images, **convert_args)
    snn.meta.update(source=str(weights), imgsz=imgsz, resize=resize, **({"darknet_cfg": str(cfg)} if cfg else {}))
    snn.save(output, ann=ann)
    return snn
