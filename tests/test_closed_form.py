"""The closed form of burst networks: the step simulation's counts and detections from one dense pass per T.

The bound (spikedet/snn/closed_form.py): fed the same input counts, a burst layer's closed-form count equals
the step simulation's except where its activated total lands within 2 n u S of an integer (u = 2^-24,
n = fan_in + 2 T + 8, S = |W| a + T |b| + 1 with a the input's absolute event counts), and then they differ
by one. End to end, such a neuron moves its downstream totals by a weight, and on a deep network those moves
spread: there the closed form, those counts set to the step simulation's, gives its outputs (issue 21).
"""
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikedet.errors import SpikedetError
from spikedet.inference import postprocess
from spikedet.model import DualErrorYOLO, calibrate_thresholds
from spikedet.snn import BinaryNeuron, BurstNeuron, Integrator, Neuron, SpikeMonitor, SpikingConv, Static, convert
from spikedet.snn.closed_form import Counts, summed_current

from conftest import YOLOV3_TINY_CFG, tiny_darknet_model

U = 2.0 ** -24
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "shapes-yolov3-tiny-n-de-v2.pt"
DARKNET = ROOT.parent / "shared" / "data" / "weights"
TIMESTEPS = (1, 5, 8, 13)  # 5 and 13: not multiples of the chunk (2 or 3)


def random_yolo(seed=0, config="yolov3-tiny"):
    """A small dual-error network (ReLU units) with random batch-norm statistics, converted to burst neurons."""
    torch.manual_seed(seed)
    model = DualErrorYOLO(config, nc=3, scale="n", dual_error={"levels": 8})
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.3)
    images = torch.rand(2, 3, 64, 64)
    model.eval()
    with torch.no_grad(), calibrate_thresholds(model):
        model(images)
    return convert(model, spikes="burst"), images


def tiny_darknet(tmp_path, seed=0):
    """A darknet network with leaky units, a padded stride-1 pool and a route (concat), burst neurons."""
    model, images = tiny_darknet_model(tmp_path, seed)
    return convert(model, calibration_images=images, percentile=100, spikes="burst"), images


def shipped():
    from spikedet.networks import load_network

    network, _ = load_network(SHIPPED)
    if not any(isinstance(m, Neuron) for m in network.modules()):  # an ANN checkpoint: convert it
        network = convert(network, spikes="burst")
    torch.manual_seed(0)
    return network, torch.rand(1, 3, 64, 64)


def networks(tmp_path):
    yield "random", random_yolo()
    yield "yolov8-relu", random_yolo(config="yolov8-relu")  # C2f, residual adds, SPPF
    yield "darknet-leaky", tiny_darknet(tmp_path)
    if SHIPPED.is_file():
        yield "shipped", shipped()


def record_layers(snn, images, steps, chunk):
    """Step simulation to `steps`, recording what each spiking layer and integrator was fed (a constant
    current, or its events' net and absolute counts) and its output counts (running sums)."""
    records, handles = defaultdict(dict), []

    def hook(module, inputs, output):
        r, x = records[module], inputs[0]
        if isinstance(x, Static):
            r["constant"] = x.x
        else:
            r["net"] = r.get("net", 0) + x.sum(0)
            r["abs"] = r.get("abs", 0) + x.abs().sum(0)
        r["out"] = output[-1] if isinstance(module, Integrator) else r.get("out", 0) + output.sum(0)

    for m in snn.modules():
        if isinstance(m, (SpikingConv, Integrator)):
            handles.append(m.register_forward_hook(hook))
    try:
        snn.simulate(images, [steps], chunk=chunk, method="steps")
    finally:
        for h in handles:
            h.remove()
    return records


def closed_form_of_layer(module, r, steps):
    """(closed-form output from the recorded input, S: the magnitude of the summed terms, n: their count)."""
    conv = module.conv
    if "constant" in r:
        x = Counts(r["constant"], steps, constant=True)
        magnitude = steps * (F.conv2d(r["constant"].abs(), conv.weight.abs(), None, conv.stride, conv.padding)
                             + (0 if conv.bias is None else conv.bias.abs().view(-1, 1, 1)))
    else:
        x = Counts(r["net"], steps)
        magnitude = F.conv2d(r["abs"], conv.weight.abs(), None, conv.stride, conv.padding)
        if conv.bias is not None:
            magnitude = magnitude + steps * conv.bias.abs().view(-1, 1, 1)
    total = summed_current(conv, x)
    fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    return total, magnitude + 1, fan_in + 2 * steps + 8


