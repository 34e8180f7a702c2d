"""NIR export (spikedet.export): refusal of what NIR cannot express, the graph, and the round trip in Norse."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spikedet import SpikingYOLO
from spikedet.cli import main
from spikedet.data.shapes import make_shapes_dataset
from spikedet.export import nir_problems, sidecar_path

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "shapes-yolov2-tiny-nir-rz-n.pt"
NIR_READY = {"spikes": "binary", "reset": "zero", "v_init": 0.0}


def calibrated(config, tmp_path, imgsz=64, **options):
    """A random-weight network of this config converted with ReLU-range thresholds from random images (every
    layer then fires), saved as an SNN file."""
    torch.manual_seed(0)
    model = SpikingYOLO(config, scale="n", dual_error={"clip": False, "quantize": False})
    model.network.eval()
    images = tmp_path / "calibration"
    images.mkdir()
    for k in range(4):
        noise = np.random.default_rng(k).integers(0, 255, (imgsz, imgsz, 3), dtype=np.uint8)
        cv2.imwrite(str(images / f"{k}.png"), noise)
    path = tmp_path / f"{config}.snn.pt"
    return model.convert(images, output=path, imgsz=imgsz, percentile=99.0, timesteps=8, **options), path


def test_yolov3_tiny_export_refused_in_one_line(tmp_path, capsys):
    _, path = calibrated("yolov3-tiny", tmp_path)
    out = tmp_path / "y3.nir"
    assert main(["export", "--weights", str(path), "--format", "nir", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    for kind in ("max-pool: layers.1", "upsample: layers.17", "concat: layers.18", "burst events",
                 "reset by subtraction", "v_init > 0", "--pool conv or avg", "--spikes binary"):
        assert kind in err, kind
    assert not out.exists() and not sidecar_path(out).exists()


def test_nir_ready_config_has_nothing_to_refuse(tmp_path):
    snn, _ = calibrated("yolov2-tiny-nir", tmp_path, **NIR_READY)
    assert nir_problems(snn.network) == []
    (tmp_path / "burst").mkdir()
    burst, _ = calibrated("yolov2-tiny-nir", tmp_path / "burst")
    assert {p.kind for p in nir_problems(burst.network)} == {"burst events", "reset by subtraction", "v_init > 0"}
    (tmp_path / "population").mkdir()
    population, _ = calibrated("yolov2-tiny-nir", tmp_path / "population", first_copies=2, **NIR_READY)
    found = [(p.path, p.kind) for p in nir_problems(population.network)]
    assert found == [("layers.0", "first-layer population")]


def test_approximations_are_stated(tmp_path, capsys):
    pytest.importorskip("nir")
    _, path = calibrated("yolov2-tiny-nir", tmp_path)  # burst, reset by subtraction, v_init 0.5
    out = tmp_path / "approx.nir"
    assert main(["export", "--weights", str(path), "--output", str(out)]) == 2
    assert "--allow-approximations" in capsys.readouterr().err and not out.exists()
    assert main(["export", "--weights", str(path), "--output", str(out), "--allow-approximations"]) == 0
    info = SpikingYOLO(path).export("nir", tmp_path / "again.nir", allow_approximations=True)
    assert [s.split(" in ")[0] for s in info["substitutions"]] == ["burst events", "reset by subtraction",
                                                                   "v_init > 0"]
    assert out.exists() and sidecar_path(out).exists()
    out.unlink()  # the sidecar left alone is not overwritten either
    assert main(["export", "--weights", str(path), "--output", str(out), "--allow-approximations"]) == 2
    assert "already exists" in capsys.readouterr().err and not out.exists()


def test_round_trip_in_norse_matches_spikedet(tmp_path):
    """Random weights, every layer firing: Norse's IF neurons fire exactly where spikedet's do."""
    pytest.importorskip("nir")
    pytest.importorskip("norse")
    from spikedet.export.roundtrip import NorseRun, load_norse
    from spikedet.snn.statistics import SpikeMonitor

    snn, path = calibrated("yolov2-tiny-nir", tmp_path, **NIR_READY)
    info = snn.export("nir", tmp_path / "net.nir")
    x = torch.rand(2, 3, 64, 64)
    run = NorseRun(*load_norse(tmp_path / "net.nir"), info["outputs"])
    theirs = run(x, [4, 8])
    with SpikeMonitor(snn.network) as monitor:
        ours = snn.network.simulate(x, [4, 8], method="steps")
    for t in (4, 8):
        assert torch.allclose(snn.network.head.decode(theirs[t]), ours[t], atol=1e-4)
    spikes = {row["layer"]: row["spikes"] for row in monitor.report(8, 2)["layers"] if "spikes" in row}
    assert spikes == run.spikes_per_image()
    assert sum(v > 0 for v in spikes.values()) >= len(spikes) // 2  # not a comparison of silent layers


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped NIR-ready network is not in weights/")
def test_shipped_nir_network_scores_the_same_in_norse(tmp_path):
    """The shipped NIR-ready detector, converted (binary, reset to zero, v_init 0), exported and run in Norse on
    16 new shapes images: mAP50 within 0.005 of spikedet's own simulation at T = 32 (both read out over steps
    9..32: the burn-in read-out), the same spikes in every layer, the same outputs up to float summation order."""
    pytest.importorskip("nir")
    pytest.importorskip("norse")
    from spikedet.export.compare import round_trip
    from spikedet.validate import GroundTruth

    data = make_shapes_dataset(tmp_path / "shapes", counts={"train": 1, "val": 1, "test": 16}, seed=5,
                               progress=False)
    model = SpikingYOLO(SHIPPED).convert(imgsz=192, timesteps=32, **NIR_READY)
    info = model.export("nir", tmp_path / "net.nir")
    truth = GroundTruth.read(gt_coco=data["coco"]["test"])
    r = round_trip(model.network, model.ann, tmp_path / "net.nir", list(info["outputs"]), truth, [32], burn_in=8)
    assert r["spikedet"][32]["mAP50"] > 0.01  # some boxes are right, so the comparison can fail
    assert abs(r["norse"][32]["mAP50"] - r["spikedet"][32]["mAP50"]) <= 0.005
    assert r["max_abs_output_diff"][32] < 1e-3
    assert all(counts["norse"] == counts["spikedet"] for counts in r["spikes"].values()), r["spikes"]
