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

A run is measured in steps (the learning rate follows a cosine over them), and it can stop and go on: its
resumable state (distill.state) is saved beside the output every few minutes and whenever it stops, and
`resume()` continues it to the same weights an uninterrupted run reaches. `selection` images are held out of
training (distill.images.split_selection) and the head loss on them is recorded: the measure recipes and run
lengths are chosen by, instead of an evaluation set.
"""
import glob
import hashlib
from pathlib import Path
from typing import Optional, Sequence, Union

from ..defaults import CHOICES, DEFAULTS
from ..errors import SpikedetError, fail
from .images import DistillImages, load_batch, split_selection, training_images
from .losses import feature_loss, head_loss, mean_head_loss
from ..distill_options import OPTIONS, SESSION_OPTIONS, check_options
from .loop import kept_path, run, selection_loss
from .state import load_state
from .student import (CALIBRATION_COUNT, INIT_PERCENTILE, QuantDrop, channel_scales, leaky_activations, make_student,
                      mse_scales, set_levels)

__all__ = ["distill", "resume", "DistillImages", "load_batch", "training_images", "split_selection", "feature_loss",
           "kept_path", "head_loss", "mean_head_loss", "selection_loss", "CALIBRATION_COUNT", "INIT_PERCENTILE",
           "channel_scales", "leaky_activations", "make_student", "mse_scales", "set_levels", "QuantDrop",
           "check_options", "OPTIONS", "state_path"]

Source = Union[str, Path]


def state_path(output: Source) -> Path:
    """Where a run writing `output` keeps its resumable state: NAME.last.pt beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".last.pt")


def _check_binary(binary_steps: int, burn_in: int, feature_weight: float, quant_drop: float,
                  first_copies: int = 1, fine_negative: bool = False) -> None:
    """Steps through the binary SNN replace every dual-error unit by its neurons: the per-layer feature loss and
    QDrop, which act on those units' outputs, would see nothing, and the read-out needs a step left. The unrolled
    SNN has one neuron per channel (snn.finetune), so not the first layer's copies, and binary neurons, whose
    negative spikes are worth a positive one's (fine negative events are burst neurons')."""
    if binary_steps and (feature_weight or quant_drop):
        raise SpikedetError("binary_steps= trains through the binary neurons, which the feature loss and QDrop do "
                            "not see: give feature_weight=0 and quant_drop=0")
    if binary_steps and first_copies > 1:
        raise SpikedetError("binary_steps= unrolls one neuron per channel: give first_copies=1")
    if binary_steps and fine_negative:
        raise SpikedetError("binary_steps= trains binary neurons, which have no fine negative events: give "
                            "fine_negative=false")
    if burn_in and burn_in >= binary_steps:
        raise SpikedetError(f"burn_in={burn_in} leaves no step of binary_steps={binary_steps} to read out")


def _check_lambda_only(lambda_only: bool, float_share: float) -> None:
    """A float step (both errors off) uses no threshold: with only the thresholds trained it has nothing to train."""
    if lambda_only and float_share > 0:
        raise SpikedetError("lambda_only trains only the thresholds, which a float step does not use: give "
                            "float_share=0")


