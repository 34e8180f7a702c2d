"""How sure a COCO AP figure is: the image bootstrap, paired across the networks compared.

A few hundred images give AP50 figures that move by a point when a handful of detections change, so a gap
between two networks (an SNN and its ANN, two runs) means little without an interval. The bootstrap draws
the image set again with replacement many times and scores every draw; the same draws serve every network,
so their difference is measured on the same images each time (paired), which is much tighter than two
separate intervals.

pycocotools does the scoring: its per-image matching (COCOeval.evaluate) runs once per network, and each draw
is scored by COCOeval.accumulate and summarize over the drawn images' per-image results, in the drawn order,
exactly as pycocotools scores an image set holding those copies (tests/test_bootstrap.py checks that).
"""
import contextlib
import copy
import io
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from pycocotools.coco import COCO

from ..errors import SpikedetError
from ..progress import progress_bar
from .coco_map import COCO_METRICS, load_coco_gt, match_images

# the COCOeval figures over objects of every size: the ones a draw is scored on
DRAWN_METRICS = ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")


class ImageDraws:
    """One network's detections, matched once per image, scored on any multiset of the images."""

    def __init__(self, coco_gt: COCO, detections, image_ids: Sequence[int]):
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco_eval = match_images(coco_gt, detections, image_ids)
        self.image_ids = list(self.coco_eval.params.imgIds)  # sorted, unique: evalImgs' image order
        self.per_image = self.coco_eval.evalImgs
        self.per_image_at_iou50 = self._rows_at_iou50()

    def score(self, draw: Sequence[int]) -> Dict[str, Optional[float]]:
        """The COCOeval numbers over all object sizes (DRAWN_METRICS) on the images at positions `draw` of
        self.image_ids (repeats allowed), as evaluate_coco gives them; None where pycocotools has -1."""
        stats = dict(zip(COCO_METRICS, self._accumulated(draw, self.per_image, {}, _summarized)))
        return {name: None if stats[name] == -1 else float(stats[name]) for name in DRAWN_METRICS}

    def ap50(self, draw: Sequence[int]) -> Optional[float]:
        """score(draw)["AP50"], equal to it, for a small share of its work: accumulate only the IoU threshold
        0.5 and the 100-detection limit, the one cell of pycocotools' precision array that AP50 reads, and
        average it as summarize does (over the recall points and categories that have a value)."""
        narrow = {"iouThrs": np.array([0.5]), "maxDets": [self.coco_eval.params.maxDets[-1]]}
        precision = self._accumulated(draw, self.per_image_at_iou50, narrow,
                                      lambda e: e.eval["precision"][0, :, :, 0, 0])
        valid = precision[precision > -1]
        return float(np.mean(valid)) if valid.size else None

    def _accumulated(self, draw: Sequence[int], rows: list, narrow: dict, then):
        """then(evaluator) after COCOeval.accumulate over the per-image results `rows` of the images at positions
        `draw`, each drawn copy its own image, with params set as `narrow` says; the evaluator is left as it was.
        Only the area range "all" is accumulated: a quarter of accumulate's work, which is most of a draw's."""
        e, count = self.coco_eval, len(self.image_ids)
        areas, categories = len(e.params.areaRng), len(rows) // count // len(e.params.areaRng)
        every_size = e.params.areaRngLbl.index("all")
        e.evalImgs = [rows[(k * areas + every_size) * count + i] for k in range(categories) for i in draw]
        params, evaluated = e.params, e._paramsEval
        e.params, e._paramsEval = copy.copy(params), copy.copy(evaluated)
        for p in (e.params, e._paramsEval):
            p.imgIds = list(range(len(draw)))  # one slot per drawn copy
            p.areaRng, p.areaRngLbl = [params.areaRng[every_size]], ["all"]
            for key, value in narrow.items():
                setattr(p, key, value)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                e.accumulate()
                return then(e)
        finally:
            e.params, e._paramsEval, e.evalImgs = params, evaluated, self.per_image

    def _rows_at_iou50(self) -> list:
        """The per-image results with their matches at IoU 0.5 only (the first of COCO's ten thresholds)."""
        row = int(np.flatnonzero(self.coco_eval.params.iouThrs == 0.5)[0])  # as summarize finds it
        return [None if r is None else {**r, "dtMatches": r["dtMatches"][row:row + 1],
                                        "dtIgnore": r["dtIgnore"][row:row + 1],
                                        "gtMatches": r["gtMatches"][row:row + 1]} for r in self.per_image]


def _summarized(coco_eval) -> np.ndarray:
    coco_eval.summarize()
    return coco_eval.stats


