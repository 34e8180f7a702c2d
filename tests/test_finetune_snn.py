"""The fine-tune through the binary IF dynamics (spikedet.snn.finetune): its unrolled network is the SNN the
converter makes (binary, reset to zero, v_init 0), its gradient is that of its stated surrogate, and its result
is an ordinary checkpoint that tools/convert.py converts."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights
from ultralytics.nn.modules import Conv

from spikedet.cli import main
from spikedet.data.shapes import render_image
from spikedet.errors import SpikedetError
from spikedet.model.activation import DualErrorLeakyReLU, DualErrorReLU
from spikedet.model.checkpoint import load_ann
from spikedet.model.yolo import DualErrorYOLO
from spikedet.snn import convert
from spikedet.snn.files import load_snn
from spikedet.snn.finetune import (CONVERSION, UnrolledSNN, agreement_loss, binary_if, detection_loss, finetune,
                                   head_outputs, save_finetuned)
from spikedet.snn.neurons import BinaryNeuron
from test_registry import NETWORKS, made_of, randomize

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "shapes-yolov2-tiny-nir-rz-n.pt"
TOOL = ROOT / "tools" / "finetune_snn.py"


def shipped():
    return load_ann(SHIPPED)


def flat_maps(preds):
    """The unrolled read-out as the engine's list of head maps: box maps, then class maps (one level here)."""
    h = w = int(preds["boxes"].shape[-1] ** 0.5)
    return [preds["boxes"].unflatten(-1, (h, w)), preds["scores"].unflatten(-1, (h, w))]


def exact_network(model=None):
    """The shipped network (or `model`, darknet's too) with every value a dyadic rational of few bits: batch-norm
    folded into the weights and then the identity (mean 0, variance 1, eps 0), weights and biases rounded to
    multiples of 2^-8, every lambda to a power of two. Then every sum either model computes is exact in float32,
    whatever its order, so the unrolled network and the converted SNN must agree bit for bit (with float weights
    they differ by float rounding, 2e-6, until a potential lands within rounding of a threshold: one spike then
    flips, and a deep chain carries it to every output of that image)."""
    model = shipped() if model is None else model
    with torch.no_grad():
        for m in model.modules():
            bn = getattr(m, "bn", None)
            if isinstance(bn, torch.nn.BatchNorm2d):  # ultralytics' Conv, darknet's ConvBlock
                w, b = fuse_conv_bn_weights(m.conv.weight, None, bn.running_mean, bn.running_var, bn.eps, bn.weight,
                                            bn.bias)
                m.conv.weight.copy_(dyadic(w))
                bn.bias.copy_(dyadic(b))
                bn.weight.fill_(1)
                bn.running_mean.zero_()
                bn.running_var.fill_(1)
                bn.eps = 0.0
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:  # the head's linear outputs
                m.weight.copy_(dyadic(m.weight))
                m.bias.copy_(dyadic(m.bias))
            elif isinstance(m, DualErrorReLU):
                m.lam.copy_(2 ** torch.round(torch.log2(m.lam.abs().clamp(min=1e-3))))
    return model


def dyadic(t, bits=8):
    return torch.round(t * 2 ** bits) / 2 ** bits


@pytest.mark.parametrize("timesteps, burn_in", [(16, 0), (16, 5), (32, 16)])
def test_unrolled_network_reads_out_what_the_engine_simulates(timesteps, burn_in):
    """At 64 px, the unrolled model's averaged head maps and decoded outputs are, bit for bit, the engine's for
    the converted SNN (binary, reset zero, v_init 0), with and without burn-in (exact_network: no rounding); every
    layer fires, so a wrong step (reset, comparison, read-out window, a layer skipped) would move them."""
    model = exact_network()
    x = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(0)) / 256  # exact too
    snn = convert(model, **CONVERSION)
    engine = snn.simulate(x, [timesteps], burn_in=burn_in, decode=False)[timesteps]
    with torch.no_grad():
        unrolled = flat_maps(UnrolledSNN(model, timesteps, burn_in)(x))
    assert all(torch.equal(a, b) for a, b in zip(unrolled, engine))
    assert engine[1].std() > 0.1  # the head sees spikes, not only its bias
    assert torch.equal(snn.head.decode(unrolled), snn.head.decode(engine))
    assert all(type(m.act) is DualErrorReLU for m in model.modules() if isinstance(m, Conv)
               and not isinstance(m.act, torch.nn.Identity))  # the ANN's own units are back


