"""Fine-tuning a dual-error ANN through the T steps of the binary IF neurons it will become (hybrid conversion
and spike-based backpropagation, Rathi et al. 2020).

The dual error trains each unit for the count of a neuron fed a constant current; deeper layers receive lumpy,
synchronized spike trains instead, so a converted network falls short of its ANN. Here the ANN's own modules
and weights run unrolled in time: every DualErrorReLU is, for the forward pass, the neuron the converter makes
of it (binary events, reset to zero, v_init 0: convert with spikes="binary", reset="zero", v_init=0). In the
ANN's units its membrane starts at 0, adds the unit's input at every step, fires where v / lambda >= 1 (the
comparison of neurons.BinaryNeuron, whose potential is v / lambda after normalization), outputs spike * lambda
and resets to zero. The image is the same current at every step; the time steps are folded into the batch, so
convolutions, batch-norm and pools run once per layer for all steps. A max-pool passes, as layers.SpikeMaxPool
does, at each step the rise of its window's highest spike count so far. The head is read out as the engine reads
it: the mean of its linear outputs over steps K+1..T (burn-in K). The spike's gradient is a triangle around the
threshold (a surrogate gradient, as in SpikingJelly's surrogate functions), so gradients reach the weights and
each lambda. Batch-norm stays in eval mode, so the converter folds exactly the statistics that were trained
through. The loss is ultralytics' detection loss of the model (what tools/train.py minimizes) on the
time-averaged head outputs, optionally plus their disagreement with the ANN the run started from (agreement).
The result is an ordinary spikedet ANN checkpoint, which tools/convert.py converts.

The same unrolled network, for a darknet student with leaky units (binary leaky neurons, reset by subtraction,
v_init 0.5: convert's defaults with spikes="binary"), is what a distillation with binary_steps=T trains
through (spikedet.distill).
"""
import contextlib
import copy
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import nn
from ultralytics.nn.modules import Detect

from ..checks import check_values
from ..darknet.model import DarknetHead
from ..defaults import DEFAULTS
from ..distill.losses import bernoulli_kl
from ..errors import SpikedetError
from ..model.activation import DualErrorLeakyReLU, DualErrorReLU, descend, dual_error_modules
from ..model.checkpoint import save_ann
from ..routing import routed_input, run_routed
from .convert import activation_of
from .layers import SpikeMaxPool
from .neurons import BinaryNeuron, fold_time, unfold_time

CONVERSION = {"spikes": "binary", "reset": "zero", "v_init": 0.0}  # the SNN this trains for
# the SNN a distillation with binary_steps trains for: convert's defaults with binary spikes
DISTILL_CONVERSION = {"spikes": "binary", "reset": DEFAULTS["reset"], "v_init": DEFAULTS["v_init"]}


class _BinaryIF(torch.autograd.Function):
    """Binary IF neurons with unit threshold over the steps of `current` (T, ...), as neurons.BinaryNeuron steps
    them: v starts at v_init; per step v += I_t, s_t = (v >= 1), and v -= s_t (reset by subtraction) or
    v *= 1 - s_t (reset to zero). Leaky (negative_slope = alpha): also s_t = -1 where v <= -1/alpha, which gives
    1/alpha back (Spiking-YOLO's imbalanced threshold; leaky neurons reset by subtraction).
    Backward: d s_t / d v = max(0, 1 - |v - 1|), a triangle of half-width one threshold, plus for leaky
    neurons alpha * max(0, 1 - alpha |v + 1/alpha|), the same triangle for the negative event, scaled to the
    unit's slope. The reset is taken as constant (its spike detached, SpikingJelly's detach_reset), so
    d v_t / d v_{t-1} = 1 - s_{t-1} for reset to zero and 1 for subtraction. Only the potentials before each
    reset are kept for backward."""

    @staticmethod
    def forward(ctx, current, v_init, reset_zero, negative_slope):
        charged = torch.empty_like(current)  # v after charging, before firing and reset, at every step
        spikes = torch.empty_like(current)
        params = _step_params(reset_zero, negative_slope)
        v = torch.full_like(current[0], float(v_init))
        for t in range(current.shape[0]):
            v = v + current[t]
            charged[t] = v  # a copy: the reset below changes v in place
            BinaryNeuron.neuronal_fire(v, spikes[t], None, **params)
            BinaryNeuron.neuronal_reset(v, spikes[t], **params)
        ctx.save_for_backward(charged)
        ctx.reset_zero, ctx.negative_slope = reset_zero, negative_slope
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        (charged,) = ctx.saved_tensors
        slope = ctx.negative_slope
        grad_current = torch.empty_like(charged)
        grad_v = torch.zeros_like(charged[0])  # dL / dv after the reset of step t, carried back in time
        for t in reversed(range(charged.shape[0])):
            v = charged[t]
            surrogate = (1.0 - (v - 1.0).abs()).clamp_(min=0.0)
            if slope is not None:
                surrogate += slope * (1.0 - slope * (v + 1.0 / slope).abs()).clamp_(min=0.0)
            carried = grad_v * (v < 1.0).to(v.dtype) if ctx.reset_zero else grad_v
            grad_current[t] = grad_spikes[t] * surrogate + carried
            grad_v = grad_current[t]  # v_t = v_{t-1} (after reset) + I_t
        return grad_current, None, None, None


