#!/usr/bin/env python3
"""Decode a network distilled from known darknet weights with the anchors they were trained with; the same as
`spikedet fix-anchors`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["fix-anchors", *sys.argv[1:]]))
