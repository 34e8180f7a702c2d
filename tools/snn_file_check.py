#!/usr/bin/env python3
"""What storing an SNN file changes: the file's size beside its source's, and the largest absolute
difference of the SNN's raw outputs (boxes in input pixels, class scores) between the network as converted
(float32, in memory) and as read back from its file, on the given images.

    python tools/snn_file_check.py --weights weights/yolov3-tiny-coco-de.pt --images DIR --timesteps 8 16
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet import SpikingYOLO  # noqa: E402
from spikedet.defaults import DEFAULTS  # noqa: E402
from spikedet.inference import image_files, load_image, preprocess  # noqa: E402
from spikedet.networks import default_resize  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="an ANN checkpoint with learned thresholds")
    parser.add_argument("--images", required=True, help="a folder of images")
    parser.add_argument("--count", type=int, default=4, help="images used (default: 4)")
    parser.add_argument("--imgsz", type=int, default=DEFAULTS["imgsz"], help=f"default: {DEFAULTS['imgsz']}")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[8, 16], help="default: 8 16")
    args = parser.parse_args()
    model = SpikingYOLO(args.weights)
    snn = model.convert(imgsz=args.imgsz)
    batch = [preprocess(load_image(p), args.imgsz, default_resize(model.network))
             for p in image_files(Path(args.images))[:args.count]]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "net.snn.pt"
        snn.save(path)
        read = SpikingYOLO(path)
        size = path.stat().st_size
    import torch

    images = torch.stack(batch)
    before = snn.network.simulate(images, args.timesteps)
    after = read.network.simulate(images, args.timesteps)
    print(f"SNN file {size / 1e6:.1f} MB, source {Path(args.weights).stat().st_size / 1e6:.1f} MB")
    for t in args.timesteps:
        diff = (before[t] - after[t]).abs()
        print(f"T={t}: max abs output difference {float(diff.max()):.3g} (boxes {float(diff[:, :4].max()):.3g} px, "
              f"scores {float(diff[:, 4:].max()):.3g}) over {len(batch)} images")


if __name__ == "__main__":
    main()
