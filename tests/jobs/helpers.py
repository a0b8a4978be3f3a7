from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "aios_host.cli.job"]
GANG = ["--", "-m", "aios_host.workloads.gangcheck"]


def name(prefix: str) -> str:
    return f"t-{prefix}-{uuid.uuid4().hex[:6]}"


def cli(*args: str, timeout: float = 300, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*CLI, *args]
    if netns:
        # nsenter --net only: `ip netns exec` would also remount /sys and hide the cgroup2 mount
        cmd = ["nsenter", f"--net=/run/netns/{netns}", *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO, env=env)


def popen(*args: str, netns: str | None = None) -> subprocess.Popen[str]:
    cmd = [*CLI, *args]
    if netns:
        cmd = ["nsenter", f"--net=/run/netns/{netns}", *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def status(job: str) -> list[dict[str, Any]]:
    r = cli("job", "status", job, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["instances"]


def alive(pid: int) -> bool:
    """Running (zombies waiting for PID 1 to reap them are gone for our purpose)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def cgroup_gone(st: dict[str, Any]) -> bool:
    return not Path(st["cgroup_mount"], st["cgroup"]).exists()


def wait_for(pred: Any, timeout: float = 120.0, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return False


def pids_in(d: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in d.glob("*.pid")}


def start_forever(job: str, nproc: int, pids_dir: Path, step_ms: int) -> None:
    """`job run --detach` of a gang that steps until stopped; returns once every rank is up."""
    r = cli("job", "run", "--name", job, "--nproc", str(nproc), "--detach", *GANG, "--forever",
            "--step-ms", str(step_ms), "--pids", str(pids_dir))
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: len(pids_in(pids_dir)) == nproc)
