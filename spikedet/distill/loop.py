"""One distillation run, from its settings (and, when resumed, its saved state) to the checkpoint.

The loop is a function of the step count alone: the learning rate is a cosine over the run's steps, each
epoch's image order comes from (seed, epoch), each view from (seed, epoch, index), and the level draws and
torch's generator are saved with the state. So a run stopped at step j and resumed ends with the weights of
one that never stopped (tests/test_distill_resume.py). Wall time only decides when the state is saved and
when a session ends (max_minutes); Ctrl-C and SIGTERM finish the current step, save and stop.
"""
import contextlib
import json
import math
import random
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..darknet import load_darknet
from ..errors import Interrupted, SpikedetError
from ..model.activation import descend
from ..model.checkpoint import load_ann, save_ann
from ..progress import progress_bar
from .images import DistillImages, load_batch
from .losses import LayerOutputs, feature_loss, head_loss, mean_head_loss, mean_head_losses
from .state import restore_random_states, save_state
from .student import (CALIBRATION_COUNT, INIT_PERCENTILE, QuantDrop, channel_scales, leaky_activations, make_student,
                      mse_scales, set_levels, weight_average)

PARTS = ("obj", "box", "cls", "feat")


def run(settings: dict, saved: Optional[dict], max_minutes: Optional[float], threads: Optional[int], workers: int,
        log: Optional[str], progress: bool, save_minutes: float, device: Optional[str] = None) -> Path:
    s = settings
    device = torch.device(device or "cpu")
    log_file = open(log, "a") if log else None  # checked by the options; opened before any work
    if threads:
        torch.set_num_threads(int(threads))
    _seed_everything(s["seed"])
    train = [Path(p) for p in s["images"]]
    selection = [Path(p) for p in s["selection_images"]]
    _say(progress, f"distill: {len(train)} training images, {len(selection)} held out for selection; "
                   f"{'resuming at step ' + str(saved['step']) if saved else 'starting'} of {s['steps']} steps")
    data = DistillImages(train, s["imgsz"], s["seed"], s["augment"])
    teacher = load_darknet(s["cfg"], s["weights"], s["names"]).float().eval().to(device)
    if s["imgsz"] % teacher.multiple:
        raise SpikedetError(f"imgsz {s['imgsz']} is not a multiple of {teacher.multiple}, which this network needs")
    for p in teacher.parameters():
        p.requires_grad_(False)

    calibration = train[:CALIBRATION_COUNT]
    first_copies = s.get("first_copies", 1)  # state files written before these options have none
    fine_negative = s.get("fine_negative", False)
    start = _start_student(s.get("start")) if not saved else None
    if saved:
        scales = [t.to(device) for t in saved["initial_scales"]]
    elif start is not None:
        _say(progress, f"distill: starting from {s['start']['file']}")
        scales = [act.lam.detach().clone().to(device) for act in leaky_activations(start)]
    else:
        _say(progress, f"distill: initial thresholds ({s['init']}) from {len(calibration)} images")
        batch = load_batch(calibration, s["imgsz"]).to(device)
        scales = (mse_scales(teacher, batch, s["levels"], first_copies=first_copies, fine_negative=fine_negative)
                  if s["init"] == "mse" else channel_scales(teacher, batch))
    student = make_student(teacher, s["levels"][0], scales, first_copies=first_copies, fine_negative=fine_negative)
    student.eval()  # frozen BN statistics; gradients still flow
    if saved or start is not None:
        student.load_state_dict(saved["student"] if saved else start.state_dict())
    average = weight_average(student, s.get("ema", 0.0))
    if average is not None and saved:
        try:
            average.load_state_dict(saved["average"])
        except (KeyError, RuntimeError):
            raise SpikedetError(f"{s['state']}: a run with ema={s['ema']} whose state holds no weight average "
                                "of this network") from None
    net = student if average is None else average.module  # what the run measures and writes
    binary = _binary_snn(student, s)
    lams = [p for n, p in student.named_parameters() if n.endswith(".lam")]
    others = [p for n, p in student.named_parameters() if not n.endswith(".lam")]
    for p in others:
        p.requires_grad_(not s["lambda_only"])
    groups = [{"params": lams, "lr": s["lam_lr"]}] + ([] if s["lambda_only"] else [{"params": others, "lr": s["lr"]}])
    optimizer = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in groups]
    draw_levels = random.Random(s["seed"])
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        restore_random_states(saved, draw_levels, s["state"])

    teacher_acts, student_acts = leaky_activations(teacher), leaky_activations(student)
    # dropout before the capture hooks, so that the feature loss sees its output
    dropout = QuantDrop(student_acts, s["quant_drop"])
    capture = ((LayerOutputs(teacher, teacher_acts), LayerOutputs(student, student_acts)) if s["feature_weight"] > 0
               else None)

    step = saved["step"] if saved else 0
    sums = dict(saved["epoch_sums"]) if saved else {}
    history = list(saved["history"]) if saved else []
    minutes_before = saved.get("minutes", 0.0) if saved else 0.0
    started = last_save = time.time()
    total, per_epoch = s["steps"], s["steps_per_epoch"]

    def minutes():
        return round(minutes_before + (time.time() - started) / 60, 2)

    def save(finished=False):
        state = save_state(s["state"], s, student, optimizer, scales, step, sums, history, draw_levels, finished,
                           minutes(), average)
        return state

    def select():
        dropout.active = False
        try:
            return selection_loss(net, teacher, selection, s["imgsz"], s["levels"], _binary_snn(net, s))
        finally:
            dropout.active = True

    bar = progress_bar(total=total, initial=step, desc="distill", disable=not progress)
    stopped = None
    try:
        with _stop_requests() as requested:
            while step < total and not stopped:
                epoch, first = divmod(step, per_epoch)
                data.epoch = epoch
                order = _epoch_order(len(train), s["seed"], epoch)
                batches = [order[k * s["batch"]:(k + 1) * s["batch"]] for k in range(first, per_epoch)]
                # its own generator: a loader draws worker seeds, which must not move torch's global one
                loader = torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=int(workers),
                                                     generator=torch.Generator().manual_seed(s["seed"] + epoch))
                for x in loader:
                    lr_scale = 0.5 * (1 + math.cos(math.pi * step / total))
                    for g, base in zip(optimizer.param_groups, base_lrs):
                        g["lr"] = base * lr_scale
                    out = _step(student, teacher, x.to(device, non_blocking=True), s, draw_levels, capture, scales,
                                optimizer, lams, others, binary)
                    if average is not None:
                        average.update_parameters(student)
                    step += 1
                    sums = {"n": sums.get("n", 0) + 1,
                            **{k: sums.get(k, 0.0) + out.get(k, 0.0) for k in ("loss",) + PARTS}}
                    bar.update(1)
                    bar.set_description(f"distill epoch {epoch + 1} loss {sums['loss'] / sums['n']:.4f}")
                    if step % per_epoch == 0 or step == total:
                        entry = {"epoch": epoch + 1, "steps": step, "minutes": minutes(),
                                 **{k: sums[k] / sums["n"] for k in ("loss",) + PARTS}}
                        history.append(entry)
                        sums = {}
                        if log_file:
                            log_file.write(json.dumps(entry) + "\n")
                            log_file.flush()
                    if selection and s["select_every"] and step % s["select_every"] == 0 and step < total:
                        history.append({"steps": step, "selection_loss": select()})
                        _keep(net, s, history, step, minutes(), progress)
                    if requested:
                        stopped = requested["signal"]
                    elif max_minutes and (time.time() - started) / 60 >= max_minutes:
                        stopped = "time"
                    if stopped or step == total:
                        break
                    if (time.time() - last_save) / 60 >= save_minutes:
                        save()
                        last_save = time.time()
    finally:
        bar.close()
        for network in {id(student): student, id(net): net}.values():
            set_levels(network, s["levels"][0])
        if log_file:
            log_file.close()

    if step < total:
        dropout.remove()
        state = save()
        how = f"resume: tools/train.py --distill --resume {state}"
        if stopped == "time":
            _say(True, f"distill: stopped at step {step} of {total} (max_minutes={max_minutes}); state {state}; {how}")
            return state
        raise Interrupted(f"distillation stopped at step {step} of {total}; state saved to {state}; {how}",
                          130 if stopped == signal.SIGINT else 143)
    dropout.remove()
    if capture is not None:
        capture[0].remove()
        capture[1].remove()
    record = _record(s, history, step, minutes())
    if selection:
        _say(progress, f"distill: head loss on the {len(selection)} selection images")
        record["selection_loss"] = select()
        history.append({"steps": step, "selection_loss": record["selection_loss"]})
    set_levels(net, s["levels"][0])
    if Path(s["output"]).exists():
        raise SpikedetError(f"{s['output']}: appeared during the run; spikedet does not overwrite it "
                            f"(the state {save()} holds the result)")
    output = save_ann(net.cpu(), s["output"], half=True, distill=record)
    save(finished=True)
    return output


