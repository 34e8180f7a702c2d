"""The spiking inference engine: a converted network simulated for T steps, read out at any T <= T_max.

One simulation to T_max serves every requested T: the output layers integrate, and their running sums after
each step are kept, so detections at T = 8, 16, ..., T_max all come from the same run. Time advances in
chunks (each layer handles `chunk` steps as one batched operation, then its neuron scan) with state
carried between chunks, so memory is bounded by the chunk length, not by T. A spiking conv read only by a
max-pool and fed a constant current (the image) pools that current before firing (SpikingConv.fire_pooled):
the same spikes out of the pool from a quarter of the neurons.

Burst networks can also be evaluated in closed form (closed_form.py): the counts after T steps in one dense
pass per T, the same outputs as the step simulation up to float rounding. It is the default for them unless
something observes the steps (a statistics.SpikeMonitor, or any forward hook).
"""
from typing import Dict, Iterable, List

import torch
from torch import nn

from ..defaults import CHOICES, DEFAULTS
from ..routing import routed_input, run_routed
from ..errors import SpikedetError
from .closed_form import Counts, check_exact
from .layers import SpikeMaxPool, SpikingConv
from .neurons import Neuron, Static, reset_net

CODINGS = ("constant", "poisson")
METHODS = CHOICES["method"]


class SpikingNetwork(nn.Module):
    """A converted detector: layers routed like the ANN (ultralytics' `f` / `save` convention) and a head.

    layers[i] reads the previous layer's output (f = -1) or saved outputs of earlier layers (f = j or a
    list); the head reads its feature maps the same way and returns per-level running sums.
    `meta` holds what the conversion recorded (class names, options, the T it was meant for).
    """

    def __init__(self, layers: List[nn.Module], sources: List, save: Iterable[int], head: nn.Module,
                 head_sources: List[int], meta: dict):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.sources, self.saved, self.head_sources = list(sources), sorted(set(save)), list(head_sources)
        self.head = head
        self.meta = dict(meta)
        # spiking convs read only by the count-gated max-pool after them (SpikingConv.fire_pooled)
        self._pool_after = {layers[i]: layers[i + 1] for i in range(len(layers) - 1)
                            if isinstance(layers[i], SpikingConv) and isinstance(layers[i + 1], SpikeMaxPool)
                            and self.sources[i + 1] == -1 and i not in self.saved}

    @property
    def names(self) -> Dict[int, str]:
        return {int(k): v for k, v in self.meta["names"].items()}

    def _chunk(self, x, pool_first: bool = False):
        """One chunk through the layers and the head. pool_first: let a spiking conv read only by a max-pool
        pool its constant current before firing (SpikingConv.fire_pooled; the same outputs, less work)."""
        def run(layer, inputs):
            pool = self._pool_after.get(layer) if pool_first else None
            pooled = None if pool is None else layer.fire_pooled(inputs, pool)
            return layer(inputs) if pooled is None else pooled

        x, saved = run_routed(x, self.layers, self.sources, self.saved, call=run)
        return self.head(routed_input(x, self.head_sources, saved))

    @property
    def all_exact(self) -> bool:
        """Whether every neuron's count has a closed form whatever the order its input arrived in (burst)."""
        return all(m.exact_count for m in self.modules() if isinstance(m, Neuron))

    def observed(self) -> bool:
        """Whether something watches the steps: a SpikeMonitor (or any forward hook) on a layer."""
        return any(m._forward_hooks or m._forward_pre_hooks for m in self.modules())

    def default_method(self, coding: str = "constant") -> str:
        """"closed-form" for a burst network fed constant current with no monitor attached, else "steps"."""
        return "closed-form" if self.all_exact and coding == "constant" and not self.observed() else "steps"

    @torch.no_grad()
    def simulate(self, images: torch.Tensor, timesteps: Iterable[int], chunk: int = DEFAULTS["chunk"],
                 coding: str = "constant", generator: torch.Generator = None,
                 method: str = None, burn_in: int = 0, decode: bool = True) -> Dict[int, torch.Tensor]:
        """Run up to max(timesteps); return {T: decoded predictions (B, 4 + nc, anchors)} for each T.

        coding: "constant" feeds the image as the same input current at every step (the standard for
        detection); "poisson" feeds Bernoulli spikes with the pixel value as probability per step.
        method: "steps" simulates step by step (chunk steps at a time); "closed-form" (burst networks, constant
        coding) computes the counts after each T in one dense pass per T: the same outputs up to float
        rounding (closed_form.py). None: default_method(coding).
        burn_in: the read-out at T is the head's sum over steps burn_in+1..T divided by T - burn_in, so that the
        first steps, while the deeper layers of a binary network have not begun to fire at their rate, do not
        count (the network still runs T steps). decode=False: {T: the head's raw maps (mean input per step)},
        as the ANN's head gives them before decoding (what distillation losses compare).
        Spike statistics: attach a statistics.SpikeMonitor around the call (it needs method="steps").
        """
        wanted = sorted({int(t) for t in timesteps})
        if not wanted or wanted[0] < 1:
            raise ValueError(f"timesteps must be positive integers, got {list(timesteps)}")
        if not 0 <= int(burn_in) < wanted[0]:
            raise ValueError(f"burn_in must be in 0..T-1 for every T, got {burn_in} for T = {wanted}")
        if coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
        method = method or self.default_method(coding)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        reset_net(self)
        if method == "closed-form":
            if coding != "constant":
                raise SpikedetError("the closed form needs constant-current coding (Poisson input is random per "
                                    "step): simulate with method='steps'")
            check_exact(self)
            if self.observed():
                raise SpikedetError("spike statistics (a SpikeMonitor or forward hooks) need method='steps': the "
                                    "closed form computes no steps")
            return {t: self.closed_form(images, t, burn_in, decode) for t in wanted}
        return self._simulate_steps(images, wanted, chunk, coding, generator, int(burn_in), decode)

    def closed_form(self, images: torch.Tensor, steps: int, burn_in: int = 0, decode: bool = True):
        """Decoded predictions after `steps` steps of a burst network, from one dense pass (closed_form.py)
        per read-out time."""
        sums = [s.x for s in self._chunk(Counts(images, steps, constant=True))]
        if burn_in:
            sums = [s - b.x for s, b in zip(sums, self._chunk(Counts(images, burn_in, constant=True)))]
        maps = [s / (steps - burn_in) for s in sums]
        return self.head.decode(maps) if decode else maps

    def _simulate_steps(self, images, wanted: List[int], chunk: int, coding: str,
                        generator, burn_in: int = 0, decode: bool = True) -> Dict[int, torch.Tensor]:
        results, done, before = {}, 0, None  # before: the head's sums after burn_in steps
        pool_first = not self.observed()  # a spike monitor counts every neuron of every layer
        while done < wanted[-1]:
            steps = min(chunk, wanted[-1] - done)
            if coding == "constant":
                x = Static(images, steps)
            else:
                x = (torch.rand((steps, *images.shape), generator=generator, device=images.device,
                                dtype=images.dtype) < images).to(images.dtype)
            running = self._chunk(x, pool_first)
            if burn_in and done < burn_in <= done + steps:
                before = [r[burn_in - done - 1].clone() for r in running]
            for t in wanted:
                if done < t <= done + steps:
                    sums = [r[t - done - 1] for r in running]
                    if before is not None:
                        sums = [s - b for s, b in zip(sums, before)]
                    maps = [s / (t - burn_in) for s in sums]
                    results[t] = self.head.decode(maps) if decode else maps
            done += steps
        return results
