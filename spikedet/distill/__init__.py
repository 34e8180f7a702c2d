"""Dual-error fine-tuning of a pretrained darknet detector by self-distillation (no labels needed).

The float network (the teacher, frozen) teaches its own dual-error copy (the student): every leaky unit of
the student becomes a DualErrorLeakyReLU, lam * clip(floor(leaky(x) * L / lam + 0.5) / L, -1, 1) with a
learned lam per channel -- exactly the net count of spikedet's leaky neuron with burst events after L steps
-- so the student trained here *is* the SNN it converts to (burst neurons, T = L), and it keeps darknet's
own head ([yolo] layers and their convolutions).

Loss, on the raw [yolo] maps (B, A * (5 + nc), H, W), per anchor slot, with p = sigmoid(teacher objectness):
  objectness: soft-target BCE(student logit, p) minus the teacher's own entropy (0 when they agree). It
      covers every slot, so background stays background.
  boxes: squared error of the four raw box outputs, weighted by p (only slots the teacher believes in
      carry box information), normalized by the sum of p.
  classes: soft-target BCE against sigmoid(teacher class logits) minus its entropy, weighted by p likewise.
Each term is the KL divergence (objectness, classes) or the Gaussian log-likelihood (boxes) of the
teacher's prediction: no labels, no matching, no anchors to assign, and the student is pulled towards the
teacher exactly where the teacher's detections are decided.
Optionally (`feature_weight` > 0) every dual-error layer also matches the teacher's float activation,
squared error divided by the layer's initial lam per channel (so each channel counts in units of its own
threshold): a direct signal for every layer, which the head-only loss reaches only through many
straight-through estimators.

Batch-norm statistics stay frozen (the model runs in eval mode; gradients still flow through the affine
BN parameters unless `lambda_only`). lam starts, per channel, where the dual-error unit's squared error against
the teacher's activations on the first 32 training images is smallest (`init="mse"`; about half the channel's
maximum at L = 8), or at their p99.99 (`init="percentile"`: the converter's default channel-wise
normalization, i.e. the network converted as trained). `lambda_only` freezes every weight (conv and BN): only
lam learns -- the calibration baseline.

Several `levels` (e.g. 8 and 16): each step draws one, so the same thresholds serve every T the SNN will run
at; the checkpoint is recorded at the smallest.
"""
import json
import math
import random
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from ultralytics.utils import TQDM

from ..darknet import load_darknet
from ..defaults import CHOICES, DEFAULTS
from ..errors import SpikedetError, fail
from ..model.checkpoint import save_ann
from .images import DistillImages, load_batch, training_images
from .losses import _Capture, feature_loss, head_loss, mean_head_loss
from .student import (CALIBRATION_COUNT, INIT_PERCENTILE, QuantDrop, channel_scales, leaky_activations, make_student,
                      mse_scales, set_levels)

__all__ = ["distill", "DistillImages", "load_batch", "training_images", "feature_loss", "head_loss", "mean_head_loss",
           "CALIBRATION_COUNT", "INIT_PERCENTILE", "channel_scales", "leaky_activations", "make_student",
           "mse_scales", "set_levels", "QuantDrop", "check_options", "OPTIONS"]


def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# the options given as key=value on the command line (tools/train.py --distill ... lr=0.00005), with their checks
OPTIONS = {
    "lr": (float, "a learning rate > 0", lambda v: v > 0),
    "lam_lr": (float, "a learning rate > 0", lambda v: v > 0),
    "feature_weight": (float, "a weight >= 0", lambda v: v >= 0),
    "float_share": (float, "a fraction in [0, 1)", lambda v: 0 <= v < 1),
    "quant_drop": (float, "a fraction in [0, 1)", lambda v: 0 <= v < 1),
    "max_minutes": (float, "minutes > 0", lambda v: v > 0),
    "threads": (int, "threads >= 1", lambda v: v >= 1),
    "workers": (int, "workers >= 0", lambda v: v >= 0),
    "log": (str, "a file path", bool),
}


def check_options(options: dict) -> dict:
    """The key=value options of a distillation, converted to their types; a SpikedetError naming the first bad one."""
    checked = {}
    for key, value in options.items():
        if key not in OPTIONS:
            raise SpikedetError(f"distillation takes no option {key!r}; it takes {', '.join(OPTIONS)}")
        kind, what, ok = OPTIONS[key]
        try:
            converted = kind(value) if value is not None else None
            if kind is int and converted != float(value):  # threads=1.5 is not 1 thread
                converted = None
        except (TypeError, ValueError):
            converted = None
        if converted is not None and kind is float and not math.isfinite(converted):
            converted = None
        if value is not None and (converted is None or not ok(converted)):
            raise SpikedetError(f"{key}={value!r}: expected {what}")
        checked[key] = converted
    return checked


