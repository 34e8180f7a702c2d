"""Tiny-YOLO configs build with ultralytics' machinery, with dual-error activations only."""
import pytest
import torch
from torch import nn

from spikedet import SpikedetError
from spikedet.model.activation import DualErrorReLU
from spikedet.model import CONFIG_DIR, DualErrorYOLO, load_model_config

CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("pool", ["max", "avg", "conv"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_builds_forward_backward(cfg, pool):
    model = DualErrorYOLO(cfg, nc=3, scale="n", pool=pool)
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    (out["boxes"].pow(2).mean() + out["scores"].pow(2).mean()).backward()
    acts = [m for m in model.modules() if isinstance(m, DualErrorReLU)]
    assert acts and all(a.lam.grad is not None for a in acts)
    assert not any(isinstance(m, (nn.SiLU, nn.LeakyReLU, nn.ReLU)) for m in model.modules())
    pools = {type(m) for m in model.model if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))}  # SPPF keeps its own
    if pool != "max":  # every max-pool layer rewritten (a config's own average pools stay)
        assert nn.MaxPool2d not in pools
    model.eval()
    pred = model(torch.rand(1, 3, 64, 64))[0]
    assert pred.shape[1] == 4 + 3  # boxes + class scores per anchor point


def test_each_layer_has_its_own_activation_with_its_channels():
    model = DualErrorYOLO("yolov3-tiny", nc=3, scale="n", dual_error={"granularity": "channel"})
    convs = [m for m in model.modules() if hasattr(m, "act") and isinstance(m.act, DualErrorReLU)]
    assert len({id(m.act) for m in convs}) == len(convs)
    assert all(m.act.lam.numel() == m.conv.out_channels for m in convs)


def test_overrides_are_recorded_in_the_model_config():
    model = DualErrorYOLO("yolov2-tiny", nc=5, scale="n", pool="avg", dual_error={"levels": 4, "clip": False})
    assert model.yaml["pool"] == "avg"
    assert model.yaml["dual_error"]["levels"] == 4 and model.yaml["dual_error"]["clip"] is False
    assert model.settings.levels == 4
    rebuilt = DualErrorYOLO(model.yaml, nc=5)  # a checkpoint's yaml alone rebuilds the same network
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(rebuilt.eval()(x)[0], model.eval()(x)[0])


def test_plain_relu_baseline_is_a_config_change():
    model = DualErrorYOLO("yolov3-tiny", nc=3, scale="n", dual_error={"clip": False, "quantize": False})
    x = torch.randn(1, 8, 4, 4) * 5
    act = model.model[0].act
    assert torch.equal(act(x), torch.relu(x))


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": "q"}, "scale"), ({"pool": "median"}, "pool"), ({"dual_error": {"levels": 0}}, "levels"),
])
def test_bad_config_values_fail_clearly(kwargs, message):
    with pytest.raises(SpikedetError, match=message):
        load_model_config("yolov3-tiny", **kwargs)


def test_unknown_config_fails_clearly(tmp_path):
    with pytest.raises(SpikedetError, match="not found"):
        load_model_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nc: 3\n")
    with pytest.raises(SpikedetError, match="not a model config"):
        load_model_config(bad)
