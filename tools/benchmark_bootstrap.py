#!/usr/bin/env python3
"""Benchmark: one bootstrap draw of COCO AP50, scored the full way (COCOeval.accumulate over 10 IoU thresholds and
3 detection limits, then summarize) against the AP50-only accumulate the intervals use (ImageDraws.ap50).

The two are timed alternately on the same draws (so load on a shared machine hits both alike) and must give the
same number on every draw; prints the median and minimum time per draw of each and their ratio.

    python tools/benchmark_bootstrap.py --detections det_w/t8.json --gt-coco instances_val2017.json
    python tools/benchmark_bootstrap.py --detections det/t8.json --gt-coco instances_train2017.json \\
        --selection-of ab.last.pt --draws 40
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet import checks  # noqa: E402
from spikedet.errors import SpikedetError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", required=True, type=checks.existing_file, help="COCO results (eval "
                        "--save-detections)")
    parser.add_argument("--gt-coco", required=True, type=checks.existing_file, help="the instances file")
    parser.add_argument("--selection-of", type=checks.existing_file, metavar="CHECKPOINT",
                        help="draw only the images this distilled checkpoint held out")
    parser.add_argument("--draws", type=checks.integer(1, 10000), default=20, help="draws timed (default 20)")
    parser.add_argument("--seed", type=checks.integer(0, 2**32 - 1), default=0, help="of the draws")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except SpikedetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import numpy as np

    from spikedet.eval.bootstrap import ImageDraws
    from spikedet.eval.coco_map import load_coco_gt
    from spikedet.validate import GroundTruth

    gt = load_coco_gt(args.gt_coco)
    ids = None
    if args.selection_of:
        from spikedet.distill.images import selection_images_of

        ids = GroundTruth.image_ids_of(args.gt_coco, selection_images_of(args.selection_of))
    started = time.perf_counter()
    draws = ImageDraws(gt, str(args.detections), sorted(gt.getImgIds()) if ids is None else ids)
    matched = time.perf_counter() - started
    rng, count = np.random.default_rng(args.seed), len(draws.image_ids)
    full, narrow = [], []
    for k in range(args.draws):
        draw = rng.integers(0, count, count).tolist()
        ways = [("full", full), ("narrow", narrow)][::1 if k % 2 == 0 else -1]  # alternate which goes first
        values = {}
        for name, times in ways:
            started = time.perf_counter()
            values[name] = draws.score(draw)["AP50"] if name == "full" else draws.ap50(draw)
            times.append(time.perf_counter() - started)
        if values["full"] != values["narrow"]:
            print(f"error: draw {k}: AP50 {values['full']} the full way, {values['narrow']} AP50-only",
                  file=sys.stderr)
            return 1
    print(f"{count} images, {args.draws} draws, per-image matching once: {matched:.2f} s; every draw's AP50 equal")
    for name, times in (("full accumulate + summarize", full), ("AP50-only accumulate", narrow)):
        print(f"{name:28s} median {statistics.median(times) * 1000:8.1f} ms   min {min(times) * 1000:8.1f} ms")
    print(f"ratio of medians: {statistics.median(full) / statistics.median(narrow):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
