"""Port reservation: a bound socket plus a lock file per port under <root>/run/aios-host/ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.supervisor.ports import reserve_port


def test_reservations_are_distinct_and_held(tmp_path: Path) -> None:
    root = SysRoot(tmp_path)
    held = [reserve_port(root, f"job{i}") for i in range(20)]
    ports = [r.port for r in held]
    assert len(set(ports)) == 20
    # while held, nobody can bind the port
    s = socket.socket()
    with pytest.raises(OSError):
        s.bind(("0.0.0.0", ports[0]))
    s.close()
    assert (tmp_path / "run/aios-host/ports" / f"{ports[0]}.lock").read_text().startswith("job0 pid=")
    for r in held:
        r.release()
    assert not list((tmp_path / "run/aios-host/ports").iterdir())


def test_after_handoff_the_port_is_free_to_bind_but_locked_for_other_jobs(tmp_path: Path) -> None:
    root = SysRoot(tmp_path)
    r = reserve_port(root, "a")
    port = r.handoff()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))  # what rank 0's TCPStore does
    s.listen()
    with pytest.raises(AiosError, match="reserved by another aios-host job|in use"):
        reserve_port(root, "b", port=port)
    s.close()
    with pytest.raises(AiosError, match="reserved by another aios-host job"):
        reserve_port(root, "b", port=port)
    assert r.rebind()  # the owner gets it back for a restart
    r.release()
    again = reserve_port(root, "b", port=port)
    assert again.port == port
    again.release()


def test_a_stale_lock_file_is_taken_over(tmp_path: Path) -> None:
    root = SysRoot(tmp_path)
    r = reserve_port(root, "a")
    port = r.handoff()
    lock = r.lock_path
    import os

    os.close(r._lock_fd)  # the supervisor died: its flock is gone, its file is not
    r._lock_fd = None
    assert lock.exists()
    again = reserve_port(root, "b", port=port)
    assert again.port == port and "b pid=" in lock.read_text()
    again.release()


def test_reserving_a_port_in_use_fails_with_one_line(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    with pytest.raises(AiosError, match=f"port {s.getsockname()[1]} is in use"):
        reserve_port(SysRoot(tmp_path), "x", port=s.getsockname()[1])
    s.close()
