#!/usr/bin/env python3
"""Average distilled networks that share their start and held-out images; the same as `spikedet average`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["average", *sys.argv[1:]]))
