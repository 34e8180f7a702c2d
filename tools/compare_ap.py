#!/usr/bin/env python3
"""COCO AP of detections files with paired bootstrap intervals over the images; the same as `spikedet compare`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
