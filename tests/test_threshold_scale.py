"""A threshold scale at conversion (`convert --threshold-scale`) and its selection measure
(spikedet.distill.threshold_scale, `distill-loss --threshold-scales`)."""
import json

import pytest
import torch

from spikedet.cli import main
from spikedet.api import SpikingYOLO
from spikedet.distill import distill, leaky_activations, load_batch, mean_head_loss, set_levels
from spikedet.distill.threshold_scale import least_loss_scale, threshold_scale_losses
from spikedet.errors import SpikedetError
from spikedet.model.checkpoint import load_ann
from spikedet.snn import convert

from test_distill import teacher_and_student


@pytest.fixture
def setup(tmp_path):
    return teacher_and_student(tmp_path)


def scaled_thresholds(student, scale):
    with torch.no_grad():
        for unit in leaky_activations(student):
            unit.lam.mul_(scale)


@pytest.mark.parametrize("scale", [0.7, 1.3])
def test_the_burst_snn_with_a_scale_is_the_dual_error_network_with_its_thresholds_scaled(setup, scale):
    teacher, student, paths, _ = setup
    x = load_batch(paths, 32)
    snn = convert(student, spikes="burst", threshold_scale=scale)
    plain = convert(student, spikes="burst")
    assert snn.meta["options"]["threshold_scale"] == scale and plain.meta["options"]["threshold_scale"] == 1.0
    scaled_thresholds(student, scale)
    with torch.no_grad():
        for T in (4, 6):
            stepped = snn.simulate(x, [T], method="steps")[T]
            expected = set_levels(student, T)(x)[0]
            assert torch.allclose(stepped, expected, atol=1e-4, rtol=1e-4), (T, (stepped - expected).abs().max())
            assert not torch.allclose(stepped, plain.simulate(x, [T], method="steps")[T], atol=1e-3)


def test_each_loss_is_the_head_loss_with_the_thresholds_scaled_and_they_are_restored(setup):
    teacher, student, paths, _ = setup
    before = [unit.lam.detach().clone() for unit in leaky_activations(student)]
    found = threshold_scale_losses(student, teacher, paths, 32, [4, 8], [1.0, 0.5, 2.0], batch=4)
    after = [unit.lam.detach() for unit in leaky_activations(student)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(unit.settings.levels == 4 for unit in leaky_activations(student))
    for L in (4, 8):
        assert [row["scale"] for row in found[str(L)]] == [1.0, 0.5, 2.0]
        for row in found[str(L)]:
            scaled_thresholds(student, row["scale"])
            set_levels(student, L)
            assert row["loss"] == pytest.approx(mean_head_loss(student, teacher, paths, 32, batch=4)["loss"], rel=1e-6)
            scaled_thresholds(student, 1 / row["scale"])
    # scales far off either way cost more than the thresholds the student started with
    assert least_loss_scale(found["4"]) == 1.0
    with pytest.raises(SpikedetError, match="threshold scales must be positive"):
        threshold_scale_losses(student, teacher, paths, 32, [4], [1.0, 0.0])


def test_least_loss_scale_takes_the_first_of_equal_losses():
    rows = [{"scale": 1.0, "loss": 0.5}, {"scale": 1.2, "loss": 0.4}, {"scale": 1.4, "loss": 0.4}]
    assert least_loss_scale(rows) == 1.2


def test_the_cli_converts_with_a_scale_and_the_file_keeps_it(setup, tmp_path, capsys):
    teacher, _, paths, (cfg, weights, names, folder) = setup
    out = distill(weights, cfg, folder, tmp_path / "de.pt", levels=4, epochs=1, imgsz=32, batch=3, names=names,
                  progress=False)
    assert main(["distill-loss", "--weights", str(out), "--teacher", str(weights), "--cfg", str(cfg), "--names",
                 str(names), "--images", str(folder), "--imgsz", "32", "--levels", "4",
                 "--threshold-scales", "1", "1.5", "--json", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    figures = json.loads((tmp_path / "s.json").read_text())["threshold_scales"]["4"]
    assert [row["scale"] for row in figures] == [1.0, 1.5]
    assert f"least loss at S = {least_loss_scale(figures):g}" in printed
    assert main(["convert", "--weights", str(out), "--threshold-scale", "1.5", "--imgsz", "32",
                 "--output", str(tmp_path / "s.snn.pt")]) == 0
    stored = torch.load(tmp_path / "s.snn.pt", weights_only=True)["meta"]["options"]
    assert stored["threshold_scale"] == 1.5
    model = load_ann(out)
    scaled_thresholds(model, 1.5)
    x = load_batch(paths, 32)
    snn = SpikingYOLO(tmp_path / "s.snn.pt").network
    with torch.no_grad():
        assert torch.allclose(snn.simulate(x, [4], method="steps")[4], set_levels(model, 4)(x)[0], atol=1e-4,
                              rtol=1e-4)


def test_a_scale_multiplies_thresholds_taken_from_calibration_images_too():
    """Percentile 100 thresholds never clip: times 2 the SNN still converges to its ANN; times 0.5 it clips
    the largest activations of every layer and stays off however long it runs."""
    from test_snn import box_error, random_network

    model, images, ann = random_network(clip=False, quantize=False)
    errors = {s: box_error(convert(model, calibration_images=images, percentile=100, threshold_scale=s)
                           .simulate(images, [1024])[1024], ann)[0] for s in (0.5, 1.0, 2.0)}
    assert errors[1.0] < 0.05 and errors[2.0] < 0.1
    assert errors[0.5] > 5 * max(errors[1.0], errors[2.0])
