"""The one exception type a user sees: a one-line message naming the file and the problem."""


class SpikedetError(Exception):
    """Bad input or a failed step the user can fix. The CLI prints it as one line, without a traceback."""


def fail(path, problem: str) -> "SpikedetError":
    """Build the standard one-line error: `<path>: <problem>`."""
    return SpikedetError(f"{path}: {problem}")


class Interrupted(SpikedetError):
    """A run stopped by Ctrl-C (exit 130) or SIGTERM (exit 143) after keeping what it had done; the message
    says what was kept."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