def _start_student(start: Optional[dict]):
    """The network a run starts from (settings["start"]), None for a run from the teacher. Its sha256 is the
    one checked when the run was set up: a file changed since is refused."""
    if not start:
        return None
    from . import sha256

    if sha256(start["file"]) != start["sha256"]:
        raise SpikedetError(f"{start['file']}: differs from the checkpoint this run started from (sha256)")
    return load_ann(start["file"]).float()


def _binary_snn(student, s: dict):
    """The binary SNN `student` converts to, unrolled over binary_steps (None for a run without them): what its
    non-float steps train and its selection loss scores beside the levels (snn.finetune.DISTILL_CONVERSION)."""
    if not s.get("binary_steps"):
        return None
    from ..snn.finetune import DISTILL_CONVERSION, UnrolledSNN  # here: snn.finetune takes its KL term from here

    return UnrolledSNN(student, s["binary_steps"], s.get("burn_in", 0), DISTILL_CONVERSION["v_init"],
                       DISTILL_CONVERSION["reset"])


def _step(student, teacher, x, s, draw_levels, capture, scales, optimizer, lams, others, binary) -> dict:
    """One optimizer step on batch x; a SpikedetError if the loss or a parameter is no longer finite. A step
    that is not a float step trains the dual error at a level drawn from s["levels"], or the binary SNN."""
    float_step = s["float_share"] > 0 and draw_levels.random() < s["float_share"]
    network = student
    if float_step or binary is None:
        set_levels(student, None if float_step else draw_levels.choice(s["levels"]))
    else:
        network = binary
    with torch.no_grad():
        _, t_maps = teacher(x)
    _, s_maps = network(x)
    out = head_loss(s_maps, t_maps, teacher.nc)
    loss = out["loss"]
    if capture is not None:
        feat = feature_loss(capture[1].outputs, capture[0].outputs, scales)
        loss = loss + s["feature_weight"] * feat
        out["feat"] = float(feat.detach())
    if not torch.isfinite(loss):
        raise SpikedetError(f"distillation loss is {float(loss.detach())}; stopped, the last saved state is "
                            f"{s['state']} (a smaller lr may help)")
    descend(optimizer, loss, lams)
    bad = next((i for i, p in enumerate(lams + others) if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise SpikedetError(f"a parameter became non-finite (tensor {bad}); stopped, the last saved state is "
                            f"{s['state']} (a smaller lr may help)")
    out["loss"] = float(loss.detach())
    return out


def selection_loss(student, teacher, paths: Sequence[Path], imgsz: int, levels: Sequence[int],
                   binary: Optional[torch.nn.Module] = None) -> dict:
    """The head loss on held-out images at each level and for the float network (errors off), and with
    `binary` (the student's unrolled binary SNN) that SNN's as "binaryT": the measure a recipe, a run length
    or a shipped file is chosen by. Leaves the student at its smallest level."""
    settings = {"float" if L is None else str(L): partial(set_levels, student, L) for L in list(levels) + [None]}
    losses = mean_head_losses(student, teacher, paths, imgsz, settings)
    set_levels(student, min(levels))
    if binary is not None:  # T images of activations per image: batches of 2
        losses[f"binary{binary.timesteps}"] = mean_head_loss(binary, teacher, paths, imgsz, batch=2)
    return {name: round(loss["loss"], 6) for name, loss in losses.items()}


def _keep(student, s: dict, history: list, step: int, minutes: float, progress: bool):
    """The network measured at an in-run selection point, as NAME.stepN.pt: a run length the rule prefers can
    then be shipped without a second run. A resumed run may reach a point whose file it wrote before it
    stopped; the file is the same network (the loop depends on the step count alone) and stays as it is."""
    path = kept_path(s["output"], step)
    if path.exists():
        _say(progress, f"distill: {path} exists (written before this run was resumed); kept")
        return
    record = {**_record(s, history, step, minutes), "selection_loss": history[-1]["selection_loss"]}
    save_ann(student, path, half=True, replace=False, distill=record)


def kept_path(output, step: int) -> Path:
    """Where a run writing `output` keeps the network of its selection point at `step`."""
    output = Path(output)
    return output.with_name(f"{output.stem}.step{step}.pt")


def _record(s: dict, history: list, step: int, minutes: float) -> dict:
    """The checkpoint's `distill` record: the run's provenance and recipe."""
    return {
        "teacher": {"weights": s["weights"], "cfg": s["cfg"], "weights_sha256": s["weights_sha256"]},
        "images": [Path(p).name for p in s["images"]], "image_paths": s["images"], "sources": s["sources"],
        "selection_images": s["selection_images"],
        "calibration_images": [Path(p).name for p in s["images"][:CALIBRATION_COUNT]], "init": s["init"],
        **({"init_percentile": INIT_PERCENTILE} if s["init"] == "percentile" else {}),
        "levels": s["levels"][0], "train_levels": s["levels"], "epochs": s["epochs"],
        "epochs_done": round(step / s["steps_per_epoch"], 3), "steps": step, "imgsz": s["imgsz"],
        "batch": s["batch"], "lambda_only": s["lambda_only"], "lr": s["lr"], "lam_lr": s["lam_lr"],
        "feature_weight": s["feature_weight"], "float_share": s["float_share"], "quant_drop": s["quant_drop"],
        "ema": s.get("ema", 0.0), "binary_steps": s.get("binary_steps", 0), "burn_in": s.get("burn_in", 0),
        "first_copies": s.get("first_copies", 1), "fine_negative": s.get("fine_negative", False),
        "seed": s["seed"], "selection_seed": s.get("selection_seed", s["seed"]),
        "selection_from": s.get("selection_from"), "start": s.get("start"),
        "minutes": minutes, "augment": s["augment"],
        "views": DistillImages.describe(s["augment"]),
        "loss": "objectness soft BCE (KL) x100 + teacher-objectness-weighted box MSE + class soft BCE (KL)",
        "history": history,
    }


def _epoch_order(n: int, seed: int, epoch: int) -> list:
    """The image order of one epoch: a function of (seed, epoch) only, so a resumed run finds it again."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _say(enabled: bool, message: str):
    if enabled:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stop_requests():
    """Ctrl-C and SIGTERM, while the run is on, ask it to stop at the next step boundary (a second Ctrl-C stops
    at once). Yields a dict that holds the signal once one came."""
    requested = {}
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if signum == signal.SIGINT and requested:
            raise KeyboardInterrupt
        requested["signal"] = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
