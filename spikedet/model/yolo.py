"""Tiny-YOLO built with ultralytics' YAML model machinery, every hidden activation a DualErrorReLU.

A model config is an ultralytics model YAML plus two spikedet keys, kept in the model's `yaml` dict (and so
in every checkpoint) so a network can be rebuilt from its file alone:

- `dual_error`: the activation settings (spikedet.activation.DualErrorSettings);
- `pool`: what becomes of the max-pool layers, which an SNN cannot compute exactly: `max` keeps them (the
  converter uses a spike max-pool), `avg` makes them average pools, `conv` makes them strided convolutions.
"""
import copy
from pathlib import Path
from typing import Optional, Union

from torch import nn
from ultralytics.nn.tasks import DetectionModel

from ..defaults import CHOICES
from ..errors import SpikedetError, fail
from ..fileio import read_yaml
from .activation import DualErrorReLU, DualErrorSettings, mark_first_copies
from .schema import check_yolo_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
POOL_CHOICES = CHOICES["pool"]
# Activations that are allowed to remain: none has a negative part, so each maps onto IF neurons.
_SPIKING_SAFE = (DualErrorReLU, nn.Identity)


def resolve_config_path(cfg: Union[str, Path]) -> Path:
    """A config path as given, or a name found in configs/ (`yolov3-tiny` -> configs/yolov3-tiny.yaml)."""
    p = Path(cfg)
    for candidate in (p, CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if candidate.is_file():
            return candidate
    raise fail(cfg, f"model config not found (looked here and in {CONFIG_DIR})")


def load_model_config(cfg: Union[str, Path, dict], scale: Optional[str] = None, pool: Optional[str] = None,
                      dual_error: Optional[dict] = None) -> dict:
    """Read a model config, check it against spikedet's schema (model.schema) and apply overrides; the result
    is what the model records about itself."""
    if isinstance(cfg, dict):
        source = cfg.get("yaml_file") if isinstance(cfg.get("yaml_file"), str) else "model config"
        d = check_yolo_config(cfg, source)
    else:
        source = resolve_config_path(cfg)
        d = check_yolo_config(read_yaml(source, "model config"), source)
        d["yaml_file"] = str(source)
    if scale is not None:
        if scale not in d.get("scales", {}):
            raise fail(source, f"scale {scale!r} not in {sorted(d.get('scales', {}))}")
        d["scale"] = scale
    d["pool"] = pool or d.get("pool", "max")
    if d["pool"] not in POOL_CHOICES:
        raise fail(source, f"pool must be one of {POOL_CHOICES}, got {d['pool']!r}")
    try:
        settings = DualErrorSettings.from_dict({**d.get("dual_error", {}), **(dual_error or {})})
    except (TypeError, ValueError) as e:
        raise fail(source, str(e)) from None
    d["dual_error"] = settings.to_dict()
    return check_yolo_config(d, source)


def _rewrite_pools(d: dict) -> dict:
    """The layer list ultralytics builds: max-pools replaced per the `pool` choice (a copy; `d` is kept)."""
    d = copy.deepcopy(d)
    if d["pool"] == "max":
        return d
    layers = d["backbone"] + d["head"]
    for i, (f, n, m, args) in enumerate(layers):
        if m != "nn.MaxPool2d":
            continue
        k, s, p = (list(args) + [None, 0])[:3]
        s = k if s is None else s
        if d["pool"] == "avg":
            layers[i] = [f, n, "nn.AvgPool2d", [k, s, p]]
        else:
            layers[i] = [f, n, "Conv", [_channels_before(layers, i), k, s, p]]
    nb = len(d["backbone"])
    d["backbone"], d["head"] = layers[:nb], layers[nb:]
    return d


def _channels_before(layers, i) -> int:
    """Output channels (unscaled, as written in the YAML) feeding layer i along a `from: -1` chain."""
    for f, _, m, args in reversed(layers[:i]):
        if m == "Conv":
            return args[0]
        if f != -1:
            break
    raise SpikedetError(f"pool: conv needs a Conv layer before the pool at layer {i}")


class DualErrorYOLO(DetectionModel):
    """An ultralytics DetectionModel whose hidden activations are DualErrorReLU modules.

    Each Conv gets its own activation instance with the right channel count (ultralytics' Conv.default_act is
    one shared module, useless for learned per-channel thresholds). The head's last 1x1 convolutions stay
    linear: they become the SNN's non-spiking, integrating output layer.
    """

    def __init__(self, cfg="yolov3-tiny", ch=3, nc=None, verbose=False, **overrides):
        d = load_model_config(cfg, **overrides)
        built = _rewrite_pools(d)
        super().__init__(built, ch=ch, nc=nc, verbose=False)
        self.yaml = {**d, "nc": built["nc"], "channels": built["channels"]}
        install_dual_error(self, self.settings)
        if verbose:
            self.info()

    @property
    def settings(self) -> DualErrorSettings:
        return DualErrorSettings.from_dict(self.yaml["dual_error"])


def install_dual_error(model: nn.Module, settings: DualErrorSettings) -> nn.Module:
    """Give every ultralytics Conv its own DualErrorReLU; fail if another nonlinearity remains."""
    from ultralytics.nn.modules import SPPF, Conv

    for m in model.modules():
        if isinstance(m, SPPF):  # YOLOv8 activates cv1 (ultralytics >= 8.3 made it linear): spikes need an activation
            m.cv1.act = nn.ReLU()
        if isinstance(m, Conv) and not isinstance(m.act, nn.Identity):
            m.act = DualErrorReLU(m.conv.out_channels, settings)
    leftovers = {type(m).__name__ for m in model.modules()
                 if _is_activation(m) and not isinstance(m, _SPIKING_SAFE)}
    if leftovers:
        raise SpikedetError(f"activations the SNN cannot represent remain in the model: {sorted(leftovers)}")
    return mark_first_copies(model, settings.first_copies)


def _is_activation(m: nn.Module) -> bool:
    return type(m).__module__ == "torch.nn.modules.activation"
