"""The daemon with its real probes on this host's kernel: the probe overhead it exports.

kernel.bpf_stats_enabled is the admin's to turn on (the service cannot: no CAP_SYS_ADMIN, /proc/sys
read-only); while it is 1 the daemon exports aios_probe_cpu_seconds_total, and while it is 0 the
metric is absent rather than a counter that never moves."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import generate_latest

from aios_host import metrics
from aios_host.daemon.loop import Daemon, DaemonOptions
from aios_host.kernel.root import SysRoot
from aios_host.probes.stats import bpf_stats_enabled

POLICY = """description = "probe overhead"
[[class]]
name = "all"
match.cgroup = "*"
"""


def _run_ticks(d: Daemon, n: int) -> None:
    for _ in range(n):
        d.tick()
        time.sleep(0.3)


def test_probe_cpu_seconds_follow_bpf_stats_enabled(tmp_path: Path) -> None:
    pol = tmp_path / "p.toml"
    pol.write_text(POLICY)
    d = Daemon(DaemonOptions(str(pol), interval_s=0.25, dry_run=True, probes=True))
    d.start()
    try:
        assert d.wait_probes(120), "the probes did not attach"
        with bpf_stats_enabled(SysRoot("/")) as old:
            _run_ticks(d, 8)
            on = d.view.probe_cpu_seconds_total
            text = generate_latest(metrics.make_registry(lambda: d.view)).decode()
        assert on is not None and on > 0, on
        assert "aios_probe_cpu_seconds_total " in text
        if old != "1":
            _run_ticks(d, 8)
            assert d.view.probe_cpu_seconds_total is None
    finally:
        d.shutdown()
