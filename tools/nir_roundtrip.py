#!/usr/bin/env python3
"""The NIR round trip, measured: an SNN file exported to NIR (spikedet export), read back with nir.read, run
in Norse for T steps on a COCO-format test split, its head outputs decoded by spikedet's decoder and scored
beside spikedet's own step simulation of the same file (and its source ANN), with each spiking layer's
spikes per image from both. Needs the [nir] extra.

    python tools/nir_roundtrip.py --weights runs/nir/shapes-nir.snn.pt \
        --gt-coco data/shapes/coco/annotations/instances_test.json --timesteps 16 32 --json roundtrip.json
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet import checks  # noqa: E402
from spikedet.api import SpikingYOLO  # noqa: E402
from spikedet.errors import SpikedetError  # noqa: E402
from spikedet.export.compare import round_trip  # noqa: E402
from spikedet.validate import GroundTruth  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="an SNN file (spikedet convert)")
    parser.add_argument("--gt-coco", required=True, help="COCO instances file of the test split")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--max-images", type=int, help="only the first N images (by image id)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--burn-in", type=checks.burn_in, default=0, metavar="K",
                        help="read both simulations out over steps K+1..T (as spikedet eval --burn-in)")
    parser.add_argument("--allow-approximations", action="store_true", help="as for spikedet export")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    try:
        model = SpikingYOLO(args.weights)
        truth = GroundTruth.read(gt_coco=args.gt_coco, max_images=args.max_images)
        model.stream_settings(args.timesteps, burn_in=args.burn_in)  # eval's checks, before any work
        with tempfile.TemporaryDirectory() as folder:
            nir_path = Path(folder) / "net.nir"
            info = model.export("nir", nir_path, args.allow_approximations)
            result = round_trip(model.network, model.ann, nir_path, list(info["outputs"]), truth, args.timesteps,
                                args.batch, args.burn_in)
    except SpikedetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["substitutions"], result["burn_in"] = info["substitutions"], args.burn_in
    print(format_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def format_result(r: dict) -> str:
    lines = [f"{r['images']} images; ANN mAP50 {r['ann']['mAP50']:.3f}, mAP50-95 {r['ann']['mAP50_95']:.3f}",
             f"{'T':>4} {'spikedet mAP50':>15} {'Norse mAP50':>12} {'diff':>7} {'spikedet mAP50-95':>18} "
             f"{'Norse mAP50-95':>15} {'max |output diff|':>18}"]
    for t, ours in r["spikedet"].items():
        theirs = r["norse"][t]
        lines.append(f"{t:>4} {ours['mAP50']:>15.3f} {theirs['mAP50']:>12.3f} "
                     f"{theirs['mAP50'] - ours['mAP50']:>+7.3f} {ours['mAP50_95']:>18.3f} "
                     f"{theirs['mAP50_95']:>15.3f} {r['max_abs_output_diff'][t]:>18.2e}")
    counts = r["spikes"].values()
    total = sum(c["spikedet"] for c in counts)
    differ = [(k, c) for k, c in r["spikes"].items() if c["spikedet"] != c["norse"]]
    lines.append(f"spikes per image, all {len(r['spikes'])} spiking layers: spikedet {total:.1f}, Norse "
                 f"{sum(c['norse'] for c in counts):.1f}; layers that differ: {len(differ)}")
    lines += [f"  {k}: spikedet {c['spikedet']:.2f}, Norse {c['norse']:.2f}" for k, c in differ]
    if r["substitutions"]:
        lines.append("substituted: " + "; ".join(r["substitutions"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
