"""The mean of several distilled networks' weights (a uniform "model soup", Wortsman et al. 2022).

Why: runs of one recipe that start from one file at a small learning rate end in one basin of the loss, where
the mean of their weights is usually at least as good as each, and the spread between seeds shrinks. Averaging
is only meaningful there, so the files must share their start (the same file, by sha256), their teacher, their
held-out selection images (or the average could not be judged on them) and their architecture. The result is
an ordinary distilled checkpoint: the selection rule (spikedet.distill.choose) takes it as a candidate, which
is where it must prove itself: on real images (docs/real_images.md, run (y)) the mean of two seeds held the float
network's teacher AP but fell below both seeds at the quantized levels.
"""
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from ..errors import SpikedetError, fail
from .choose import check_same_selection, run_record

# Record fields the files must agree on, what each says, and the part compared (files by content, not path).
_MUST_AGREE = {"teacher": ("teacher", "weights_sha256"), "start": ("start file", "sha256"),
               "imgsz": ("image size", None), "levels": ("level", None), "train_levels": ("training levels", None)}


def _part(record: dict, key: str, field):
    value = record.get(key)
    return value.get(field) if field and isinstance(value, dict) else value


def average_checkpoints(paths: Sequence, contents: Sequence[dict], shas: Sequence[str]) -> dict:
    """A distilled checkpoint whose floating-point tensors are the mean of the files'; every other tensor
    (e.g. batch-norm counters) must be equal in all of them. Its record keeps what the files agree on, sums
    their steps (the work the average cost, for rule 2), joins their training images and lists the files."""
    if len(paths) < 2:
        raise SpikedetError("give at least two distilled files to average")
    records = [run_record(p, c) for p, c in zip(paths, contents)]
    first, head = paths[0], contents[0]
    if not isinstance(records[0].get("start"), dict) or not records[0]["start"].get("sha256"):
        raise fail(first, "names no start file (average runs that began with start=FILE from one file)")
    for path, content, record in zip(paths[1:], contents[1:], records[1:]):
        _check_same_network(path, content, first, head)
        _check_same_run(path, record, first, records[0])
    for path, record in zip(paths, records):  # the average is judged on images none of the files trained on
        check_same_selection(path, record, first, records[0])
    state = {name: _mean(name, [c["state_dict"][name] for c in contents], paths)
             for name in head["state_dict"]}
    record = {k: v for k, v in records[0].items()
              if k in _MUST_AGREE or all(r.get(k) == v for r in records[1:])}
    trained = set().union(*(r.get("image_paths") or [] for r in records))
    record.update(steps=sum(r["steps"] for r in records), image_paths=sorted(trained),
                  images=sorted(set().union(*(r.get("images") or [] for r in records))),
                  average=[{"file": str(Path(p).resolve()), "sha256": s, "steps": r["steps"]}
                           for p, s, r in zip(paths, shas, records)])
    return {**head, "state_dict": state, "distill": record}


def _check_same_network(path, content: dict, first, head: dict):
    for key in ("format", "version", "family", "config", "names"):
        if content.get(key) != head.get(key):
            raise fail(path, f"is another network than {first} (its {key} differs)")
    mine, theirs = content.get("state_dict"), head.get("state_dict")
    if not isinstance(mine, dict) or not isinstance(theirs, dict) or set(mine) != set(theirs):
        raise fail(path, f"holds other tensors than {first}")
    for name, tensor in theirs.items():
        other = mine[name]
        if not torch.is_tensor(other) or other.shape != tensor.shape or other.dtype != tensor.dtype:
            raise fail(path, f"tensor {name} differs in shape or type from {first}'s")


def _check_same_run(path, record: dict, first, head: Dict):
    for key, (what, field) in _MUST_AGREE.items():
        if _part(record, key, field) != _part(head, key, field):
            raise fail(path, f"has another {what} than {first}: only fine-tunes of one start by one teacher "
                             "average into a network as good as each")


def _mean(name: str, tensors: List[torch.Tensor], paths) -> torch.Tensor:
    first = tensors[0]
    if first.is_floating_point():
        return (sum(t.double() for t in tensors) / len(tensors)).to(first.dtype)
    for path, t in zip(paths[1:], tensors[1:]):
        if not torch.equal(t, first):
            raise fail(path, f"tensor {name} ({first.dtype}) differs from {paths[0]}'s and cannot be averaged")
    return first.clone()
