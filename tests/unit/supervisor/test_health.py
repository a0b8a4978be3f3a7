"""The runtime helper sends one datagram per step to the socket named in AIOS_HEALTH_SOCKET."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from aios_host.supervisor.monitor import Report

SCRIPT = """
import time
from aios_host.supervisor import health
assert health.enabled()
health.step()
with health.compute():
    time.sleep(0.01)
health.step()
health.step(compute_s=0.5)
health.heartbeat()
"""


def test_step_reports(tmp_path: Path) -> None:
    path = tmp_path / "h.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    env = {**os.environ, "AIOS_HEALTH_SOCKET": str(path), "RANK": "5", "AIOS_RESTART": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, timeout=60)
    s.settimeout(5)
    reps = [Report.decode(s.recv(256)) for _ in range(4)]
    s.close()
    assert [(r.rank, r.restart, r.step) for r in reps] == [(5, 2, 0), (5, 2, 1), (5, 2, 2), (5, 2, 2)]
    assert reps[0].step_s == 0.0 and reps[1].compute_s is not None and reps[1].compute_s >= 0.01
    assert reps[2].compute_s == 0.5 and reps[3].step_s == 0.0


def test_no_socket_is_a_no_op() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIOS_HEALTH_SOCKET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])
    out = subprocess.run([sys.executable, "-c", "from aios_host.supervisor import health\n"
                          "assert not health.enabled()\nprint(health.step(), health.step())"],
                         env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["0", "1"]
