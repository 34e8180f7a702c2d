"""A darknet network as a PyTorch module that spikedet's converter can walk.

The network follows ultralytics' routing convention (`model` list, `f`, `i`, `save`): one layer per cfg
section after [net], so darknet's layer indices (the ones [route] and [shortcut] name) stay valid. Every
[yolo] or [region] section keeps its slot as an nn.Identity, and all of them are decoded by one DarknetHead
appended last, which returns spikedet's raw output: (B, 4 + nc, anchors), boxes as centre-size in input
pixels and per-class scores in [0, 1] (darknet's objectness x class probability).
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checks import check_weight_memory
from ..errors import fail
from ..routing import run_routed
from .cfg import parse_cfg, read_cfg_text

# darknet's GPU and AlexeyAB batch-norm divide by sqrt(var + .00001f), as nn.BatchNorm2d does with this eps.
BN_EPS = 1e-5
ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.1), "relu": nn.ReLU, "linear": nn.Identity}


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


class _Builder:
    """Builds one layer per cfg section, tracking each layer's channels and stride in input pixels. A method
    per section kind returns (module, source f, output channels, output stride)."""

    def __init__(self, cfg: Path, net: dict, sections: List[dict]):
        self.cfg, self.sections = cfg, sections
        self.channels, self.strides, self.levels, self.feeders = [], [], [], []
        self.input = (net["channels"], 1)
        self.parameters = 0  # convolution weights so far: the network is refused before a too-large one is made

    def build(self) -> List[nn.Module]:
        layers = []
        for i, s in enumerate(self.sections):
            self.i, self.where = i, f"line {s['line']}"
            self.c, self.stride = (self.channels[-1], self.strides[-1]) if i else self.input
            m, f, c, stride = getattr(self, s["type"])(s)
            m.i, m.f = i, f
            layers.append(m)
            self.channels.append(c)
            self.strides.append(stride)
        return layers

    def convolutional(self, s):
        self.parameters += self.c * s["filters"] * s["size"] ** 2
        check_weight_memory(self.cfg, self.parameters)
        return ConvBlock(self.c, s), -1, s["filters"], self.stride * s["stride"]

    def maxpool(self, s):
        return _maxpool(s), -1, self.c, self.stride * s["stride"]

    def route(self, s):
        from ultralytics.nn.modules import Concat

        sources, routed = self._joined(s["layers"], "route", set())
        m = nn.Identity() if len(sources) == 1 else Concat(1)
        f = routed[0] if len(sources) == 1 else routed
        return m, f, sum(self.channels[j] for j in sources), self.strides[sources[0]]

    def shortcut(self, s):
        _, routed = self._joined([s["from"]], "shortcut", {self.stride})
        return Shortcut(s["activation"]), [-1, routed[0]], self.c, self.stride

    def upsample(self, s):
        if self.stride % s["stride"]:
            raise fail(self.cfg, f"{self.where}: [upsample] above the input resolution is not supported")
        return nn.Upsample(scale_factor=s["stride"], mode="nearest"), -1, self.c, self.stride // s["stride"]

    def yolo(self, s):
        """A placeholder keeps the index; DarknetHead decodes the map feeding it."""
        pairs = [tuple(s["anchors"][2 * k:2 * k + 2]) for k in range(s["num"])]
        if s["type"] == "yolo":
            level = HeadLevel("yolo", [pairs[k] for k in s["mask"]], self.stride, s["scale_x_y"])
        else:
            level = HeadLevel("region", pairs, self.stride)
        expected = len(level.anchors) * (5 + s["classes"])
        if self.i == 0 or self.c != expected:
            raise fail(self.cfg, f"{self.where}: [{s['type']}] needs a layer before it with {expected} channels "
                                 f"({len(level.anchors)} anchors x (5 + {s['classes']} classes)), got {self.c}")
        self.levels.append(level)
        self.feeders.append(self.i - 1)
        return nn.Identity(), -1, self.c, self.stride

    region = yolo

    def _joined(self, references, kind: str, strides: set):
        """Absolute indices of the layers a [route] / [shortcut] reads (negative references are relative), and
        the same as routing sources (-1 for the previous output, which is not saved)."""
        sources = []
        for j in references:
            k = self.i + j if j < 0 else j
            if not 0 <= k < self.i:
                raise fail(self.cfg, f"{self.where}: layer {j} is not an earlier layer")
            if self.sections[k]["type"] in ("yolo", "region"):
                raise fail(self.cfg, f"{self.where}: reading a [{self.sections[k]['type']}] layer's output "
                                     "is unsupported")
            sources.append(k)
        if len({self.strides[j] for j in sources} | strides) > 1:
            raise fail(self.cfg, f"{self.where}: [{kind}] joins layers of different resolutions")
        return sources, [-1 if j == self.i - 1 else j for j in sources]


class DarknetModel(nn.Module):
    """A darknet network built from its .cfg, routed like an ultralytics model (see the module docstring)."""

    def __init__(self, cfg: Union[str, Path], names: Optional[Sequence[str]] = None, cfg_text: str = None):
        """cfg: the .cfg path; cfg_text: its content when already read (a saved network: cfg then names it)."""
        super().__init__()
        self.cfg = Path(cfg)
        self.cfg_text = read_cfg_text(self.cfg) if cfg_text is None else cfg_text
        net, *sections = parse_cfg(self.cfg, self.cfg_text)
        if not sections:
            raise fail(self.cfg, "no layers after [net]")
        builder = _Builder(self.cfg, net, sections)
        layers = builder.build()
        if not builder.levels:
            raise fail(self.cfg, "no [yolo] or [region] section: not a detection network")
        classes = {s["classes"] for s in sections if s["type"] in ("yolo", "region")}
        if len(classes) > 1:
            raise fail(self.cfg, "the [yolo] / [region] sections disagree on classes")
        self.nc = classes.pop()
        head = DarknetHead(builder.levels, self.nc)
        head.i, head.f = len(layers), builder.feeders
        self.model = nn.ModuleList(layers + [head])
        sources = [j for m in self.model for j in ([m.f] if isinstance(m.f, int) else m.f)]
        self.save = sorted({j for j in sources if j != -1})
        self.stride = head.stride
        self.multiple = math.lcm(*builder.strides)  # every input side must divide by it (see _maxpool)
        if names is not None and len(names) != self.nc:
            raise fail(self.cfg, f"{len(names)} class names for a network with {self.nc} classes")
        self.names = {k: str(n) for k, n in enumerate(names or [f"class{k}" for k in range(self.nc)])}
        self.yaml = {"channels": net["channels"], "darknet_cfg": str(self.cfg), "width": net["width"],
                     "height": net["height"]}

    def forward(self, x: torch.Tensor):
        """The routed layers, then the head; returns the head's (decoded, raw maps)."""
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise fail(self.cfg, f"input {h}x{w} is not a multiple of {self.multiple}, "
                                 "which this network's pools and routes need")
        return run_routed(x, self.model, [m.f for m in self.model], self.save)[0]
