#!/usr/bin/env python3
"""An SNN's head loss against its darknet teacher on held-out training images, for several burn-in read-outs
(spikedet.distill.losses.snn_head_loss): how the burn-in K of `eval --burn-in K` is chosen without labels."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet import checks  # noqa: E402
from spikedet.api import SpikingYOLO  # noqa: E402
from spikedet.darknet import load_darknet  # noqa: E402
from spikedet.distill.images import selection_images_of  # noqa: E402
from spikedet.distill.losses import snn_head_loss  # noqa: E402
from spikedet.errors import SpikedetError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--snn", required=True, type=checks.existing_file, help="an SNN file (spikedet convert)")
    parser.add_argument("--teacher", required=True, type=checks.existing_file, help="darknet .weights")
    parser.add_argument("--cfg", required=True, type=checks.existing_file, help="their .cfg")
    parser.add_argument("--selection-of", required=True, type=checks.existing_file, metavar="CHECKPOINT",
                        help="a distilled checkpoint naming its selection images")
    parser.add_argument("--first", type=checks.integer(0), default=0, help="skip this many selection images")
    parser.add_argument("--count", type=checks.positive, default=16, help="score this many selection images")
    parser.add_argument("--timesteps", type=checks.timesteps, default=32)
    parser.add_argument("--burn-in", type=checks.burn_in, nargs="+", default=[0, 8, 16, 24], metavar="K")
    parser.add_argument("--imgsz", type=checks.image_size, default=416)
    args = parser.parse_args(argv)
    try:
        paths = selection_images_of(args.selection_of)[args.first:args.first + args.count]
        snn = SpikingYOLO(args.snn).network.float().eval()
        teacher = load_darknet(args.cfg, args.teacher).float().eval()
        losses = snn_head_loss(snn, teacher, paths, args.imgsz, args.timesteps, args.burn_in)
    except SpikedetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"head loss at T = {args.timesteps} on {len(paths)} selection images: "
          + "  ".join(f"K={k}: {v:.4f}" for k, v in sorted(losses.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
