"""Darknet import: a .cfg becomes a PyTorch network spikedet's converter can walk, a .weights file fills it.

The network follows ultralytics' routing convention (`model` list, `f`, `i`, `save`): one layer per cfg
section after [net], so darknet's layer indices (the ones [route] and [shortcut] name) stay valid. Every
[yolo] or [region] section keeps its slot as an nn.Identity, and all of them are decoded by one DarknetHead
appended last, which returns spikedet's raw output: (B, 4 + nc, anchors), boxes as centre-size in input
pixels and per-class scores in [0, 1] (darknet's objectness x class probability).

Supported: [convolutional] (leaky / linear / relu), [maxpool], [route], [upsample], [shortcut], [yolo],
[region]. Any other section, and any option value that would change the network, is a one-line error naming
the cfg line, so a network is never silently built differently from darknet's.
"""
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .data.records import COCO_TO_VOC_NAMES
from .errors import SpikedetError, fail

# darknet's COCO names (data/coco.names) spell six classes as VOC does; mapped to the category names of
# COCO's instances JSON, so a darknet COCO network's classes match COCO ground truth by name. Applied to
# 80-name lists only: VOC's own class names are darknet's spellings, so voc.names must stay as it is.
DARKNET_TO_COCO_NAMES = {voc: coco for coco, voc in COCO_TO_VOC_NAMES.items()}

# darknet's GPU and AlexeyAB batch-norm divide by sqrt(var + .00001f), as nn.BatchNorm2d does with this eps.
BN_EPS = 1e-5
ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.1), "relu": nn.ReLU, "linear": nn.Identity}

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


def parse_cfg(path: Union[str, Path]) -> List[dict]:
    """A darknet .cfg as one dict per section, [net] first: {"type", "line", option: value, ...}.

    Values are typed and defaults filled in as darknet fills them (a convolution's "padding" is the one it
    uses). Whitespace is dropped and lines starting with # or ; are comments, as in darknet's reader.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise fail(path, "darknet cfg not found") from None
    except UnicodeDecodeError:
        raise fail(path, "not a darknet cfg (not text)") from None
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
        need(s["activation"] in ACTIVATIONS, f"activation={s['activation']} is not supported "
             f"({', '.join(ACTIVATIONS)}; darknet's default is logistic)")
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
        need(s["activation"] in ACTIVATIONS, f"activation={s['activation']} is not supported")
    else:  # yolo, region
        need(s["classes"] > 0 and s["num"] > 0, "classes and num must be positive")
        need(len(s["anchors"]) == 2 * s["num"], f"has {len(s['anchors'])} anchor values for num={s['num']}")
        if kind == "yolo":
            s["mask"] = list(range(s["num"])) if s["mask"] is None else s["mask"]
            need(len(s["mask"]) > 0 and all(0 <= m < s["num"] for m in s["mask"]),
                 f"mask must index the {s['num']} anchors")
        else:
            need(s["softmax"] == 1, "without softmax=1 is not supported")


class ConvBlock(nn.Module):
    """darknet's [convolutional]: conv, batch-norm or bias, activation -- the block the converter folds."""

    def __init__(self, c_in: int, s: dict):
        super().__init__()
        bn = bool(s["batch_normalize"])
        self.conv = nn.Conv2d(c_in, s["filters"], s["size"], s["stride"], s["padding"], bias=not bn)
        self.bn = nn.BatchNorm2d(s["filters"], eps=BN_EPS) if bn else None
        self.act = ACTIVATIONS[s["activation"]]()

    def forward(self, x):
        x = self.conv(x)
        return self.act(x if self.bn is None else self.bn(x))


class Shortcut(nn.Module):
    """darknet's [shortcut]: the previous output plus an earlier one on the channels both have, activated.

    With unequal channel counts darknet keeps the previous output's channels and adds the shared ones
    (yolov3-tiny-prn's partial residuals).
    """

    def __init__(self, activation: str):
        super().__init__()
        self.act = ACTIVATIONS[activation]()

    def forward(self, xs):
        x, other = xs
        c = min(x.shape[1], other.shape[1])
        return self.act(torch.cat([x[:, :c] + other[:, :c], x[:, c:]], 1))