def _step_params(reset_zero: bool, negative_slope: Optional[float]) -> dict:
    """neurons.BinaryNeuron's step parameters for these settings (one source of its fire and reset rules)."""
    return BinaryNeuron(0.0, "zero" if reset_zero else "subtract", negative_slope).step_params()


def binary_if(current: torch.Tensor, v_init: float = 0.0, reset: str = "zero",
              negative_slope: Optional[float] = None) -> torch.Tensor:
    """Events (0 or 1; leaky: -1 too) of binary IF neurons with unit threshold fed current (T, ...)."""
    return _BinaryIF.apply(current, v_init, reset == "zero", negative_slope)


class SpikingUnit(nn.Module):
    """A dual-error unit's stand-in while unrolled: its neurons over the steps folded in the batch ((T * B, ...)
    in and out), with its lambda (the same Parameter): current / lambda in, events * lambda out. A leaky unit
    becomes the leaky neuron the converter makes of it (its slope, reset by subtraction)."""

    def __init__(self, unit: DualErrorReLU, steps: int, v_init: float, reset: str):
        super().__init__()
        self.unit, self.steps, self.v_init = unit, steps, v_init
        self.slope = getattr(unit, "negative_slope", None)
        self.reset = "subtract" if self.slope is not None else reset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.unit.positive_threshold()  # as the activation takes it
        current = x.reshape(self.steps, -1, *x.shape[1:]) / lam
        return (binary_if(current, self.v_init, self.reset, self.slope) * lam).reshape(x.shape)


