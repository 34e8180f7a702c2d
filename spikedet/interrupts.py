"""Ctrl-C and SIGTERM in the commands that work through images (detect, eval, convert): the run stops at once,
keeps what it had written, and says so in one line (errors.Interrupted; exit 130 / 143), with no traceback."""
import contextlib
import signal
import threading

from .errors import Interrupted


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is, as SIGINT raises KeyboardInterrupt."""


STOPS = (KeyboardInterrupt, Terminated)


@contextlib.contextmanager
def sigterm_raises():
    """Inside, SIGTERM raises Terminated (only the main thread can take signals; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted(stop: BaseException, what: str) -> Interrupted:
    """The one-line report of a stop: `what` says how far the run got and what it kept."""
    return Interrupted(what, 143 if isinstance(stop, Terminated) else 130)