def _maxpool(s: dict) -> nn.Module:
    """darknet's max-pool as PyTorch pooling with the same output.

    darknet's windows start at -padding//2 and there are (w + padding - size) // stride + 1 of them, with
    -inf outside the image: replicate padding (padding//2 before, the rest after) gives the same maxima.
    A non-overlapping pool with padding 0 or 1 needs no padding whenever its input divides by its stride,
    which DarknetModel checks of every input, so it stays a plain nn.MaxPool2d.
    """
    size, stride, padding = s["size"], s["stride"], s["padding"]
    if padding == 0 or (padding == 1 and size == stride):
        return nn.MaxPool2d(size, stride)
    before, after = padding // 2, padding - padding // 2
    return nn.Sequential(nn.ReplicationPad2d((before, after, before, after)), nn.MaxPool2d(size, stride))


@dataclass
class HeadLevel:
    """One [yolo] or [region] output: its decoding, its anchors in input pixels (yolo) or grid cells
    (region), as darknet's cfgs give them, and its stride in input pixels."""

    kind: str
    anchors: List[Tuple[float, float]]
    stride: int
    scale_x_y: float = 1.0


class DarknetHead(nn.Module):
    """Every [yolo] / [region] section of a cfg, decoded together into spikedet's raw output."""

    def __init__(self, levels: List[HeadLevel], nc: int):
        super().__init__()
        self.levels, self.nc = levels, nc
        self.stride = torch.tensor([float(lv.stride) for lv in levels])

    def forward(self, maps: List[torch.Tensor]):
        """(decoded (B, 4 + nc, anchors), the raw maps), as ultralytics' Detect returns in eval mode."""
        return self.decode(maps), maps

    def decode(self, maps: List[torch.Tensor]) -> torch.Tensor:
        """Raw maps (B, A * (5 + nc), H, W) per level -> (B, 4 + nc, sum of A * H * W), in darknet's order
        (level, anchor, row, column). Boxes are centre-x, centre-y, w, h in input pixels; a class score is
        darknet's detection score: sigmoid(objectness) times sigmoid (yolo) or softmax (region) of the class.
        """
        boxes, scores = [], []
        for lv, x in zip(self.levels, maps):
            b, _, h, w = x.shape
            p = x.view(b, len(lv.anchors), 5 + self.nc, h, w)
            gy, gx = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                                    torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
            anchors = torch.tensor(lv.anchors, device=x.device, dtype=x.dtype).view(1, -1, 2, 1, 1)
            if lv.kind == "yolo":
                xy = p[:, :, :2].sigmoid() * lv.scale_x_y - (lv.scale_x_y - 1) / 2
                wh = p[:, :, 2:4].exp() * anchors
                cls = p[:, :, 5:].sigmoid()
            else:
                xy = p[:, :, :2].sigmoid()
                wh = p[:, :, 2:4].exp() * anchors * lv.stride
                cls = p[:, :, 5:].softmax(2)
            xy = (xy + torch.stack([gx, gy])) * lv.stride
            boxes.append(torch.cat([xy, wh], 2).transpose(1, 2).reshape(b, 4, -1))
            scores.append((cls * p[:, :, 4:5].sigmoid()).transpose(1, 2).reshape(b, self.nc, -1))
        return torch.cat([torch.cat(boxes, 2), torch.cat(scores, 2)], 1)


