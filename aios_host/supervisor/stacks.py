"""Stacks of a hung rank, before it is killed: py-spy where installed, else SIGUSR1, which
aios_host.supervisor.health wires to faulthandler in every rank that imported it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from aios_host.log import get_logger

log = get_logger("aios_host.supervisor.stacks")


def py_spy() -> str | None:
    """py-spy on PATH, or next to this interpreter (a venv's bin/ is often not on PATH)."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def dump_stacks(pid: int, timeout_s: float = 20.0) -> tuple[str, str]:
    """(method, text): py-spy's dump of `pid`, or ("sigusr1", note) after asking the rank to
    print its own stacks to its log."""
    tool = py_spy()
    if tool:
        try:
            out = subprocess.run([tool, "dump", "--pid", str(pid)], capture_output=True, text=True,
                                 timeout=timeout_s, check=False)
            if out.returncode == 0 and out.stdout.strip():
                return "py-spy", out.stdout
            log.warning("py_spy_failed", pid=pid, rc=out.returncode, stderr=out.stderr.strip()[-300:])
        except subprocess.TimeoutExpired:
            log.warning("py_spy_timeout", pid=pid)
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return "none", "process gone"
    return "sigusr1", "faulthandler stacks requested with SIGUSR1 (see the rank's log)"


COLLECTIVE_MARKERS = ("torch/distributed", "distributed_c10d", "ProcessGroup")


def suspects(dumps: dict[int, str]) -> list[int]:
    """Ranks that look stuck in their own code while the others wait in a collective: when some
    stacks are inside torch.distributed and some are not, the latter are the suspects."""
    inside = {r for r, text in dumps.items() if any(m in text for m in COLLECTIVE_MARKERS)}
    outside = sorted(set(dumps) - inside)
    return outside if inside and outside else []