def count_gated_max_pool(pool: nn.MaxPool2d, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The engine's layers.SpikeMaxPool (fresh: no counts carried in) over the steps folded in the batch
    ((T * B, ...) in and out). The inputs are spikes times a per-channel lambda, which its per-channel max of
    the counts carries through; its cumsum, max-pool and diff pass gradients."""
    return fold_time(SpikeMaxPool(pool)(unfold_time(x, steps)))


def check_unrollable(model: nn.Module, reset: str):
    """A one-line error unless every activation is a dual-error unit (its lambda is the conversion's scale; a
    leaky one only where the neurons reset by subtraction, as the converter's leaky neurons do) of one neuron per
    channel, and the head is ultralytics' Detect or darknet's [yolo] head."""
    for name, m in model.named_modules():
        act = activation_of(m) if hasattr(m, "conv") else None
        if act is None:
            continue
        if not isinstance(act, DualErrorReLU):
            raise SpikedetError(f"layer {name}: its activation {type(act).__name__} is not a dual-error unit, whose "
                                "lambda is the neuron's threshold")
        if isinstance(act, DualErrorLeakyReLU) and reset != "subtract":
            raise SpikedetError(f"layer {name}: a leaky dual-error unit becomes a neuron that resets by "
                                f"subtraction, not reset {reset!r}")
        if act.copies > 1:
            raise SpikedetError(f"layer {name}: its unit is run by {act.copies} neurons per channel (first_copies), "
                                "and the unrolled SNN has one")
        if act.settings.fine_negative:
            raise SpikedetError(f"layer {name}: its unit is trained for fine negative events (burst neurons), and "
                                "the unrolled SNN's binary neurons fire whole ones")
    if not isinstance(model.model[-1], (Detect, DarknetHead)):
        raise SpikedetError(f"the last layer must be ultralytics' Detect head or darknet's [yolo] head, got "
                            f"{type(model.model[-1]).__name__}")


@contextlib.contextmanager
def spiking_units(model: nn.Module, steps: int, v_init: float, reset: str):
    """Inside: every conv block's dual-error unit replaced by its SpikingUnit over `steps` steps and every
    max-pool count-gated (a forward hook replaces its output, so routed layers keep their place); restored
    after."""
    blocks = [m for m in model.modules() if isinstance(getattr(m, "act", None), DualErrorReLU)]
    units = [m.act for m in blocks]
    hooks = []
    try:
        for block, unit in zip(blocks, units):
            block.act = SpikingUnit(unit, steps, v_init, reset)
        for pool in (m for m in model.modules() if isinstance(m, nn.MaxPool2d)):
            hooks.append(pool.register_forward_hook(
                lambda m, inputs, _: count_gated_max_pool(m, inputs[0], steps)))
        yield
    finally:
        for block, unit in zip(blocks, units):
            block.act = unit
        for hook in hooks:
            hook.remove()


class UnrolledSNN(nn.Module):
    """The ANN `model` (shared, not copied) run as the binary SNN that convert(model, spikes="binary", v_init=,
    reset=) makes, for `timesteps` steps, the head read out over steps burn_in+1..T (the defaults: CONVERSION).
    forward(images) gives, averaged over the read-out steps, what Detect's forward_head gives in training,
    {"boxes", "scores", "feats"} (the input of the model's criterion and, decoded, of the engine's decode), or
    for a darknet model what the model returns, (decoded, raw [yolo] maps), from the read-out maps."""

    def __init__(self, model: nn.Module, timesteps: int, burn_in: int = 0,
                 v_init: float = CONVERSION["v_init"], reset: str = CONVERSION["reset"]):
        super().__init__()
        if not 0 <= burn_in < timesteps:
            raise SpikedetError(f"burn-in must be in 0..T-1, got {burn_in} for T = {timesteps}")
        check_unrollable(model, reset)
        self.model, self.timesteps, self.burn_in = model, int(timesteps), int(burn_in)
        self.v_init, self.reset = float(v_init), reset

    def forward(self, images: torch.Tensor):
        t, batch, head = self.timesteps, images.shape[0], self.model.model[-1]
        x = images.unsqueeze(0).expand(t, *images.shape).reshape(t * batch, *images.shape[1:])
        with spiking_units(self.model, t, self.v_init, self.reset):
            preds = self.model(x)[1] if isinstance(head, DarknetHead) else head_outputs(self.model, x)

        def read_out(y):
            return y.reshape(t, batch, *y.shape[1:])[self.burn_in:].mean(0)

        if isinstance(head, DarknetHead):
            maps = [read_out(m) for m in preds]
            return head.decode(maps), maps
        return {"boxes": read_out(preds["boxes"]), "scores": read_out(preds["scores"]),
                "feats": [read_out(f) for f in preds["feats"]]}


def head_outputs(model: nn.Module, x: torch.Tensor) -> Dict[str, object]:
    """The Detect head's training outputs {"boxes", "scores", "feats"} of `model` on x: the dual-error ANN's, or,
    inside spiking_units, its neurons' per step."""
    *body, head = model.model
    x, saved = run_routed(x, body, [m.f for m in body], model.save)
    return head.forward_head(routed_input(x, head.f, saved), **head.one2many)


def agreement_loss(snn: dict, ann: dict, reg_max: int) -> torch.Tensor:
    """How far the SNN's read-out is from an ANN's outputs on the same images, in the units of ultralytics'
    detection loss (a sum over the batch): the class scores' Bernoulli KL summed over anchors and classes, plus
    the box distributions' KL (softmax over each side's reg_max bins; without bins, the distances' squared
    error) weighted by the ANN's highest class probability, both divided by the sum of those probabilities, as
    ultralytics divides by its target scores. Zero when the two agree; `ann` is the target (no gradient)."""
    weight = torch.sigmoid(ann["scores"]).amax(1)  # (B, anchors): where the ANN sees an object
    norm = weight.sum().clamp(min=1.0)
    scores = bernoulli_kl(snn["scores"], ann["scores"]).sum() / norm
    b, _, a = ann["boxes"].shape
    if reg_max > 1:
        log_q = snn["boxes"].view(b, 4, reg_max, a).log_softmax(2)
        log_p = ann["boxes"].view(b, 4, reg_max, a).log_softmax(2)
        per_anchor = (log_p.exp() * (log_p - log_q)).sum((1, 2))
    else:  # the four distances themselves: their squared error
        per_anchor = (snn["boxes"] - ann["boxes"]).pow(2).sum(1)
    boxes = (per_anchor * weight).sum() / norm
    return (scores + boxes) * b


def detection_loss(model: nn.Module, preds: dict, batch: dict) -> torch.Tensor:
    """ultralytics' loss of the model (box, cls, dfl with its gains, times the batch size), summed as its
    trainer sums it before backward."""
    if getattr(model, "criterion", None) is None:
        from ultralytics.cfg import get_cfg

        model.args = get_cfg()  # the default gains (box 7.5, cls 0.5, dfl 1.5), as tools/train.py trains
        model.criterion = model.init_criterion()
    loss, _ = model.criterion(preds, batch)
    return loss.sum()


def labelled_batches(data_yaml: Union[str, Path], split: str, imgsz: int, batch: int, augment: bool,
                     workers: int = 0, seed: int = 0):
    """ultralytics' loader of a dataset split (images and their labels), letterboxed to imgsz as the trainer
    loads them; with augment, its training augmentation without mosaic (the last epochs of a dual-error
    training run without it, close_mosaic)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from ..offline import guard_ultralytics_downloads
    from ..train import check_dataset_yaml

    guard_ultralytics_downloads()
    check_dataset_yaml(data_yaml)  # one-line errors, and no `download` script for ultralytics to run
    try:
        data = check_det_dataset(str(data_yaml), autodownload=False)
    except Exception as e:  # ultralytics raises several types for a missing or broken dataset
        raise SpikedetError(f"{data_yaml}: {' '.join(str(e).split())}") from None
    if not data.get(split):
        raise SpikedetError(f"{data_yaml}: has no {split} split")
    cfg = get_cfg(overrides={"imgsz": imgsz, "mosaic": 0.0, "seed": seed, "cache": False})
    dataset = build_yolo_dataset(cfg, data[split], batch, data, mode="train" if augment else "val")
    return build_dataloader(dataset, batch, workers, shuffle=augment, pin_memory=False, device="cpu")


def images_of(batch: dict) -> torch.Tensor:
    return batch["img"].float() / 255


def finetune(model: nn.Module, loader, timesteps: int, burn_in: int, epochs: int, lr: float,
             progress: bool = True, max_batches: Optional[int] = None, agreement: float = 0.0) -> List[dict]:
    """Adam over the weights and every lambda, the learning rate a cosine over the run's steps; batch-norm in
    eval mode. Returns one entry per epoch (mean loss, minutes). max_batches: stop each epoch after this many
    batches (tests, timing). agreement: the weight of agreement_loss, the SNN pulled towards what the ANN it
    starts from (a frozen copy, errors on) says on the batch, beside the labels' loss: the conversion error
    itself as a training signal (against the live ANN the weights could also move the ANN towards the SNN,
    which lowered both on the shapes val split). The model is changed in place."""
    check_values(agreement=agreement)
    unrolled = UnrolledSNN(model, timesteps, burn_in)
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if agreement else None
    model.eval()  # frozen batch-norm statistics; gradients still flow
    params = [p for p in model.parameters() if p.requires_grad]  # not the DFL's fixed projection
    lams = [m.lam for m in dual_error_modules(model)]
    optimizer = torch.optim.Adam(params, lr=lr)
    per_epoch = min(len(loader), max_batches or len(loader))
    total, step, history = epochs * per_epoch, 0, []
    for epoch in range(epochs):
        started, losses = time.time(), []
        for k, batch in zip(range(per_epoch), loader):
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            images = images_of(batch)
            preds = unrolled(images)
            loss = detection_loss(model, preds, batch)
            if agreement:
                with torch.no_grad():
                    ann = head_outputs(teacher, images)
                loss = loss + agreement * agreement_loss(preds, ann, model.model[-1].reg_max)
            if not torch.isfinite(loss):
                raise SpikedetError(f"the loss is {float(loss)} at epoch {epoch + 1}, batch {k + 1}: a smaller lr "
                                    "may help")
            descend(optimizer, loss, lams)
            step += 1
            losses.append(float(loss.detach()))
            if progress:
                print(f"epoch {epoch + 1}/{epochs} batch {k + 1}/{per_epoch} loss {losses[-1]:.3f} "
                      f"({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
        history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses),
                        "minutes": round((time.time() - started) / 60, 2)})
        if progress:
            print(f"epoch {epoch + 1}: mean loss {history[-1]['loss']:.4f}, {history[-1]['minutes']} min",
                  file=sys.stderr, flush=True)
    return history


def save_finetuned(model: nn.Module, path: Union[str, Path], record: dict) -> Path:
    """An ordinary spikedet ANN checkpoint (float32: the weights the spikes were trained with; never over an
    existing file), with the fine-tune's settings under `snn_finetune`."""
    return save_ann(model, path, half=False, replace=False, snn_finetune=record)
