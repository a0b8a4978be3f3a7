"""What the probes' maps hold at one instant: cumulative counters per cgroup id (ProbeSample).

Maps are never cleared by a read (clearing races with the kernel's increments); the model turns two
samples into rates and interval histograms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from aios_host.probes.structs import HIST_SLOTS

EMPTY_HIST: tuple[int, ...] = (0,) * HIST_SLOTS


@dataclass(frozen=True)
class CgroupCounters:
    """Cumulative since the probes were attached (or since the cgroup first appeared in a map)."""

    oncpu_ns: int = 0
    switches: int = 0
    preempt: int = 0
    runq_hist: tuple[int, ...] = EMPTY_HIST  # log2 usec slots
    faults: int = 0
    direct_reclaim_ns: int = 0
    direct_reclaim_count: int = 0
    memcg_reclaim_ns: int = 0
    memcg_reclaim_count: int = 0
    blk_hist: tuple[int, ...] = EMPTY_HIST  # log2 usec slots
    oom_kills: int = 0


@dataclass(frozen=True)
class ProbeSample:
    t_ns: int  # CLOCK_MONOTONIC when the maps were read
    cgroups: Mapping[int, CgroupCounters] = field(default_factory=dict)
    drops: Mapping[str, int] = field(default_factory=dict)  # "probe.kind" -> count, kernel side
    lost_events: int = 0  # perf-buffer lost callback total (ring buffer drops are in `drops`)
    attach: str = ""  # "raw" | "tracepoint"

    def counters(self, cgroup_id: int) -> CgroupCounters:
        return self.cgroups.get(cgroup_id, CgroupCounters())


class SampleBuilder:
    """Accumulates map rows into CgroupCounters (used by the loader; pure)."""

    def __init__(self) -> None:
        self._fields: dict[int, dict[str, object]] = {}

    def _row(self, cgroup_id: int) -> dict[str, object]:
        return self._fields.setdefault(cgroup_id, {})

    def add(self, cgroup_id: int, **values: int) -> None:
        row = self._row(cgroup_id)
        for k, v in values.items():
            row[k] = int(row.get(k, 0)) + int(v)  # type: ignore[arg-type]

    def add_hist(self, cgroup_id: int, name: str, slot: int, count: int) -> None:
        row = self._row(cgroup_id)
        hist = list(row.get(name, EMPTY_HIST))  # type: ignore[arg-type]
        slot = min(max(int(slot), 0), HIST_SLOTS - 1)
        hist[slot] += int(count)
        row[name] = tuple(hist)

    def add_hist_counts(self, cgroup_id: int, name: str, counts: Sequence[int]) -> None:
        """A whole histogram (HIST_SLOTS counts, slot 0 first) at once: the sched map holds one
        per cgroup, and adding it slot by slot copied the histogram once per slot."""
        if len(counts) != HIST_SLOTS:
            raise ValueError(f"{name}: {len(counts)} slots, not {HIST_SLOTS}")
        row = self._row(cgroup_id)
        old = row.get(name)
        new = tuple(map(int, counts))
        row[name] = new if old is None else tuple(map(sum, zip(old, new, strict=True)))  # type: ignore[arg-type]

    def build(self) -> dict[int, CgroupCounters]:
        return {cg: replace(CgroupCounters(), **row) for cg, row in self._fields.items()}  # type: ignore[arg-type]
