"""The store host: a real helper process that imports torch and holds the ranks' TCPStore."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

import pytest

from aios_host.supervisor.storehost import StoreHost


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host():
    h = StoreHost.spawn(dict(os.environ))
    assert h is not None
    deadline = time.monotonic() + 120
    while not h.ready():
        assert not h.failed and time.monotonic() < deadline, "store host never came up"
        time.sleep(0.05)
    yield h
    h.stop()


def test_store_listens_before_any_client_then_frees_the_port(host: StoreHost) -> None:
    from torch.distributed import TCPStore

    port = _free_port()
    assert host.open(port, 2)
    client = TCPStore("127.0.0.1", port, 2, False, timedelta(seconds=10))
    client.set("k", "v")
    assert client.get("k") == b"v"
    del client
    assert host.close_store()
    with socket.socket() as s:  # closed: the port can be bound again (the next generation's)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", port))
    port2 = _free_port()
    assert host.open(port2, 2)  # a fresh store per generation: the old keys are gone
    assert TCPStore("127.0.0.1", port2, 2, False, timedelta(seconds=10)).check(["k"]) is False


def test_a_port_it_cannot_take_fails_the_host_and_the_gang_falls_back(host: StoreHost) -> None:
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        assert host.open(s.getsockname()[1], 2) is False
    assert host.failed
    assert host.open(_free_port(), 2) is False  # once failed, never used again


def test_stop_ends_the_helper() -> None:
    h = StoreHost.spawn(dict(os.environ))
    assert h is not None
    pid = h.pid
    h.stop()
    assert not os.path.exists(f"/proc/{pid}")
