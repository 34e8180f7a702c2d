"""Shared test fixtures."""
import socket

import pytest


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
