"""Shared test fixtures."""
import socket

import pytest

from spikedet.cli import main
from spikedet.data.shapes import make_shapes_dataset


@pytest.fixture
def no_network(monkeypatch):
    """Record, refuse and finally fail on any attempt to reach the network (DNS lookups included).

    Attempts are recorded as well as refused, because ultralytics swallows the errors of its own probes.
    """
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[0] if args else kwargs)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny shapes dataset and a one-epoch dual-error network (L = 4) trained on it through the CLI."""
    root = tmp_path_factory.mktemp("pipeline")
    data = make_shapes_dataset(root / "shapes", imgsz=64, counts={"train": 8, "val": 4, "test": 4}, seed=2,
                               progress=False)
    assert main(["train", "--data", str(data["yolo"]), "--scale", "n", "--epochs", "1", "--imgsz", "64",
                 "--batch", "4", "--workers", "0", "--project", str(root), "--name", "run", "--levels", "4",
                 "--plots", "false"]) == 0
    return data, root / "run" / "weights" / "best.pt", root
