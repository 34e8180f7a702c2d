"""Where the level loss sits, layer by layer (spikedet.distill.layer_loss, `distill-loss --per-layer`)."""
import json

import pytest
import torch

from spikedet.cli import main
from spikedet.distill import leaky_activations, mean_head_loss, set_levels
from spikedet.distill.layer_loss import layer_losses, unit_names
from spikedet.distill.student import set_unit_levels

from test_distill import teacher_and_student


@pytest.fixture
def setup(tmp_path):
    return teacher_and_student(tmp_path)


def test_each_figure_is_the_head_loss_of_its_setting(setup):
    teacher, student, paths, _ = setup
    units = leaky_activations(student)
    n = len(units)
    found = layer_losses(student, teacher, paths, 32, [4, 8], batch=4)
    assert [u.settings.levels for u in units] == [4] * n and all(u.settings.quantize for u in units)

    def measured(levels):
        set_unit_levels(units, levels)
        return mean_head_loss(student, teacher, paths, 32, batch=4)["loss"]

    assert found["float"] == pytest.approx(measured([None] * n), rel=1e-6)
    for L in (4, 8):
        at = found["levels"][str(L)]
        assert at["all"] == pytest.approx(measured([L] * n), rel=1e-6)
        for i in range(n):
            assert at["alone"][i] == pytest.approx(measured([L if j == i else None for j in range(n)]), rel=1e-6)
            assert at["all_but"][i] == pytest.approx(measured([None if j == i else L for j in range(n)]), rel=1e-6)
    set_levels(student, 4)
    whole = mean_head_loss(student, teacher, paths, 32, batch=4)["loss"]
    assert found["levels"]["4"]["all"] == pytest.approx(whole, rel=1e-6)
    assert [layer["channels"] for layer in found["layers"]] == [u.lam.numel() for u in units]
    assert [layer["name"] for layer in found["layers"]] == unit_names(student)
    assert all(name.endswith(".act") for name in unit_names(student))


def test_a_layer_with_broken_thresholds_stands_out(setup):
    """Thresholds far below its activations clip a layer to a constant: quantized alone it costs the most, and
    every layer quantized but it costs the least."""
    teacher, student, paths, _ = setup
    units = leaky_activations(student)
    broken = 2
    with torch.no_grad():
        units[broken].lam.fill_(1e-3)
    at = layer_losses(student, teacher, paths, 32, [4])["levels"]["4"]
    assert max(range(len(units)), key=lambda i: at["alone"][i]) == broken
    assert min(range(len(units)), key=lambda i: at["all_but"][i]) == broken
    assert at["all_but"][broken] < at["all"] < at["alone"][broken] + sum(at["alone"])


def test_distill_loss_per_layer_prints_and_writes_the_table(setup, tmp_path, capsys):
    teacher, student, paths, (cfg, weights, names, folder) = setup
    from spikedet.model.checkpoint import save_ann

    out = save_ann(student, tmp_path / "s.pt")
    args = ["distill-loss", "--weights", str(out), "--teacher", str(weights), "--cfg", str(cfg), "--names", str(names),
            "--images", str(folder), "--levels", "4", "--imgsz", "32", "--per-layer",
            "--json", str(tmp_path / "l.json")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "l.json").read_text())
    layers = written["per_layer"]["layers"]
    assert len(layers) == len(leaky_activations(student)) and all(layer["name"] in printed for layer in layers)
    assert written["per_layer"]["float"] == pytest.approx(written["loss"]["float"], abs=1e-6)  # rounded to 6 places
    assert written["per_layer"]["levels"]["4"]["all"] == pytest.approx(written["loss"]["4"], abs=1e-6)
