"""Export of a converted network to neuromorphic toolchains: NIR 1.0 (the `nir` package, extra [nir]).

export_nir writes the graph (nir_graph.py) and a sidecar JSON with what NIR has no field for: the class
names, strides, image size, the T it was made for, how to feed it and how to read its outputs. What NIR
cannot express is refused in one line before anything is written (support.py).
"""
from pathlib import Path
from typing import Union

from ..errors import SpikedetError, fail
from ..fileio import atomic_write_json
from .nir_graph import THRESHOLD, build_graph
from .support import nir_problems, refusal, substitutions

SIDECAR_FORMAT = "spikedet-nir"


def sidecar_path(output: Union[str, Path]) -> Path:
    """X.nir -> X.nir.json."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def export_nir(snn, output: Union[str, Path], allow_approximations: bool = False) -> dict:
    """Write a SpikingNetwork as a NIR graph at `output` and its sidecar; returns the sidecar's content.

    allow_approximations: burst events, reset by subtraction and v_init > 0 are written as NIR's IF neuron
    (one event per step, reset to zero) with v_init / T added to the biases, and listed in the sidecar."""
    problems = nir_problems(snn)
    refused = refusal(problems, allow_approximations)
    if refused:
        raise SpikedetError(refused)
    try:
        import nir
    except ImportError:
        raise SpikedetError("NIR export needs the nir package: pip install 'spikedet[nir]'") from None
    meta, options = snn.meta, snn.meta.get("options", {})
    timesteps, imgsz = meta.get("timesteps"), meta.get("imgsz")
    if not imgsz:
        raise SpikedetError("the SNN file does not record its image size: convert it again with --imgsz")
    changed = substitutions(problems)
    offset = 0.0
    if any(p.kind == "v_init > 0" for p in problems):
        if not timesteps:
            raise SpikedetError("v_init > 0 is approximated through T, which the SNN does not record: convert "
                                "with --timesteps")
        offset = float(options.get("v_init", 0.0)) / timesteps
    output = Path(output)
    for path in (output, sidecar_path(output)):
        if path.exists():
            raise fail(path, "already exists: give another name, or remove it first")
    graph, outputs = build_graph(snn, imgsz, offset)
    temporary = output.with_name(f".{output.name}.partial")
    try:
        nir.write(str(temporary), graph)
        temporary.replace(output)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise fail(output, f"cannot write the NIR graph ({e.strerror or e})") from None
    info = sidecar(snn, output, outputs, changed)
    atomic_write_json(sidecar_path(output), info)
    return info


def sidecar(snn, output: Path, outputs: dict, changed: list) -> dict:
    meta = snn.meta
    return {
        "format": SIDECAR_FORMAT, "graph": output.name, "nir_version": _nir_version(),
        "names": {str(k): v for k, v in snn.names.items()}, "stride": meta.get("stride"),
        "imgsz": meta.get("imgsz"), "timesteps": meta.get("timesteps"), "resize": meta.get("resize", "letterbox"),
        "input": "RGB image scaled to [0, 1], (3, imgsz, imgsz), fed as the same current at every step",
        "neurons": f"IF, unit events, v_threshold = {float(THRESHOLD)!r} (fires at v >= 1), reset to 0, "
                   "membrane starting at 0; weights batch-norm folded and channel-wise normalized",
        "outputs": {name: f"potential of the I node {node}; divided by the steps run, it is the mean output "
                          "current spikedet's Detect decoder takes (box: DFL logits, cls: class logits)"
                    for name, node in outputs.items()},
        "reg_max": int(getattr(snn.head.decoder, "reg_max", 16)),
        "substitutions": changed, "source": meta.get("source"), "conversion": meta.get("options"),
    }


def _nir_version() -> str:
    from importlib.metadata import version

    return version("nir")


__all__ = ["export_nir", "nir_problems", "refusal", "sidecar_path"]
