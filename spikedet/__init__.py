"""spikedet: spiking Tiny-YOLO object detection.

Pipeline: data -> model (dual-error activation) -> train -> convert -> simulate -> evaluate / detect.
"""
from .errors import SpikedetError

__version__ = "0.1.0"
__all__ = ["SpikedetError", "__version__"]
