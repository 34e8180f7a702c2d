"""Fine negative events (DualErrorSettings.fine_negative, convert negative_events="fine"): a leaky burst neuron
whose negative events are worth alpha of a positive one quantizes its negative side in steps of alpha * lambda /
L, to the floor -lambda; the converted SNN is exactly the dual-error network trained for it; a distilled run
records it and conversion follows; what cannot hold it is refused in one line. distill-loss scores a network as
converted with the neurons asked for (negative events, and a first-layer population's copies)."""
import json

import pytest
import torch

from spikedet.api import SpikingYOLO
from spikedet.cli import main
from spikedet.darknet import DarknetModel, load_darknet
from spikedet.distill import channel_scales, distill, load_batch, make_student, mse_scales, selection_loss
from spikedet.distill import training_images
from spikedet.errors import SpikedetError
from spikedet.model.activation import DualErrorSettings, dual_error, mark_fine_negative, mark_first_copies
from spikedet.model.checkpoint import load_ann, save_ann
from spikedet.snn import convert
from spikedet.snn.finetune import UnrolledSNN
from spikedet.snn.neurons import BurstNeuron, Static, negative_worth
from spikedet.snn.statistics import SpikeMonitor, events

from conftest import assert_snn_is_its_network, randomize
from test_distill import make_files, tiny_cfg
from test_population import tiny_student


def test_the_negative_side_quantizes_in_steps_of_alpha_to_the_floor_minus_lambda():
    x = torch.linspace(-2.0, 1.5, 3501)
    lam, levels, alpha = torch.tensor(1.0), 8, 0.1
    z = torch.nn.functional.leaky_relu(x, alpha)
    whole = dual_error(z, lam, levels, signed=True)
    fine = dual_error(z, lam, levels, signed=True, negative_step=alpha)
    assert torch.equal(fine[x >= 0], whole[x >= 0])
    negative = fine[x < 0]
    steps = negative / (alpha * lam / levels)
    assert torch.allclose(steps, steps.round(), atol=1e-4) and negative.min() >= -lam
    assert len(set(negative.tolist())) > 3 * len(set(whole[x < 0].tolist()))  # finer than whole events
    assert (fine - z)[x < 0].abs().max() <= alpha * lam / levels / 2 + 1e-6


@pytest.mark.parametrize("v_init", [0.5, 0.0])
def test_a_fine_burst_neuron_counts_its_input_itself_below_zero(v_init):
    """Fed a constant current u for T steps: c = floor(T u + v_init), min(c, T) above zero, max(alpha c, -T) below."""
    steps, alpha = 6, 0.1
    u = torch.linspace(-2.5, 1.4, 391).view(1, 1, 1, -1)
    neuron = BurstNeuron(v_init, "subtract", alpha, fine_negative=True)
    net = neuron(Static(u, steps)).sum(0)
    c = torch.floor(steps * u + v_init)
    t = torch.tensor(float(steps))
    expected = torch.where(c < 0, torch.maximum(alpha * c, -t), torch.minimum(c, t))
    assert torch.allclose(net, expected, atol=1e-5)
    assert torch.allclose(neuron.counts(steps * u, steps), expected, atol=1e-6)
    with pytest.raises(ValueError, match="fine negative events"):
        BurstNeuron(0.5, "subtract", None, fine_negative=True)


@pytest.fixture
def student(tmp_path):
    """A dual-error student with fine negative events of a randomized tiny darknet (leaky units)."""
    return tiny_student(tmp_path, fine_negative=True)


@pytest.mark.parametrize("copies", [1, 3])
def test_the_fine_snn_is_the_network_trained_for_it(student, copies):
    """Burst SNN converted from a fine network (its default), closed form and steps, with a first-layer population
    too, against the dual-error network at L = T; converted with whole events it is another network."""
    model, x = student
    snn = convert(model, first_copies=copies)
    assert snn.meta["options"]["negative_events"] == "fine"
    ann = assert_snn_is_its_network(snn, model, x, copies)
    whole = convert(model, first_copies=copies, negative_events="whole")
    assert whole.meta["options"]["negative_events"] == "whole"
    with torch.no_grad():
        assert (whole.simulate(x, [8], method="closed-form")[8] - ann).abs().max() > 1e-2
        mark_fine_negative(model, False)
        assert torch.allclose(whole.simulate(x, [8], method="closed-form")[8], model(x)[0], atol=1e-4, rtol=1e-4)


def test_binary_neurons_convert_with_whole_events_and_refuse_fine_ones(student):
    model, _ = student
    assert convert(model, spikes="binary").meta["options"]["negative_events"] == "whole"
    with pytest.raises(SpikedetError, match="fine negative events are graded events of burst neurons, not binary"):
        convert(model, spikes="binary", negative_events="fine")
    with pytest.raises(SpikedetError, match="negative_events must be one of"):
        convert(model, negative_events="half")
    with pytest.raises(SpikedetError, match="fine negative events"):
        UnrolledSNN(model, 8, 0, 0.5, "subtract")