def boundary_flips(neuron, total, counts, out, window):
    """How many of `counts` (from the summed input `total`) differ from the step simulation's `out`: each by
    one, and only where the activated total lies within `window` of an integer."""
    diff = counts - out
    assert diff.abs().max() <= 1
    activated = total if neuron.negative_slope is None else F.leaky_relu(total, neuron.negative_slope)
    activated = activated + neuron.v_init
    to_boundary = (activated - activated.round()).abs()
    assert torch.all(to_boundary[diff != 0] <= window[diff != 0]), "a count differs away from a boundary"
    return int((diff != 0).sum())


def check_layer_bound(snn, images, steps, chunk):
    """Every layer, fed the step simulation's input counts, gives its counts except within the bound.
    Returns (neurons whose counts differ, neurons)."""
    differing, neurons = 0, 0
    for module, r in record_layers(snn, images, steps, chunk).items():
        total, magnitude, n = closed_form_of_layer(module, r, steps)
        window = 2 * n * U * magnitude
        if isinstance(module, Integrator):
            assert torch.all((total - r["out"]).abs() <= window)
            continue
        counts = module.neuron.counts(total.clone(), steps)
        differing += boundary_flips(module.neuron, total, counts, r["out"], window)
        neurons += counts.numel()
    return differing, neurons


