"""Distillation through the binary SNN (binary_steps=T, spikedet.distill with snn.finetune.UnrolledSNN): the
unrolled darknet student is, bit for bit, the binary SNN tools/convert.py makes of it (leaky neurons, v_init 0.5,
reset by subtraction), its gradient is the stated surrogate's, and its steps lower the binary SNN's head loss."""
import pytest
import torch

from spikedet.darknet import DarknetModel, load_darknet
from spikedet.distill import channel_scales, distill, head_loss, load_batch, make_student, training_images
from spikedet.errors import SpikedetError
from spikedet.model.activation import DualErrorReLU
from spikedet.snn import convert
from spikedet.snn.finetune import UnrolledSNN, binary_if
from spikedet.snn.neurons import BinaryNeuron

from conftest import randomize
from test_distill import make_files, tiny_cfg
from test_finetune_snn import exact_network

SLOPE = 0.1


def pooled_cfg():
    """test_distill's tiny cfg with yolov3-tiny's padded stride-1 max-pool after the third pool (index 6)."""
    text = tiny_cfg()
    third = "[maxpool]\nsize=2\nstride=2\n\n" + "[convolutional]\nbatch_normalize=1\nfilters=12\n"
    assert text.count(third) == 1
    return text.replace(third, "[maxpool]\nsize=2\nstride=2\n\n[maxpool]\nsize=2\nstride=1\n\n"
                        + "[convolutional]\nbatch_normalize=1\nfilters=12\n")


def exact_student(tmp_path):
    """A student of a randomized tiny darknet (with the stride-1 pool) made exact (test_finetune_snn's
    exact_network: every value a dyadic rational of few bits), so that the unrolled student and the converted SNN
    must agree bit for bit."""
    cfg = tmp_path / "pooled.cfg"
    cfg.write_text(pooled_cfg())
    teacher = randomize(DarknetModel(cfg), seed=3).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0)) / 256
    student = make_student(teacher, 8, channel_scales(teacher, x)).eval()
    return exact_network(student), x


@pytest.mark.parametrize("timesteps, burn_in", [(16, 0), (16, 8), (32, 16)])
def test_unrolled_darknet_student_reads_out_what_the_engine_simulates(tmp_path, timesteps, burn_in):
    """The unrolled student's read-out maps and decoded boxes equal, bit for bit, the engine's for the SNN that
    convert(spikes="binary") makes (leaky neurons, v_init 0.5, reset by subtraction, the count-gated pools),
    with and without burn-in. The head must see spikes, and negative ones: the leaky path is exercised."""
    student, x = exact_student(tmp_path)
    snn = convert(student, spikes="binary")
    engine = snn.simulate(x, [timesteps], burn_in=burn_in, decode=False)[timesteps]
    events = []
    hooks = [m.register_forward_hook(lambda m, i, out: events.append(out.detach()))
             for m in student.modules() if isinstance(m, DualErrorReLU)]
    with torch.no_grad():
        plain = [m.clone() for m in student(x)[1]]  # the dual-error network, for the hooks' check below
    for h in hooks:
        h.remove()
    assert any((e < 0).any() for e in events)  # leaky units with negative inputs
    with torch.no_grad():
        decoded, unrolled = UnrolledSNN(student, timesteps, burn_in, 0.5, "subtract")(x)
    assert all(torch.equal(a, b) for a, b in zip(unrolled, engine))
    assert all(m.std() > 0.1 for m in engine)  # the head sees spikes, not only its bias
    assert torch.equal(decoded, student.model[-1].decode(engine))
    with torch.no_grad():  # the student's own units are back: the same dual-error outputs as before
        assert all(torch.equal(a, b) for a, b in zip(student(x)[1], plain))


