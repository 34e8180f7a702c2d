"""The selection rule as code: which distilled file, if any, replaces the shipped one (docs/real_images.md, "The
selection rule from 2026-12-04" and "the rule of 2026-12-07").

Why code: the rule decides what ships, so it should be one command that anyone can rerun, not arithmetic done
by hand in a note. Each file is scored on held-out selection images, which every candidate must have held out
(or its figure would be measured on images it trained on): by teacher AP (spikedet.distill.teacher_ap) on the
shipped file's selection images, or, when those images are labelled, by COCO AP50 against the labels on the
candidates' own selection images (labelled_scores; the shipped file is scored there even if it trained on
them, which can only favour it).

1. A file's figure is the mean of its AP50 over the levels (L = 8 and 16; with labels, the burst SNN at T = L).
2. The higher figure wins; within `margin` of each other, the file with fewer steps.
3. A candidate can replace the shipped file only if its figure is at least `margin` above the shipped file's
   and its float network's teacher AP50 is not below the shipped file's. Rule 2 chooses among those.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import SpikedetError, fail
from ..eval.bootstrap import basic_interval, paired_draws

MARGIN = 0.01


@dataclass(frozen=True)
class Scored:
    """One file's teacher AP50 at each level and for its float network, and its run's step count."""
    name: str
    steps: int
    levels: Dict[str, float]
    float_ap50: float

    @property
    def figure(self) -> float:
        return sum(self.levels.values()) / len(self.levels)


def scored(name: str, steps: int, teacher_ap: Dict[str, Dict[str, Optional[float]]]) -> Scored:
    """A Scored from teacher_ap()'s result; an error if the teacher found nothing to score against."""
    if any(v["AP50"] is None for v in teacher_ap.values()):
        raise fail(name, "no teacher detections on the selection images to score against")
    levels = {k: float(v["AP50"]) for k, v in teacher_ap.items() if k != "float"}
    return Scored(name, int(steps), levels, float(teacher_ap["float"]["AP50"]))


def choose(shipped: Scored, candidates: Sequence[Scored], margin: float = MARGIN) -> Tuple[Optional[Scored], List[str]]:
    """(the file that replaces `shipped`, or None if it stays; one line per candidate saying why it lost)."""
    if not candidates:
        raise SpikedetError("no candidates to choose from")
    for c in candidates:
        if set(c.levels) != set(shipped.levels):
            raise fail(c.name, f"scored at levels {sorted(c.levels)}, the shipped file at {sorted(shipped.levels)}")
    why, eligible = [], []
    for c in candidates:
        if round(c.figure - shipped.figure, 9) < margin:  # rounded: 0.818 - 0.808 is 0.01, not 0.00999...
            why.append(f"{c.name}: figure {c.figure:.4f} is not {margin} above the shipped file's "
                       f"{shipped.figure:.4f}")
        elif c.float_ap50 < shipped.float_ap50:
            why.append(f"{c.name}: float network {c.float_ap50:.4f} is below the shipped file's "
                       f"{shipped.float_ap50:.4f}")
        else:
            eligible.append(c)
    if not eligible:
        return None, why
    best = max(eligible, key=lambda c: c.figure)
    close = [c for c in eligible if round(best.figure - c.figure, 9) < margin]
    winner = min(close, key=lambda c: (c.steps, -c.figure))
    for c in eligible:
        if c is winner:
            continue
        if c in close:
            why.append(f"{c.name}: within {margin} of {winner.name} ({c.figure:.4f} against {winner.figure:.4f}), "
                       f"with more steps ({c.steps} against {winner.steps})")
        else:
            why.append(f"{c.name}: figure {c.figure:.4f} is below {best.name}'s {best.figure:.4f} by {margin} or more")
    return winner, why


