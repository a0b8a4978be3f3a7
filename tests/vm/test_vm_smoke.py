"""Smoke checks of the VM itself: the environment tests/vm relies on is really there.

Each test reads the live system (procfs, cgroupfs, journald, systemd); nothing is faked.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def test_pid1_is_systemd() -> None:
    assert Path("/proc/1/comm").read_text().strip() == "systemd"
    assert os.path.basename(os.readlink("/proc/1/exe")) == "systemd"


def test_cgroup2_mounted_with_controllers() -> None:
    # mountinfo fields: ... mount-point(5th) ... " - " fstype source options
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        mounts[pre.split()[4]] = post.split()[0]
    assert mounts.get(str(CGROUP_ROOT)) == "cgroup2", mounts.get(str(CGROUP_ROOT))
    controllers = set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
    assert {"cpu", "memory", "io", "cpuset"} <= controllers, controllers


def test_psi_enabled() -> None:
    # Debian kernels ship PSI off by default; the VM boots with psi=1.
    assert Path("/proc/pressure/cpu").read_text().startswith("some ")


def test_bcc_imports_and_headers_match_running_kernel() -> None:
    import bcc  # noqa: F401  (python3-bpfcc, via the venv's system site-packages)

    release = os.uname().release
    build = Path("/lib/modules") / release / "build"
    assert build.is_dir(), f"{build} missing: no headers for the running kernel"
    utsrelease = (build / "include/generated/utsrelease.h").read_text()
    assert f'"{release}"' in utsrelease, utsrelease


@pytest.mark.bpf
def test_bcc_tracepoint_program_loads_and_counts() -> None:
    from bcc import BPF

    prog = BPF(
        text=b"""
        BPF_ARRAY(count, u64, 1);
        TRACEPOINT_PROBE(sched, sched_process_exec) {
            int zero = 0;
            count.increment(zero);
            return 0;
        }
        """
    )
    try:
        for _ in range(3):
            assert _run("/bin/true").returncode == 0
        counted = prog[b"count"][0].value
    finally:
        prog.cleanup()
    assert counted >= 3, counted


def test_journal_send_is_found_by_journalctl() -> None:
    from systemd import journal

    token = uuid.uuid4().hex
    journal.send("aios-host vm smoke", AIOS_SMOKE_ID=token)
    # journald stores the message asynchronously: poll briefly.
    deadline = time.monotonic() + 20
    entries: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        out = _run("journalctl", f"AIOS_SMOKE_ID={token}", "-o", "json", "--no-pager")
        assert out.returncode == 0, out.stderr
        entries = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if entries:
            break
        time.sleep(0.5)
    assert len(entries) == 1, entries
    assert entries[0]["MESSAGE"] == "aios-host vm smoke"
    assert entries[0]["AIOS_SMOKE_ID"] == token


def test_systemd_run_with_cpu_quota() -> None:
    out = _run("systemd-run", "--wait", "--quiet", "-p", "CPUQuota=50%", "true")
    assert out.returncode == 0, out.stderr


def test_systemd_run_cpu_quota_reaches_cgroup() -> None:
    # The transient unit's own cgroup carries the quota systemd was asked for.
    script = 'cat "/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/cpu.max"'
    out = _run(
        "systemd-run", "--wait", "--quiet", "--pipe", "-p", "CPUQuota=50%", "/bin/sh", "-c", script
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["50000", "100000"], out.stdout