def test_leaky_binary_neurons_and_their_surrogate_gradient():
    """Forward: the events of spikedet's leaky BinaryNeuron (v_init 0.5, reset by subtraction, +1 at v >= 1,
    -1 at v <= -1/alpha giving 1/alpha back), exactly. Backward: autograd through the same loop with the two
    triangles (max(0, 1 - |v - 1|) and alpha * max(0, 1 - alpha |v + 1/alpha|)) and the reset detached."""
    current = torch.randn(24, 3, 5, generator=torch.Generator().manual_seed(1)) * 4 - 1
    neuron = BinaryNeuron(v_init=0.5, reset="subtract", negative_slope=SLOPE)
    spikes = binary_if(current, 0.5, "subtract", SLOPE)
    assert torch.equal(spikes, neuron(current)) and (spikes < 0).any() and (spikes > 0).any()

    def ramp(v, centre, width):  # the integral of a triangle of half-width `width` and height 1 / width
        u = ((v - centre) / width).clamp(-1, 1)
        return torch.where(u < 0, (1 + u) ** 2 / 2, 1 - (1 - u) ** 2 / 2)

    a = current.clone().requires_grad_(True)
    b = current.clone().requires_grad_(True)
    weights = torch.randn(current.shape, generator=torch.Generator().manual_seed(2))
    (binary_if(a, 0.5, "subtract", SLOPE) * weights).sum().backward()
    v, out = torch.full_like(b[0], 0.5), []
    for t in range(len(b)):
        v = v + b[t]
        up = (v >= 1).float() + ramp(v, 1.0, 1.0) - ramp(v, 1.0, 1.0).detach()
        down = (v <= -1 / SLOPE).float() + ramp(-v, 1 / SLOPE, 1 / SLOPE) - ramp(-v, 1 / SLOPE, 1 / SLOPE).detach()
        s = up - down
        out.append(s)
        v = torch.where(s.detach() < 0, v + 1 / SLOPE, v - s.detach())
    (torch.stack(out) * weights).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)
    assert a.grad.abs().sum() > 0


def test_steps_through_the_binary_snn_lower_its_head_loss(tmp_path):
    """A few Adam steps on the unrolled binary student's head loss (T = 8, K = 2) against the teacher lower it on
    the batch, and every weight and lambda gets a finite, non-zero gradient."""
    cfg, weights, names, folder = make_files(tmp_path)
    teacher = load_darknet(cfg, weights, names).eval()
    x = load_batch(training_images(folder), 32)
    student = make_student(teacher, 8, channel_scales(teacher, x)).eval()
    unrolled = UnrolledSNN(student, 8, 2, 0.5, "subtract")
    target = teacher(x)[1]
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        loss = head_loss(unrolled(x)[1], target, teacher.nc)["loss"]
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            grads = [p.grad for p in student.parameters()]
            assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_a_binary_run_records_the_binary_loss_and_refuses_what_it_cannot_train(tmp_path):
    cfg, weights, names, folder = make_files(tmp_path)
    recipe = dict(levels=[4], steps=3, imgsz=32, batch=2, progress=False, selection=2, names=names, feature_weight=0)
    out = distill(weights, cfg, folder, tmp_path / "b.pt", binary_steps=6, burn_in=2, float_share=0.3, **recipe)
    record = torch.load(out, weights_only=True)["distill"]
    assert record["binary_steps"] == 6 and record["burn_in"] == 2
    assert set(record["selection_loss"]) == {"4", "float", "binary6"}
    for bad, message in (({"binary_steps": 4, "burn_in": 4}, "leaves no step"),
                         ({"binary_steps": 4, "feature_weight": 1.0}, "feature_weight=0"),
                         ({"binary_steps": 4, "quant_drop": 0.5}, "quant_drop=0"),
                         ({"binary_steps": -1}, "binary_steps=-1"), ({"burn_in": 1.5}, "burn_in=1.5")):
        with pytest.raises(SpikedetError, match=message):
            distill(weights, cfg, folder, tmp_path / "x.pt", **{**recipe, **bad})
    assert not (tmp_path / "x.pt").exists()
