"""sources.py: the fast parsers against cgroup_format's, the local reader on a fake kernel root, and
the collector with the daemon's real API handler over a real socket."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from aios_host import api
from aios_host.daemon.service import make_handler
from aios_host.daemon.view import ClassView, DaemonView
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.root import SysRoot
from aios_host.tui.sources import (
    Collector,
    JournalTail,
    LocalReader,
    cpu_max_cores,
    keyed_meminfo,
    keyed_value,
    limit_bytes,
    psi_avg10,
)
from tests.unit.fixtures import FIXTURES, HYBRID, VM, fake_cgroup, fake_v2_host, load, put

CAPTURED = [(o, f.name) for o in (VM, HYBRID) for f in sorted((FIXTURES / o / "cgroup").iterdir())]


PSI_FILES = ("cpu.pressure", "memory.pressure", "io.pressure")


@pytest.mark.parametrize(("origin", "name"), [c for c in CAPTURED if c[1] in PSI_FILES])
def test_psi_avg10_agrees_with_parse_pressure(origin, name):
    text = load(origin, f"cgroup/{name}")
    want = fmt.parse_pressure(text)
    got = psi_avg10(text)
    assert got.some_percent == want.some.avg10
    assert got.full_percent == (want.full.avg10 if want.full else None)


def test_psi_avg10_reads_nonzero_values():
    got = psi_avg10("some avg10=12.50 avg60=3.00 avg300=1.00 total=5\nfull avg10=0.25 avg60=0 avg300=0 total=1\n")
    assert (got.some_percent, got.full_percent) == (12.5, 0.25)
    assert psi_avg10(None).some_percent is None and psi_avg10("").full_percent is None


@pytest.mark.parametrize(("origin", "name"), [c for c in CAPTURED if c[1] in ("cpu.stat", "memory.events",
                                                                                   "memory.stat")])
def test_keyed_value_agrees_with_parse_flat_keyed(origin, name):
    text = load(origin, f"cgroup/{name}")
    parsed = fmt.parse_flat_keyed(text)
    for key in [*parsed, "no_such_key"]:
        assert keyed_value(text, key) == parsed.get(key), key


def test_keyed_value_does_not_take_a_longer_key_for_a_shorter_one():
    text = "pgfault_extra 9\npgfault 7\n"
    assert keyed_value(text, "pgfault") == 7
    assert keyed_value("oom_kill 3", "oom_kill") == 3  # no newline at the end


def test_limits_and_meminfo():
    assert limit_bytes("max\n") is None and limit_bytes(None) is None and limit_bytes("1048576\n") == 1 << 20
    assert cpu_max_cores("max 100000\n") is None and cpu_max_cores("250000 100000\n") == 2.5
    mem = load(VM, "proc/meminfo")
    assert keyed_meminfo(mem, "MemTotal") == fmt_meminfo(mem)["MemTotal"]
    assert keyed_meminfo(mem, "NoSuchLine") is None


def fmt_meminfo(text):
    from aios_host.kernel.procfs import parse_meminfo

    return parse_meminfo(text)


# -- a fake kernel root ------------------------------------------------------------------------------


def fake_tree(root: Path) -> Path:
    fake_v2_host(root, cpus=4)
    put(root, "/proc/meminfo", "MemTotal:       8388608 kB\nMemAvailable:   6291456 kB\n")
    put(root, "/proc/stat", "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\n"
                            "cpu1 1 0 0 0 0 0 0 0 0 0\n")
    fake_cgroup(root, "/sys/fs/cgroup/web.slice", VM, {
        "memory.high": "1073741824\n", "memory.max": "max\n", "cpu.max": "200000 100000\n",
        "cgroup.procs": "10\n11\n12\n", "cpu.stat": "usage_usec 1000000\nuser_usec 1\nsystem_usec 1\n",
        "memory.events": "low 0\nhigh 4\nmax 0\noom 1\noom_kill 1\noom_group_kill 0\n"})
    fake_cgroup(root, "/sys/fs/cgroup/web.slice/app", VM, {"cgroup.procs": "13\n"})
    return count_descendants(root)


def count_descendants(root: Path) -> Path:
    """cgroup.stat's nr_descendants as the kernel keeps it (the captured file says 0, a leaf's):
    the reader lists only the directories of cgroups that have descendants."""
    base = root / "sys/fs/cgroup"
    for d in [base, *(p for p in base.rglob("*") if p.is_dir())]:
        n = sum(1 for p in d.rglob("*") if p.is_dir())
        (d / "cgroup.stat").write_text(f"nr_descendants {n}\nnr_dying_descendants 0\n")
    return root


def test_local_reader_reads_the_tree_in_preorder(tmp_path):
    reader = LocalReader(SysRoot(fake_tree(tmp_path)))
    tree = reader.read_tree()
    assert [r.path for r in tree] == ["/", "/web.slice", "/web.slice/app"]
    web = tree[1]
    assert web.nr_procs == 3 and web.cpu_usage_usec == 1_000_000 and web.cpu_max_cores == 2.0
    assert web.memory_high_bytes == 1 << 30 and web.memory_max_bytes is None and web.oom_kills_total == 1
    assert web.memory_faults_total == fmt.parse_flat_keyed(load(VM, "cgroup/memory.stat"))["pgfault"]
    host = reader.read_host()
    assert (host.cpu_count, host.cpu_busy_ticks, host.cpu_total_ticks) == (2, 200, 1000)
    assert host.memory_available_bytes == 6 << 30
    reader.close()


@pytest.mark.parametrize("fd_budget", [0, 5, 10_000])
def test_the_reader_gives_the_same_with_or_without_held_files(tmp_path, fd_budget):
    root = SysRoot(fake_tree(tmp_path))
    want = LocalReader(root, fd_budget=10_000).read_tree()
    reader = LocalReader(root, fd_budget=fd_budget)
    for _ in range(2):  # the second pass reads through the held fds
        assert reader.read_tree() == want
    reader.close()


def test_a_removed_cgroup_is_dropped_and_its_files_let_go(tmp_path):
    root = fake_tree(tmp_path)
    reader = LocalReader(SysRoot(root))
    reader.read_tree()
    held = reader.held_files
    import shutil

    shutil.rmtree(root / "sys/fs/cgroup/web.slice/app")
    count_descendants(root)
    assert [r.path for r in reader.read_tree()] == ["/", "/web.slice"]
    assert reader.held_files < held
    reader.close()


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_collector_local_rates_over_the_interval(tmp_path):
    root = fake_tree(tmp_path)
    mono = Clock()
    c = Collector(SysRoot(root), None, 1.0, clock=lambda: 1_700_000_000.0, monotonic=mono)
    first = c.collect()
    assert first.source == "local" and first.daemon_note == "not asked (--local)"
    assert all(r.cpu_usage_cores is None for r in first.rows)
    put(root, "/sys/fs/cgroup/web.slice/cpu.stat", "usage_usec 4000000\n")
    put(root, "/proc/stat", "cpu  300 0 100 900 100 0 0 0 0 0\n")
    mono.t += 2.0
    m = c.collect()
    web = next(r for r in m.rows if r.path == "/web.slice")
    assert web.cpu_usage_cores == pytest.approx(1.5)  # 3 s of CPU in 2 s
    assert m.host.cpu_usage_percent == pytest.approx(50.0)  # 200 busy of 400 ticks
    assert m.history["cpu_usage_percent"] == (50.0,)
    c.close()


# -- the daemon, through its real API handler ----------------------------------------------------------


def daemon_view() -> DaemonView:
    classes = (ClassView("web", 10, 1.0, ("/web.slice",), True, 1, 12.0, 0.75, 900 << 20, 1.5, 0.0, 0.0,
                         0.004, 1000, 0.5, 0, {"cpu": 1.0}, {"cpu": 0.8}),
               # the loop gives every class its demand and allocation dicts, empty when undecided
               ClassView("gone", 0, 1.0, ("/gone.slice",), True, demand={}, allocation={}))
    return DaemonView(version="t", pid=4242, started_unix=1.0, policy_path="p.toml", policy_description="test",
                      mode="active", mode_reason="", interval_seconds=1.0, ticks_total=9, last_decision_unix=5.0,
                      last_writes=({"op": "write", "path": "/sys/fs/cgroup/web.slice/cpu.weight", "old": "100",
                                    "new": "80", "reason": "cpu: 0.8 cores", "controller": "cpu",
                                    "available": True},),
                      classes=classes,
                      bindings=({"kind": "capacity", "resource": "cpu", "cls": None, "tier": 10, "dual": 1.25,
                                 "to": ("web",)},))


@pytest.fixture
def daemon_socket(tmp_path):
    stub = SimpleNamespace(view=daemon_view(), request=lambda req: {"ok": False, "error": "read-only test"})
    sock = str(tmp_path / "api.sock")
    srv = api.ApiServer(sock, make_handler(stub, SysRoot(tmp_path / "jobs-root"))).start()
    yield sock
    srv.stop()


def test_collector_with_a_daemon(tmp_path, daemon_socket):
    root = fake_tree(tmp_path / "root")
    c = Collector(SysRoot(root), daemon_socket, 1.0, clock=lambda: 9.0, monotonic=Clock())
    m = c.collect()
    assert m.source == "daemon" and m.daemon is not None and m.daemon.pid == 4242
    assert m.daemon.last_writes_count == 1 and m.daemon.policy_description == "test"
    assert [r.key for r in m.rows] == ["class:web", "class:web:/web.slice", "class:gone", "class:gone:/gone.slice"]
    web = m.rows[0]
    assert web.cpu_allocation_cores == 0.8 and web.cpu_usage_cores == 0.75
    assert web.memory_high_bytes == 1 << 30 and web.cpu_max_cores == 2.0  # read locally
    assert web.runq_p99_seconds == 0.004
    assert m.decision is not None and m.decision.bindings[0].shadow_price == 1.25
    assert m.decision.writes[0].reason == "cpu: 0.8 cores"
    c.close()


def test_collector_falls_back_to_local_when_the_daemon_is_not_running(tmp_path):
    root = fake_tree(tmp_path)
    c = Collector(SysRoot(root), str(tmp_path / "none.sock"), 1.0)
    m = c.collect()
    assert m.source == "local" and m.daemon is None and "not running" in m.daemon_note
    assert [r.path for r in m.rows] == ["/", "/web.slice", "/web.slice/app"]
    c.close()


# -- journald --------------------------------------------------------------------------------------------


def test_journal_tail_is_reread_only_every_few_seconds(tmp_path):
    script = tmp_path / "journalctl"
    count = tmp_path / "count"
    script.write_text(f"#!{sys.executable}\nimport pathlib\np = pathlib.Path({str(count)!r})\n"
                      "p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1')\n"
                      "print('{\"__REALTIME_TIMESTAMP\": \"1000000\", \"MESSAGE\": \"daemon_ready\"}')\n")
    script.chmod(0o755)
    mono = Clock()
    tail = JournalTail(every_s=5.0, monotonic=mono)
    tail.argv[0] = str(script)
    assert [e.message for e in tail.read()] == ["daemon_ready"]
    mono.t += 1.0
    tail.read()
    assert count.read_text() == "1"
    mono.t += 5.0
    tail.read()
    assert count.read_text() == "2"


def test_journal_tail_without_journalctl_is_silent(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    tail = JournalTail()
    assert not tail.enabled and tail.read() == ()


def test_a_failing_journalctl_keeps_the_tail_empty(tmp_path):
    script = tmp_path / "journalctl"
    script.write_text("#!/bin/sh\necho 'No journal files were found.' >&2\nexit 1\n")
    script.chmod(0o755)
    tail = JournalTail()
    tail.argv[0] = str(script)
    assert tail.read() == ()
    assert os.access(script, os.X_OK)


def test_the_walk_lists_only_cgroups_with_descendants(tmp_path, monkeypatch):
    root = fake_tree(tmp_path)
    listed = []
    real = os.scandir

    def scandir(path):
        listed.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert LocalReader(SysRoot(root)).walk() == ["/", "/web.slice", "/web.slice/app"]
    assert [p.rsplit("/", 1)[-1] for p in listed] == ["cgroup", "web.slice"]  # not the leaf