def test_a_saved_fine_snn_loads_as_it_ran_and_a_bad_record_is_refused(student, tmp_path):
    model, x = student
    path = tmp_path / "fine.snn.pt"
    ann = SpikingYOLO(save_ann(model, tmp_path / "student.pt"))
    in_memory = ann.convert(output=path).network
    loaded = SpikingYOLO(path)
    assert loaded.network.meta["options"]["negative_events"] == "fine"
    with torch.no_grad():
        a = in_memory.simulate(x, [8], method="steps")[8]
        assert torch.equal(a, loaded.network.simulate(x, [8], method="steps")[8])
    content = torch.load(path, weights_only=True)
    content["meta"]["options"]["negative_events"] = "some"
    torch.save(content, tmp_path / "bad.snn.pt")
    with pytest.raises(SpikedetError, match="bad.snn.pt.*negative_events"):
        SpikingYOLO(tmp_path / "bad.snn.pt")
    assert main(["convert", "--weights", str(tmp_path / "student.pt"), "--negative-events", "whole", "--output",
                 str(tmp_path / "whole.snn.pt")]) == 0
    assert SpikingYOLO(tmp_path / "whole.snn.pt").network.meta["options"]["negative_events"] == "whole"


def test_events_count_a_fine_negative_event_as_one():
    s = torch.tensor([1.0, -0.1, -0.2, 2.0, 0.0])
    assert events(s) == pytest.approx(3.3) and events(s, 0.1) == pytest.approx(6.0)


def test_the_energy_report_counts_fine_events_one_by_one(student):
    """Fine events are more (a tenth of the step below zero) and each costs a synaptic operation."""
    model, x = student
    spikes = {}
    for negative in ("whole", "fine"):
        snn = convert(model, negative_events=negative)
        with SpikeMonitor(snn) as monitor:
            snn.simulate(x, [8], method="steps")
        spikes[negative] = monitor.report(8, batch_size=len(x))["layers"][1]["spikes"]
    assert spikes["fine"] > spikes["whole"]


def test_a_distilled_run_records_fine_events_and_conversion_follows(tmp_path):
    cfg, weights, names, folder = make_files(tmp_path)
    recipe = dict(levels=[4], steps=2, imgsz=32, batch=2, progress=False, names=names, feature_weight=0)
    out = distill(weights, cfg, folder, tmp_path / "p.pt", fine_negative="true", **recipe)
    network = SpikingYOLO(out)
    assert network.network.dual_error["fine_negative"] is True
    assert torch.load(out, weights_only=True)["distill"]["fine_negative"] is True
    assert network.convert().network.meta["options"]["negative_events"] == "fine"
    for bad, message in (({"fine_negative": "yes"}, "fine_negative='yes'"), ({"fine_negative": 1}, "fine_negative=1"),
                         ({"fine_negative": True, "binary_steps": 4}, "fine_negative=false")):
        with pytest.raises(SpikedetError, match=message):
            distill(weights, cfg, folder, tmp_path / "x.pt", **{**recipe, **bad})
    with pytest.raises(ValueError, match="fine_negative"):
        DualErrorSettings(fine_negative=1)


def test_the_thresholds_start_where_fine_events_quantize_least(tmp_path):
    """init="mse" with fine_negative fits lam to the unit with fine negative events: other thresholds."""
    cfg, weights, names, folder = make_files(tmp_path)
    teacher = load_darknet(cfg, weights, names).eval()
    x = load_batch(training_images(folder), 32)
    whole, fine = (mse_scales(teacher, x, [4], fine_negative=f) for f in (False, True))
    assert any(not torch.equal(a, b) for a, b in zip(whole, fine))


@pytest.mark.parametrize("flag, plain, asked, mark", [
    ("--negative-events", "whole", "fine", lambda m: mark_fine_negative(m, True)),
    ("--first-copies", "1", "3", lambda m: mark_first_copies(m, 3))])
def test_distill_loss_scores_the_network_as_converted_with_the_neurons_asked_for(tmp_path, flag, plain, asked, mark):
    cfg, weights, names, folder = make_files(tmp_path)
    teacher = load_darknet(cfg, weights, names).eval()
    paths = training_images(folder)
    out = save_ann(make_student(teacher, 4, channel_scales(teacher, load_batch(paths, 32))), tmp_path / "s.pt")
    common = ["distill-loss", "--weights", str(out), "--teacher", str(weights), "--cfg", str(cfg), "--names",
              str(names), "--images", str(folder), "--levels", "4", "--imgsz", "32"]
    losses = {}
    for value in (plain, asked):
        assert main(common + [flag, value, "--json", str(tmp_path / f"{value}.json")]) == 0
        losses[value] = json.loads((tmp_path / f"{value}.json").read_text())["loss"]["4"]
    student = mark(load_ann(out).float().eval())
    assert losses[asked] == pytest.approx(selection_loss(student, teacher, paths, 32, [4])["4"], abs=1e-6)
    assert losses[asked] != pytest.approx(losses[plain], abs=1e-4)


def test_thresholds_fitted_at_conversion_are_fitted_to_the_negative_events_asked_for(tmp_path):
    """convert(scales="mse") of a leaky network without learned thresholds fits each to the neuron it makes."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(tiny_cfg())
    teacher = randomize(DarknetModel(cfg), seed=3).eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    scales = {}
    for negative in ("whole", "fine"):
        snn = convert(teacher, x, scales="mse", timesteps=4, negative_events=negative)
        scales[negative] = [row["scale_max"] for row in snn.meta["scales"]]
    assert scales["whole"] != scales["fine"]


def test_a_network_has_one_negative_worth_or_is_refused():
    """The energy report counts events of one worth: the alpha the fine neurons share, 1 without them."""
    fine = [BurstNeuron(0.5, "subtract", a, fine_negative=True) for a in (0.1, 0.2)]
    assert negative_worth(torch.nn.Sequential(BurstNeuron(0.5, "subtract", 0.1))) == 1.0
    assert negative_worth(torch.nn.Sequential(fine[0], BurstNeuron())) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="one slope for every leaky unit"):
        negative_worth(torch.nn.Sequential(*fine))
