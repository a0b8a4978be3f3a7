"""tests/jobs: real jobs on this host with the own-cgroup supervisor: gloo over loopback, cgroup v2
leaves of our own, network namespaces as hosts. Every test here is marked `root` and skips (with
the reason) without root, torch, a cgroup2 mount with cgroup.kill, or (netns tests) iproute2."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (cgroup writes, /run/aios-host)"
    if importlib.util.find_spec("torch") is None:
        return "needs torch (pip install torch==2.13.0)"
    try:
        from aios_host.kernel.cgroup import CgroupFs
        from aios_host.kernel.root import SysRoot

        fs = CgroupFs(SysRoot("/"))
        if not fs.cgroup("").children() and not Path(fs.mount, "cgroup.procs").exists():
            return f"no usable cgroup2 at {fs.mount}"
        # The root cgroup never has cgroup.kill, and a fresh host may have no child to look at:
        # make a throw-away one.
        probe = Path(fs.mount) / f"aios-killprobe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        try:
            has_kill = (probe / "cgroup.kill").exists()
        finally:
            probe.rmdir()
        if not has_kill:
            return "no cgroup.kill (kernel < 5.14)"
    except Exception as exc:  # noqa: BLE001 - any reason not to run is a skip reason
        return f"no cgroup v2: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    for item in items:
        if _HERE not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.root)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
        elif "netns" in item.keywords and not (shutil.which("ip") and shutil.which("nsenter")):
            item.add_marker(pytest.mark.skip(reason="needs iproute2 (ip) and util-linux (nsenter)"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: builds hosts out of network namespaces")