def distill(weights: Source, cfg: Source, images: Union[Source, Sequence[Source]], output: Source,
            levels: Union[int, Sequence[int]] = DEFAULTS["levels_distill"], epochs: int = DEFAULTS["epochs_distill"],
            imgsz: int = DEFAULTS["imgsz"], batch: int = DEFAULTS["batch_distill"], lambda_only: bool = False,
            lr: float = DEFAULTS["lr_distill"], lam_lr: float = DEFAULTS["lam_lr_distill"], workers: int = 0,
            seed: int = DEFAULTS["seed"], progress: bool = True, names: Optional[Source] = None,
            feature_weight: float = DEFAULTS["feature_weight_distill"], max_minutes: float = None,
            log: Optional[Source] = None, threads: Optional[int] = None,
            init: str = CHOICES["distill_init"][0], augment: str = CHOICES["distill_augment"][0],
            float_share: float = DEFAULTS["float_share_distill"],
            quant_drop: float = DEFAULTS["quant_drop_distill"], ema: float = DEFAULTS["ema_distill"],
            binary_steps: int = DEFAULTS["binary_steps_distill"], burn_in: int = DEFAULTS["burn_in_distill"],
            first_copies: int = 1, fine_negative: bool = False, steps: Optional[int] = None,
            selection: int = 0, selection_seed: Optional[int] = None, select_every: int = 0,
            selection_from: Optional[Source] = None,
            save_minutes: float = DEFAULTS["save_minutes_distill"], device: Optional[str] = None,
            start: Optional[Source] = None) -> Path:
    """Fine-tune darknet `weights` + `cfg` into a dual-error network with `levels` levels, by distillation from
    the float network on `images` (one or several folders, dataset YAMLs (train split, labels ignored) or .txt
    lists of images); writes a spikedet ANN checkpoint to `output` (half precision) and returns its path, or
    the state file's path when the run stopped before its last step (max_minutes; resume() goes on).

    levels: one L, or several drawn one per step (the checkpoint is recorded at the smallest). init: where lam
    starts ("mse" or "percentile", see the module docstring). augment: the training views ("crop" or
    "mosaic_mixup", see DistillImages). steps: the run's length in steps (default: `epochs` epochs).

    lambda_only: train only the thresholds (every weight frozen). feature_weight: weight of the per-layer
    activation-matching term (0: head outputs only). float_share: the fraction of steps that distill the
    student's float network (both errors off) instead, so its weights stay a good float network too.
    quant_drop: the share of each dual-error layer's elements that pass their float value in training (QDrop,
    see student.QuantDrop). binary_steps: T > 0 makes every step that is not a float step train the binary
    SNN the converter makes of the student (`convert --spikes binary`, v_init 0.5, reset by subtraction)
    through its T steps, read out over steps burn_in+1..T, with a surrogate gradient (snn.finetune.UnrolledSNN)
    instead of the dual error at `levels`: the binary neurons' own error (the deep layers' late start, uneven
    spike trains) is then what the loss sees. first_copies: k > 1 trains for a first layer run by k neurons per
    channel (its unit quantizes to k * L levels; spikedet.snn.population), recorded in the checkpoint so that
    conversion makes those neurons. fine_negative: train for leaky neurons whose negative events are worth the
    slope alpha of a positive one (DualErrorSettings.fine_negative; burst neurons), recorded alike. ema: the
    decay of an exponential moving average of the student's parameters, updated after every step; when > 0 the
    average (not the last step's weights) is what the selection loss scores and the checkpoints hold
    (student.weight_average).
    selection: images held out of training (drawn by `selection_seed`, default `seed`), whose head loss at each
    level and for the float network is recorded at the end and every `select_every` steps; the network of each
    such step is kept as NAME.stepN.pt (kept_path), so a shorter run length the measure prefers can be shipped.
    selection_seed: fix it to score two seeds of one recipe on the same held-out images (`seed` then draws only
    the training). selection_from: one of the `images` sources; the selection images are drawn from its images
    only (e.g. COCO-like images held out for COCO's bars while the other sources are all trained on).
    save_minutes: how often the resumable state (state_path(output)) is saved. max_minutes: stop this session at
    a step boundary after this much wall time (the state is saved; the learning-rate schedule does not depend
    on it). log: a JSON-lines file of per-epoch loss. device: where the networks run (default
    cpu; e.g. cuda: float32, no mixed precision).
    start: a checkpoint this function wrote from the same teacher; the student starts from its weights and
    thresholds (`init` unused) and runs a new schedule of `steps`: a longer run without redoing the first.
    None of its selection images may be among this run's training images (the measure would see them).
    """
    options = check_options(dict(lr=lr, lam_lr=lam_lr, feature_weight=feature_weight, max_minutes=max_minutes,
                                 threads=threads, workers=workers, log=None if log is None else str(log),
                                 float_share=float_share, quant_drop=quant_drop, ema=ema, steps=steps,
                                 binary_steps=binary_steps, burn_in=burn_in, first_copies=first_copies,
                                 fine_negative=fine_negative, selection=selection, selection_seed=selection_seed,
                                 selection_from=None if selection_from is None else str(selection_from),
                                 select_every=select_every, save_minutes=save_minutes, device=device))
    train_levels = sorted({int(L) for L in ([levels] if isinstance(levels, (int, float)) else levels)})
    if not train_levels or train_levels[0] < 1 or train_levels[-1] > DEFAULTS["max_timesteps"]:
        raise SpikedetError(f"levels must be in [1, {DEFAULTS['max_timesteps']}], got {levels}")
    if init not in CHOICES["distill_init"]:
        raise SpikedetError(f"init must be one of {CHOICES['distill_init']}, got {init!r}")
    _check_lambda_only(lambda_only, options["float_share"])
    _check_binary(options["binary_steps"], options["burn_in"], options["feature_weight"], options["quant_drop"],
                  options["first_copies"], options["fine_negative"])
    if augment not in CHOICES["distill_augment"]:
        raise SpikedetError(f"augment must be one of {CHOICES['distill_augment']}, got {augment!r}")
    if int(epochs) < 1 or int(batch) < 1 or int(imgsz) < 32:
        raise SpikedetError("epochs and batch must be >= 1, imgsz >= 32")
    for path, what in ((weights, "darknet weights"), (cfg, "darknet cfg")):
        if not Path(path).is_file():
            raise fail(path, f"{what} not found")
    state = state_path(output)
    kept = sorted(Path(output).parent.glob(glob.escape(Path(output).stem) + ".step*.pt"))
    for path, what in ((output, "the output"), (state, "a run's state file (resume it, or remove it)"),
                       (kept[0] if kept else None, "a network kept by an earlier run of this output name")):
        if path is not None and Path(path).exists():
            raise fail(path, f"exists ({what}); spikedet does not overwrite it")
    sources = [images] if isinstance(images, (str, Path)) else list(images)
    selection_seed = seed if options["selection_seed"] is None else options["selection_seed"]
    pool = None
    if options["selection_from"] is not None:
        if Path(options["selection_from"]).resolve() not in {Path(s).resolve() for s in sources}:
            raise fail(options["selection_from"], "selection_from= must be one of the image sources given")
        if not options["selection"]:
            raise SpikedetError("selection_from= needs selection=N (how many images to hold out)")
        pool = training_images(options["selection_from"])
    train, held = split_selection(training_images(sources), options["selection"], selection_seed, pool)
    started_from = None if start is None else check_start(start, sha256(weights), train)
    steps_per_epoch = max(len(train) // int(batch), 1)
    settings = {
        "weights": str(Path(weights).resolve()), "cfg": str(Path(cfg).resolve()),
        "names": None if names is None else str(Path(names).resolve()), "weights_sha256": sha256(weights),
        "sources": [str(Path(s).resolve()) for s in sources], "images": [str(p) for p in train],
        "selection_images": [str(p) for p in held], "output": str(Path(output).resolve()), "state": str(state),
        "levels": train_levels, "epochs": int(epochs), "imgsz": int(imgsz), "batch": int(batch),
        "steps": options["steps"] or int(epochs) * steps_per_epoch, "steps_per_epoch": steps_per_epoch,
        "lambda_only": bool(lambda_only), "lr": options["lr"], "lam_lr": options["lam_lr"], "seed": int(seed),
        "selection_seed": int(selection_seed),
        "selection_from": None if pool is None else str(Path(options["selection_from"]).resolve()),
        "feature_weight": options["feature_weight"], "init": init, "augment": augment,
        "float_share": options["float_share"], "quant_drop": options["quant_drop"], "ema": options["ema"],
        "binary_steps": options["binary_steps"], "burn_in": options["burn_in"],
        "first_copies": options["first_copies"], "fine_negative": options["fine_negative"],
        "select_every": options["select_every"], "start": started_from,
        "log": None if options["log"] is None else str(Path(options["log"]).resolve()),
    }
    return run(settings, None, max_minutes=options["max_minutes"], threads=options["threads"],
               workers=options["workers"], log=options["log"], progress=progress,
               save_minutes=options["save_minutes"], device=options["device"])


def resume(state: Source, progress: bool = True, **session) -> Path:
    """Continue the run whose state file is `state` (NAME.last.pt) to its last step; returns what distill()
    returns. session: only how it runs may change (max_minutes, threads, workers, log, save_minutes); without
    log= the run goes on appending to the log it started with, so a stop leaves no hole in it."""
    other = sorted(set(session) - set(SESSION_OPTIONS))
    if other:
        raise SpikedetError(f"a resumed run keeps its recipe: {', '.join(other)} cannot change (it takes "
                            f"{', '.join(SESSION_OPTIONS)})")
    options = check_options(session)
    saved = load_state(state)
    settings = saved["settings"]
    if saved["finished"]:
        raise fail(state, f"this run has finished (step {saved['step']}); its checkpoint is {settings.get('output')}")
    _check_settings(settings, state)
    if Path(settings["output"]).exists():
        raise fail(settings["output"], "exists (the output of the run being resumed); spikedet does not overwrite it")
    if sha256(settings["weights"]) != settings["weights_sha256"]:
        raise fail(settings["weights"], "differs from the teacher the run started with (sha256)")
    settings = {**settings, "state": str(Path(state).resolve())}
    log = options.get("log")
    if log is None and settings.get("log") is not None:
        try:
            log = check_options({"log": settings["log"]})["log"]
        except SpikedetError as e:
            raise fail(state, f"the run's log cannot be appended to here ({e}); give log=FILE") from None
    return run(settings, saved, progress=progress, save_minutes=options.get("save_minutes") or
               DEFAULTS["save_minutes_distill"], **{k: options.get(k) for k in ("max_minutes", "threads")},
               log=log, workers=options.get("workers") or 0, device=options.get("device"))


def check_start(start: Source, teacher_sha256: str, train: Sequence[Path]) -> dict:
    """The record of a distilled checkpoint a run starts from ({"file", "sha256"}), or a one-line error: it must
    be a distillation of the same teacher, and its selection images must stay out of this run's training."""
    from ..model.checkpoint import load_ann  # a full read and check of the file, as any ANN file gets
    from ..fileio import load_torch_file

    content = load_torch_file(start)
    load_ann(start, content)
    record = content.get("distill")
    if not isinstance(record, dict) or not isinstance(record.get("teacher"), dict):
        raise fail(start, "not a distilled checkpoint (start= takes what tools/train.py --distill wrote)")
    if record["teacher"].get("weights_sha256") != teacher_sha256:
        raise fail(start, "was distilled from another teacher (its weights_sha256 differs from --weights')")
    held = {str(p) for p in record.get("selection_images") or [] if isinstance(p, str)}
    seen = sorted(held & {str(p) for p in train})
    if seen:
        raise fail(start, f"{len(seen)} of its selection images would be trained on here, e.g. {seen[0]} (use "
                          "its sources, selection=N and its seed as selection_seed=, which hold the same images out)")
    return {"file": str(Path(start).resolve()), "sha256": sha256(start)}


def _check_settings(settings: dict, path) -> None:
    """A state file's settings get the checks the same values get as options (they come from a file)."""
    try:
        check_options({**{k: settings[k] for k in ("lr", "lam_lr", "feature_weight", "float_share", "quant_drop",
                                                   "steps", "select_every")}, "ema": settings.get("ema", 0.0),
                       **{k: settings.get(k, 0) for k in ("binary_steps", "burn_in")},
                       "first_copies": settings.get("first_copies", 1),
                       "fine_negative": settings.get("fine_negative", False)})
        _check_lambda_only(settings.get("lambda_only"), settings["float_share"])  # float_share checked just above
        _check_binary(settings.get("binary_steps", 0), settings.get("burn_in", 0), settings["feature_weight"],
                      settings["quant_drop"], settings.get("first_copies", 1), settings.get("fine_negative", False))
        levels = [int(v) for v in settings["levels"]]
        ok = (levels and all(1 <= v <= DEFAULTS["max_timesteps"] for v in levels)
              and settings["init"] in CHOICES["distill_init"] and settings["augment"] in CHOICES["distill_augment"]
              and 1 <= int(settings["batch"]) <= 4096 and 32 <= int(settings["imgsz"]) <= 4096
              and 1 <= int(settings["steps_per_epoch"]) and settings["images"])
    except (KeyError, TypeError, ValueError, SpikedetError) as e:
        raise fail(path, f"distillation state with bad settings ({e})") from None
    if not ok:
        raise fail(path, "distillation state with settings out of range")
    missing = [p for p in settings["images"] + settings["selection_images"] + [settings["weights"], settings["cfg"]]
               if not Path(p).is_file()]
    if missing:
        raise fail(path, f"{len(missing)} file(s) of the run are gone, e.g. {missing[0]}")


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
