"""docs/extending.md's worked example, run as written: adding a neuron kind is one class."""
import re
from pathlib import Path

import pytest
import torch

from spikedet import SpikedetError
from spikedet.snn import BinaryNeuron, Neuron, SpikeMonitor, Static, convert
from spikedet.snn.files import load_snn, save_snn
from spikedet.snn.neurons import NEURON_KINDS
from spikedet.export.support import nir_problems

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


@pytest.fixture
def lif():
    """The example's class, defined from the document's code block (and unregistered afterwards)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    namespace = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    yield namespace["LIFNeuron"]
    NEURON_KINDS.pop("lif")


def test_the_example_is_a_registered_kind_with_its_own_step(lif):
    assert NEURON_KINDS["lif"] is lif
    current = Static(torch.full((1, 4), 0.3), 20)
    leaking, binary = lif(v_init=0.0), BinaryNeuron(v_init=0.0)
    assert leaking(current).sum() < binary(current).sum()  # 0.3 per step: the leak costs spikes
    lif.beta = 1.0  # no leak: the binary neuron, step for step
    try:
        x = torch.randn(9, 2, 3, 4, 4)
        assert torch.equal(lif()(x), BinaryNeuron()(x))
    finally:
        lif.beta = 0.9


def test_the_example_converts_simulates_saves_and_exports(lif, tmp_path):
    from tests.test_snn import random_network

    model, images, _ = random_network()
    snn = convert(model, spikes="lif")
    assert snn.default_method() == "steps"
    with pytest.raises(SpikedetError, match="lif"):
        snn.simulate(images, [4], method="closed-form")
    with SpikeMonitor(snn) as monitor:
        out = snn.simulate(images, [4])[4]
    assert torch.isfinite(out).all() and monitor.report(4, batch_size=2)["snn_sops"] > 0
    loaded, _ = load_snn(save_snn(snn, model, tmp_path / "lif.snn.pt"))
    assert all(isinstance(m, lif) for m in loaded.modules() if isinstance(m, Neuron))
    assert torch.equal(loaded.simulate(images, [4])[4], out)
    assert not {"burst events", "negative spikes"} & {p.kind for p in nir_problems(snn)}
