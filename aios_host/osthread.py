"""Give the daemon's threads names the kernel shows (`top -H`, `ps -L`, /proc/PID/task/TID/comm).

Python before 3.14 names threads for itself only; every thread of the daemon is "aios-host" to the
kernel, so nobody can tell whether the loop, the probes' map reads or the API is using the CPU.
A process may write the comm of any of its own threads (/proc/self/task/TID/comm, 15 bytes kept),
so one mechanism serves the threads we start and those a library starts for us.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

TASK_COMM_LEN = 16  # including the NUL


def name_thread(native_id: int, name: str) -> bool:
    """Name a thread of this process; False where it cannot be (the name is only a diagnosis)."""
    try:
        with open(f"/proc/self/task/{native_id}/comm", "w") as f:
            f.write(name[:TASK_COMM_LEN - 1])
        return True
    except OSError:
        return False


def set_name(name: str) -> bool:
    """Name the calling thread."""
    return name_thread(threading.get_native_id(), name)


def named(name: str, target: Callable[..., Any]) -> Callable[..., Any]:
    """target, run under the kernel-visible name `name` (for threading.Thread(target=...))."""
    def run(*args: Any, **kwargs: Any) -> Any:
        set_name(name)
        return target(*args, **kwargs)
    return run
