"""Starting training from darknet: darknet's backbone and neck fill the matching spikedet config."""
import pytest
import torch

from spikedet import SpikedetError
from spikedet.cli import main
from spikedet.darknet import ConvBlock, DarknetModel, transfer_weights
from spikedet.model import DualErrorYOLO
from spikedet.model.checkpoint import load_ann
from spikedet.train import train

from conftest import SHARED_DATA, YOLOV3_TINY_CFG, needs_real_data, randomize, write_weights  # noqa: E402

WEIGHTS = SHARED_DATA / "weights"


def conv_blocks(model):
    return [m for m in list(model.model)[:-1] if hasattr(m, "bn") and isinstance(m.bn, torch.nn.BatchNorm2d)]


def yolov3_tiny_cfg(widths, nc):
    """darknet's yolov3-tiny.cfg layout with the given 11 conv widths (cfg order) and nc classes."""
    def conv(filters, size=3, bn=1, activation="leaky"):
        return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride=1\npad=1\n"
                f"activation={activation}\n\n")

    def pool(stride=2):
        return f"[maxpool]\nsize=2\nstride={stride}\n\n"

    def yolo(mask):
        return (f"[yolo]\nmask={mask}\nanchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319\nclasses={nc}\n"
                f"num=6\n\n")

    out = 3 * (5 + nc)
    w = widths
    return ("[net]\nwidth=64\nheight=64\nchannels=3\n\n" + "".join(conv(c) + pool() for c in w[:5]) + conv(w[5])
            + pool(1) + conv(w[6]) + conv(w[7], 1) + conv(w[8]) + conv(out, 1, 0, "linear") + yolo("3,4,5")
            + "[route]\nlayers=-4\n\n" + conv(w[9], 1) + "[upsample]\nstride=2\n\n[route]\nlayers=-1, 8\n\n"
            + conv(w[10]) + conv(out, 1, 0, "linear") + yolo("0,1,2"))


@pytest.fixture
def darknet_files(tmp_path):
    """A darknet yolov3-tiny at the widths of spikedet's yolov3-tiny at scale n, with random weights."""
    widths = [m.conv.out_channels for m in conv_blocks(DualErrorYOLO("yolov3-tiny", nc=3, scale="n"))]
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(yolov3_tiny_cfg(widths, 3))
    darknet = randomize(DarknetModel(cfg))
    return cfg, write_weights(darknet, tmp_path / "tiny.weights"), darknet


def assert_filled_from(model, darknet, count):
    source = [m for m in darknet.model if isinstance(m, ConvBlock) and m.bn is not None]
    target = conv_blocks(model)
    assert len(target) == count
    for src, dst in zip(source, target):
        assert torch.equal(src.conv.weight, dst.conv.weight)
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(src.bn, name), getattr(dst.bn, name))
        assert dst.bn.eps == src.bn.eps


def test_backbone_and_neck_fill_in_order(darknet_files):
    cfg, weights, darknet = darknet_files
    model = DualErrorYOLO("yolov3-tiny", nc=3, scale="n")
    head_before = [p.clone() for p in model.model[-1].parameters()]
    assert transfer_weights(cfg, weights, model) == 11
    assert_filled_from(model, darknet, 11)
    assert all(torch.equal(a, b) for a, b in zip(head_before, model.model[-1].parameters()))  # head untouched


def test_filling_stops_at_the_first_layer_that_differs(darknet_files):
    cfg, weights, _ = darknet_files
    # width s: the first block (8 filters at both widths) fits, the second (16 vs 8) does not
    assert transfer_weights(cfg, weights, DualErrorYOLO("yolov3-tiny", nc=3, scale="s")) == 1
    with pytest.raises(SpikedetError, match=r"tiny.weights: no layer fits the model \(its first convolution is "
                                            r"\(8, 3, 3, 3\), the model's \(16, 3, 3, 3\)\)"):
        transfer_weights(cfg, weights, DualErrorYOLO("yolov3-tiny", nc=3, scale="m"))


def test_training_starts_from_the_darknet_weights(darknet_files, trained, tmp_path, no_network):
    """With a zero learning rate (SGD: "auto" would choose its own) the weights stay what they started from:
    darknet's (BN statistics move)."""
    cfg, weights, darknet = darknet_files
    assert main(["train", "--data", str(trained[0]["yolo"]), "--scale", "n", "--epochs", "1", "--imgsz", "64",
                 "--batch", "4", "--workers", "0", "--project", str(tmp_path), "--name", "dn", "--plots", "false",
                 "--pretrained-darknet", str(weights), "--darknet-cfg", str(cfg),
                 "optimizer=SGD", "lr0=0", "warmup_epochs=0"]) == 0  # ultralytics arguments as key=value
    best = tmp_path / "dn" / "weights" / "best.pt"
    model = load_ann(best)
    assert model.yaml["pretrained_darknet"] == {"weights": str(weights.resolve()), "cfg": str(cfg.resolve())}
    for src, dst in zip([m for m in darknet.model if isinstance(m, ConvBlock) and m.bn is not None],
                        conv_blocks(model)):
        assert torch.equal(src.conv.weight.half().float(), dst.conv.weight)  # checkpoints hold float16


def test_missing_darknet_files_fail_before_training(trained, tmp_path):
    with pytest.raises(SpikedetError, match=r"nothing.weights: darknet weights not found"):
        train(trained[0]["yolo"], project=tmp_path, pretrained_darknet=tmp_path / "nothing.weights")
    (tmp_path / "w.weights").write_bytes(b"")
    with pytest.raises(SpikedetError, match=r"w.cfg: darknet cfg not found \(give it with --darknet-cfg\)"):
        train(trained[0]["yolo"], project=tmp_path, pretrained_darknet=tmp_path / "w.weights")


@needs_real_data
def test_the_real_yolov3_tiny_fills_spikedets_yolov3_tiny():
    from spikedet.darknet import load_darknet

    model = DualErrorYOLO("yolov3-tiny", nc=80, scale="m")
    assert transfer_weights(YOLOV3_TINY_CFG, WEIGHTS / "yolov3-tiny.weights", model) == 11
    assert_filled_from(model, load_darknet(YOLOV3_TINY_CFG, WEIGHTS / "yolov3-tiny.weights"), 11)
