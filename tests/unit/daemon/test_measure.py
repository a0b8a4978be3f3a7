"""CgroupReader: what it reads when. cgroup.events is re-read only when inotify says it changed;
the slower files on their cadence."""

from __future__ import annotations

import errno
from collections import Counter

import pytest

from aios_host.daemon.measure import CgroupReader
from aios_host.errors import KernelError
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.policy.targets import ClassTarget
from tests.unit.fixtures import fake_v2_host, put

CG = "/sys/fs/cgroup"


@pytest.fixture
def reader(tmp_path):
    root = SysRoot(str(fake_v2_host(tmp_path)))
    for i in range(4):
        put(tmp_path, f"{CG}/c{i}/cpu.stat", f"usage_usec {i}\n")
        put(tmp_path, f"{CG}/c{i}/cgroup.events", "populated 1\nfrozen 0\n")
        put(tmp_path, f"{CG}/c{i}/cpu.pressure", "some avg10=1.00 avg60=0.00 avg300=0.00 total=1\n")
    r = CgroupReader(CgroupFs(root))
    reads: Counter[str] = Counter()
    inner = r.held.read_host_path
    removed: set[str] = set()  # cgroups removed: their held files read ENODEV, as on kernfs

    def counted(path: str) -> str | None:
        reads[path.rsplit("/", 1)[1]] += 1
        reads["/".join(path.rsplit("/", 2)[1:])] += 1  # "c0/cpu.stat"
        if path.rsplit("/", 2)[1] in removed:
            raise KernelError.from_oserror("read", path, OSError(errno.ENODEV, "No such device"))
        return inner(path)

    r.removed = removed  # type: ignore[attr-defined]

    r.held.read_host_path = counted  # type: ignore[method-assign]
    yield r, reads, tmp_path
    r.close()


TARGETS = {f"c{i}": ClassTarget(f"c{i}", (f"c{i}",), True) for i in range(4)}


def test_a_steady_host_reads_cgroup_events_once_and_a_change_at_the_next_tick(reader):
    r, reads, root = reader
    first = r.read(TARGETS)
    assert all(c.populated for c in first.values()) and reads["cgroup.events"] == 4
    for k in range(1, 11):
        for i in (0, 1):  # c0 and c1 busy; c2 and c3 sleep
            put(root, f"{CG}/c{i}/cpu.stat", f"usage_usec {i + 1000 * k}\n")
        got = r.read(TARGETS)
        assert got["c0"].cpu_usage_usec == 1000 * k and got["c0"].cpu_fresh
    assert reads["cgroup.events"] == 4  # watched: not re-read while nothing changes
    assert reads["c0/cpu.stat"] == reads["c1/cpu.stat"] == 11  # the demand's signal: every tick
    # idle (usage unchanged between two reads): every 2nd tick, its usage carried in between
    assert reads["c2/cpu.stat"] in (6, 7) and reads["c3/cpu.stat"] in (6, 7)
    assert reads["cpu.pressure"] == 4 + 4 * 5  # every 2nd tick, spread over the cgroups
    put(root, f"{CG}/c2/cgroup.events", "populated 0\nfrozen 0\n")  # its last process left
    now = r.read(TARGETS)
    assert reads["cgroup.events"] == 5 and not now["c2"].populated and now["c1"].populated


def test_an_idle_cgroup_that_wakes_is_read_within_two_ticks_at_its_true_rate(reader):
    from aios_host.daemon.smoothing import UsageSmoother

    r, reads, root = reader
    sm = UsageSmoother(half_life_s=0.0)  # no smoothing: the rate itself
    one = {"c3": TARGETS["c3"]}
    for t in range(4):  # asleep at usage 3
        sm.update(r.read(one), None, float(t))
    rates = []
    for t in range(4, 9):  # awake: 2 cores from t = 4 on
        put(root, f"{CG}/c3/cpu.stat", f"usage_usec {3 + 2_000_000 * (t - 3)}\n")
        rates.append(sm.update(r.read(one), None, float(t))["c3"].cpu_cores)
    assert rates[1] == pytest.approx(2.0) and rates[-1] == pytest.approx(2.0)  # never 4: a carried
    assert rates[0] in (0.0, pytest.approx(2.0))  # tick does not fold two seconds into one


def test_without_inotify_cgroup_events_is_read_on_the_psi_cadence(reader, monkeypatch):
    r, reads, root = reader
    monkeypatch.setattr(r.events, "watch", lambda key, path: False)  # as past max_user_watches
    r.read(TARGETS)
    for _ in range(10):
        r.read(TARGETS)
    assert reads["cgroup.events"] == 4 + 4 * 5
    put(root, f"{CG}/c2/cgroup.events", "populated 0\nfrozen 0\n")
    r.read(TARGETS)
    now = r.read(TARGETS)  # within psi_every ticks
    assert not now["c2"].populated


def test_a_removed_cgroup_is_dropped_and_found_again(reader):
    r, reads, root = reader
    r.read(TARGETS)
    r.removed.add("c3")
    gone = r.read(TARGETS)
    assert not gone["c3"].populated and gone["c3"].cpu_usage_usec is None
    assert not r.events.watched("c3")
    r.removed.clear()  # made again
    put(root, f"{CG}/c3/cpu.stat", "usage_usec 7\n")
    put(root, f"{CG}/c3/cgroup.events", "populated 1\nfrozen 0\n")
    back = r.read(TARGETS)
    assert back["c3"].populated and back["c3"].cpu_usage_usec == 7 and r.events.watched("c3")


def test_probe_counters_are_summed_over_each_class_subtree_once():
    from aios_host.daemon.measure import class_probe_figures
    from aios_host.probes.sample import CgroupCounters, ProbeSample

    paths = {1: "/", 2: "/aios", 3: "/aios/web", 4: "/aios/web/a", 5: "/aios/batch", 6: "/aiosx", 7: "/other"}
    before = ProbeSample(0, {i: CgroupCounters(faults=i, memcg_reclaim_ns=0) for i in paths})
    after = ProbeSample(2_000_000_000, {i: CgroupCounters(faults=10 * i, memcg_reclaim_ns=1_000_000 * i)
                                        for i in paths})
    targets = {
        "web": ClassTarget("web", ("aios/web",), True),
        "nested": ClassTarget("nested", ("aios", "aios/web"), True),  # web lies under aios: once
        "batch": ClassTarget("batch", ("aios/batch",), True),
        "none": ClassTarget("none", ("aios/gone",), True),
    }
    got = class_probe_figures(before, after, paths, targets)
    assert got["web"].faults_total == 30 + 40
    assert got["nested"].faults_total == 20 + 30 + 40 + 50  # not /aiosx: a prefix is not a parent
    assert got["batch"].faults_total == 50 and got["batch"].reclaim_ms_per_s == pytest.approx(2.5)  # 5 ms over 2 s
    assert got["none"].faults_total == 0 and got["none"].reclaim_ns_total == 0