def distill(weights: Union[str, Path], cfg: Union[str, Path], images: Union[str, Path], output: Union[str, Path],
            levels: Union[int, Sequence[int]] = DEFAULTS["levels_distill"], epochs: int = DEFAULTS["epochs_distill"],
            imgsz: int = DEFAULTS["imgsz"], batch: int = DEFAULTS["batch_distill"], lambda_only: bool = False,
            lr: float = DEFAULTS["lr_distill"], lam_lr: float = DEFAULTS["lam_lr_distill"], workers: int = 0,
            seed: int = DEFAULTS["seed"], progress: bool = True, names: Optional[Union[str, Path]] = None,
            feature_weight: float = DEFAULTS["feature_weight_distill"], max_minutes: float = None,
            log: Optional[Union[str, Path]] = None, threads: Optional[int] = None,
            init: str = CHOICES["distill_init"][0], augment: str = CHOICES["distill_augment"][0],
            float_share: float = DEFAULTS["float_share_distill"],
            quant_drop: float = DEFAULTS["quant_drop_distill"]) -> Path:
    """Fine-tune darknet `weights` + `cfg` into a dual-error network with `levels` levels, by distillation from
    the float network on `images` (a folder or a dataset YAML's train split; labels ignored); writes a spikedet
    ANN checkpoint to `output` (half precision) and returns its path.

    levels: one L, or several drawn one per step (the checkpoint is recorded at the smallest). init: where lam
    starts ("mse" or "percentile", see the module docstring). augment: the training views ("mosaic_mixup" or
    "crop", see DistillImages).

    lambda_only: train only the thresholds (every weight frozen). feature_weight: weight of the per-layer
    activation-matching term (0: head outputs only). float_share: the fraction of steps that distill the
    student's float network (both errors off) instead, so its weights stay a good float network too.
    quant_drop: the share of each dual-error layer's elements that pass their float value in training (QDrop,
    see student.QuantDrop), so the fit to the quantization carries over from the training images to others.
    max_minutes: stop early (at a step boundary) after this much wall time; the checkpoint records the epochs
    and steps done. log: a JSON-lines file of per-epoch loss.
    Cosine learning-rate decay over the planned steps (or over max_minutes, whichever ends first).
    """
    options = check_options(dict(lr=lr, lam_lr=lam_lr, feature_weight=feature_weight, max_minutes=max_minutes,
                                 threads=threads, workers=workers, log=None if log is None else str(log),
                                 float_share=float_share, quant_drop=quant_drop))
    lr, lam_lr, feature_weight = options["lr"], options["lam_lr"], options["feature_weight"]
    float_share, quant_drop = options["float_share"], options["quant_drop"]
    max_minutes, threads, workers = options["max_minutes"], options["threads"], options["workers"]
    train_levels = sorted({int(L) for L in ([levels] if isinstance(levels, (int, float)) else levels)})
    epochs, imgsz, batch = int(epochs), int(imgsz), int(batch)
    if not train_levels or train_levels[0] < 1:
        raise SpikedetError(f"levels must be >= 1, got {levels}")
    if init not in CHOICES["distill_init"]:
        raise SpikedetError(f"init must be one of {CHOICES['distill_init']}, got {init!r}")
    if epochs < 1 or batch < 1:
        raise SpikedetError("epochs and batch must be >= 1")
    for path, what in ((weights, "darknet weights"), (cfg, "darknet cfg")):
        if not Path(path).is_file():
            raise fail(path, f"{what} not found")
    if threads:
        torch.set_num_threads(int(threads))
    _seed_everything(seed)
    paths = training_images(images)
    data = DistillImages(paths, imgsz, seed, augment)  # checks augment before the teacher is loaded
    teacher = load_darknet(cfg, weights, names).float().eval()
    if imgsz % teacher.multiple:
        raise SpikedetError(f"imgsz {imgsz} is not a multiple of {teacher.multiple}, which this network needs")
    for p in teacher.parameters():
        p.requires_grad_(False)

    calibration = paths[:CALIBRATION_COUNT]
    calibration_batch = load_batch(calibration, imgsz)
    scales = (mse_scales(teacher, calibration_batch, train_levels) if init == "mse"
              else channel_scales(teacher, calibration_batch))
    student = make_student(teacher, train_levels[0], scales)
    student.eval()  # frozen BN statistics; gradients still flow
    lams = [p for n, p in student.named_parameters() if n.endswith(".lam")]
    others = [p for n, p in student.named_parameters() if not n.endswith(".lam")]
    for p in others:
        p.requires_grad_(not lambda_only)
    groups = [{"params": lams, "lr": lam_lr}] + ([] if lambda_only else [{"params": others, "lr": lr}])
    optimizer = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in groups]

    draw_levels = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=len(paths) >= batch,
                                         num_workers=int(workers), generator=generator)
    steps_per_epoch = len(loader)
    total_steps = epochs * steps_per_epoch
    teacher_acts, student_acts = leaky_activations(teacher), leaky_activations(student)
    dropout = QuantDrop(student_acts, quant_drop)  # before the capture hooks, so the feature loss sees its output
    capture = (_Capture(teacher_acts), _Capture(student_acts)) if feature_weight > 0 else None
    fixed_scales = [s.clone() for s in scales]

    started, step, done_epochs, history = time.time(), 0, 0, []
    log_file = open(log, "a") if log else None
    stop = False
    try:
        for epoch in range(epochs):
            data.epoch = epoch
            bar = TQDM(loader, total=steps_per_epoch, desc=f"distill {epoch + 1}/{epochs}", disable=not progress)
            running, parts = 0.0, {"obj": 0.0, "box": 0.0, "cls": 0.0, "feat": 0.0}
            for k, x in enumerate(bar):
                progress_fraction = step / total_steps
                if max_minutes:
                    progress_fraction = max(progress_fraction, (time.time() - started) / 60 / max_minutes)
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * 0.5 * (1 + math.cos(math.pi * min(progress_fraction, 1.0)))
                float_step = float_share > 0 and draw_levels.random() < float_share
                set_levels(student, None if float_step else draw_levels.choice(train_levels))
                with torch.no_grad():
                    _, t_maps = teacher(x)
                _, s_maps = student(x)
                out = head_loss(s_maps, t_maps, teacher.nc)
                loss = out["loss"]
                if capture is not None:
                    feat = feature_loss(capture[1].outputs, capture[0].outputs, fixed_scales)
                    loss = loss + feature_weight * feat
                    out["feat"] = float(feat.detach())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for lam in lams:
                        lam.clamp_(min=1e-3)
                step += 1
                running += float(loss.detach())
                for key in parts:
                    parts[key] += out.get(key, 0.0)
                bar.set_description(f"distill {epoch + 1}/{epochs} loss {running / (k + 1):.4f}")
                if max_minutes and (time.time() - started) / 60 >= max_minutes:
                    stop = True
                    break
            bar.close()
            done_epochs = epoch + 1 if not stop else epoch + (k + 1) / steps_per_epoch
            n = k + 1
            entry = {"epoch": epoch + 1, "steps": step, "minutes": round((time.time() - started) / 60, 2),
                     "loss": running / n, **{key: v / n for key, v in parts.items()}}
            history.append(entry)
            if log_file:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
            if stop:
                break
    finally:
        set_levels(student, train_levels[0])
        dropout.remove()
        if capture is not None:
            capture[0].remove()
            capture[1].remove()
        if log_file:
            log_file.close()

    record = {
        "teacher": {"weights": str(Path(weights).resolve()), "cfg": str(Path(cfg).resolve()),
                    "weights_sha256": _sha256(weights)},
        "images": [p.name for p in paths], "images_source": str(Path(images).resolve()),
        "calibration_images": [p.name for p in calibration], "init": init,
        **({"init_percentile": INIT_PERCENTILE} if init == "percentile" else {}),
        "levels": train_levels[0], "train_levels": train_levels, "epochs": epochs, "epochs_done": float(done_epochs),
        "steps": step, "imgsz": imgsz,
        "batch": batch, "lambda_only": bool(lambda_only), "lr": float(lr), "lam_lr": float(lam_lr),
        "feature_weight": float(feature_weight), "float_share": float(float_share),
        "quant_drop": float(quant_drop), "seed": int(seed),
        "minutes": round((time.time() - started) / 60, 2),
        "augment": augment, "views": DistillImages.describe(augment),
        "loss": "objectness soft BCE (KL) x100 + teacher-objectness-weighted box MSE + class soft BCE (KL)",
        "history": history,
    }
    return save_ann(student, output, half=True, distill=record)


def _sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