def test_counts_equal_the_step_simulation_except_on_rounding_boundaries(tmp_path):
    for name, (snn, images) in networks(tmp_path):
        for steps in (5, 13):  # not multiples of the chunk
            differing, neurons = check_layer_bound(snn, images, steps, chunk=2)
            assert differing <= max(2, neurons // 10000), (name, steps, differing)


def same_detections(a, b, size):
    """Detections after NMS (every candidate above conf 0.01) are the same: labels, boxes, scores."""
    da = postprocess(a, size, [(size, size)] * len(a), resize="stretch", conf=0.01)
    db = postprocess(b, size, [(size, size)] * len(b), resize="stretch", conf=0.01)
    for x, y in zip(da, db):  # the same set (near-equal scores may come in either order)
        assert len(x) == len(y)
        for p in x:
            assert any(p.label == q.label and abs(p.score - q.score) < 1e-4 and abs(p.box - q.box).max() < 1e-2
                       for q in y)


def test_closed_form_gives_the_step_simulations_detections(tmp_path):
    for name, (snn, images) in networks(tmp_path):
        if name == "yolov8-relu":
            continue  # its boundary counts spread: tested below with them set
        steps = snn.simulate(images, TIMESTEPS, chunk=3, method="steps")
        closed = snn.simulate(images, TIMESTEPS, method="closed-form")
        for t in TIMESTEPS:
            assert torch.allclose(closed[t], steps[t], rtol=1e-4, atol=1e-3), (name, t)
            same_detections(closed[t], steps[t], images.shape[-1])


def closed_form_given_flips(snn, images, steps, chunk):
    """The closed form at `steps` with each spiking layer's counts replaced by the step simulation's, after
    checking they differ only on rounding boundaries (boundary_flips): what is left between the two is the
    rest of the network (residual adds, pools, concat, split, upsample, the head).
    Returns (outputs, neurons whose counts differ, neurons)."""
    records, tally = record_layers(snn, images, steps, chunk), [0, 0]

    def hook(module, inputs, output):
        r = records[module]
        _, magnitude, n = closed_form_of_layer(module, r, steps)
        total = summed_current(module.conv, inputs[0])
        tally[0] += boundary_flips(module.neuron, total, output.x, r["out"], 2 * n * U * magnitude)
        tally[1] += output.x.numel()
        return Counts(r["out"], steps)

    handles = [m.register_forward_hook(hook) for m in snn.modules() if isinstance(m, SpikingConv)]
    try:
        return (snn.closed_form(images, steps), *tally)
    finally:
        for h in handles:
            h.remove()


def test_closed_form_gives_the_step_simulation_on_yolov8_relu():
    """Issue 21: on the random yolov8-relu (272k spiking neurons; 2 CPU threads) one count at T = 8 and two at
    T = 13 land on a rounding boundary (within 3e-6 of an integer in float64) and differ by one; the residual
    adds and the neck spread that to 5% / 23% of the head's outputs (closed_form.py). Those counts set, the two
    agree."""
    snn, images = random_yolo(config="yolov8-relu")
    steps = snn.simulate(images, TIMESTEPS, chunk=3, method="steps")
    for t in TIMESTEPS:
        closed, flips, neurons = closed_form_given_flips(snn, images, t, chunk=3)
        assert flips <= max(2, neurons // 10000), (t, flips)
        assert torch.allclose(closed, steps[t], rtol=1e-4, atol=1e-3), t
        same_detections(closed, steps[t], images.shape[-1])


@pytest.mark.skipif(not (DARKNET / "yolov3-tiny.weights").is_file(), reason="no darknet yolov3-tiny weights")
def test_real_yolov3_tiny_counts_within_the_bound():
    """The released darknet yolov3-tiny (leaky units, padded stride-1 pool): the bound holds layer by layer."""
    from spikedet.darknet import load_darknet

    model = load_darknet(YOLOV3_TINY_CFG, DARKNET / "yolov3-tiny.weights")
    torch.manual_seed(0)
    images = torch.rand(1, 3, 160, 160)
    snn = convert(model, calibration_images=images, spikes="burst")
    for steps in (5, 8):
        check_layer_bound(snn, images, steps, chunk=2)


def test_closed_form_is_for_burst_networks_only(tmp_path):
    snn, images = tiny_darknet(tmp_path)
    assert snn.default_method() == "closed-form" and snn.default_method("poisson") == "steps"
    with pytest.raises(SpikedetError, match="constant-current"):
        snn.simulate(images, [4], coding="poisson", method="closed-form")
    with SpikeMonitor(snn) as monitor:  # statistics need the steps: the default follows
        assert snn.default_method() == "steps"
        snn.simulate(images, [4])
        assert monitor.report(4, batch_size=2)["snn_sops"] > 0
        with pytest.raises(SpikedetError, match="method='steps'"):
            snn.simulate(images, [4], method="closed-form")
    assert snn.default_method() == "closed-form"
    with pytest.raises(ValueError, match="method"):
        snn.simulate(images, [4], method="fast")
    images = torch.rand(1, 3, 64, 64)
    for spikes in ("binary", "signed"):
        torch.manual_seed(0)
        yolo = DualErrorYOLO("yolov3-tiny", nc=3, scale="n", dual_error={"levels": 8}).eval()
        with torch.no_grad(), calibrate_thresholds(yolo):
            yolo(images)
        other = convert(yolo, spikes=spikes)
        assert other.default_method() == "steps"
        with pytest.raises(SpikedetError, match="burst"):
            other.simulate(images, [4], method="closed-form")


def test_burst_neuron_counts_equal_its_chunked_simulation():
    """The neuron alone: whatever the chunking, its count after T is counts(summed input, T), except within
    rounding of a boundary."""
    torch.manual_seed(0)
    current = torch.randn(13, 1, 4000) * 0.8
    for slope in (None, 0.1):
        neuron = BurstNeuron(v_init=0.5, negative_slope=slope)
        out = torch.cat([neuron(current[k:k + 3]) for k in range(0, 13, 3)])
        for t in (1, 5, 13):
            total = current[:t].sum(0)
            counts = BurstNeuron(v_init=0.5, negative_slope=slope).counts(total.clone(), t)
            diff = counts - out[:t].sum(0)
            window = 2 * (2 * t + 8) * U * (current[:t].abs().sum(0) + 1)
            activated = total if slope is None else F.leaky_relu(total, slope)
            near = ((activated + 0.5) - (activated + 0.5).round()).abs() <= window
            assert torch.all(diff.abs() <= 1) and torch.all(near[diff != 0])
    with pytest.raises(ValueError, match="burst"):
        BinaryNeuron().counts(total, 13)
