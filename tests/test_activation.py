"""The dual-error activation: forward values, gradients, edge cases, calibration."""
import itertools

import pytest
import torch

from spikedet.model.activation import (DualErrorLeakyReLU, DualErrorReLU, DualErrorSettings, calibrate_thresholds,
                                       dual_error, reset_zero_error)
from spikedet.model.calibration import PercentileObserver, percentile


def if_neuron_spike_count(x, lam, steps):
    """Reference: an IF neuron (threshold lam, reset by subtraction, v0 = lam / 2) fed x for `steps` steps."""
    v = torch.full_like(x, lam / 2, dtype=torch.float64)
    count = torch.zeros_like(v)
    for _ in range(steps):
        v = v + x.double()
        s = (v >= lam).double()
        v = v - s * lam
        count += s
    return count


@pytest.mark.parametrize("levels", [1, 2, 7, 16])
def test_forward_equals_if_neuron_rate(levels):
    lam = 1.7
    # avoid exact rounding ties, where float rounding in either computation may go both ways
    x = torch.linspace(-1.0, 3.0, 4001, dtype=torch.float64)
    x = x[((x * levels / lam + 0.5) - (x * levels / lam + 0.5).round()).abs() > 1e-6]
    y = dual_error(x, torch.tensor(lam, dtype=torch.float64), levels)
    expected = if_neuron_spike_count(x, lam, levels) * lam / levels
    assert torch.allclose(y, expected, atol=1e-9)


def test_forward_values_and_edges():
    lam = torch.tensor(2.0, dtype=torch.float64)
    x = torch.tensor([-1.0, 0.0, 0.24, 0.26, 1.0, 2.0, 5.0], dtype=torch.float64)
    y = dual_error(x, lam, levels=4)  # levels at 0, 0.5, 1, 1.5, 2
    assert y.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 2.0]
    assert dual_error(x, lam, 4, clip=False, quantize=False).tolist() == torch.relu(x).tolist()
    assert dual_error(x, lam, 4, clip=True, quantize=False).tolist() == [0.0, 0.0, 0.24, 0.26, 1.0, 2.0, 2.0]
    assert dual_error(x, lam, 4, clip=False, quantize=True).tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 5.0]
    # L = 1: a binary neuron that fires iff x >= lam / 2
    assert dual_error(x, lam, 1).tolist() == [0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0]


def test_output_has_levels_plus_one_values():
    x = torch.randn(10000) * 3
    y = dual_error(x, torch.tensor(1.5), levels=5)
    assert torch.unique(y).numel() == 6


def test_half_precision_input_computes_on_float32_levels():
    lam = torch.tensor(3.0)
    x = torch.rand(5000) * 4
    y16 = dual_error(x.half(), lam.half(), 255)
    y32 = dual_error(x.half().float(), lam, 255)
    assert y16.dtype == torch.float16
    assert torch.equal(y16, y32.half())


def test_gradients_straight_through_and_lambda():
    lam = torch.tensor(2.0, requires_grad=True)
    x = torch.tensor([-1.0, 0.3, 1.1, 2.0, 3.0], requires_grad=True)
    y = dual_error(x, lam, levels=4)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]  # STE inside (0, lam), x = lam is clipped
    residue = ((y - x) / lam).detach()[1:3].sum().item()
    assert lam.grad.item() == pytest.approx(2.0 + residue)  # 1 for each of x >= lam, residue inside

    lam.grad = None
    dual_error(x, lam, 4, lambda_grad="zero").sum().backward()
    assert lam.grad.item() == pytest.approx(2.0)