class DarknetModel(nn.Module):
    """A darknet network built from its .cfg, routed like an ultralytics model (see the module docstring)."""

    def __init__(self, cfg: Union[str, Path], names: Optional[Sequence[str]] = None):
        super().__init__()
        from ultralytics.nn.modules import Concat

        self.cfg = Path(cfg)
        net, *sections = parse_cfg(self.cfg)
        if not sections:
            raise fail(self.cfg, "no layers after [net]")
        channels, strides, layers, levels, feeders = [], [], [], [], []
        for i, s in enumerate(sections):
            where = f"line {s['line']}"
            c, stride = (channels[-1], strides[-1]) if i else (net["channels"], 1)
            f = -1
            kind = s["type"]
            if kind == "convolutional":
                m, c, stride = ConvBlock(c, s), s["filters"], stride * s["stride"]
            elif kind == "maxpool":
                m, stride = _maxpool(s), stride * s["stride"]
            elif kind in ("route", "shortcut"):
                sources = [self._source(i, j, where, sections) for j in
                           (s["layers"] if kind == "route" else [s["from"]])]
                if len({strides[j] for j in sources} | ({stride} if kind == "shortcut" else set())) > 1:
                    raise fail(self.cfg, f"{where}: [{kind}] joins layers of different resolutions")
                routed = [-1 if j == i - 1 else j for j in sources]  # -1: the previous output, not saved
                if kind == "shortcut":
                    m, f = Shortcut(s["activation"]), [-1, routed[0]]
                else:
                    m = nn.Identity() if len(sources) == 1 else Concat(1)
                    f = routed[0] if len(sources) == 1 else routed
                    c, stride = sum(channels[j] for j in sources), strides[sources[0]]
            elif kind == "upsample":
                if stride % s["stride"]:
                    raise fail(self.cfg, f"{where}: [upsample] above the input resolution is not supported")
                m, stride = nn.Upsample(scale_factor=s["stride"], mode="nearest"), stride // s["stride"]
            else:  # yolo, region: a placeholder keeps the index; DarknetHead decodes the map feeding it
                levels.append(self._level(s, c, stride, where, i))
                feeders.append(i - 1)
                m = nn.Identity()
            m.i, m.f = i, f
            layers.append(m)
            channels.append(c)
            strides.append(stride)
        if not levels:
            raise fail(self.cfg, "no [yolo] or [region] section: not a detection network")
        classes = {s["classes"] for s in sections if s["type"] in ("yolo", "region")}
        if len(classes) > 1:
            raise fail(self.cfg, "the [yolo] / [region] sections disagree on classes")
        nc = classes.pop()
        head = DarknetHead(levels, nc)
        head.i, head.f = len(layers), feeders
        self.model = nn.ModuleList(layers + [head])
        sources = [j for m in self.model for j in ([m.f] if isinstance(m.f, int) else m.f)]
        self.save = sorted({j for j in sources if j != -1})
        self.stride = head.stride
        self.multiple = math.lcm(*strides)  # every input side must divide by it (see _maxpool)
        self.nc = nc
        if names is not None and len(names) != nc:
            raise ValueError(f"{self.cfg}: {len(names)} class names for a network with {nc} classes")
        self.names = {k: str(n) for k, n in enumerate(names or [f"class{k}" for k in range(nc)])}
        self.yaml = {"channels": net["channels"], "darknet_cfg": str(self.cfg), "width": net["width"],
                     "height": net["height"]}

    def _source(self, i: int, j: int, where: str, sections: List[dict]) -> int:
        """A [route] / [shortcut] reference (negative: relative to layer i) as an absolute earlier index."""
        k = i + j if j < 0 else j
        if not 0 <= k < i:
            raise fail(self.cfg, f"{where}: layer {j} is not an earlier layer")
        if sections[k]["type"] in ("yolo", "region"):
            raise fail(self.cfg, f"{where}: reading a [{sections[k]['type']}] layer's output is unsupported")
        return k

    def _level(self, s: dict, c: int, stride: int, where: str, i: int) -> HeadLevel:
        pairs = [tuple(s["anchors"][2 * k:2 * k + 2]) for k in range(s["num"])]
        if s["type"] == "yolo":
            level = HeadLevel("yolo", [pairs[k] for k in s["mask"]], stride, s["scale_x_y"])
        else:
            level = HeadLevel("region", pairs, stride)
        expected = len(level.anchors) * (5 + s["classes"])
        if i == 0 or c != expected:
            raise fail(self.cfg, f"{where}: [{s['type']}] needs a layer before it with {expected} channels "
                                 f"({len(level.anchors)} anchors x (5 + {s['classes']} classes)), got {c}")
        return level

    def forward(self, x: torch.Tensor):
        """Like ultralytics' _predict_once; returns the head's (decoded, raw maps)."""
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise SpikedetError(f"{self.cfg}: input {h}x{w} is not a multiple of {self.multiple}, "
                                "which this network's pools and routes need")
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


