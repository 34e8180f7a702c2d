"""The fused neuron step: a kind's step (neurons.Neuron.step) compiled by torch.compile (inductor) into one
kernel, one pass over memory per step, for layers of at least FUSED_MIN_NUMEL neurons per step (small ones
gain little, and the test suite pays no compile time).

Each kind's step is compiled at its first use and checked against the eager step on a probe for each set of
step parameters; where compiling fails (no C++ compiler, ...) or the probe differs, the eager step is used
for good. SPIKEDET_FUSED=0 turns fusion off.
"""
import functools
import os
import warnings

import torch

FUSED_MIN_NUMEL = 1 << 18
_fused = {"disabled": os.environ.get("SPIKEDET_FUSED", "1") == "0", "compiled": {}, "checked": {}}


def fused_step(kind: type, params: dict, like: torch.Tensor):
    """The compiled step of a neuron class with these parameters (bound to them), or None where fusion is off or
    unavailable."""
    key = (kind, *sorted(params.items()), like.dtype, like.device.type, like.dim())
    if _fused["disabled"] or not hasattr(torch, "compile"):
        return None
    if key not in _fused["checked"]:
        try:
            if kind not in _fused["compiled"]:
                _fused["compiled"][kind] = torch.compile(kind.step, dynamic=True)
            step = functools.partial(_fused["compiled"][kind], **params)
            _fused["checked"][key] = _probe(step, functools.partial(kind.step, **params), like)
        except Exception as e:  # noqa: BLE001 -- any failure to compile means: no fusion here
            _fused["disabled"] = True
            warnings.warn(f"fused neuron step unavailable ({type(e).__name__}: {str(e)[:200]}); "
                          "using the eager step")
            return None
        if not _fused["checked"][key]:
            warnings.warn("the fused neuron step differs from the eager step here; using the eager step")
    return functools.partial(_fused["compiled"][kind], **params) if _fused["checked"][key] else None


def _probe(step, eager, like: torch.Tensor) -> bool:
    """Two steps on random currents (both signs, boundaries included): fused == eager, bit for bit."""
    g = torch.Generator().manual_seed(0)
    shape = (2, 3, 16, 32)[-like.dim():] if like.dim() <= 4 else (2, 3, 16, 32) + (2,) * (like.dim() - 4)
    x = (torch.randn((2, *shape), generator=g) * 8).round(decimals=1).to(like.dtype).to(like.device)
    states = []
    for fn in (step, eager):
        v, net, out = torch.full_like(x[0], 0.5), torch.zeros_like(x[0]), torch.empty_like(x)
        for k in range(len(x)):
            fn(v, x[k], out[k], net)
        states.append((v, net, out))
    return all(torch.equal(a, b) for a, b in zip(*states))
