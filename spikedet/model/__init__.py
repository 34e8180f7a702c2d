"""The ANN: Tiny-YOLO configs built by ultralytics, every hidden activation the dual-error surrogate."""
from .activation import DualErrorReLU, DualErrorSettings, calibrate_thresholds, dual_error
from .yolo import CONFIG_DIR, DualErrorYOLO, load_model_config

__all__ = ["DualErrorReLU", "DualErrorSettings", "calibrate_thresholds", "dual_error", "CONFIG_DIR",
           "DualErrorYOLO", "load_model_config"]
