"""Training through ultralytics: a one-epoch run writes a checkpoint that rebuilds the same network, offline."""
import pytest
import torch

from spikedet import SpikedetError
from spikedet.model.activation import DualErrorReLU
from spikedet.cli import main
from spikedet.model import DualErrorYOLO
from spikedet.model.checkpoint import load_ann
from spikedet.train import SpikingTrainer, train


@pytest.fixture
def tiny_shapes(trained):
    return trained[0]


def test_one_epoch_writes_a_checkpoint_that_reloads_with_its_settings(tiny_shapes, tmp_path, no_network):
    code = main(["train", "--data", str(tiny_shapes["yolo"]), "--model", "yolov3-tiny", "--scale", "n",
                 "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0", "--project", str(tmp_path),
                 "--name", "run", "--levels", "4", "--granularity", "layer", "--plots", "false"])
    assert code == 0
    best = tmp_path / "run" / "weights" / "best.pt"
    model = load_ann(best)
    assert model.yaml["dual_error"]["levels"] == 4 and model.yaml["dual_error"]["granularity"] == "layer"
    acts = [m for m in model.modules() if isinstance(m, DualErrorReLU)]
    assert acts and all(a.lam.numel() == 1 for a in acts)
    # lambda was calibrated from activations before training, not left at its initial 1.0
    assert not all(torch.allclose(a.lam, torch.ones(1)) for a in acts)
    assert model.names == {0: "circle", 1: "square", 2: "triangle"}
    rebuilt = DualErrorYOLO(model.yaml, nc=3)  # the config recorded in the file alone rebuilds the network
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(rebuilt.eval()(x)[0], model(x)[0])
    assert not list((tmp_path / "run" / "weights").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_relu_baseline_flag_turns_both_errors_off(tiny_shapes, tmp_path, capsys):
    code = main(["train", "--data", str(tiny_shapes["yolo"]), "--scale", "n", "--epochs", "1", "--imgsz", "64",
                 "--batch", "4", "--workers", "0", "--project", str(tmp_path), "--name", "relu", "--relu",
                 "--plots", "false"])
    assert code == 0
    weights = tmp_path / "relu" / "weights" / "best.pt"
    assert load_ann(weights).settings.is_relu
    # no learned clip threshold: conversion needs calibration images, and says so in one line
    snn = tmp_path / "relu.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64"]) == 2
    assert "needs calibration images" in capsys.readouterr().err
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64",
                 "--calibration", str(tiny_shapes["yolo"]), "--calibration-count", "4"]) == 0
    assert snn.is_file()


def test_wrong_checkpoints_fail_with_one_line(tmp_path, capsys):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(SpikedetError, match="pickled.pt: holds pickled Python objects"):
        load_ann(tmp_path / "pickled.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SpikedetError, match="other.pt: not a spikedet ANN checkpoint"):
        load_ann(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert main(["convert", "--weights", str(tmp_path / "broken.pt"), "--output", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "broken.pt: not a readable PyTorch file" in err


def test_missing_dataset_yaml_fails_clearly(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "none.yaml"), "--epochs", "1"]) == 2
    assert "none.yaml: file not found" in capsys.readouterr().err


def test_interrupted_run_resumes_from_its_safe_last_pt(tiny_shapes, tmp_path, monkeypatch):
    """last.pt holds tensors and plain values only (weights_only), and still resumes: epoch, optimizer, EMA."""
    real_save = SpikingTrainer.save_model

    def save_then_stop(self):
        real_save(self)
        raise KeyboardInterrupt  # as if the run were killed right after its first checkpoint

    monkeypatch.setattr(SpikingTrainer, "save_model", save_then_stop)
    args = dict(model="yolov3-tiny", scale="n", epochs=2, imgsz=64, batch=4, workers=0, project=tmp_path,
                name="run", plots=False, dual_error={"levels": 4})
    with pytest.raises(KeyboardInterrupt):
        train(tiny_shapes["yolo"], **args)
    last = tmp_path / "run" / "weights" / "last.pt"
    content = torch.load(last, weights_only=True)
    assert content["format"] == "spikedet-ann" and content["train"]["epoch"] == 0 and content["train"]["optimizer"]
    monkeypatch.setattr(SpikingTrainer, "save_model", real_save)
    best = train(None, resume=last)
    finished = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)
    assert finished["train"]["epoch"] == 1 and "optimizer" not in finished["train"]  # ran on, then stripped
    assert best.parent == last.parent and load_ann(best).yaml["dual_error"]["levels"] == 4
