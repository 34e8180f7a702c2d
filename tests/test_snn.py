"""Conversion and the spiking engine: the SNN reproduces its ANN."""
import pytest
import torch
from torch import nn

from spikedet import SpikedetError
from spikedet.model.activation import calibrate_thresholds
from spikedet.snn.convert import convert
from spikedet.snn.normalize import fold_batchnorm
from spikedet.snn.files import load_snn, save_snn
from spikedet.snn.statistics import SpikeMonitor
from spikedet.model import DualErrorYOLO
from spikedet.snn import BinaryNeuron, BurstNeuron, Neuron, SignedNeuron, SpikeMaxPool, Static, make_neuron

from conftest import tiny_darknet_model


def random_network(seed=0, **dual_error):
    """A small Tiny-YOLO with random batch-norm statistics (so activity is varied), calibrated lambdas."""
    torch.manual_seed(seed)
    model = DualErrorYOLO("yolov3-tiny", nc=3, scale="n", dual_error=dual_error)
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
    with torch.no_grad():
        ann = model(images)[0]
    return model, images, ann


def box_error(pred, ann):
    """Mean absolute error of decoded boxes (pixels) and class scores."""
    err = (pred - ann).abs()
    return err[:, :4].mean().item(), err[:, 4:].mean().item()


def test_if_neuron_rate_and_reset_modes():
    current = Static(torch.tensor([[0.3, 0.75, 1.5]]), 40)
    subtract = BinaryNeuron(v_init=0.0)(current).sum(0) / 40
    assert subtract.tolist()[0][:2] == pytest.approx([0.3, 0.75], abs=1 / 40)
    assert subtract.tolist()[0][2] == 1.0  # at most one spike per step: clipped
    zero = BinaryNeuron(v_init=0.0, reset="zero")(current).sum(0)
    assert zero.tolist()[0][0] == 10  # reset to zero throws the residue away: 0.3 -> every 4th step


def test_burst_neuron_count_is_the_quantized_total_whatever_the_timing():
    torch.manual_seed(0)
    steps = 12
    current = torch.randn(steps, 1, 500) * 0.8  # arbitrary order, negative parts, late bursts
    out = BurstNeuron(v_init=0.5)(current)
    expected = torch.clamp(torch.floor(current.sum(0) + 0.5), 0, steps)
    assert torch.equal(out.sum(0), expected)
    assert torch.all(out.cumsum(0) >= 0) and torch.all(out.cumsum(0) <= torch.arange(1, steps + 1).view(-1, 1, 1))


@pytest.mark.parametrize("spikes", ["binary", "signed", "burst"])
def test_constant_current_closed_form_equals_the_step_loop(spikes):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5) * 0.7
    static, looped = make_neuron(spikes), make_neuron(spikes)
    fast = torch.cat([static(Static(x, 5)), static(Static(x, 7))])  # two chunks, state carried
    slow = torch.cat([looped(x.expand(5, *x.shape)), looped(x.expand(7, *x.shape))])
    assert torch.equal(fast, slow)
    assert torch.allclose(static.v, looped.v, atol=1e-5) and torch.equal(static.net, looped.net)


def test_signed_neuron_takes_back_unsupported_spikes():
    current = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.0]).view(5, 1, 1)
    assert BinaryNeuron(v_init=0.0)(current).sum().item() == 2  # over-fired
    assert SignedNeuron(v_init=0.0)(current).sum().item() == 0


def test_signed_neuron_reproduces_leaky_slope():
    neuron = BinaryNeuron(v_init=0.0, negative_slope=0.1)  # Spiking-YOLO: fires -1 when v <= -10, then v += 10
    rate = neuron(Static(torch.tensor([[-0.5, 0.5]]), 400)).sum(0) / 400
    assert rate.tolist()[0] == pytest.approx([-0.05, 0.5], abs=0.01)
    assert neuron.v.tolist()[0] == pytest.approx([-200 + 20 * 10, 0.0])  # 20 negative spikes, each v += 10


def test_burst_leaky_neuron_count_is_the_quantized_leaky_total_whatever_the_timing():
    torch.manual_seed(0)
    steps = 16
    current = torch.randn(steps, 1, 500) * 2.0
    neuron = BurstNeuron(v_init=0.5, negative_slope=0.1)
    out = torch.cat([neuron(current[:5]), neuron(current[5:])])  # state carried between chunks
    total = current.sum(0)
    expected = torch.clamp(torch.floor(torch.where(total >= 0, total, 0.1 * total) + 0.5), -steps, steps)
    assert torch.equal(out.sum(0), expected)
    assert (expected < 0).any() and (expected == steps).any()  # both bounds of the range exercised
    counts = out.cumsum(0).abs()
    assert torch.all(counts <= torch.arange(1, steps + 1).view(-1, 1, 1))


