"""spikedet's schema of a yolo model config: a config read from a file is data, checked before any model is built.

ultralytics' model builder (parse_model) evaluates the config's `activation` string and looks its module names
up in its own module's globals, so a config string could run code or call any function there (torch_safe_load
unpickles a file). A config therefore passes `check_yolo_config` first: known keys, module names from a fixed
table, arguments typed and in range, and an estimate of its weights' memory under a limit. What reaches
ultralytics is rebuilt from spikedet's own constants (`canonical`), never the stored strings, and has no
`activation` (every hidden activation becomes a DualErrorReLU anyway).
"""
import math
from typing import Callable, Dict, List, Optional

from ..checks import check_weight_memory
from ..defaults import CHOICES, DEFAULTS
from ..errors import fail
from .activation import DualErrorSettings

MAX_CHANNELS, MAX_KERNEL = DEFAULTS["max_channels"], DEFAULTS["max_kernel"]
# ultralytics' activation specs a spikedet config may record; each is replaced by a DualErrorReLU.
ACTIVATIONS = ("nn.ReLU()", "nn.SiLU()")
# Keys a config may have: the model (ultralytics' keys spikedet uses) and what spikedet records beside it.
KEYS = {"nc", "scale", "scales", "pool", "dual_error", "backbone", "head", "activation", "channels", "yaml_file",
        "pretrained_darknet"}


class ConfigError(ValueError):
    """One problem of a config, worded for `<file>: model config: <problem>`."""


