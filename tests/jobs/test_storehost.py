"""The store host: a real helper process that imports torch and holds the ranks' TCPStore."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

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
    host.close_store()
    assert host.port is None and not host.failed
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


def test_a_restarted_gang_rendezvouses_through_the_store_host() -> None:
    # The failure comes ~4 s after the first collective: the helper, importing torch since the
    # launch, is up by then (1.3 s here on its own), so generation 1 must use it; generation 0
    # always uses rank 0's store.
    from tests.jobs.helpers import GANG, cli, name, status

    job = name("store")
    r = cli("--log-level", "info", "job", "run", "--name", job, "--nproc", "3", "--max-restarts", "1",
            "--backoff", "0", *GANG, "--steps", "250", "--step-ms", "20", "--fail-rank", "1",
            "--fail-step", "200", "--fail-code", "3")
    assert r.returncode == 0, r.stderr
    starts = [json.loads(line) for line in r.stderr.splitlines()
              if line.startswith("{") and '"gang_started"' in line]
    assert [(e["restart"], e["store"]) for e in starts] == [(0, "rank 0"), (1, "store host")], r.stderr
    assert "gangcheck: 3 ranks, 250 steps, restart 1: ok" in r.stdout
    assert status(job)[0]["status"] == "succeeded"
    assert not _storehosts(), "the store host outlived its job"


def _storehosts() -> list[int]:
    """Live store-host processes (the jobs tests run one job at a time)."""
    out = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            if b"aios_host.supervisor.storehost" in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            continue  # exited meanwhile
    return out
