"""HostSnapshot: per-cgroup metrics over one interval, from two probe samples merged with cgroupfs.

build_snapshot() is pure: probe samples (cumulative, by cgroup id), the id -> path map, and
cgroupfs samples (aios_host.kernel.cgroup.sample) at both ends of the interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aios_host.kernel.cgroup import CgroupSample
from aios_host.model.hist import hist_count, hist_delta, percentile, rate
from aios_host.probes.sample import CgroupCounters, ProbeSample


@dataclass(frozen=True)
class CgroupMetrics:
    path: str
    id: int
    # probes (rates over the interval)
    runq_count: int = 0
    runq_p50_usec: float | None = None
    runq_p99_usec: float | None = None
    runq_hist: tuple[int, ...] = ()  # the interval's log2 usec histogram
    oncpu_cores: float = 0.0  # CPU time per second of wall time
    switches_per_s: float = 0.0
    preemptions_per_s: float = 0.0
    faults_per_s: float = 0.0
    direct_reclaim_ms_per_s: float = 0.0
    memcg_reclaim_ms_per_s: float = 0.0
    oom_kills: int = 0
    blk_ios: int = 0
    blk_p50_usec: float | None = None
    blk_p99_usec: float | None = None
    # cgroupfs
    nr_procs: int | None = None
    cpu_usage_cores: float | None = None  # cpu.stat usage_usec rate
    memory_current_bytes: int | None = None
    cpu_some_avg10: float | None = None
    memory_some_avg10: float | None = None
    io_some_avg10: float | None = None

    @property
    def reclaim_ms_per_s(self) -> float:
        return self.direct_reclaim_ms_per_s + self.memcg_reclaim_ms_per_s

    @property
    def active(self) -> bool:
        """Anything measured by a probe in the interval."""
        return bool(self.runq_count or self.oncpu_cores or self.faults_per_s or self.blk_ios
                    or self.oom_kills or self.reclaim_ms_per_s)


@dataclass(frozen=True)
class HostSnapshot:
    t_ns: int  # end of the interval, CLOCK_MONOTONIC
    interval_s: float
    attach: str
    cgroups: tuple[CgroupMetrics, ...]
    lost_events: int = 0
    drops: Mapping[str, int] | None = None


def interval_metrics(
    before: CgroupCounters, after: CgroupCounters, interval_s: float
) -> dict[str, object]:
    """Pure: the probe half of CgroupMetrics for one cgroup."""
    runq = hist_delta(before.runq_hist, after.runq_hist)
    blk = hist_delta(before.blk_hist, after.blk_hist)
    return {
        "runq_count": hist_count(runq),
        "runq_p50_usec": percentile(runq, 0.50),
        "runq_p99_usec": percentile(runq, 0.99),
        "runq_hist": runq,
        "oncpu_cores": rate(after.oncpu_ns - before.oncpu_ns, interval_s) / 1e9,
        "switches_per_s": rate(after.switches - before.switches, interval_s),
        "preemptions_per_s": rate(after.preempt - before.preempt, interval_s),
        "faults_per_s": rate(after.faults - before.faults, interval_s),
        "direct_reclaim_ms_per_s": rate(after.direct_reclaim_ns - before.direct_reclaim_ns, interval_s) / 1e6,
        "memcg_reclaim_ms_per_s": rate(after.memcg_reclaim_ns - before.memcg_reclaim_ns, interval_s) / 1e6,
        "oom_kills": max(0, after.oom_kills - before.oom_kills),
        "blk_ios": hist_count(blk),
        "blk_p50_usec": percentile(blk, 0.50),
        "blk_p99_usec": percentile(blk, 0.99),
    }


def build_snapshot(
    before: ProbeSample,
    after: ProbeSample,
    paths: Mapping[int, str],
    cgroups_before: Mapping[str, CgroupSample] | None = None,
    cgroups_after: Mapping[str, CgroupSample] | None = None,
    only: Iterable[int] | None = None,
) -> HostSnapshot:
    """Merge two probe samples and two cgroupfs samples into one HostSnapshot.

    Cgroups: every id in `paths` (live cgroups, plus 0 for "unknown"), restricted to `only` when
    given. cgroupfs samples are keyed by path ("/a/b"); their CPU usage becomes a rate.
    """
    interval_s = (after.t_ns - before.t_ns) / 1e9
    if interval_s <= 0:
        raise ValueError("the second sample must be later than the first")
    wanted = set(paths) if only is None else set(only) & set(paths)
    cb, ca = cgroups_before or {}, cgroups_after or {}
    out = []
    for cg_id in sorted(wanted, key=lambda i: paths[i]):
        path = paths[cg_id]
        m = interval_metrics(before.counters(cg_id), after.counters(cg_id), interval_s)
        s0, s1 = cb.get(path), ca.get(path)
        if s1 is not None:
            usage = None
            if s0 is not None and s0.cpu_usage_usec is not None and s1.cpu_usage_usec is not None:
                usage = rate(s1.cpu_usage_usec - s0.cpu_usage_usec, interval_s) / 1e6
            m.update(
                nr_procs=s1.nr_procs,
                cpu_usage_cores=usage,
                memory_current_bytes=s1.memory_current_bytes,
                cpu_some_avg10=s1.cpu_some_avg10,
                memory_some_avg10=s1.memory_some_avg10,
                io_some_avg10=s1.io_some_avg10,
            )
        out.append(CgroupMetrics(path=path, id=cg_id, **m))  # type: ignore[arg-type]
    return HostSnapshot(
        t_ns=after.t_ns,
        interval_s=interval_s,
        attach=after.attach,
        cgroups=tuple(out),
        lost_events=after.lost_events - before.lost_events,
        drops=dict(after.drops),
    )