def _int(value, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def _number(value, low: float, high: float, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low < value <= high):
        raise ConfigError(f"{what} must be a number in ({low}, {high}], got {value!r}")
    return float(value)


def _conv(args, what):
    if not 2 <= len(args) <= 4:
        raise ConfigError(f"{what}: Conv takes [channels, kernel, stride, padding], got {args!r}")
    c2, k = _int(args[0], 1, MAX_CHANNELS, f"{what} channels"), _int(args[1], 1, MAX_KERNEL, f"{what} kernel")
    s = _int(args[2], 1, MAX_KERNEL, f"{what} stride") if len(args) > 2 else 1
    if len(args) > 3 and args[3] not in (None, "None"):
        return [c2, k, s, _int(args[3], 0, k // 2, f"{what} padding")]
    return [c2, k, s]


def _pool(args, what):
    if not 1 <= len(args) <= 3:
        raise ConfigError(f"{what}: a pool takes [kernel, stride, padding], got {args!r}")
    k = _int(args[0], 1, MAX_KERNEL, f"{what} kernel")
    s = _int(args[1], 1, MAX_KERNEL, f"{what} stride") if len(args) > 1 and args[1] is not None else k
    p = _int(args[2], 0, k // 2, f"{what} padding") if len(args) > 2 else 0
    return [k, s, p]


def _pad(args, what):
    sides = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    if len(sides) not in (1, 4):
        raise ConfigError(f"{what}: ZeroPad2d takes [padding] or [[left, right, top, bottom]], got {args!r}")
    return [[_int(v, 0, MAX_KERNEL, f"{what} padding") for v in sides]]


def _upsample(args, what):
    if len(args) != 3 or args[0] not in (None, "None") or args[2] != "nearest":
        raise ConfigError(f"{what}: Upsample takes [None, factor, 'nearest'], got {args!r}")
    return [None, _int(args[1], 1, 32, f"{what} factor"), "nearest"]


def _concat(args, what):
    if list(args) != [1]:
        raise ConfigError(f"{what}: Concat takes [1] (channels), got {args!r}")
    return [1]


def _c2f(args, what):
    if not 1 <= len(args) <= 2 or (len(args) == 2 and not isinstance(args[1], bool)):
        raise ConfigError(f"{what}: C2f takes [channels, shortcut], got {args!r}")
    return [_int(args[0], 1, MAX_CHANNELS, f"{what} channels"), *args[1:]]


def _sppf(args, what):
    if len(args) != 2:
        raise ConfigError(f"{what}: SPPF takes [channels, kernel], got {args!r}")
    return [_int(args[0], 1, MAX_CHANNELS, f"{what} channels"), _int(args[1], 1, MAX_KERNEL, f"{what} kernel")]


def _detect(args, what):
    if list(args) != ["nc"]:
        raise ConfigError(f"{what}: Detect takes [nc], got {args!r}")
    return ["nc"]


# Module name -> its argument check. The name ultralytics gets is this table's key, not the file's string.
MODULES: Dict[str, Callable] = {"Conv": _conv, "nn.MaxPool2d": _pool, "nn.AvgPool2d": _pool, "nn.ZeroPad2d": _pad,
                                "nn.Upsample": _upsample, "Concat": _concat, "Detect": _detect, "C2f": _c2f,
                                "SPPF": _sppf}
REPEATED = {"C2f"}  # modules whose `number` is a repeat count inside the module (scaled by depth)
MAX_REPEATS = 16


def _sources(f, i: int, what: str) -> List[int]:
    """A layer's inputs as absolute indices, each an earlier layer."""
    refs = f if isinstance(f, list) and f else [f]
    out = []
    for j in refs:
        k = _int(j, -i, i - 1, f"{what} from") if i else _int(j, -1, -1, f"{what} from")
        out.append(i + k if k < 0 else k)
    return out


def _layers(layers, offset: int, what: str) -> List[list]:
    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{what} must be a list of layers [from, number, module, args]")
    out = []
    for n, layer in enumerate(layers):
        i, where = offset + n, f"layer {offset + n}"
        if not isinstance(layer, list) or len(layer) != 4:
            raise ConfigError(f"{where} must be [from, number, module, args], got {layer!r}")
        f, number, module, args = layer
        name = next((key for key in MODULES if key == module), None)  # the table's own string
        if name is None:
            raise ConfigError(f"{where}: module {module!r} is not one of {', '.join(MODULES)}")
        if name in REPEATED:
            number = _int(number, 1, MAX_REPEATS, f"{where} number")
        elif number != 1 or isinstance(number, bool):
            raise ConfigError(f"{where}: number must be 1, got {number!r}")
        if not isinstance(args, list):
            raise ConfigError(f"{where}: args must be a list, got {args!r}")
        _sources(f, i, where)
        out.append([f if isinstance(f, int) else list(f), number, name, MODULES[name](args, where)])
    return out


def _scales(d: dict) -> Optional[dict]:
    scales = d.get("scales")
    if scales is None:
        return None
    if not isinstance(scales, dict) or not scales:
        raise ConfigError(f"scales must map names to [depth, width, max_channels], got {scales!r}")
    out = {}
    for name, value in scales.items():
        if not (isinstance(name, str) and name.isidentifier() and len(name) <= 16):
            raise ConfigError(f"scale name {name!r} must be a short identifier")
        if not isinstance(value, list) or len(value) != 3:
            raise ConfigError(f"scale {name}: expected [depth, width, max_channels], got {value!r}")
        out[name] = [_number(value[0], 0, 4, f"scale {name} depth"), _number(value[1], 0, 4, f"scale {name} width"),
                     _int(value[2], 1, MAX_CHANNELS, f"scale {name} max_channels")]
    return out


def _dual_error(value) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"dual_error must be a mapping of settings, got {value!r}")
    try:
        return DualErrorSettings.from_dict(value).to_dict()
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def canonical(d) -> dict:
    """The config rebuilt from checked values and spikedet's constants; ConfigError names the first problem."""
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping, got {type(d).__name__}")
    if "backbone" not in d or "head" not in d:
        raise ConfigError("not a model config (needs `backbone` and `head`)")
    unknown = sorted(str(k) for k in d if k not in KEYS)
    if unknown:
        raise ConfigError(f"unknown keys {unknown} (known: {', '.join(sorted(KEYS))})")
    if "activation" in d and d["activation"] not in ACTIVATIONS:
        raise ConfigError(f"activation {d['activation']!r} is not one of {', '.join(ACTIVATIONS)}")
    out = {"nc": _int(d.get("nc", 80), 1, MAX_CHANNELS, "nc"),
           "channels": _int(d.get("channels", 3), 1, 16, "channels")}
    scales = _scales(d)
    if scales is not None:
        out["scales"] = scales
    if "scale" in d:
        if scales is None or d["scale"] not in scales:
            raise ConfigError(f"scale {d['scale']!r} is not one of the config's scales {sorted(scales or {})}")
        out["scale"] = next(name for name in scales if name == d["scale"])
    if "pool" in d:
        if d["pool"] not in CHOICES["pool"]:
            raise ConfigError(f"pool must be one of {CHOICES['pool']}, got {d['pool']!r}")
        out["pool"] = next(p for p in CHOICES["pool"] if p == d["pool"])
    if "dual_error" in d:
        out["dual_error"] = _dual_error(d["dual_error"])
    out["backbone"] = _layers(d.get("backbone"), 0, "backbone")
    out["head"] = _layers(d.get("head"), len(out["backbone"]), "head")
    if out["head"][-1][2] != "Detect" or any(layer[2] == "Detect" for layer in out["backbone"] + out["head"][:-1]):
        raise ConfigError("the last layer, and only it, must be Detect")
    for key in ("yaml_file", "pretrained_darknet"):  # records, never built from
        if key in d:
            out[key] = _record(d[key], key)
    return out


def _record(value, key: str):
    if key == "yaml_file" and isinstance(value, str):
        return str(value)
    if (key == "pretrained_darknet" and isinstance(value, dict) and set(value) == {"weights", "cfg"}
            and all(isinstance(v, str) for v in value.values())):
        return {k: str(v) for k, v in value.items()}
    raise ConfigError(f"{key} has an unexpected value {value!r}")


def weight_count(d: dict) -> int:
    """Parameters the built network will have, from a canonical config (convolutions; the rest is small)."""
    depth_width = d["scales"][d["scale"]] if "scales" in d and "scale" in d else [1.0, 1.0, MAX_CHANNELS]
    depth, width, max_channels = depth_width
    layers = d["backbone"] + d["head"]
    channels, total = [], 0
    for i, (f, number, module, args) in enumerate(layers):
        c_in = [channels[j] if i else d["channels"] for j in _sources(f, i, "")]
        if module in ("Conv", "C2f", "SPPF"):
            c2 = max(8, math.ceil(min(args[0], max_channels) * width / 8) * 8)
        if module == "Conv":
            total += c_in[0] * c2 * args[1] ** 2
        elif module == "C2f":  # cv1, cv2 and the repeated 3x3 bottlenecks at half width
            n, c = max(round(number * depth), 1), c2 // 2
            total += c_in[0] * 2 * c + (2 + n) * c * c2 + n * 18 * c * c
        elif module == "SPPF":
            total += c_in[0] * (c_in[0] // 2) + 2 * c_in[0] * c2
        elif module == "Detect":
            c2, c3 = max(16, c_in[0] // 4, 64), max(c_in[0], min(d["nc"], 100))
            per_level = 9 * (c2 * c2 + c3 * c3) + 64 * c2 + c3 * d["nc"]
            total += sum(9 * c * (c2 + c3) + per_level for c in c_in)
            c2 = 0
        else:
            c2 = sum(c_in) if module == "Concat" else c_in[0]
        channels.append(c2)
    return total


def check_yolo_config(d, source) -> dict:
    """The canonical config, or a one-line error naming `source` (a file) and the problem."""
    try:
        config = canonical(d)
    except ConfigError as e:
        raise fail(source, f"model config: {e}") from None
    check_weight_memory(source, weight_count(config))
    return config
