"""spikedet: spiking Tiny-YOLO object detection.

Pipeline: data -> model (dual-error activation) -> train -> convert -> simulate -> evaluate / detect.
`from spikedet import SpikingYOLO` is the Python API (spikedet/api.py).
"""
import os

# spikedet never downloads anything: ultralytics is told it is offline before it is first imported (it
# probes the network at import). Set YOLO_OFFLINE=0 to let ultralytics fetch datasets or weights itself.
os.environ.setdefault("YOLO_OFFLINE", "1")

from .errors import SpikedetError  # noqa: E402

__version__ = "0.2.0"
__all__ = ["SpikedetError", "SpikingYOLO", "__version__"]


def __getattr__(name):
    """SpikingYOLO is imported on first use, so `import spikedet.data` stays light."""
    if name == "SpikingYOLO":
        from .api import SpikingYOLO

        return SpikingYOLO
    raise AttributeError(f"module 'spikedet' has no attribute {name!r}")
