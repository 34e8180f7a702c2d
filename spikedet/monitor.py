"""One way to observe a network's activations: forward hooks on the modules a rule selects, each call handed
to a recording function, all removed together (SpikingJelly's monitor.py). Conversion's calibration
(snn.convert.observe_activations) and the spike statistics (snn.statistics.SpikeMonitor) observe through it."""
import functools
from typing import Callable

from torch import nn

Record = Callable[[str, nn.Module, tuple, object], None]  # (module name, module, inputs, output)


class ActivationMonitor:
    """Hooks on every module of `model` that `select(name, module)` picks (each module once), registered at
    construction; `record(name, module, inputs, output)` sees each forward call. A context manager, or call
    remove()."""

    def __init__(self, model: nn.Module, select: Callable[[str, nn.Module], bool], record: Record):
        self.names = [name for name, m in model.named_modules() if select(name, m)]
        modules = dict(model.named_modules())
        self.handles = [modules[name].register_forward_hook(functools.partial(_forward, record, name))
                        for name in self.names]

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def _forward(record: Record, name: str, module: nn.Module, inputs, output):
    record(name, module, inputs, output)