def load_weights(model: DarknetModel, path: Union[str, Path]) -> dict:
    """Fill the model from a darknet .weights file; returns its header (major, minor, revision, seen).

    The file is a header (int32 major, minor, revision; `seen` int64 from version 0.2 on, int32 before),
    then float32 values per convolution in cfg order: with batch-norm its beta, gamma, running mean and
    variance, else the conv bias; then the conv weights. Every value must be used, exactly: a count that
    differs means the weights belong to another cfg (or the file is damaged).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail(path, "darknet weights not found") from None
    if len(data) < 12:
        raise fail(path, "too short for a darknet weights header")
    major, minor, revision = struct.unpack_from("<3i", data)
    seen_bytes = 8 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 4
    header = 12 + seen_bytes
    if len(data) < header:
        raise fail(path, "too short for a darknet weights header")
    tensors = [t for m in model.model if isinstance(m, ConvBlock) for t in _darknet_order(m)]
    expected = sum(t.numel() for t in tensors)
    found, stray = divmod(len(data) - header, 4)
    if found != expected or stray:
        raise fail(path, f"expected {expected} float values for {model.cfg}, found {found}"
                         + (f" and {stray} stray bytes" if stray else ""))
    values = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=header).copy())
    start = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(values[start:start + t.numel()].view_as(t))
            start += t.numel()
    return {"major": major, "minor": minor, "revision": revision,
            "seen": int.from_bytes(data[12:header], "little")}


def _darknet_order(block: ConvBlock) -> List[torch.Tensor]:
    """A convolution's tensors in the order its values follow each other in a .weights file."""
    if block.bn is None:
        return [block.conv.bias, block.conv.weight]
    bn = block.bn
    return [bn.bias, bn.weight, bn.running_mean, bn.running_var, block.conv.weight]


def read_names(path: Union[str, Path], nc: Optional[int] = None) -> List[str]:
    """A darknet .names file (one class per line), darknet's COCO spellings mapped to COCO's (see above)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise fail(path, "class names file not found") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if "" in names:
        raise fail(path, f"line {names.index('') + 1}: empty class name")
    if nc is not None and len(names) != nc:
        raise fail(path, f"{len(names)} class names for a network with {nc} classes")
    return [DARKNET_TO_COCO_NAMES.get(n, n) for n in names] if len(names) == 80 else names


def load_darknet(cfg: Union[str, Path], weights: Union[str, Path],
                 names: Optional[Union[str, Path]] = None) -> DarknetModel:
    """A darknet network with its weights, in eval mode.

    names: a .names file; by default coco.names (80 classes) or voc.names (20) beside the cfg when there,
    else the classes are called class0, class1, ...
    """
    model = DarknetModel(cfg)
    if names is None and model.nc in (80, 20):
        default = Path(cfg).parent / ("coco.names" if model.nc == 80 else "voc.names")
        names = default if default.is_file() else None
    if names is not None:
        model.names = dict(enumerate(read_names(names, model.nc)))
    load_weights(model, weights)
    return model.eval()


def transfer_weights(cfg: Union[str, Path], weights: Union[str, Path], model: nn.Module) -> int:
    """Start `model` from a darknet network: its batch-normalized convolutions, in cfg order, fill the model's
    conv + batch-norm blocks before the detection head, in order, for as long as the shapes agree. Returns how
    many were filled; none is an error. The detection head (and every layer after the first disagreement)
    keeps its own initialization: darknet's [yolo] output convolutions do not fit ultralytics' Detect.

    For yolov3-tiny.weights into configs/yolov3-tiny.yaml at width m all 11 backbone and neck blocks fill.
    """
    source = [m for m in load_darknet(cfg, weights).model if isinstance(m, ConvBlock) and m.bn is not None]
    target = [m for m in list(model.model)[:-1] if isinstance(getattr(m, "conv", None), nn.Conv2d)
              and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)]
    filled = 0
    with torch.no_grad():
        for src, dst in zip(source, target):
            if src.conv.weight.shape != dst.conv.weight.shape:
                break
            dst.conv.weight.copy_(src.conv.weight)
            dst.bn.load_state_dict(src.bn.state_dict())
            dst.bn.eps = src.bn.eps
            filled += 1
    if not filled:
        first = (f"its first convolution is {tuple(source[0].conv.weight.shape)}, the model's "
                 f"{tuple(target[0].conv.weight.shape)}") if source and target else "no conv + batch-norm blocks"
        raise fail(weights, f"no layer fits the model ({first}); "
                            "is the model config the same network at the same width?")
    return filled
