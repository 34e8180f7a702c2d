"""The first layer as a population (first_copies=k, spikedet.snn.population): k neurons per channel with staggered
initial potentials count k * T levels in T steps, so the converted SNN is exactly the dual-error network whose
first unit quantizes to k * L levels; a distilled run records k and conversion follows it; what cannot hold one
is refused in one line."""
import pytest
import torch

from spikedet.api import SpikingYOLO
from spikedet.darknet import DarknetModel, load_darknet
from spikedet.distill import (channel_scales, distill, load_batch, make_student, mse_scales,
                              training_images)
from spikedet.errors import SpikedetError
from spikedet.model.activation import DualErrorSettings, mark_first_copies
from spikedet.model.checkpoint import save_ann
from spikedet.snn import convert
from spikedet.snn.finetune import UnrolledSNN
from spikedet.snn.layers import ConcatChannels, SpikeMaxPool, SpikingConv
from spikedet.snn.neurons import BinaryNeuron, BurstNeuron, Static
from spikedet.snn.population import make_population, staggered_v_init
from spikedet.snn.statistics import SpikeMonitor

from conftest import assert_snn_is_its_network, randomize
from test_distill import make_files, tiny_cfg


@pytest.mark.parametrize("kind, slope", [(BurstNeuron, None), (BurstNeuron, 0.1), (BinaryNeuron, None)])
@pytest.mark.parametrize("copies, v_init", [(2, 0.5), (3, 0.5), (4, 0.0)])
def test_staggered_neurons_count_what_one_neuron_counts_in_k_times_the_steps(kind, slope, copies, v_init):
    """Fed a constant current u, k staggered neurons' counts after T steps sum to clip(floor(k T leaky(u) + v_init),
    -k T, k T) (0 for ReLU neurons): the levels of k T steps."""
    steps, channels = 6, 5
    u = torch.linspace(-1.3, 1.4, 301).view(1, 1, 1, -1).expand(1, channels, 1, 301).contiguous()
    neuron = kind(v_init, "subtract", slope)
    neuron.staggered = staggered_v_init(channels, copies, v_init)
    counts = neuron(Static(u.repeat_interleave(copies, 1), steps)).sum(0)
    total = counts.view(1, channels, copies, 1, 301).sum(2)
    leaky = u if slope is None else torch.where(u >= 0, u, slope * u)
    low = 0 if slope is None else -copies * steps
    expected = torch.floor(copies * steps * leaky + v_init).clamp(low, copies * steps)
    assert torch.equal(total, expected)
    assert len(set(total.flatten().tolist())) > steps + 1  # more levels than one neuron has in T steps


