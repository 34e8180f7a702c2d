"""The conversion table (spikedet/snn/registry.py): every registered module, in a small random network made of
it, converts to burst neurons that reproduce the dual-error ANN at T = L.

The bound: at T = L a burst neuron's count is the ANN's quantized level in exact arithmetic (neurons.py; a
residual add sums the two inputs' counts in one scale, which is linear, so this holds through it too), and in
float32 the two differ only where a total lands within rounding of a level boundary (closed_form.py states
the window), which moves downstream outputs by a weight. Such neurons are rare (about one in 10^5), so, for the
step simulation and the closed form alike, all but 0.1% of the head's outputs agree with the ANN's to float
precision, |SNN - ANN| <= 1e-4 (1 + |ANN|), and none is off by more than 1e-2 (1 + |ANN|) (one level moved).
The closed form's own bound against the step simulation, layer by layer, is tested on yolov8-relu (residual
adds included) in tests/test_closed_form.py.
"""
import pytest
import torch
from torch import nn

from spikedet import SpikedetError
from spikedet.model import DualErrorYOLO, calibrate_thresholds
from spikedet.model.activation import DualErrorSettings, install_leaky_dual_error
from spikedet.snn import convert
from spikedet.snn.registry import RULES

from conftest import darknet_cfg

L = 8
DETECT = [[-1], 1, "Detect", ["nc"]]
NETWORKS = {  # module -> a small network made of it (layers before the Detect head)
    "Conv": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
    "MaxPool2d": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "nn.MaxPool2d", [2, 2, 0]], [-1, 1, "Conv", [16, 3, 1]]],
    "AvgPool2d": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "nn.AvgPool2d", [2, 2, 0]], [-1, 1, "Conv", [16, 3, 1]]],
    "ZeroPad2d": [[-1, 1, "Conv", [8, 3, 4]], [-1, 1, "nn.ZeroPad2d", [[0, 1, 0, 1]]],
                  [-1, 1, "nn.MaxPool2d", [2, 1, 0]]],
    "Upsample+Concat": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]],
                        [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 0], 1, "Concat", [1]]],
    "C2f+Bottleneck": [[-1, 1, "Conv", [16, 3, 2]], [-1, 2, "C2f", [16, True]]],
    "C2f": [[-1, 1, "Conv", [16, 3, 2]], [-1, 2, "C2f", [16, False]]],
    "SPPF": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "SPPF", [16, 5]]],
}
SHORTCUT_CFG = darknet_cfg("""[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[route]
layers=-1,-3

""")


def randomize(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Random batch-norm statistics (varied activity), then thresholds calibrated on the images."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.3)
    model.eval()
    with torch.no_grad(), calibrate_thresholds(model):
        model(images)
    return model


def made_of(layers) -> nn.Module:
    config = {"nc": 3, "scales": {"n": [1.0, 1.0, 64]}, "scale": "n", "dual_error": {"levels": L},
              "backbone": layers, "head": [DETECT]}
    return DualErrorYOLO(config)


def assert_reproduces_the_ann(model, images):
    with torch.no_grad():
        ann = model(images)[0]
    snn = convert(model, spikes="burst")
    for method in ("steps", "closed-form"):
        out = snn.simulate(images, [L], method=method, chunk=3)[L]
        assert out.shape == ann.shape
        deviation = (out - ann).abs() / (1 + ann.abs())
        assert (deviation > 1e-4).float().mean() <= 1e-3 and deviation.max() <= 1e-2, method
    return snn


@pytest.mark.parametrize("name", NETWORKS)
def test_a_network_made_of_each_module_reproduces_its_ann_at_t_equal_l(name):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    snn = assert_reproduces_the_ann(randomize(made_of(NETWORKS[name]), images), images)
    if name == "C2f+Bottleneck":  # the residual adds are there, their second input weighted to the first's scale
        adds = [m.add for m in snn.modules() if hasattr(m, "add") and isinstance(m.add, nn.Module)]
        assert len(adds) == 2 and all((a.weight != 1).any() for a in adds)


def test_darknet_shortcut_and_route_reproduce_their_dual_error_ann(tmp_path):
    from spikedet.darknet import DarknetModel

    (tmp_path / "residual.cfg").write_text(SHORTCUT_CFG)
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    model = install_leaky_dual_error(DarknetModel(tmp_path / "residual.cfg"), DualErrorSettings(levels=L))
    assert_reproduces_the_ann(randomize(model, images), images)


def test_every_rule_is_exercised_and_an_unknown_module_is_refused_by_type_and_path():
    from ultralytics.nn.modules import C3

    names = {t.__name__ for t in RULES}
    assert {"Conv", "C2f", "Bottleneck", "SPPF", "Detect", "Concat", "MaxPool2d", "AvgPool2d", "Upsample",
            "ZeroPad2d", "Shortcut", "ConvBlock", "DarknetHead"} <= names
    model = made_of(NETWORKS["Conv"]).eval()
    block = C3(8, 8)
    block.f, block.i = -1, 1
    model.model[1] = block
    with pytest.raises(SpikedetError, match=r"^cannot convert model\.1: ultralytics\.nn\.modules\.block\.C3 has no "
                                            r"spiking counterpart") as e:
        convert(model, spikes="burst")
    assert "\n" not in str(e.value)