@pytest.mark.parametrize("name", ["MaxPool2d", "SPPF", "C2f+Bottleneck"])
def test_max_pools_and_residual_adds_unroll_to_the_engines_snn(name):
    """Networks made of the modules a conv chain lacks (test_registry's): the count-gated max-pool (SPPF's three
    chained ones too) and C2f's residual adds read out, bit for bit, what the engine simulates (T = 16, K = 4);
    a max of each step's spikes instead of the count gate would pass extra spikes and move the head."""
    x = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(0)) / 256
    torch.manual_seed(0)
    model = exact_network(randomize(made_of(NETWORKS[name]), x))
    snn = convert(model, **CONVERSION)
    engine = snn.simulate(x, [16], burn_in=4, decode=False)[16]
    with torch.no_grad():
        unrolled = flat_maps(UnrolledSNN(model, 16, 4)(x))
    assert all(torch.equal(a, b) for a, b in zip(unrolled, engine))
    assert engine[1].std() > 0.01  # the head sees spikes, not only its bias


def test_spikes_are_the_binary_neurons_and_the_gradient_is_the_surrogates():
    """Forward: the spikes of spikedet's BinaryNeuron (reset zero, v_init 0) fed the same current, exactly.
    Backward: autograd through the same loop with the triangle surrogate d s / d v = max(0, 1 - |v - 1|) and the
    reset detached, written independently (s = step + F(v) - F(v).detach(), F' the triangle)."""
    current = torch.randn(12, 3, 5, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.3
    neuron = BinaryNeuron(v_init=0.0, reset="zero")
    assert torch.equal(binary_if(current), neuron(current))

    def ramp(v):  # the integral of the triangle
        v = v.clamp(0, 2)
        return torch.where(v < 1, v * v / 2, 1 - (2 - v) ** 2 / 2)

    a = current.clone().requires_grad_(True)
    b = current.clone().requires_grad_(True)
    weights = torch.randn(current.shape, generator=torch.Generator().manual_seed(2))
    (binary_if(a) * weights).sum().backward()
    v, spikes = torch.zeros_like(b[0]), []
    for t in range(len(b)):
        v = v + b[t]
        s = (v >= 1).float() + ramp(v) - ramp(v).detach()
        spikes.append(s)
        v = v * (1 - s.detach())
    (torch.stack(spikes) * weights).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert a.grad.abs().sum() > 0


def shapes_batch(n=2, size=128, seed=0):
    """n rendered shapes images and their boxes, as ultralytics' loader gives a batch (normalized xywh)."""
    rng = np.random.default_rng(seed)
    images, idx, cls, boxes = [], [], [], []
    for k in range(n):
        image, objects = render_image(rng, size)
        images.append(torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1))  # BGR -> RGB, CHW
        for o in objects:
            x0, y0, x1, y1 = o["box"]
            idx.append(float(k))
            cls.append([float(o["label"])])
            boxes.append([(x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size])
    return {"img": torch.stack(images), "batch_idx": torch.tensor(idx), "cls": torch.tensor(cls),
            "bboxes": torch.tensor(boxes)}


def test_gradients_reach_every_weight_and_lambda_and_steps_lower_the_loss():
    """Through the surrogate, every convolution's weights and every lambda get a finite, non-zero gradient of
    the detection loss; three Adam steps on a fixed batch of shapes images lower it (measured on the real
    training split at 192 px, T = 8: 27.7 -> 19.9 at lr 1e-4)."""
    model, batch = shipped(), shapes_batch()
    x = batch["img"].float() / 255
    loss = detection_loss(model, UnrolledSNN(model, 8, 2)(x), batch)
    loss.backward()
    lams = [m.lam for m in model.modules() if isinstance(m, DualErrorReLU)]
    convs = [m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and "dfl" not in name]
    assert len(lams) == 12 and all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in lams + convs)
    history = finetune(model, [batch] * 3, 8, 2, epochs=1, lr=1e-4, progress=False)
    with torch.no_grad():
        after = float(detection_loss(model, UnrolledSNN(model, 8, 2)(x), batch))
    assert len(history) == 1 and after < 0.9 * float(loss.detach())
    assert not model.training


