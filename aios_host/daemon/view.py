"""DaemonView: what the daemon knows after its latest tick, as one immutable value.

The loop builds a new DaemonView at the end of every tick and swaps it in with one assignment; the
API, the metrics collector and `aios-host status` only ever read the latest one. Nothing here
calls into the loop, so a slow scrape or a slow API client cannot stall it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from aios_host.energy.telemetry import EnergySample

_NONE: Mapping[str, float] = MappingProxyType({})

# Upper bounds (seconds) of the loop-duration histogram: a tick is ~ms; a stall is seconds.
TICK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ClassView(NamedTuple):
    """One policy class as measured and decided in the latest tick (absolute units). A NamedTuple:
    the loop makes one per class every tick, and a frozen dataclass's __init__ costs 4x a tuple's."""

    name: str
    tier: int
    weight: float
    cgroups: tuple[str, ...]  # cgroup paths relative to the cgroup2 mount, "/a/b"
    owned: bool  # a class cgroup aios-host created (else matched existing cgroups / units)
    populated: bool = False  # a process is in one of its cgroups (cgroup.events populated)
    # measured (cgroupfs, PSI; probes where loaded)
    cpu_usage_seconds_total: float | None = None  # cpu.stat usage_usec / 1e6, summed over cgroups
    cpu_usage_cores: float | None = None  # rate over the last tick
    memory_current_bytes: int | None = None
    cpu_some_avg10: float | None = None  # PSI, percent
    memory_some_avg10: float | None = None
    io_some_avg10: float | None = None
    runq_p99_seconds: float | None = None  # eBPF sched probe; None without probes
    faults_total: int | None = None  # eBPF faults probe, cumulative since the probes attached
    reclaim_seconds_total: float | None = None  # direct + memcg reclaim stall time
    oom_kills_total: int | None = None
    # decided
    demand: Mapping[str, float] = _NONE  # what the solver was given: cpu cores
    allocation: Mapping[str, float] = _NONE  # what it allocated: cpu cores
    # memory guard
    memory_guard: str = "ok"  # "ok" | "tighten" | "freeze" | "kill": the last escalation step taken
    seconds_to_oom: float | None = None  # at the present growth; None: not growing (or not owned)
    # the guarded class cgroup's memory.events, cumulative as the kernel counts them (its subtree's
    # events too, since 5.2); None: not guarded, or no such file or key on this kernel
    memory_events_high_total: int | None = None
    memory_events_max_total: int | None = None
    memory_events_oom_total: int | None = None
    memory_events_oom_kill_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "demand": dict(self.demand), "allocation": dict(self.allocation)}


@dataclass(frozen=True)
class SourceHealth:
    """A slow source run off the loop (probe maps; energy: RAPL, NVML, cpufreq)."""

    name: str
    ok: bool  # the last sample arrived within its deadline
    age_seconds: float | None  # age of the sample the loop used; None: no sample yet
    skips_total: int = 0  # ticks that used a stale sample or none
    last_error: str | None = None


@dataclass(frozen=True)
class DaemonView:
    version: str
    pid: int
    started_unix: float
    policy_path: str
    policy_description: str
    mode: str  # "active" | "observe-only" | "dry-run"
    mode_reason: str  # why not active ("" when active)
    interval_seconds: float
    ticks_total: int = 0
    last_tick_unix: float | None = None
    last_tick_seconds: float | None = None  # how long the last tick took
    # cumulative counts per bucket of TICK_BUCKETS_S (+Inf last), and their sum, for a histogram
    tick_bucket_counts: tuple[int, ...] = (0,) * (len(TICK_BUCKETS_S) + 1)
    tick_seconds_sum: float = 0.0
    last_decision_unix: float | None = None  # last tick whose plan wrote something (or would)
    last_writes: tuple[dict[str, Any], ...] = ()  # the Writes of that decision, as dicts
    writes_total: int = 0  # kernel/D-Bus writes made since start
    writes_failed_total: int = 0
    writes_pending: int = 0  # wanted, but held by hysteresis (hold ticks / cool-down)
    writes_unavailable: int = 0  # wanted, but this host cannot take them (missing controller)
    drift: tuple[dict[str, str], ...] = ()  # {"path", "applied", "now"}: kernel differs from our write
    classes: tuple[ClassView, ...] = ()
    bindings: tuple[dict[str, Any], ...] = ()  # binding constraints with their shadow prices
    sources: tuple[SourceHealth, ...] = ()
    probes_attached: tuple[str, ...] = ()
    probe_cpu_seconds_total: float | None = None  # kernel BPF run time of our programs
    host_cpu_some_avg10: float | None = None
    host_memory_some_avg10: float | None = None
    host_io_some_avg10: float | None = None
    host_cpus: int = 0
    host_memory_bytes: int = 0
    capacity_cpu_cores: float = 0.0
    capacity_memory_bytes: float = 0.0
    memory_guard: str = "off"  # "off" | "senpai only (escalation off)" | "watching" | "danger: WHY"
    host_available_bytes: float | None = None  # MemAvailable + SwapFree
    host_seconds_to_oom: float | None = None
    last_error: str | None = None  # the last tick's failure, if it failed
    energy: EnergySample | None = None  # the energy source's latest sample (GPUs, RAPL, cpufreq); None: none
    energy_auto: tuple[dict[str, Any], ...] = ()  # the `auto` GPU power searches: running, waiting, ended

    def verdict(self) -> str:
        """"active", or "degraded" (observe-only, a stale source, a failing tick, drift)."""
        if self.mode != "active" or self.last_error or self.drift:
            return "degraded"
        if any(not s.ok for s in self.sources):
            return "degraded"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # a NamedTuple inside comes out as a plain tuple: give classes as dicts
        d["classes"] = [c.to_dict() for c in self.classes]
        d["verdict"] = self.verdict()
        return d