@pytest.mark.parametrize("kind, kwargs", [("signed", dict(negative_slope=0.1)), ("binary", dict(negative_slope=1.5)),
                                          ("binary", dict(reset="zero", negative_slope=0.1)),
                                          ("burst", dict(reset="zero")), ("ternary", {})])
def test_a_neuron_rejects_what_it_cannot_be(kind, kwargs):
    with pytest.raises(ValueError):
        make_neuron(kind, **kwargs)


def test_fold_batchnorm_matches_conv_bn():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(fold_batchnorm(conv, bn)(x), bn(conv(x)), atol=1e-5)


def test_relu_network_converges_as_one_over_t():
    model, images, ann = random_network(clip=False, quantize=False)
    snn = convert(model, calibration_images=images, percentile=100)
    out = snn.simulate(images, [16, 64, 256, 1024])
    errors = [box_error(out[t], ann)[0] for t in (16, 64, 256, 1024)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < errors[0] / 6  # 64x more steps: close to 1/T, allowing for the unevenness error


@pytest.mark.parametrize("normalization", ["channel", "layer"])
def test_both_normalizations_preserve_the_function(normalization):
    model, images, ann = random_network(clip=False, quantize=False)
    snn = convert(model, calibration_images=images, normalization=normalization, percentile=100)
    box_err, cls_err = box_error(snn.simulate(images, [1024])[1024], ann)
    assert box_err < 0.05 and cls_err < 1e-3  # boxes within 0.05 px on a 64 px image


def test_clipping_network_converges_without_calibration_images():
    model, images, ann = random_network(levels=8, quantize=False)
    snn = convert(model)  # learned lambda is the scale: no activation statistics needed
    out = snn.simulate(images, [32, 1024])
    assert box_error(out[1024], ann)[0] < box_error(out[32], ann)[0]
    assert box_error(out[1024], ann)[0] < 0.05


def test_dual_error_network_matches_its_ann_at_t_equals_l():
    """At T = L: with burst spikes every layer's count is the dual-error activation itself, so the SNN
    equals its ANN up to float rounding; classic binary IF neurons come within a stated tolerance; and a
    plain-ReLU twin (same weights, percentile scales) converted the same way is further off."""
    levels = 8
    model, images, ann = random_network(levels=levels)
    burst = box_error(convert(model, spikes="burst").simulate(images, [levels])[levels], ann)
    assert burst[0] < 1e-3 and burst[1] < 1e-5
    binary = box_error(convert(model, spikes="binary").simulate(images, [levels])[levels], ann)
    assert binary[0] < 0.15 and binary[1] < 1e-3  # stated tolerance: 0.15 px mean box error on 64 px

    relu_twin, _, relu_ann = random_network(clip=False, quantize=False)
    relu_snn = convert(relu_twin, calibration_images=images, percentile=100, spikes="binary")
    assert box_error(relu_snn.simulate(images, [levels])[levels], relu_ann)[0] > binary[0]


@pytest.mark.parametrize("method", ["steps", "closed-form"])
def test_any_time_readouts_equal_separate_runs(method):
    model, images, _ = random_network(levels=8)
    snn = convert(model)
    sweep = snn.simulate(images, [5, 8, 16, 37], chunk=6, method=method)
    for t in (5, 8, 16, 37):
        alone = snn.simulate(images, [t], chunk=16, method=method)[t]
        assert torch.allclose(sweep[t], alone, atol=1e-5)


def test_spike_max_pool_count_is_the_max_count_after_every_step():
    torch.manual_seed(0)
    rates = torch.rand(1, 2, 4, 4)
    steps = 200
    spikes = (torch.rand(steps, 1, 2, 4, 4) < rates).float()
    pool = SpikeMaxPool(nn.MaxPool2d(2, 2))
    pooled = torch.cat([pool(spikes[:70]), pool(spikes[70:])])  # state carries across chunks
    assert set(pooled.unique().tolist()) <= {0.0, 1.0}
    expected = nn.functional.max_pool2d(spikes.cumsum(0).reshape(-1, 2, 4, 4), 2, 2).reshape(steps, 1, 2, 2, 2)
    assert torch.equal(pooled.cumsum(0), expected)  # rates: the max-pool of the input rates
    naive = nn.functional.max_pool2d(spikes.reshape(-1, 2, 4, 4), 2, 2).reshape(steps, 1, 2, 2, 2).mean(0)
    assert (naive - expected[-1] / steps).mean() > 0.1  # a plain max of spikes per step overestimates


def test_step_sums_are_torchs_cumsum_and_its_gradient():
    """cumsum_steps (the count-gated pool's running counts) is x.cumsum(0) exactly for event counts, and its
    gradient is cumsum's (the reversed running sum of the upstream gradient), to float rounding."""
    from spikedet.snn.neurons import cumsum_steps

    g = torch.Generator().manual_seed(0)
    events = torch.randint(-1, 2, (33, 2, 3, 5, 5), generator=g).float()
    assert torch.equal(cumsum_steps(events), events.cumsum(0))
    x = torch.randn(17, 4, 6, generator=g)
    upstream = torch.randn(17, 4, 6, generator=g)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (cumsum_steps(a) * upstream).sum().backward()
    (b.cumsum(0) * upstream).sum().backward()
    assert torch.allclose(cumsum_steps(x), x.cumsum(0), atol=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-5) and not torch.equal(a.grad, upstream)


def _with_and_without_pool_first(snn, images, timesteps, chunk):
    first = next(iter(snn._pool_after))  # the first conv, read only by a max-pool
    fast = snn.simulate(images, timesteps, chunk=chunk, method="steps")
    pooled_shape = first.neuron.v.shape
    pairs, snn._pool_after = snn._pool_after, {}
    slow = snn.simulate(images, timesteps, chunk=chunk, method="steps")
    snn._pool_after = pairs
    assert pooled_shape[-1] * 2 == first.neuron.v.shape[-1]  # the fast run fired only the pooled neurons
    return fast, slow


@pytest.mark.parametrize("spikes", ["binary", "signed", "burst"])
def test_pooling_the_constant_current_before_firing_changes_no_output(spikes, tmp_path):
    """SpikingConv.fire_pooled: for the image's constant current, conv -> neurons -> count-gated pool equals
    conv -> max-pool of the current -> neurons, bit for bit (ties between equal currents made common)."""
    model, images, _ = random_network(levels=8)
    images = (images * 4).round() / 4
    fast, slow = _with_and_without_pool_first(convert(model, spikes=spikes), images, [3, 8, 13], chunk=5)
    assert all(torch.equal(fast[t], slow[t]) for t in (3, 8, 13))
    if spikes == "burst":  # leaky units: burst neurons only (binary leaky neurons take the step loop)
        leaky, leaky_images = tiny_darknet_model(tmp_path, route=False)
        snn = convert(leaky, calibration_images=leaky_images, percentile=100, spikes=spikes)
        fast, slow = _with_and_without_pool_first(snn, (leaky_images * 4).round() / 4, [5, 16], chunk=3)
        assert all(torch.equal(fast[t], slow[t]) for t in (5, 16))


def test_statistics_report_rates_sops_and_energy():
    model, images, _ = random_network(levels=8)
    snn = convert(model)
    with SpikeMonitor(snn) as monitor:
        snn.simulate(images, [16])
    stats = monitor.report(16, batch_size=len(images))
    assert stats["timesteps"] == 16 and stats["energy_constants_pj"] == {
        "E_MAC": 4.6, "E_AC": 0.9, "source": "Horowitz 2014, 45 nm, 32-bit float"}
    rates = [r["firing_rate"] for r in stats["layers"] if "firing_rate" in r]
    assert rates and all(0 <= r <= 1 for r in rates) and max(rates) > 0
    assert stats["ann_macs"] > 0 and stats["snn_sops"] > 0
    first = stats["layers"][0]
    assert first["sops"] == 0.0  # the analog input layer is computed once, as MACs
    expected = 4.6 * first["macs"] + 0.9 * stats["snn_sops"]
    assert stats["energy_pj"]["snn"] == pytest.approx(expected)


def test_saved_network_reloads_and_wrong_files_fail(tmp_path):
    model, images, _ = random_network(levels=8)
    snn = convert(model)
    path = save_snn(snn, model, tmp_path / "net.snn.pt")
    again, ann = load_snn(path)
    assert torch.equal(ann(images)[0], model(images)[0])
    assert torch.equal(again.simulate(images, [8])[8], snn.simulate(images, [8])[8])
    assert again.meta["timesteps"] == 8
    torch.save({"model": 1}, tmp_path / "other.pt")
    with pytest.raises(SpikedetError, match="other.pt: not a spikedet SNN file"):
        load_snn(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(SpikedetError, match="junk.pt: not a readable"):
        load_snn(tmp_path / "junk.pt")


def test_relu_network_without_calibration_images_fails_clearly():
    model, _, _ = random_network(clip=False, quantize=False)
    with pytest.raises(SpikedetError, match="calibration images"):
        convert(model)


def test_darknet_leaky_network_converges_with_signed_neurons(tmp_path):
    """A darknet model (leaky ReLU, darknet's stride-1 pool, [yolo] head) goes through the same converter:
    with binary events, leaky units become Spiking-YOLO's signed neurons with the imbalanced threshold."""
    model, images = tiny_darknet_model(tmp_path, route=False)
    with torch.no_grad():
        ann = model(images)[0]
    snn = convert(model, calibration_images=images, percentile=100, spikes="binary")
    neurons = [m for m in snn.modules() if isinstance(m, Neuron)]
    assert neurons and all(n.negative_slope == pytest.approx(0.1) and type(n) is BinaryNeuron for n in neurons)
    out = snn.simulate(images, [32, 512])
    assert box_error(out[512], ann)[0] < box_error(out[32], ann)[0]
    assert box_error(out[512], ann)[0] < 0.1 and box_error(out[512], ann)[1] < 0.01


def test_burst_leaky_neurons_converge_faster_than_spiking_yolos(tmp_path):
    """Burst events for leaky units: any-time counts are the quantized leaky activation, no unevenness."""
    model, images = tiny_darknet_model(tmp_path, route=False)
    with torch.no_grad():
        ann = model(images)[0]
    binary = convert(model, calibration_images=images, percentile=100, spikes="binary").simulate(images, [8, 32])
    burst = convert(model, calibration_images=images, percentile=100, spikes="burst").simulate(images, [8, 32, 256])
    assert all(box_error(burst[t], ann)[0] < 0.9 * box_error(binary[t], ann)[0] for t in (8, 32))
    assert box_error(burst[256], ann)[0] < box_error(burst[32], ann)[0]


@pytest.mark.parametrize("T", [2, 4])
def test_mse_scales_fit_a_few_steps_better_than_a_high_percentile(T, tmp_path):
    model, images = tiny_darknet_model(tmp_path, route=False)
    with torch.no_grad():
        ann = model(images)[0]
    errors = {}
    for scales in ("percentile", "mse"):
        snn = convert(model, calibration_images=images, scales=scales, timesteps=T, spikes="burst")
        errors[scales] = box_error(snn.simulate(images, [T])[T], ann)[0]
        assert snn.meta["options"]["scales"] == scales
    assert "least count error at T = " + str(T) in snn.meta["scales"][0]["source"]
    assert errors["mse"] < 0.8 * errors["percentile"], errors
    with pytest.raises(SpikedetError, match="give timesteps"):
        convert(model, calibration_images=images, scales="mse")


def test_leaky_replaced_by_relu_copies_the_relu_network(tmp_path):
    from spikedet.snn.convert import leaky_to_relu

    model, images = tiny_darknet_model(tmp_path, route=False)
    relu_model = leaky_to_relu(model)
    assert any(isinstance(m, nn.LeakyReLU) for m in model.modules())  # the original is left as it was
    assert not any(isinstance(m, nn.LeakyReLU) for m in relu_model.modules())
    with torch.no_grad():
        leaky_out, relu_out = model(images)[0], relu_model(images)[0]
    snn = convert(model, calibration_images=images, percentile=100, leaky="relu")
    assert all(n.negative_slope is None for n in snn.modules() if isinstance(n, Neuron))
    out = snn.simulate(images, [512])[512]
    assert box_error(out, relu_out)[0] < box_error(out, leaky_out)[0]


@pytest.mark.parametrize("kind, kwargs", [("binary", {}), ("binary", dict(negative_slope=0.1)), ("signed", {}),
                                          ("binary", dict(reset="zero"))])
def test_fused_neuron_step_equals_the_eager_step(monkeypatch, kind, kwargs):
    """Large layers take a torch.compile'd step: it must give the eager loop's spikes and state, bit for bit."""
    import os

    from spikedet.snn import fused as neurons

    if os.environ.get("SPIKEDET_FUSED") == "0":
        pytest.skip("fusion turned off")
    torch.manual_seed(0)
    current = (torch.randn(7, 2, 3, 16, 16) * 4).round(decimals=1)  # lands on thresholds often
    monkeypatch.setitem(neurons._fused, "disabled", False)
    monkeypatch.setattr(neurons, "FUSED_MIN_NUMEL", 0)
    fused = make_neuron(kind, **kwargs)
    if neurons.fused_step(type(fused), fused.step_params(), current[0]) is None:
        pytest.skip("torch.compile unavailable here")
    a = torch.cat([fused(current[:4]), fused(current[4:])])
    monkeypatch.setattr(neurons, "FUSED_MIN_NUMEL", 1 << 62)
    eager = make_neuron(kind, **kwargs)
    b = torch.cat([eager(current[:4]), eager(current[4:])])
    assert torch.equal(a, b) and torch.equal(fused.v, eager.v) and torch.equal(fused.net, eager.net)
