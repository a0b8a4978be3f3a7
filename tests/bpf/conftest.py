"""tests/bpf: the probes on this host's kernel with bcc. Every test is marked `bpf` and skipped,
with the reason, where they cannot run: not root, bcc missing, tracefs not mounted, no headers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (BPF programs, tracefs, cgroup writes)"
    try:
        import bcc  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - bcc without libbcc raises more than ImportError
        return f"bcc does not import ({exc}); apt-get install python3-bpfcc"
    from aios_host.kernel.root import SysRoot
    from aios_host.probes.loader import read_kernel_facts

    facts = read_kernel_facts(SysRoot("/"))
    if facts.tracefs is None:
        return "tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
    if facts.headers == "missing":
        return f"no kernel headers at /lib/modules/{facts.release}/build for bcc"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if _HERE in Path(i.path).resolve().parents]
    if not mine:
        return
    why = _why_not()
    for item in mine:
        item.add_marker(pytest.mark.bpf)
        if why:
            item.add_marker(pytest.mark.skip(reason=why))
