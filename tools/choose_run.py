#!/usr/bin/env python3
"""Apply the selection rule to the shipped distilled file and candidates; the same as `spikedet choose`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["choose", *sys.argv[1:]]))
