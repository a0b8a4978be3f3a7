"""Give the daemon's threads names the kernel shows (`top -H`, `ps -L`, /proc/PID/task/TID/comm).

Python before 3.14 names threads for itself only; every thread of the daemon is "aios-host" to the
kernel, so nobody can tell whether the loop, the probes' map reads or the API is using the CPU.
prctl(PR_SET_NAME) names the calling thread (15 bytes at most, as the kernel keeps them).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

PR_SET_NAME = 15
TASK_COMM_LEN = 16  # including the NUL

_libc: Any = None


def set_name(name: str) -> bool:
    """Name the calling thread; False where prctl is not there (the name is only a diagnosis)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's prctl
        return _libc.prctl(PR_SET_NAME, name.encode()[:TASK_COMM_LEN - 1], 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def name_thread(native_id: int, name: str) -> bool:
    """Name another thread of this process (one a library started): /proc/self/task/TID/comm,
    which the kernel lets a process write for its own threads."""
    try:
        with open(f"/proc/self/task/{native_id}/comm", "w") as f:
            f.write(name[:TASK_COMM_LEN - 1])
        return True
    except OSError:
        return False


def named(name: str, target: Callable[..., Any]) -> Callable[..., Any]:
    """target, run under the kernel-visible name `name` (for threading.Thread(target=...))."""
    def run(*args: Any, **kwargs: Any) -> Any:
        set_name(name)
        return target(*args, **kwargs)
    return run
