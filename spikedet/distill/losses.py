"""The distillation losses: the teacher's raw [yolo] outputs and, optionally, its activations."""
from pathlib import Path
from typing import Callable, Dict, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import SpikedetError
from ..monitor import ActivationMonitor
from .images import load_batch


def bernoulli_kl(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """BCE(student, sigmoid(teacher)) minus the teacher's entropy: the Bernoulli KL divergence, >= 0."""
    p = torch.sigmoid(target_logits)
    return (F.binary_cross_entropy_with_logits(logits, p, reduction="none")
            - F.binary_cross_entropy_with_logits(target_logits, p, reduction="none"))


def head_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], nc: int,
              weights=(1.0, 1.0, 1.0)) -> dict:
    """Distillation loss on the raw [yolo] maps (see the module docstring): {"obj", "box", "cls", "loss"}."""
    w_obj, w_box, w_cls = weights
    obj = box = cls = 0.0
    for s, t in zip(student_maps, teacher_maps):
        b, c, h, w = s.shape
        s = s.view(b, c // (5 + nc), 5 + nc, h, w)
        t = t.detach().view(b, c // (5 + nc), 5 + nc, h, w)
        p = torch.sigmoid(t[:, :, 4:5])
        norm = p.sum().clamp(min=1e-6)
        obj = obj + bernoulli_kl(s[:, :, 4], t[:, :, 4]).sum() / s[:, :, 4].numel()
        box = box + (p * (s[:, :, :4] - t[:, :, :4]) ** 2).sum() / norm
        if nc:
            cls = cls + (p * bernoulli_kl(s[:, :, 5:], t[:, :, 5:])).sum() / norm
    # objectness is averaged over every slot (most are background): scaled so its gradient is not negligible
    obj = obj * 100.0
    obj, box, cls = (v if torch.is_tensor(v) else torch.tensor(float(v)) for v in (obj, box, cls))
    loss = w_obj * obj + w_box * box + w_cls * cls
    return {"loss": loss, **{k: float(v.detach()) for k, v in (("obj", obj), ("box", box), ("cls", cls))}}


class LayerOutputs:
    """The latest output of each of `modules` (layers of `model`), for the feature loss: spikedet's one
    activation monitor (spikedet.monitor) with a recorder that keeps the last output per layer."""

    def __init__(self, model: torch.nn.Module, modules: Sequence[torch.nn.Module]):
        slot = {id(m): k for k, m in enumerate(modules)}
        self.outputs = [None] * len(modules)

        def keep(_, module, __, output):
            self.outputs[slot[id(module)]] = output

        self.monitor = ActivationMonitor(model, lambda _, m: id(m) in slot, keep)

    def remove(self):
        self.monitor.remove()


def feature_loss(student_feats, teacher_feats, scales) -> torch.Tensor:
    """Mean over layers of the squared activation error in units of each channel's initial lam."""
    total = 0.0
    for s, t, lam in zip(student_feats, teacher_feats, scales):
        total = total + (((s - t.detach()) / lam.view(1, -1, 1, 1)) ** 2).mean()
    return total / max(len(scales), 1)


def mean_head_loss(student: torch.nn.Module, teacher: torch.nn.Module, paths: Sequence[Path], imgsz: int,
                   batch: int = 8) -> dict:
    """head_loss of `student` against `teacher` over the images `paths` (stretched to imgsz, no augmentation),
    averaged over batches weighted by their size: {"obj", "box", "cls", "loss"} as floats.

    Why: on the training images it is what a distillation reached; on images it never saw, what of that fit
    carries over (the generalization gap, without labels)."""
    return mean_head_losses(student, teacher, paths, imgsz, {"": lambda: None}, batch)[""]


@torch.no_grad()
def mean_head_losses(student: torch.nn.Module, teacher: torch.nn.Module, paths: Sequence[Path], imgsz: int,
                     settings: Mapping[str, Callable[[], None]], batch: int = 8) -> Dict[str, dict]:
    """mean_head_loss of the student in each of several settings (name -> a function that puts the student in
    it, e.g. its errors at some level), each image loaded and the teacher run once for all of them:
    {name: {"obj", "box", "cls", "loss"}}. The student is left in the last setting."""
    if not paths:
        raise SpikedetError("no images to average the distillation loss over")
    totals = {name: {"obj": 0.0, "box": 0.0, "cls": 0.0, "loss": 0.0} for name in settings}
    count = 0
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        x = load_batch(chunk, imgsz).to(next(student.parameters()).device)
        target = teacher(x)[1]
        for name, put in settings.items():
            put()
            out = head_loss(student(x)[1], target, teacher.nc)
            out["loss"] = float(out["loss"])
            for key in totals[name]:
                totals[name][key] += out[key] * len(chunk)
        count += len(chunk)
    return {name: {key: value / count for key, value in sums.items()} for name, sums in totals.items()}


@torch.no_grad()
def snn_head_loss(snn, teacher: torch.nn.Module, paths: Sequence[Path], imgsz: int, timesteps: int,
                  burn_ins: Sequence[int], batch: int = 4) -> dict:
    """{K: head_loss of the SNN's read-out at T = timesteps over steps K+1..T} against the teacher, averaged over
    the images `paths`: the selection measure for an SNN's read-out (e.g. its burn-in), without labels. One
    simulation per batch serves every K: the sum over steps K+1..T is T * mean_T - K * mean_K."""
    wanted = sorted({int(timesteps)} | {int(k) for k in burn_ins if k > 0})
    if not paths or max(burn_ins) >= timesteps or min(burn_ins) < 0:
        raise SpikedetError(f"need images and burn-ins in 0..{timesteps - 1}, got {len(paths)} images, {burn_ins}")
    totals, count = {int(k): 0.0 for k in burn_ins}, 0
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        x = load_batch(chunk, imgsz)
        target = teacher(x)[1]
        means = snn.simulate(x, wanted, method="steps", decode=False)
        t = int(timesteps)
        for k in totals:
            maps = means[t] if not k else [(t * m - k * b) / (t - k) for m, b in zip(means[t], means[k])]
            totals[k] += float(head_loss(maps, target, teacher.nc)["loss"]) * len(chunk)
        count += len(chunk)
    return {k: v / count for k, v in totals.items()}
