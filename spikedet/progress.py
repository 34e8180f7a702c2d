"""Progress bars on standard error, so that a command's results, alone on standard output, can be redirected to a
file (`spikedet eval ... > scores.txt`) without the bar's redraws in it (ultralytics' TQDM writes to stdout). A bar
clears itself when closed: what a command prints is its record, and an error stays the one line a terminal shows."""
import sys


def progress_bar(iterable=None, **kwargs):
    """ultralytics' TQDM (same options; leave=False unless given) writing to sys.stderr as it is at the call."""
    from ultralytics.utils import TQDM  # imported here: it pulls in torch, which the shapes generator does not need

    return TQDM(iterable, file=sys.stderr, **{"leave": False, **kwargs})