def test_gradcheck_clip_only():
    """With quantization off the function is piecewise linear: the analytic gradient must be exact."""
    x = torch.tensor([-0.7, 0.2, 0.9, 1.4, 2.6], dtype=torch.float64, requires_grad=True)
    lam = torch.tensor([1.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: dual_error(a, b, 8, clip=True, quantize=False), (x, lam))


def test_per_channel_lambda_gradient_shape():
    m = DualErrorReLU(3, DualErrorSettings(levels=4, granularity="channel"))
    with torch.no_grad():
        m.lam.copy_(torch.tensor([0.5, 1.0, 2.0]))
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    m(x).sum().backward()
    assert m.lam.grad.shape == (3,)
    out = m(torch.full((1, 3, 1, 1), 10.0))
    assert out.flatten().tolist() == [0.5, 1.0, 2.0]  # each channel clipped at its own lambda


def test_layer_granularity_and_relu_baseline():
    assert DualErrorReLU(8, DualErrorSettings(granularity="layer")).lam.numel() == 1
    relu = DualErrorReLU(4, DualErrorSettings(clip=False, quantize=False))
    x = torch.randn(2, 4, 3, 3) * 10
    assert torch.equal(relu(x), torch.relu(x))
    assert not relu.lam.requires_grad


def test_calibration_sets_lambda_to_percentile():
    m = DualErrorReLU(2, DualErrorSettings(init_percentile=100.0))
    x = torch.zeros(4, 2, 8, 8)
    x[:, 0] = 3.0
    x[0, 1, 0, 0] = 7.0
    with calibrate_thresholds(torch.nn.Sequential(m)):
        m(x)
    assert m.lam.tolist() == [3.0, 7.0]
    assert m.observer is None


def test_observer_averages_batches_but_keeps_the_maximum_at_p100():
    """One observer serves the activation and the converter: a batch's percentile is averaged over batches,
    except at p100, where the largest value seen is the answer."""
    batches = [torch.full((2, 1, 4, 4), 2.0), torch.full((2, 1, 4, 4), 6.0)]
    for q, expected in ((100.0, 6.0), (50.0, 4.0)):
        observer = PercentileObserver(q)
        for b in batches:
            observer.update(b)
        assert observer.scale("channel").tolist() == [expected] and observer.scale("layer").tolist() == [expected]
    m = DualErrorReLU(1, DualErrorSettings(init_percentile=100.0))
    with calibrate_thresholds(torch.nn.Sequential(m)):
        for b in batches:
            m(b)
    assert m.lam.tolist() == [6.0]


def test_percentile_matches_torch_quantile():
    rows = torch.rand(3, 10001)
    assert torch.allclose(percentile(rows, 99.0), torch.quantile(rows, 0.99, dim=1), atol=1e-3)


@pytest.mark.parametrize("bad", [{"levels": 0}, {"granularity": "pixel"}, {"lambda_grad": "x"}, {"foo": 1},
                                 {"reset": "half"}, {"reset": "zero", "quantize": False}])
def test_settings_reject_bad_values(bad):
    with pytest.raises(ValueError):
        DualErrorSettings.from_dict(bad)


@pytest.mark.parametrize("clip,quantize,residue,signed", list(itertools.product([True, False], repeat=4)))
def test_gradients_follow_the_per_element_rule_for_every_setting(clip, quantize, residue, signed):
    """The backward pass (written with few passes over the maps) against the rule element by element."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    lam = (torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) + 0.4).requires_grad_()
    g = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    y = dual_error(x, lam, 4, clip, quantize, "residue" if residue else "zero", signed)
    y.backward(g)
    with torch.no_grad():
        above = (x >= lam) if clip else torch.zeros_like(x, dtype=torch.bool)
        below = ((x <= -lam) if clip else torch.zeros_like(above)) if signed else (x <= 0)
        inside = ~above & ~below
        d_lam = above.double() - (below.double() if signed else 0)
        if quantize and residue:
            d_lam = d_lam + torch.where(inside, (y - x) / lam, 0.0)
    assert torch.equal(x.grad, torch.where(inside, g, 0.0))
    assert torch.allclose(lam.grad, (g * d_lam).sum((0, 2, 3)).view(3, 1, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("levels", [1, 5, 16, 32])
def test_reset_zero_forward_is_the_spikedet_reset_to_zero_neurons_count(levels):
    """reset="zero" trains through the count of spikedet's own binary neuron that resets to zero from 0 (the one
    NIR export writes), fed the current for L steps: the same values, not a lookalike formula."""
    from spikedet.snn.neurons import Static, make_neuron

    lam = torch.tensor(1.0)
    x = torch.linspace(-0.5, 1.5, 2001)
    period = lam / x.clamp(min=1e-12)
    x = x[(period - period.round()).abs() > 1e-4]  # off the exact ties, where float accumulation may go both ways
    neuron = make_neuron("binary", v_init=0.0, reset="zero")
    count = neuron(Static(x, levels)).sum(0)
    assert torch.equal(reset_zero_error(x, lam, levels), count * lam / levels)
    y = reset_zero_error(x * 2.5, lam * 2.5, levels)  # scale-free in lambda
    assert torch.allclose(y, count * 2.5 / levels)


def test_reset_zero_loses_what_subtraction_keeps():
    """The error it models: above half a threshold the neuron fires every other step, whatever the input."""
    lam = torch.tensor(1.0)
    x = torch.tensor([0.55, 0.75, 0.95])
    assert torch.equal(reset_zero_error(x, lam, 32), torch.full((3,), 0.5))
    assert torch.allclose(dual_error(x, lam, 32), torch.tensor([18, 24, 30]) / 32)


def test_reset_zero_gradients():
    x = torch.tensor([-0.2, 0.0, 0.3, 1.0, 2.0], requires_grad=True)
    lam = torch.tensor([1.0], requires_grad=True)
    y = reset_zero_error(x, lam, 16)
    y.sum().backward()
    r = torch.tensor(0.3)
    slope = 1 / (1 + r / 2) ** 2
    assert torch.allclose(x.grad, torch.tensor([0.0, 0.0, float(slope), 0.0, 0.0]))
    y_inside = float(y[2].detach())
    assert torch.allclose(lam.grad, torch.tensor([y_inside - 0.3 * slope + 1 + 1]), atol=1e-6)
    # the gradient is that of the smooth rate model r / (1 + r / 2) at r = 0.3
    r = torch.tensor(0.3, requires_grad=True)
    (r / (1 + r / 2)).backward()
    assert torch.isclose(x.grad[2], r.grad)


def test_reset_zero_module_and_leaky_refusal():
    settings = DualErrorSettings(levels=8, reset="zero")
    unit = DualErrorReLU(2, settings)
    with torch.no_grad():
        unit.lam.copy_(torch.tensor([1.0, 2.0]))
    x = torch.tensor([0.6, 0.6]).view(1, 2, 1, 1)
    assert unit(x).flatten().tolist() == [0.5, 2 * 2 / 8]  # period 2 -> 4 of 8; period ceil(2 / 0.6) = 4 -> 2 of 8
    with pytest.raises(ValueError, match="subtraction"):
        DualErrorLeakyReLU(2, settings)
