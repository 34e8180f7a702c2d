"""Darknet .cfg files: parsed into typed sections, with darknet's defaults filled in.

Supported: [convolutional] (leaky / linear / relu), [maxpool], [route], [upsample], [shortcut], [yolo],
[region]. Any other section, and any option value that would change the network, is a one-line error naming
the cfg line, so a network is never silently built differently from darknet's.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

from ..errors import fail

ACTIVATION_NAMES = ("leaky", "relu", "linear")

_REQUIRED = object()


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v]


def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",") if v]


_WHAT = {int: "an integer", float: "a number", _ints: "a list of integers", _floats: "a list of numbers"}


@dataclass(frozen=True)
class _Spec:
    """What a section may say: options read (parser, default), options accepted only at darknet's default
    value (any other value changes the network), and training-only options that inference ignores."""

    options: Dict[str, tuple]
    fixed: Dict[str, Union[int, str]] = field(default_factory=dict)
    ignored: frozenset = frozenset()


_SECTIONS = {
    # every other [net] option (batch, learning rate, augmentation, ...) is a training setting
    "net": _Spec({"width": (int, _REQUIRED), "height": (int, _REQUIRED), "channels": (int, _REQUIRED)}),
    "convolutional": _Spec(
        {"batch_normalize": (int, 0), "filters": (int, 1), "size": (int, 1), "stride": (int, 1),
         "pad": (int, 0), "padding": (int, 0), "activation": (str, "logistic")},
        fixed={"groups": 1, "dilation": 1, "binary": 0, "xnor": 0, "flipped": 0, "antialiasing": 0}),
    "maxpool": _Spec({"stride": (int, 1), "size": (int, None), "padding": (int, None)},
                     fixed={"maxpool_depth": 0, "antialiasing": 0}),
    "route": _Spec({"layers": (_ints, _REQUIRED)}, fixed={"groups": 1, "group_id": 0},
                   ignored=frozenset({"stopbackward"})),
    "upsample": _Spec({"stride": (int, 2)}, fixed={"scale": 1}),
    "shortcut": _Spec({"from": (int, _REQUIRED), "activation": (str, "linear")},
                      fixed={"alpha": 1, "beta": 1, "weights_type": "none", "weights_normalization": "none"}),
    "yolo": _Spec(
        {"mask": (_ints, None), "anchors": (_floats, _REQUIRED), "classes": (int, 20), "num": (int, 1),
         "scale_x_y": (float, 1.0)},
        fixed={"new_coords": 0},
        ignored=frozenset({"jitter", "ignore_thresh", "truth_thresh", "random", "resize", "iou_loss",
                           "iou_normalizer", "iou_thresh", "cls_normalizer", "obj_normalizer",
                           "delta_normalizer", "beta_nms", "nms_kind", "max_delta", "counters_per_class",
                           "label_smooth_eps", "focal_loss", "thresh", "nms_threshold"})),
    "region": _Spec(
        {"anchors": (_floats, _REQUIRED), "classes": (int, 20), "num": (int, 1), "softmax": (int, 0)},
        fixed={"coords": 4, "background": 0},
        ignored=frozenset({"bias_match", "jitter", "rescore", "object_scale", "noobject_scale", "class_scale",
                           "coord_scale", "absolute", "thresh", "random", "nms_threshold"})),
}
_ALIASES = {"network": "net", "conv": "convolutional", "max": "maxpool"}


def read_cfg_text(path: Union[str, Path]) -> str:
    """A .cfg file's text, with a one-line error for a missing, binary or directory path."""
    path = Path(path)
    if path.is_dir():
        raise fail(path, "is a directory, expected a darknet .cfg file")
    try:
        return path.read_text()
    except FileNotFoundError:
        raise fail(path, "darknet cfg not found") from None
    except UnicodeDecodeError:
        raise fail(path, "not a darknet cfg (not text)") from None


