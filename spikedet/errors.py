"""The one exception type a user sees: a one-line message naming the file and the problem."""


class SpikedetError(Exception):
    """Bad input or a failed step the user can fix. The CLI prints it as one line, without a traceback."""


def fail(path, problem: str) -> "SpikedetError":
    """Build the standard one-line error: `<path>: <problem>`."""
    return SpikedetError(f"{path}: {problem}")
