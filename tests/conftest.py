"""Shared test fixtures and helpers (test modules import the helpers from here: `from conftest import ...`)."""
import socket
import struct
from pathlib import Path

import pytest
import torch

from spikedet.cli import main
from spikedet.darknet import ConvBlock
from spikedet.data.shapes import make_shapes_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_real_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no staged real data in shared/data")
# darknet's yolov3-tiny.cfg as pjreddie's yolov3-tiny.weights was trained with it (spikedet/darknet/known.py); the
# staged shared/data copy has the second [yolo] mask "fixed" to 0,1,2, which those weights do not fit
YOLOV3_TINY_CFG = Path(__file__).resolve().parents[1] / "configs" / "darknet" / "yolov3-tiny.cfg"


def assert_snn_is_its_network(snn, model, x, copies=1, levels=(4, 8)):
    """The burst SNN, closed form and steps, equals the dual-error network at L = T for each T in `levels` (its
    first unit run by `copies` neurons per channel); returns the network's output at the last T."""
    from spikedet.distill import set_levels
    from spikedet.model.activation import mark_first_copies

    for steps in levels:
        set_levels(model, steps)
        mark_first_copies(model, copies)
        with torch.no_grad():
            ann = model(x)[0]
            closed = snn.simulate(x, [steps], method="closed-form")[steps]
            stepped = snn.simulate(x, [steps], method="steps", chunk=3)[steps]
        assert torch.allclose(closed, ann, atol=1e-4, rtol=1e-4)
        assert torch.allclose(stepped, ann, atol=1e-3, rtol=1e-3)
    return ann


def shown_lines(text: str):
    """The non-empty lines a terminal shows for this output: a carriage return goes back to the line's start and
    ESC[K clears it, so a progress bar that cleared itself shows nothing."""
    shown = (line.split("\r")[-1].replace("\x1b[K", "") for line in text.split("\n"))
    return [line for line in shown if line.strip()]


def write_weights(model, path, seen=0):
    """A darknet .weights file holding the model's parameters, in darknet's order."""
    values = []
    for b in model.model:
        if isinstance(b, ConvBlock):
            bn = b.bn
            first = [bn.bias, bn.weight, bn.running_mean, bn.running_var] if bn is not None else [b.conv.bias]
            values += [t.detach().flatten() for t in first + [b.conv.weight]]
    path.write_bytes(struct.pack("<3iq", 0, 2, 0, seen) + torch.cat(values).numpy().astype("<f4").tobytes())
    return path


def randomize(model, seed=0):
    """Random weights with batch-norm statistics a trained network could have, and output logits of +-3."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in model.model:
            if isinstance(b, ConvBlock):
                w = b.conv.weight
                w.copy_(torch.randn(w.shape, generator=g) * w[0].numel() ** -0.5)
                if b.bn is None:
                    b.conv.bias.copy_(torch.rand(b.conv.bias.shape, generator=g) * 6 - 3)
                else:
                    for t, (low, high) in zip((b.bn.bias, b.bn.weight, b.bn.running_mean, b.bn.running_var),
                                              ((-.1, .1), (.5, 1.5), (-.1, .1), (.5, 2))):
                        t.copy_(torch.rand(t.shape, generator=g) * (high - low) + low)
    return model


def darknet_cfg(body: str) -> str:
    """A darknet .cfg for 64 px inputs: `body`'s blocks, then a 1x1 convolution and a 3-class [yolo] head."""
    return ("[net]\nwidth=64\nheight=64\nchannels=3\n\n" + body
            + "[convolutional]\nsize=1\nstride=1\npad=1\nfilters=24\nactivation=linear\n\n"
            + "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=3\nnum=3\n")


TINY_DARKNET_BODY = """[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

"""
ROUTE_BRANCH = """[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-1,-3

"""


def tiny_darknet_model(tmp_path, seed=0, route=True):
    """A darknet network (leaky units, a padded stride-1 pool and, with `route`, a further convolution
    concatenated with its input) with batch-norm statistics a trained network could have, in eval mode, and two
    random 64 px images."""
    from spikedet.darknet import DarknetModel

    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(darknet_cfg(TINY_DARKNET_BODY + (ROUTE_BRANCH if route else "")))
    torch.manual_seed(seed)
    model = DarknetModel(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval(), torch.rand(2, 3, 64, 64)


@pytest.fixture
def no_network(monkeypatch):
    """Record, refuse and finally fail on any attempt to reach the network (DNS lookups included).

    Attempts are recorded as well as refused, because ultralytics swallows the errors of its own probes.
    """
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[0] if args else kwargs)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny shapes dataset and a one-epoch dual-error network (L = 4) trained on it through the CLI."""
    root = tmp_path_factory.mktemp("pipeline")
    data = make_shapes_dataset(root / "shapes", imgsz=64, counts={"train": 8, "val": 4, "test": 4}, seed=2,
                               progress=False)
    assert main(["train", "--data", str(data["yolo"]), "--scale", "n", "--epochs", "1", "--imgsz", "64",
                 "--batch", "4", "--workers", "0", "--project", str(root), "--name", "run", "--levels", "4",
                 "--plots", "false"]) == 0
    return data, root / "run" / "weights" / "best.pt", root
