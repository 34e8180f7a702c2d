"""The resumable state of a distillation: everything a stopped run needs to go on as if it had not stopped.

Saved atomically every few minutes, at a stop (time budget, Ctrl-C, SIGTERM) and at the end: the settings
(plain values), the student's weights (and their running average, with `ema`), the optimizer, the step, the
epoch's running sums, the history and the random states (the level draws and torch's generators, which
quantization dropout uses). The image order
is not stored: each epoch's order is a function of (seed, epoch), and each view of (seed, epoch, index), so
the step count places a resumed run exactly. Read back with torch.load(weights_only=True), checked before use.
"""
import random
from pathlib import Path

import torch

from ..errors import fail
from ..fileio import atomic_torch_save, load_torch_file

STATE_FORMAT = "spikedet-distill-state"
STATE_VERSION = 1
_KEYS = ("settings", "student", "optimizer", "initial_scales", "step", "epoch_sums", "history", "rng", "finished")


def save_state(path, settings: dict, student, optimizer, initial_scales, step: int, epoch_sums: dict,
               history: list, draw_levels: random.Random, finished: bool = False, minutes: float = 0.0,
               average=None) -> Path:
    return atomic_torch_save({
        "format": STATE_FORMAT, "version": STATE_VERSION, "settings": settings,
        "student": {k: v.detach().clone() for k, v in student.state_dict().items()},
        "optimizer": optimizer.state_dict(), "initial_scales": [s.clone() for s in initial_scales],
        "step": int(step), "epoch_sums": dict(epoch_sums), "history": list(history),
        "rng": {"levels": draw_levels.getstate(), "torch": torch.get_rng_state(),
                **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_initialized() else {})},
        "finished": bool(finished),
        "minutes": float(minutes),
        **({} if average is None else {"average": {k: v.detach().clone() for k, v in average.state_dict().items()}}),
    }, path)


def load_state(path) -> dict:
    """A state file, checked for its form; a one-line error naming the file otherwise."""
    content = load_torch_file(path)
    if not isinstance(content, dict) or content.get("format") != STATE_FORMAT:
        raise fail(path, "not a distillation state file (a run writes one beside its --output: NAME.last.pt)")
    if content.get("version") != STATE_VERSION:
        raise fail(path, f"distillation state version {content.get('version')!r}; this spikedet reads "
                         f"version {STATE_VERSION}")
    missing = [k for k in _KEYS if k not in content]
    if missing:
        raise fail(path, f"distillation state without {', '.join(missing)}")
    if not isinstance(content["step"], int) or content["step"] < 0 or not isinstance(content["settings"], dict):
        raise fail(path, "distillation state with a bad step or settings record")
    average = content.get("average", {})
    if not isinstance(average, dict):
        raise fail(path, "distillation state with a weight average that is not a table of tensors")
    for name, tensor in (list(content["student"].items()) + list(average.items())
                         + [("initial scales", s) for s in content["initial_scales"]]):
        if not isinstance(tensor, torch.Tensor):
            raise fail(path, f"distillation state: {name} is not a tensor")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise fail(path, f"distillation state: {name} holds non-finite values")
    return content


def restore_random_states(content: dict, draw_levels: random.Random, path) -> None:
    try:
        levels = content["rng"]["levels"]
        draw_levels.setstate((levels[0], tuple(levels[1]), levels[2]))
        torch.set_rng_state(content["rng"]["torch"])
        if "cuda" in content["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(content["rng"]["cuda"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError):
        raise fail(path, "distillation state with unreadable random states") from None