def tiny_student(tmp_path, **settings):
    """A dual-error student (make_student's settings) of a randomized tiny darknet (leaky units, a max-pool after
    the first layer), and two images."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(tiny_cfg())
    teacher = randomize(DarknetModel(cfg), seed=3).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return make_student(teacher, 8, channel_scales(teacher, x), **settings).eval(), x


@pytest.fixture
def student(tmp_path):
    return tiny_student(tmp_path)


@pytest.mark.parametrize("copies", [1, 3])
def test_the_population_snn_is_the_network_with_its_first_unit_at_k_levels(student, copies):
    """Burst SNN with first_copies=k, closed form and steps, against the dual-error network at L = T with its first
    unit at k T levels (mark_first_copies); and k changes the outputs (the test can fail)."""
    model, x = student
    snn = convert(model, first_copies=copies)
    channels = model.model[0].conv.out_channels
    assert snn.meta["options"]["first_copies"] == copies and snn.layers[0].conv.out_channels == channels * copies
    ann = assert_snn_is_its_network(snn, model, x, copies)
    if copies > 1:
        mark_first_copies(model, 1)
        with torch.no_grad():
            assert (model(x)[0] - ann).abs().max() > 1e-2


def test_the_first_layer_of_a_binary_population_fires_its_staggered_counts(student):
    """Binary neurons: the first layer's copies, summed per channel, count what the burst population counts there
    on the positive side (the image is a constant current)."""
    model, x = student
    counts = {}
    for spikes in ("burst", "binary"):
        snn = convert(model, first_copies=4, spikes=spikes)
        layer = snn.layers[0]
        with torch.no_grad():
            events = layer(Static(x, 8)).sum(0)
        counts[spikes] = events.view(2, -1, 4, 32, 32).sum(2)
    positive = counts["burst"] > 0
    assert positive.any() and torch.equal(counts["binary"][positive], counts["burst"][positive])


def test_a_saved_population_snn_loads_as_it_ran(student, tmp_path):
    model, x = student
    path = tmp_path / "pop.snn.pt"
    ann = SpikingYOLO(save_ann(model, tmp_path / "student.pt"))
    in_memory = ann.convert(output=path, first_copies=2).network
    loaded = SpikingYOLO(path)
    assert loaded.network.meta["options"]["first_copies"] == 2
    with torch.no_grad():
        a = in_memory.simulate(x, [8], method="steps")[8]
        b = loaded.network.simulate(x, [8], method="steps")[8]
    assert torch.equal(a, b)
    content = torch.load(path, weights_only=True)
    content["meta"]["options"]["first_copies"] = 2.5
    torch.save(content, tmp_path / "bad.snn.pt")
    with pytest.raises(SpikedetError, match="bad.snn.pt.*first_copies"):
        SpikingYOLO(tmp_path / "bad.snn.pt")
    with pytest.raises(SpikedetError, match="first_copies"):
        SpikingYOLO(tmp_path / "student.pt").convert(first_copies=0)


def test_a_distilled_run_records_its_copies_and_conversion_follows_them(tmp_path):
    cfg, weights, names, folder = make_files(tmp_path)
    recipe = dict(levels=[4], steps=2, imgsz=32, batch=2, progress=False, names=names, feature_weight=0)
    out = distill(weights, cfg, folder, tmp_path / "p.pt", first_copies=3, **recipe)
    network = SpikingYOLO(out)
    assert network.network.dual_error["first_copies"] == 3
    assert torch.load(out, weights_only=True)["distill"]["first_copies"] == 3
    snn = network.convert()
    assert snn.network.meta["options"]["first_copies"] == 3
    assert network.convert(first_copies=1).network.meta["options"]["first_copies"] == 1
    for bad, message in (({"first_copies": 0}, "first_copies=0"), ({"first_copies": 65}, "first_copies=65"),
                         ({"first_copies": 2, "binary_steps": 4}, "first_copies=1")):
        with pytest.raises(SpikedetError, match=message):
            distill(weights, cfg, folder, tmp_path / "x.pt", **{**recipe, **bad})
    with pytest.raises(ValueError, match="first_copies"):
        DualErrorSettings(first_copies=True)


def test_a_first_layer_read_by_anything_but_a_chain_to_a_convolution_is_refused():
    conv = SpikingConv(torch.nn.Conv2d(3, 4, 3, padding=1), BurstNeuron())
    pool = SpikeMaxPool(torch.nn.MaxPool2d(2, 2))
    with pytest.raises(SpikedetError, match="layer 2 .ConcatChannels"):
        make_population([conv, pool, ConcatChannels()], [-1, -1, -1], [], 2)
    with pytest.raises(SpikedetError, match="routed layer"):
        make_population([conv, pool, conv], [-1, -1, -1], [0], 2)


def test_the_energy_report_counts_the_population_against_the_ann_it_converts(student):
    """A population's ANN reference is the ANN (its MACs as with one neuron per channel), while its SNN pays k
    times the first layer's MACs and the events of k neurons per channel."""
    model, x = student
    stats = {}
    for copies in (1, 3):
        snn = convert(model, first_copies=copies)
        with SpikeMonitor(snn) as monitor:
            snn.simulate(x, [8], method="steps")
        stats[copies] = monitor.report(8, batch_size=len(x))
    one, three = stats[1], stats[3]
    assert three["ann_macs"] == one["ann_macs"]
    assert three["layers"][0]["macs"] == 3 * one["layers"][0]["macs"]
    assert three["layers"][0]["spikes"] > 2 * one["layers"][0]["spikes"]
    assert three["energy_pj"]["snn"] > one["energy_pj"]["snn"]


def test_the_unrolled_binary_snn_refuses_a_population(student):
    """snn.finetune unrolls one neuron per channel: a network with first_copies would train another SNN than the
    one it converts to."""
    model, _ = student
    with pytest.raises(SpikedetError, match="2 neurons per channel"):
        UnrolledSNN(mark_first_copies(model, 2), 8, 0, 0.5, "subtract")
    UnrolledSNN(mark_first_copies(model, 1), 8, 0, 0.5, "subtract")


def test_the_first_layer_of_a_population_starts_at_the_threshold_of_its_levels(tmp_path):
    """init="mse" fits the first layer's lam to k * L levels (what it will quantize to) and every other to L."""
    cfg, weights, names, folder = make_files(tmp_path)
    teacher = load_darknet(cfg, weights, names).eval()
    x = load_batch(training_images(folder), 32)
    plain, population, fine = (mse_scales(teacher, x, levels, first_copies=k)
                               for levels, k in (([4], 1), ([4], 3), ([12], 1)))
    assert torch.equal(population[0], fine[0]) and not torch.equal(population[0], plain[0])
    assert all(torch.equal(a, b) for a, b in zip(population[1:], plain[1:]))
