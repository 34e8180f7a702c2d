"""The same SNN in SpikingJelly, built from a spikedet SpikingNetwork: a peer for tools/benchmark_snn.py.

SpikingJelly is an optional extra (`pip install .[bench]`), never imported by the spikedet package; this
module imports it lazily, so `import tools.spikingjelly_peer` works without it and `require_spikingjelly()`
gives the one-line error.

The peer is built by walking the spikedet network, not written for one model:

- SpikingConv -> the same (normalized) conv in `layer.SeqToANNContainer`, then `neuron.IFNode(v_threshold=1,
  v_reset=None, step_mode='m')` (soft reset) whose membrane is preset to spikedet's v_init after every
  `functional.reset_net`. A conv reading the image (a constant current) is computed once and its output
  expanded to T steps, as spikedet does.
- Integrator -> the conv in `SeqToANNContainer`, its output summed over T; the head decodes sum / T.
- SpikeMaxPool -> "shared": spikedet's own count-gated pool, run on SpikingJelly's (T, B, C, H, W) tensor, so
  the heads agree; "plain": SpikingJelly's `layer.MaxPool2d(step_mode='m')` (a max of spikes per step).
- PerStep (pads, upsample, average pool, identity) -> `SeqToANNContainer`; ConcatChannels -> cat on dim 2;
  nn.Sequential -> a Sequential of the converted parts; the routing (ultralytics' f / save) is spikedet's.
- Heads: SpikingDetect's branches are converted like the body; DecodingHead (darknet [yolo]) reads the
  integrators. Decoding the mean currents into boxes is spikedet's head.decode (it is not simulation).

It runs SpikingJelly's standard multi-step mode: all T steps of a layer in one tensor, so its memory grows
with T. Only what SpikingJelly's IFNode can express is accepted: binary spikes, no leaky (negative) events.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

PEER_ERROR = ("--peer spikingjelly needs SpikingJelly, an optional extra: pip install '.[bench]' "
              "(spikingjelly==2.0.0)")
POOLS = ("shared", "plain")


class PeerUnavailable(Exception):
    """SpikingJelly is missing, or the network has neurons SpikingJelly's IFNode cannot express."""


def require_spikingjelly():
    """Import SpikingJelly's activation_based package, or raise PeerUnavailable with a one-line message."""
    try:
        from spikingjelly.activation_based import functional, layer, neuron  # noqa: F401
    except ImportError:
        raise PeerUnavailable(PEER_ERROR) from None
    import spikingjelly.activation_based as ab
    return ab


def spikingjelly_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("spikingjelly")
    except PackageNotFoundError:
        return "unknown"


def check_expressible(snn) -> None:
    """Raise PeerUnavailable unless every neuron is a binary IF neuron without negative events."""
    from spikedet.snn import Neuron

    for name, m in snn.named_modules():
        if isinstance(m, Neuron):
            if m.multi_events or m.negative_events:
                kind = "leaky" if m.negative_slope is not None else m.kind
                raise PeerUnavailable(
                    f"{name}: {kind} neurons have no SpikingJelly counterpart; the peer comparison needs binary "
                    "spikes without leaky units (convert with spikes='binary', leaky='relu')")


