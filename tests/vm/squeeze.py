"""The memory squeeze's parts, shared by tests/vm/test_memguard_vm.py and tests/bench/bench_memguard.py:
the workloads (by comm: the interpreter run through a symlink of that name), the guard's policy, and
readers of what happened (the protected workload's rate, the guard's journald events)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

# Holds 300 MiB and keeps touching it, appending "MONOTONIC_S ROUNDS" lines to argv[1].
PROT = r"""
import sys, time
blob = bytearray(300 << 20)
rounds, out = 0, sys.argv[1]
while True:
    for i in range(0, len(blob), 4096 * 16):
        blob[i] = (blob[i] + 1) & 0xFF
    rounds += 1
    if rounds % 5 == 0:
        with open(out, "a") as f:
            f.write(f"{time.monotonic():.3f} {rounds}\n")
"""
# Grows by argv[1] MiB (default 32) every 0.1 s, after argv[2] s (default 0); argv[3], when given,
# is its oom_score_adj (1000: if the kernel acts after all, it takes this first).
HOG = r"""
import sys, time
step = int(sys.argv[1]) if len(sys.argv) > 1 else 32
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
if len(sys.argv) > 3:
    open("/proc/self/oom_score_adj", "w").write(sys.argv[3])
hold = []
while True:
    hold.append(bytearray(step << 20))  # bytearray zero-fills: every page is touched
    time.sleep(0.1)
"""
GUARD = """[host]
reserve_cores = 0
reserve_memory = 0
[memory_guard]
enabled = true
danger_available = "600M"
safe_available = "900M"
danger_seconds = 4
step_seconds = 2
thaw_seconds = 5
"""
PROT_CLASS = """[[class]]
name = "prot"
match.comm = "^memprot$"
priority = 10
memory.protect = true
memory.low = "400M"
"""


def senpai_policy(description: str, comm: str, auto: bool = True) -> str:
    """One class `cache` matched by comm, with senpai's loop sped up to fit a test (interval 1 s,
    max_probe 0.25, min 32M) and memory.high = "auto" unless told not to."""
    return (f'description = "{description}"\n[host]\nreserve_cores = 0\nreserve_memory = 0\n'
            '[memory_guard]\ninterval_seconds = 1\nmax_probe = 0.25\nmin_size = "32M"\n'
            f'[[class]]\nname = "cache"\nmatch.comm = "^{comm}$"\n' + ('memory.high = "auto"\n' if auto else ""))


def policy(description: str, batch_match: str = 'match.comm = "^memhog$"') -> str:
    """The guard on, memprot protected, the batch class (memhog by comm unless told) lowest."""
    return (f'description = "{description}"\n' + GUARD + PROT_CLASS
            + f'[[class]]\nname = "batch"\n{batch_match}\npriority = 0\n')


def exe(name: str, where: Path = Path("/tmp")) -> str:
    """The interpreter under the workload's name: execve of a symlink gives the process that comm,
    and Python follows the link to find its standard library."""
    dst = where / name
    if not dst.exists():
        os.symlink(os.path.realpath("/usr/bin/python3"), dst)
    return str(dst)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def rate(path: Path, t_from: float, t_to: float) -> float | None:
    """PROT's rounds per second between two monotonic times, from its file."""
    rows = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    pts = [(float(t), int(r)) for t, r in rows if t_from <= float(t) <= t_to]
    if len(pts) < 2:
        return None
    return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def guard_events(since: str) -> list[dict]:
    """The daemon's memory_guard journald events since a journalctl --since time."""
    out = subprocess.run(["journalctl", "-u", "aios-host", "AIOS_EVENT=memory_guard", "--since", since,
                          "-o", "json", "--no-pager"], capture_output=True, text=True, timeout=60).stdout
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def steps_of(events: list[dict]) -> list[tuple[str | None, str]]:
    """(step, class) of each event: CGROUP is the file written, the class its directory."""
    return [(e.get("STEP"), e.get("CGROUP", "").rsplit("/", 2)[-2]) for e in events]