def test_agreement_is_zero_only_where_the_snn_says_what_its_ann_says():
    """agreement_loss of the ANN's outputs against themselves is 0; against the unrolled SNN's read-out it is
    positive and its gradient reaches every lambda through the spikes; a box error where the ANN sees an object
    costs far more than the same error where it sees none."""
    model, batch = shipped(), shapes_batch()
    x = batch["img"].float() / 255
    reg_max = model.model[-1].reg_max
    with torch.no_grad():
        ann = head_outputs(model, x)
    assert float(agreement_loss(ann, ann, reg_max)) == pytest.approx(0.0, abs=1e-4)
    snn = UnrolledSNN(model, 8, 2)(x)
    gap = agreement_loss(snn, ann, reg_max)
    gap.backward()
    assert float(gap.detach()) > 0.1
    assert all(m.lam.grad is not None and torch.isfinite(m.lam.grad).all() for m in model.modules()
               if isinstance(m, DualErrorReLU))
    sure = {"scores": torch.full((1, 3, 2), -9.0), "boxes": torch.zeros(1, 4 * reg_max, 2)}
    sure["scores"][0, 0, 0] = 9.0  # the ANN sees an object at anchor 0 only
    shifted = {k: v.clone() for k, v in sure.items()}
    shifted["boxes"][0, 0, 0] = 3.0  # one bin of one side at anchor 0 ...
    elsewhere = {k: v.clone() for k, v in sure.items()}
    elsewhere["boxes"][0, 0, 1] = 3.0  # ... or at anchor 1, where the ANN sees nothing
    assert float(agreement_loss(shifted, sure, reg_max)) > 100 * float(agreement_loss(elsewhere, sure, reg_max))


def test_the_agreement_term_pulls_the_snn_towards_the_ann_it_started_from():
    """Three steps on a fixed batch with a large agreement weight end closer to the starting ANN's outputs than
    three without it (same start, same batch); the starting ANN is a frozen copy, the weights' own ANN is not the
    target; a weight outside [0, 1e6] is a one-line error, not a run."""
    batch = shapes_batch()
    x = batch["img"].float() / 255
    with torch.no_grad():
        start = head_outputs(shipped().eval(), x)
    gaps = []
    for weight in (0.0, 50.0):
        model = shipped()
        finetune(model, [batch] * 3, 8, 2, epochs=1, lr=1e-4, progress=False, agreement=weight)
        with torch.no_grad():
            gaps.append(float(agreement_loss(UnrolledSNN(model, 8, 2)(x), start, model.model[-1].reg_max)))
    assert gaps[1] < 0.9 * gaps[0]
    for bad in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(SpikedetError, match="agreement"):
            finetune(shipped(), [batch], 8, 2, epochs=1, lr=1e-4, progress=False, agreement=bad)


def test_the_result_is_a_checkpoint_that_tools_convert_converts_to_the_trained_snn(tmp_path):
    """Saved float32 (the weights the spikes were trained with) as an ordinary ANN file, refused over an existing
    one; the convert command makes of it the SNN the converter makes of the trained network in memory (the one
    the unrolled network equals, test above)."""
    model = shipped()
    finetune(model, [shapes_batch()], 8, 0, epochs=1, lr=1e-4, progress=False)
    path = save_finetuned(model, tmp_path / "ft.pt", {"epochs": 1})
    with pytest.raises(SpikedetError, match="already exists"):
        save_finetuned(model, path, {"epochs": 1})
    content = torch.load(path, weights_only=True)
    assert content["format"] == "spikedet-ann" and content["snn_finetune"] == {"epochs": 1}
    again = load_ann(path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    snn_path = tmp_path / "ft.snn.pt"
    assert main(["convert", "--weights", str(path), "--output", str(snn_path), "--imgsz", "64", "--spikes",
                 "binary", "--reset", "zero", "--v-init", "0", "--timesteps", "8"]) == 0
    snn, _ = load_snn(snn_path)
    expected = convert(model, **CONVERSION).state_dict()
    assert snn.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in snn.state_dict().items())


def test_networks_it_cannot_unroll_and_bad_options_are_one_line(tmp_path, capsys):
    leaky = DualErrorYOLO("yolov3-tiny", nc=3, scale="n")
    first = leaky.model[0]
    first.act = DualErrorLeakyReLU(first.conv.out_channels, first.act.settings, 0.1)
    with pytest.raises(SpikedetError, match="resets by subtraction, not reset .zero."):
        UnrolledSNN(leaky, 8)
    with pytest.raises(SpikedetError, match="burn-in"):
        UnrolledSNN(shipped(), 8, 8)
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_snn", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    data = ROOT / "data" / "shapes" / "yolo" / "shapes.yaml"
    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"")
    base = ["--weights", str(SHIPPED), "--data", str(data if data.exists() else SHIPPED)]
    for bad in (["--output", str(tmp_path / "a.pt"), "--timesteps", "8", "--burn-in", "8"],
                ["--output", str(taken)], ["--output", str(tmp_path / "a.pt"), "--lr", "0"],
                ["--output", str(tmp_path / "a.pt"), "--agreement", "-1"]):
        capsys.readouterr()
        assert tool.main(base + bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")
    assert not (tmp_path / "a.pt").exists()