def figure_intervals(truth, detections: Dict[str, Dict[str, list]], shipped: str, resamples: int,
                     seed: int = 0, level: float = 0.95) -> Dict[str, dict]:
    """How sure the rule's comparisons are: for each file but `shipped`, its figure (rule 1) minus the shipped
    file's and its float network's teacher AP50 minus the shipped file's, each with a basic bootstrap interval
    at `level` from `resamples` draws of the selection images, the same draws for every file (paired).

    truth: the teacher's detections as a ground truth (teacher_ap.teacher_truth); detections: per file, its
    detections per level key and "float" (teacher_ap.student_detections). Informative only: the rule (choose) compares
    the whole set's figures."""
    keys = list(detections[shipped])
    networks = {(f, k): dets[k] for f, dets in detections.items() for k in keys}
    labels = {name: f"{name[0]}|{name[1]}" for name in networks}
    full, drawn, _ = paired_draws(truth, {labels[n]: d for n, d in networks.items()}, resamples, seed, "AP50")
    levels = [k for k in keys if k != "float"]

    def mean_over_levels(f, values):
        return sum(values[labels[(f, k)]] for k in levels) / len(levels)

    out = {}
    for f in detections:
        if f == shipped:
            continue
        float_of = (labels[(f, "float")], labels[(shipped, "float")])
        out[f] = {"figure": basic_interval(mean_over_levels(f, drawn) - mean_over_levels(shipped, drawn),
                                           mean_over_levels(f, full) - mean_over_levels(shipped, full), level),
                  "float": basic_interval(drawn[float_of[0]] - drawn[float_of[1]],
                                          full[float_of[0]] - full[float_of[1]], level)}
    return out


def labelled_scores(path, gt_coco, paths: Sequence[Path], levels: Sequence[int],
                    imgsz: int) -> Dict[str, Dict[str, Optional[float]]]:
    """{"8": {"AP50", "AP"}, "16": ..., "float": ...} as teacher_ap() gives them, but against labels: the file's
    burst SNN at T = each level (converted in memory, scored as `eval --timesteps` scores it) and its float
    network (errors off, as `eval --float`), on the labelled images `paths` of the COCO file `gt_coco`."""
    from ..api import SpikingYOLO
    from .student import set_levels

    def ap(metrics):
        return {"AP50": metrics["AP50"], "AP": metrics["AP"]}

    common = dict(gt_coco=gt_coco, only_images=paths, imgsz=imgsz, verbose=False, progress=False)
    model = SpikingYOLO(path)
    sweep = model.val(timesteps=list(levels), **common)  # converts a copy: model.network stays the ANN
    out = {str(L): ap(sweep["snn"][L]["coco"]) for L in levels}
    set_levels(model.network, None)
    out["float"] = ap(model.val(**common)["ann"]["coco"])
    return out


def run_record(path, content: dict) -> dict:
    """The `distill` record of a distilled checkpoint, checked to name its steps and held-out images."""
    record = content.get("distill")
    if not isinstance(record, dict):
        raise fail(path, "not a distilled checkpoint (tools/train.py --distill writes them)")
    steps, held = record.get("steps"), record.get("selection_images")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise fail(path, "its distill record has no step count")
    if not isinstance(held, list) or not held or not all(isinstance(p, str) for p in held):
        raise fail(path, "names no selection images (distill with selection=N)")
    return record


def _resolved(paths) -> set:
    return {str(Path(p).resolve()) for p in paths}


def trained_on(record: dict, paths) -> List[str]:
    """Those of `paths` that the run of this distill record trained on, resolved and sorted."""
    return sorted(_resolved(record.get("image_paths") or []) & _resolved(paths))


def check_same_selection(path, record: dict, shipped_path, shipped_record: dict):
    """A candidate must hold out the shipped file's selection images: its figure is then measured on images
    neither file trained on."""
    if _resolved(record["selection_images"]) != _resolved(shipped_record["selection_images"]):
        raise fail(path, f"holds out other selection images than {shipped_path} (the rule compares files on "
                         "the same held-out images)")
    seen = trained_on(record, shipped_record["selection_images"])
    if seen:
        raise fail(path, f"trained on {len(seen)} of the selection images, e.g. {seen[0]}")