def _is_seq(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 5


def build_peer(snn, pool: str = "shared") -> nn.Module:
    """A SpikingJelly network computing what `snn` computes (see the module docstring)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    ab = require_spikingjelly()
    check_expressible(snn)
    return _make_classes(ab)["PeerNetwork"](snn, pool)


_CLASSES = {}


def _make_classes(ab):
    """The peer's modules, defined once SpikingJelly is importable (they subclass its MemoryModule)."""
    if _CLASSES:
        return _CLASSES
    from spikedet.routing import routed_input, run_routed
    from spikedet.snn import ConcatChannels, Integrator, PerStep, SpikeMaxPool, SpikingConv
    from spikedet.snn.heads import DecodingHead, SpikingDetect
    from spikedet.snn.neurons import reset_net as spikedet_reset

    functional, layer, neuron, base = ab.functional, ab.layer, ab.neuron, ab.base

    class Stateless(nn.Module):
        """A stateless op: once on a constant current (B, C, H, W), else on every step (SeqToANNContainer)."""

        def __init__(self, op: nn.Module):
            super().__init__()
            self.seq = layer.SeqToANNContainer(op)

        def forward(self, x):
            return self.seq[0](x) if not _is_seq(x) else self.seq(x)

    class IFLayer(nn.Module):
        """conv -> IFNode (soft reset, multi-step); a constant current is expanded to T steps."""

        def __init__(self, conv: nn.Conv2d, v_init: float, owner):
            super().__init__()
            self.conv = Stateless(conv)
            self.node = neuron.IFNode(v_threshold=1.0, v_reset=None, step_mode="m")
            self.v_init, self.owner = float(v_init), [owner]  # owner: not a submodule

        def forward(self, x):
            current = self.conv(x)
            if not _is_seq(current):
                current = current.unsqueeze(0).expand(self.owner[0].T, *current.shape)
            return self.node(current)

    class SumOverTime(nn.Module):
        """An integrator: the conv's current summed over all T steps (the head decodes sum / T)."""

        def __init__(self, conv: nn.Conv2d, owner):
            super().__init__()
            self.conv = Stateless(conv)
            self.owner = [owner]

        def forward(self, x):
            current = self.conv(x)
            return current.sum(0) if _is_seq(current) else current * self.owner[0].T

    class SharedPool(base.MemoryModule):
        """spikedet's count-gated SpikeMaxPool on SpikingJelly's (T, B, C, H, W) tensors, reset by reset_net."""

        def __init__(self, pool):
            super().__init__()
            self.pool = [copy.deepcopy(pool)]  # not a submodule: reset here, not by reset_net's own walk

        def forward(self, x):
            pool = self.pool[0]
            if not _is_seq(x):
                return F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding)
            return pool(x)

        def reset(self):
            super().reset()
            spikedet_reset(self.pool[0])

    class PlainPool(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.pool = layer.MaxPool2d(pool.kernel_size, pool.stride, pool.padding, step_mode="m")

        def forward(self, x):
            if not _is_seq(x):
                return F.max_pool2d(x, self.pool.kernel_size, self.pool.stride, self.pool.padding)
            return self.pool(x)

    class Concat(nn.Module):
        def forward(self, xs):
            if not any(_is_seq(x) for x in xs):
                return torch.cat(xs, 1)
            steps = next(x.shape[0] for x in xs if _is_seq(x))
            return torch.cat([x if _is_seq(x) else x.unsqueeze(0).expand(steps, *x.shape) for x in xs], 2)

    class PeerNetwork(nn.Module):
        """forward(images, T) -> decoded predictions (B, 4 + nc, anchors) after T steps."""

        def __init__(self, snn, pool: str):
            super().__init__()
            self.T, self.pool_kind = 1, pool
            self.sources, self.saved, self.head_sources = list(snn.sources), list(snn.saved), list(snn.head_sources)
            self.layers = nn.ModuleList([self._convert(m) for m in snn.layers])
            head = snn.head
            if isinstance(head, SpikingDetect):
                self.box = nn.ModuleList([self._convert(b) for b in head.box_branches])
                self.cls = nn.ModuleList([self._convert(c) for c in head.cls_branches])
            elif isinstance(head, DecodingHead):
                self.box = self.cls = None
            else:
                raise PeerUnavailable(f"no SpikingJelly peer for the head {type(head).__name__}")
            self.decoder = [head]  # spikedet's decoding (boxes from mean currents); not a submodule
            self.v_inits = [m.v_init for m in self.modules() if isinstance(m, IFLayer)]

        def _convert(self, m: nn.Module) -> nn.Module:
            if isinstance(m, SpikingConv):
                if m.neuron.reset_mode != "subtract":
                    raise PeerUnavailable("the peer uses soft reset (reset by subtraction) only")
                return IFLayer(copy.deepcopy(m.conv), m.neuron.v_init, self)
            if isinstance(m, Integrator):
                return SumOverTime(copy.deepcopy(m.conv), self)
            if isinstance(m, SpikeMaxPool):
                return SharedPool(m) if self.pool_kind == "shared" else PlainPool(m)
            if isinstance(m, PerStep):
                return Stateless(copy.deepcopy(m.op))
            if isinstance(m, ConcatChannels):
                return Concat()
            if isinstance(m, nn.Sequential):
                return nn.Sequential(*[self._convert(part) for part in m])
            raise PeerUnavailable(f"no SpikingJelly peer for the layer {type(m).__name__}")

        def reset_state(self):
            """functional.reset_net, then the membranes preset to v_init (IFNode resets them to 0)."""
            functional.reset_net(self)
            for m in self.modules():
                if isinstance(m, IFLayer):
                    m.node.v = m.v_init

        @torch.no_grad()
        def forward(self, images: torch.Tensor, timesteps: int) -> torch.Tensor:
            self.T = int(timesteps)
            self.reset_state()
            x, saved = run_routed(images, self.layers, self.sources, self.saved)
            feats = routed_input(x, self.head_sources, saved)
            if self.box is not None:
                sums = [b(f) for b, f in zip(self.box, feats)] + [c(f) for c, f in zip(self.cls, feats)]
            else:
                sums = feats
            out = self.decoder[0].decode([s / self.T for s in sums])
            self.reset_state()  # free the membranes
            return out

    _CLASSES.update(PeerNetwork=PeerNetwork)
    return _CLASSES


def head_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        epilog="A module, not a command: run it through `python tools/benchmark_snn.py --peer spikingjelly ...` "
               "(see docs/speed.md).").parse_args()
    print("tools/spikingjelly_peer.py is used by tools/benchmark_snn.py --peer spikingjelly; see --help")
