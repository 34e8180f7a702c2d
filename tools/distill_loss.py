#!/usr/bin/env python3
"""A distilled network's head loss against its teacher on held-out images; the same as `spikedet distill-loss`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["distill-loss", *sys.argv[1:]]))
