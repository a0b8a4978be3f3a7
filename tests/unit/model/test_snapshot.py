import pytest

from aios_host.kernel.cgroup import CgroupSample
from aios_host.model import build_snapshot
from aios_host.probes.sample import EMPTY_HIST, CgroupCounters, ProbeSample


def h(**slots):
    out = list(EMPTY_HIST)
    for k, v in slots.items():
        out[int(k[1:])] = v
    return tuple(out)


def cg_sample(path, usage_usec, psi=None):
    return CgroupSample(path=path, id=0, nr_procs=3, controllers=(), subtree_control=(),
                        cpu_usage_usec=usage_usec, memory_current_bytes=None,
                        cpu_some_avg10=psi, memory_some_avg10=None, io_some_avg10=None)


def test_rates_percentiles_and_cgroupfs_merge():
    s0 = ProbeSample(t_ns=1_000_000_000, cgroups={
        10: CgroupCounters(oncpu_ns=1_000_000_000, preempt=100, runq_hist=h(s3=50), faults=10),
    }, attach="tracepoint")
    s1 = ProbeSample(t_ns=3_000_000_000, cgroups={
        10: CgroupCounters(oncpu_ns=4_000_000_000, preempt=1100, runq_hist=h(s3=50, s14=100), faults=2010,
                           direct_reclaim_ns=40_000_000, memcg_reclaim_ns=20_000_000, oom_kills=1,
                           blk_hist=h(s9=10)),
        11: CgroupCounters(runq_hist=h(s2=4)),
    }, attach="tracepoint", lost_events=2, drops={"proc.event": 2})
    snap = build_snapshot(
        s0, s1, {10: "/hog", 11: "/idle", 12: "/empty"},
        {"/hog": cg_sample("/hog", 1_000_000)}, {"/hog": cg_sample("/hog", 4_000_000, psi=42.0)},
    )
    assert snap.interval_s == 2.0 and snap.attach == "tracepoint" and snap.lost_events == 2
    by_path = {c.path: c for c in snap.cgroups}
    hog = by_path["/hog"]
    assert hog.runq_count == 100 and 8192 <= hog.runq_p50_usec < 16384 and 8192 <= hog.runq_p99_usec < 16384
    assert hog.oncpu_cores == pytest.approx(1.5) and hog.preemptions_per_s == 500
    assert hog.faults_per_s == 1000
    assert hog.direct_reclaim_ms_per_s == pytest.approx(20.0) and hog.reclaim_ms_per_s == pytest.approx(30.0)
    assert hog.oom_kills == 1 and hog.blk_ios == 10 and 256 <= hog.blk_p99_usec < 512
    assert hog.cpu_usage_cores == pytest.approx(1.5) and hog.cpu_some_avg10 == 42.0 and hog.nr_procs == 3
    idle = next(c for c in snap.cgroups if c.id == 11)
    assert idle.runq_count == 4 and idle.runq_p99_usec < 4 and idle.active
    empty = by_path["/empty"]
    assert not empty.active and empty.runq_p99_usec is None and empty.cpu_usage_cores is None
    assert [c.path for c in snap.cgroups] == ["/empty", "/hog", "/idle"]


def test_only_and_interval_checks():
    s0, s1 = ProbeSample(t_ns=1), ProbeSample(t_ns=2)
    snap = build_snapshot(s0, s1, {1: "/", 2: "/a"}, only=[2, 3])
    assert [c.path for c in snap.cgroups] == ["/a"]
    with pytest.raises(ValueError):
        build_snapshot(s1, s0, {})
