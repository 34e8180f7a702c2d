"""Darknet import: a .cfg becomes a PyTorch network spikedet's converter can walk, a .weights file fills it."""
from .cfg import parse_cfg
from .model import ConvBlock, DarknetHead, DarknetModel, HeadLevel
from .weights import DARKNET_TO_COCO_NAMES, load_darknet, load_weights, read_names, transfer_weights

__all__ = ["parse_cfg", "ConvBlock", "DarknetHead", "DarknetModel", "HeadLevel", "DARKNET_TO_COCO_NAMES",
           "load_darknet", "load_weights", "read_names", "transfer_weights"]
