"""Runtime helper for training scripts run by aios-host (stdlib only, cheap to import).

    from aios_host.supervisor import health

    for batch in loader:
        with health.compute():          # optional: time your own work, not the collective wait
            loss = model(batch).sum(); loss.backward()
        opt.step()
        health.step()                   # progress: one datagram to the supervisor

step() sends one datagram (rank, restart, step number, seconds since the previous step, compute
seconds) to the unix socket the supervisor names in AIOS_HEALTH_SOCKET: non-blocking, about a
microsecond or two, and dropped rather than ever blocking the training loop. Outside aios-host
(no AIOS_HEALTH_SOCKET) every call is a no-op, so the same script runs under torchrun.

On import under aios-host, SIGUSR1 is wired to faulthandler: when no py-spy is installed, the
supervisor sends SIGUSR1 to a hung rank and its Python stacks land in the rank's log.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator

from aios_host.supervisor.monitor import Report

_SOCKET_PATH = os.environ.get("AIOS_HEALTH_SOCKET")
_RANK = int(os.environ.get("RANK", "0") or 0)
_RESTART = int(os.environ.get("AIOS_RESTART", "0") or 0)
_sock: socket.socket | None = None
_step = -1
_last: float | None = None
_compute: float = 0.0
_computed = False


def _connect() -> socket.socket | None:
    global _sock
    if _sock is None and _SOCKET_PATH:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            s.setblocking(False)
            s.connect(_SOCKET_PATH)
            _sock = s
        except OSError:
            return None
    return _sock


def enabled() -> bool:
    return bool(_SOCKET_PATH)


def step(compute_s: float | None = None) -> int:
    """Mark one step of progress. Returns the step number (0 for the first call)."""
    global _step, _last, _compute, _computed
    now = time.monotonic()
    _step += 1
    dt = 0.0 if _last is None else now - _last
    _last = now
    if compute_s is None and _computed:
        compute_s = _compute
    _compute, _computed = 0.0, False
    s = _connect()
    if s is not None:
        try:
            s.send(Report(_RANK, _RESTART, _step, dt, compute_s).encode())
        except OSError:
            pass  # supervisor busy (EAGAIN) or gone: never stall training for a heartbeat
    return _step


def heartbeat() -> None:
    """Alive without a step (long evaluation, checkpoint): resets the hang timer only."""
    s = _connect()
    if s is not None:
        try:
            s.send(Report(_RANK, _RESTART, max(_step, 0), 0.0, None).encode())
        except OSError:
            pass


@contextlib.contextmanager
def compute() -> Iterator[None]:
    """Time a region as this rank's own work; summed until the next step()."""
    global _compute, _computed
    t0 = time.monotonic()
    try:
        yield
    finally:
        _compute += time.monotonic() - t0
        _computed = True


if _SOCKET_PATH and hasattr(signal, "SIGUSR1"):
    with contextlib.suppress(ValueError, RuntimeError):  # not the main thread, or no stderr
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