def parse_cfg(path: Union[str, Path], text: str = None) -> List[dict]:
    """A darknet .cfg as one dict per section, [net] first: {"type", "line", option: value, ...}.

    text: the cfg's content when already read (a saved network's); `path` then only names it in errors.
    Values are typed and defaults filled in as darknet fills them (a convolution's "padding" is the one it
    uses). Whitespace is dropped and lines starting with # or ; are comments, as in darknet's reader.
    """
    path = Path(path)
    text = read_cfg_text(path) if text is None else text
    raw = []  # (type, line, {option: (value, line)})
    for n, original in enumerate(text.splitlines(), 1):
        line = "".join(original.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            name = line[1:-1]
            kind = _ALIASES.get(name, name)
            if not line.endswith("]"):
                raise fail(path, f"line {n}: bad section header {original.strip()!r}")
            if kind not in _SECTIONS:
                raise fail(path, f"line {n}: unsupported [{name}]")
            if kind == "net" and raw:
                raise fail(path, f"line {n}: a second [net]")
            raw.append((kind, n, {}))
            continue
        key, sep, value = line.partition("=")
        if not raw:
            raise fail(path, f"line {n}: option before the first section")
        if not sep or not key:
            raise fail(path, f"line {n}: expected option=value, got {original.strip()!r}")
        if key in raw[-1][2]:
            raise fail(path, f"line {n}: {key} given twice in one section")
        raw[-1][2][key] = (value, n)
    if not raw or raw[0][0] != "net":
        raise fail(path, "a darknet cfg starts with a [net] section")
    return [_typed_section(path, kind, line, options) for kind, line, options in raw]


def _convert(path: Path, n: int, key: str, value: str, parse):
    try:
        return parse(value)
    except ValueError:
        raise fail(path, f"line {n}: {key}={value} is not {_WHAT[parse]}") from None


def _typed_section(path: Path, kind: str, line: int, options: dict) -> dict:
    spec = _SECTIONS[kind]
    section = {"type": kind, "line": line}
    for key, (value, n) in options.items():
        if key in spec.options:
            section[key] = _convert(path, n, key, value, spec.options[key][0])
        elif key in spec.fixed:
            if _convert(path, n, key, value, type(spec.fixed[key])) != spec.fixed[key]:
                raise fail(path, f"line {n}: unsupported {key}={value} in [{kind}]")
        elif kind != "net" and key not in spec.ignored:
            raise fail(path, f"line {n}: unsupported option {key} in [{kind}]")
    for key, (_, default) in spec.options.items():
        if key not in section:
            if default is _REQUIRED:
                raise fail(path, f"line {line}: [{kind}] needs {key}")
            section[key] = default
    _complete(path, section)
    return section


def _complete(path: Path, s: dict) -> None:
    """Fill the defaults darknet derives from other options, and refuse what darknet would do differently."""
    where, kind = f"line {s['line']}", s["type"]

    def need(ok: bool, problem: str):
        if not ok:
            raise fail(path, f"{where}: [{kind}] {problem}")

    if kind == "net":
        need(min(s["width"], s["height"], s["channels"]) > 0, "width, height and channels must be positive")
    elif kind == "convolutional":
        need(min(s["filters"], s["size"], s["stride"]) > 0, "filters, size and stride must be positive")
        need(s["batch_normalize"] in (0, 1), "batch_normalize must be 0 or 1")
        need(s["activation"] in ACTIVATION_NAMES, f"activation={s['activation']} is not supported "
             f"({', '.join(ACTIVATION_NAMES)}; darknet's default is logistic)")
        if s["pad"]:
            s["padding"] = s["size"] // 2
    elif kind == "maxpool":
        s["size"] = s["stride"] if s["size"] is None else s["size"]
        s["padding"] = s["size"] - 1 if s["padding"] is None else s["padding"]
        need(min(s["size"], s["stride"]) > 0, "size and stride must be positive")
        need(0 <= s["padding"] <= s["size"] - 1, f"padding={s['padding']} outside 0..size-1 is not supported")
    elif kind == "route":
        need(len(s["layers"]) > 0, "needs at least one layer")
    elif kind == "upsample":
        need(s["stride"] >= 1, f"stride={s['stride']} is not supported (only upsampling)")
    elif kind == "shortcut":
        need(s["activation"] in ACTIVATION_NAMES, f"activation={s['activation']} is not supported")
    else:  # yolo, region
        need(s["classes"] > 0 and s["num"] > 0, "classes and num must be positive")
        need(len(s["anchors"]) == 2 * s["num"], f"has {len(s['anchors'])} anchor values for num={s['num']}")
        if kind == "yolo":
            s["mask"] = list(range(s["num"])) if s["mask"] is None else s["mask"]
            need(len(s["mask"]) > 0 and all(0 <= m < s["num"] for m in s["mask"]),
                 f"mask must index the {s['num']} anchors")
        else:
            need(s["softmax"] == 1, "without softmax=1 is not supported")
