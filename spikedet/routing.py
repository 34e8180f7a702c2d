"""ultralytics' layer routing, written once for the darknet model, the converter and the spiking engine.

A layer reads the previous layer's output (`f == -1`), one saved earlier output (`f == j`) or a list of
them (`f == [j, k, ...]`, -1 meaning the previous output); outputs of layers named in `save` are kept.
"""
from typing import Callable, Iterable, List, Sequence, Union

Source = Union[int, Sequence[int]]


def routed_input(previous, f: Source, saved: List):
    """What a layer with source `f` reads, given the previous output and the saved outputs so far."""
    if f == -1:
        return previous
    if isinstance(f, int):
        return saved[f]
    return [previous if j == -1 else saved[j] for j in f]


def run_routed(x, layers: Iterable, sources: Iterable[Source], save: Iterable[int],
               call: Callable = None):
    """Feed x through routed layers; returns (last output, list of saved outputs by layer index).

    call(layer, input) runs one layer (default: layer(input)); the converter passes scales through it.
    """
    keep, saved = set(save), []
    for i, (layer, f) in enumerate(zip(layers, sources)):
        x = routed_input(x, f, saved)
        x = call(layer, x) if call else layer(x)
        saved.append(x if i in keep else None)
    return x, saved
