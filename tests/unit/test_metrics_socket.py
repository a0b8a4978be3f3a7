"""Metrics on a socket systemd passed (socket activation): what systemd/aios-host.socket does, here
with systemd-socket-activate (systemd's own tool for it), against the real `aios-host daemon`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from aios_host import metrics

REPO = Path(__file__).resolve().parents[2]
POLICY = str(REPO / "policies" / "default.toml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_serve_socket_serves_a_socket_bound_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """... and makes no socket of its own: under the unit's RestrictAddressFamilies=AF_UNIX an
    AF_INET socket() fails with EAFNOSUPPORT (the service did not start once for it)."""
    import socketserver

    def no_socket(*_a: object, **_k: object) -> None:
        raise OSError(97, "Address family not supported by protocol")

    reg = CollectorRegistry()
    Gauge("aios_test_value", "a test gauge", registry=reg).set(7)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    port = s.getsockname()[1]
    monkeypatch.setattr(socketserver.socket, "socket", no_socket)
    server, thread = metrics.serve_socket(reg, s)
    monkeypatch.undo()
    try:
        assert "aios_test_value 7.0" in _get(port)
    finally:
        metrics.stop(server, thread)
    assert not thread.is_alive()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
def test_daemon_takes_the_metrics_socket_systemd_passed() -> None:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="aios-sa-") as d:
        # --metrics-port 0 would turn the daemon's own listener off: the passed socket still serves
        argv = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=metrics",
                sys.executable, "-m", "aios_host", "--log-level", "info", "daemon", "--policy", POLICY,
                "--no-probes", "--dry-run", "--metrics-port", "0", "--socket", f"{d}/api.sock"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            # systemd-socket-activate starts the daemon on the first connection, as Accept=no does
            text = _get(port, 60)
            assert "aios_daemon_ticks_total" in text, text[:2000]
        finally:
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=30)
    assert "metrics_socket_activated" in err, err
    assert "Traceback" not in err, err