def paired_draws(coco_gt: COCO, detections: Dict[str, object], resamples: int, seed: int = 0,
                 metric: str = "AP50", image_ids: Optional[Sequence[int]] = None,
                 progress: bool = True) -> Tuple[Dict[str, float], Dict[str, np.ndarray], int]:
    """(each network's `metric` on the whole image set, its values on `resamples` image draws, the number of
    images): the same draws for every network, so any function of several networks' values (a difference, a
    mean over levels) can be taken draw by draw. The draws come from numpy's generator seeded with `seed`."""
    if metric not in DRAWN_METRICS:
        raise SpikedetError(f"metric {metric!r}: expected one of {', '.join(DRAWN_METRICS)}")
    if resamples < 1 or not detections:
        raise SpikedetError(f"need networks and resamples >= 1, got {len(detections)} networks, "
                            f"resamples={resamples}")
    ids = sorted(set(coco_gt.getImgIds() if image_ids is None else image_ids))
    draws_of = {label: ImageDraws(coco_gt, dets, ids) for label, dets in detections.items()}
    every = list(range(len(ids)))
    full = {label: draws.score(every)[metric] for label, draws in draws_of.items()}
    if any(value is None for value in full.values()):
        raise SpikedetError(f"{metric} is undefined on these images (no ground truth in its area range)")
    rng = np.random.default_rng(seed)
    drawn = {label: [] for label in draws_of}
    for _ in progress_bar(range(resamples), desc="image draws", disable=not progress):
        draw = rng.integers(0, len(ids), len(ids)).tolist()
        for label, draws in draws_of.items():
            value = draws.ap50(draw) if metric == "AP50" else draws.score(draw)[metric]
            drawn[label].append(np.nan if value is None else value)
    return full, {label: np.array(v) for label, v in drawn.items()}, len(ids)


def basic_interval(samples: np.ndarray, value: float, level: float = 0.95) -> dict:
    """The basic (reverse percentile) interval: the draws' spread around their own centre, reflected about the
    whole set's value. COCO AP's draws sit above the whole set's value (docs/real_images.md: +0.027 AP50 on 206
    images, of which categories absent from a draw explain at most about 0.001; AP's interpolated precision is
    a running maximum, which the draws' noise raises), and reflecting pays that shift back where the plain
    percentile interval would carry it over; draw_mean - value shows its size."""
    low, high = np.nanquantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return {"value": float(value), "low": float(2 * value - high), "high": float(2 * value - low),
            "draw_mean": float(np.nanmean(samples))}


def bootstrap_coco(ground_truth, detections: Dict[str, object], resamples: int = 1000, seed: int = 0,
                   metric: str = "AP50", level: float = 0.95, image_ids: Optional[Sequence[int]] = None,
                   progress: bool = True) -> dict:
    """`metric` of each network in `detections` ({label: detections file or list}) on the whole image set,
    with an interval at `level` from `resamples` image draws; and for every network after the first, its
    difference to the first with its interval (the same draws for every network).

    ground_truth: an instances JSON path or a COCO object; image_ids: the images scored (default: all of the
    ground truth's; a network run on a subset must name it). A figure is reproduced by its seed."""
    if not 0 < level < 1:
        raise SpikedetError(f"need 0 < level < 1, got level={level}")
    coco_gt = ground_truth if isinstance(ground_truth, COCO) else load_coco_gt(ground_truth)
    full, values, images = paired_draws(coco_gt, detections, resamples, seed, metric, image_ids, progress)
    first = next(iter(values))
    return {
        "metric": metric, "level": level, "resamples": resamples, "seed": seed, "images": images,
        "networks": {label: basic_interval(values[label], full[label], level) for label in values},
        "differences": {label: basic_interval(values[label] - values[first], full[label] - full[first], level)
                        for label in values if label != first},
        "reference": first,
    }


def format_bootstrap(result: dict) -> str:
    """The figures as a table: each network with its interval, then each difference to the first."""
    pct = f"{result['level']:.0%}"
    lines = [f"{result['metric']} on {result['images']} images, {pct} intervals (basic bootstrap) from "
             f"{result['resamples']} paired image draws (seed {result['seed']})",
             f"{'network':<24} {result['metric']:>7}  {pct + ' interval':>18}  mean of the draws"]
    for label, r in result["networks"].items():
        lines.append(f"{label:<24} {r['value']:7.3f}  [{r['low']:.3f}, {r['high']:.3f}]  {r['draw_mean']:.3f}")
    for label, r in result["differences"].items():
        lines.append(f"{label} - {result['reference']}: {r['value']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] "
                     f"(mean of the draws {r['draw_mean']:+.3f})")
    return "\n".join(lines)
