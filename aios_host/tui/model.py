"""The one model of `aios-host top`: plain dataclasses, built by pure functions from either source.

Two sources feed it (aios_host.tui.sources does their I/O):
- the daemon's API (`status`, `snapshot`, `plan`, `explain`, `jobs`): policy classes with their
  allocation, usage and probe counters, the last plan and its binding constraints;
- a local read-only snapshot of cgroupfs and PSI (no daemon needed): every cgroup with its usage,
  limits and pressure. With a daemon, the classes' cgroups are read locally as well, for the limits
  and the `full` PSI lines the API does not carry.

Units are in the names (`_cores`, `_bytes`, `_seconds`, `_percent`, `_per_second`, `_total`,
`_unix`); the --json document uses the same names. None means "this source does not measure it",
except for limits (`cpu_max_cores`, `memory_high_bytes`, `memory_max_bytes`), where None means "no
limit": the file says "max", or the cgroup lacks the controller, so nothing limits it there.

Rates (CPU cores, faults/s, reclaim) are differences of cumulative counters between two readings,
so the first model of a session has none: as top's first screen, it has nothing to divide by.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

SCHEMA = "aios-host-top/1"
HISTORY_LEN = 60  # samples kept for the header's sparklines: a minute at the default 1 s refresh

# -- raw readings: what sources.py reads, cumulative counters as the kernel keeps them ------------


@dataclass(frozen=True, slots=True)
class Psi:
    """One *.pressure file's avg10 lines, in percent. `full` is absent for cpu before 5.13."""

    some_percent: float | None = None
    full_percent: float | None = None


NO_PSI = Psi()


@dataclass(frozen=True, slots=True)
class CgroupReading:
    """One cgroup at one instant, as read from cgroupfs."""

    path: str  # "/a/b" relative to the cgroup2 mount; "/" is the root cgroup
    nr_procs: int | None = None
    cpu_usage_usec: int | None = None  # cpu.stat usage_usec, cumulative
    cpu_max_cores: float | None = None  # cpu.max quota / period; None: "max" or no cpu controller
    memory_current_bytes: int | None = None
    memory_high_bytes: int | None = None  # None: "max", or no memory controller
    memory_max_bytes: int | None = None
    memory_faults_total: int | None = None  # memory.stat pgfault, cumulative
    oom_kills_total: int | None = None  # memory.events oom_kill
    cpu: Psi = NO_PSI
    memory: Psi = NO_PSI
    io: Psi = NO_PSI


@dataclass(frozen=True, slots=True)
class HostReading:
    """The host as a whole at one instant: /proc/stat, /proc/meminfo, /proc/pressure/*."""

    cpu_count: int
    cpu_busy_ticks: int  # /proc/stat "cpu": every field but idle and iowait
    cpu_total_ticks: int
    memory_total_bytes: int
    memory_available_bytes: int | None
    cpu: Psi = NO_PSI
    memory: Psi = NO_PSI
    io: Psi = NO_PSI


# -- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostStats:
    cpu_count: int = 0
    cpu_usage_percent: float | None = None  # busy share of all CPUs over the last interval
    memory_total_bytes: int = 0
    memory_available_bytes: int | None = None
    cpu: Psi = NO_PSI
    memory: Psi = NO_PSI
    io: Psi = NO_PSI

    @property
    def memory_used_percent(self) -> float | None:
        if self.memory_available_bytes is None or self.memory_total_bytes <= 0:
            return None
        return 100.0 * (1.0 - self.memory_available_bytes / self.memory_total_bytes)


@dataclass(frozen=True, slots=True)
class GpuStats:
    index: int
    name: str
    utilization_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_watts: float | None = None
    temperature_celsius: float | None = None
    sm_clock_mhz: float | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the classes-and-cgroups table: a policy class (daemon) or a cgroup."""

    key: str  # stable across refreshes: the table's row key ("cgroup:/a/b", "class:web", "class:web:/a/b")
    kind: str  # "class" | "cgroup"
    name: str  # the last path component (a class: its name); tree view indents it
    path: str  # "/a/b"; a class: its name
    parent: str | None = None  # the parent row's key; None at the top
    nr_procs: int | None = None
    cpu_allocation_cores: float | None = None  # what the policy engine allocated (daemon only)
    cpu_usage_cores: float | None = None
    cpu_max_cores: float | None = None
    memory_current_bytes: int | None = None
    memory_high_bytes: int | None = None
    memory_max_bytes: int | None = None
    runq_p50_seconds: float | None = None
    runq_p99_seconds: float | None = None
    psi_cpu_some_percent: float | None = None
    psi_cpu_full_percent: float | None = None
    psi_memory_some_percent: float | None = None
    psi_memory_full_percent: float | None = None
    psi_io_some_percent: float | None = None
    psi_io_full_percent: float | None = None
    faults_per_second: float | None = None
    reclaim_seconds_per_second: float | None = None
    oom_kills_total: int | None = None
    # classes only
    tier: int | None = None
    weight: float | None = None
    cpu_demand_cores: float | None = None
    memory_guard: str | None = None
    seconds_to_oom: float | None = None


@dataclass(frozen=True, slots=True)
class StragglerView:
    rank: int
    step_seconds: float
    factor: float  # its step time / the other ranks' median
    restart: int


@dataclass(frozen=True, slots=True)
class RankView:
    rank: int
    status: str
    pid: int | None = None
    last_step: int | None = None
    step_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class JobView:
    key: str
    name: str
    status: str
    cls: str
    world_size: int
    nproc: int  # ranks on this host
    nnodes: int
    restarts: int
    max_restarts: int
    started_unix: float | None
    step_median_seconds: float | None  # over this host's ranks' last step times
    step_max_seconds: float | None
    stragglers_total: int
    stragglers: tuple[StragglerView, ...] = ()  # the last few, oldest first
    ranks: tuple[RankView, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteView:
    op: str
    path: str
    new: str
    reason: str
    available: bool = True  # False: this host lacks the controller, the write cannot be made


@dataclass(frozen=True, slots=True)
class BindingView:
    """A constraint that holds with equality at the optimum, and its shadow price (the LP's dual:
    objective gained per native unit of `resource` the constraint would give up)."""

    kind: str  # "capacity" | "min" | "max" | "demand"
    resource: str
    cls: str | None
    tier: int
    shadow_price: float
    to: tuple[str, ...] = ()  # capacity: the classes one more unit would go to


@dataclass(frozen=True, slots=True)
class Decision:
    last_decision_unix: float | None
    writes: tuple[WriteView, ...] = ()
    pending_writes: int = 0  # held by hysteresis
    unavailable_writes: int = 0
    drift_files: int = 0
    bindings: tuple[BindingView, ...] = ()


@dataclass(frozen=True, slots=True)
class DaemonState:
    verdict: str  # "active" | "degraded"
    mode: str
    mode_reason: str
    pid: int
    policy_path: str
    policy_description: str
    interval_seconds: float
    ticks_total: int
    last_tick_seconds: float | None
    last_decision_unix: float | None
    last_writes_count: int
    writes_total: int
    writes_failed_total: int
    memory_guard: str
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Event:
    time_unix: float
    priority: int  # syslog: 3 error, 4 warning, 6 info
    message: str


@dataclass(frozen=True)
class TopModel:
    time_unix: float
    interval_seconds: float
    source: str  # "daemon" | "local"
    host: HostStats
    rows: tuple[Row, ...] = ()  # tree pre-order: every parent before its children
    history: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    gpus: tuple[GpuStats, ...] = ()
    gpu_note: str = "no GPU"  # shown when there are none: why
    daemon: DaemonState | None = None
    daemon_note: str = ""  # why there is no daemon state ("not running ...")
    jobs: tuple[JobView, ...] = ()
    decision: Decision | None = None
    events: tuple[Event, ...] = ()


# -- host ------------------------------------------------------------------------------------------


def host_stats(prev: HostReading | None, cur: HostReading) -> HostStats:
    usage = None
    if prev is not None:
        total = cur.cpu_total_ticks - prev.cpu_total_ticks
        busy = cur.cpu_busy_ticks - prev.cpu_busy_ticks
        if total > 0:
            usage = min(100.0, max(0.0, 100.0 * busy / total))
    return HostStats(cur.cpu_count, usage, cur.memory_total_bytes, cur.memory_available_bytes,
                     cur.cpu, cur.memory, cur.io)


HISTORY_KEYS = ("cpu_usage_percent", "memory_used_percent", "psi_cpu_some_percent",
                "psi_memory_some_percent", "psi_io_some_percent")


def push_history(history: Mapping[str, tuple[float, ...]], host: HostStats,
                 maxlen: int = HISTORY_LEN) -> dict[str, tuple[float, ...]]:
    """The sparklines' series with this sample appended (a value not measured is skipped)."""
    now = {"cpu_usage_percent": host.cpu_usage_percent, "memory_used_percent": host.memory_used_percent,
           "psi_cpu_some_percent": host.cpu.some_percent, "psi_memory_some_percent": host.memory.some_percent,
           "psi_io_some_percent": host.io.some_percent}
    out = {}
    for k in HISTORY_KEYS:
        series = history.get(k, ())
        v = now[k]
        out[k] = (series + (v,))[-maxlen:] if v is not None else series
    return out


# -- rows --------------------------------------------------------------------------------------------


def rate(before: float | None, after: float | None, elapsed_s: float) -> float | None:
    """Per second between two cumulative readings; None when either is missing. A counter that
    went back (the cgroup was removed and made again under the same path) counts from zero."""
    if before is None or after is None or elapsed_s <= 0:
        return None
    return (after - before if after >= before else after) / elapsed_s


def parent_path(path: str) -> str | None:
    if path in ("/", ""):
        return None
    head = path.rsplit("/", 1)[0]
    return head or "/"


def _leaf(path: str) -> str:
    return path.rsplit("/", 1)[-1] or "/"


def cgroup_row(cur: CgroupReading, prev: CgroupReading | None, elapsed_s: float, key: str,
               parent: str | None, name: str | None = None) -> Row:
    return Row(
        key=key, kind="cgroup", name=name or _leaf(cur.path), path=cur.path, parent=parent,
        nr_procs=cur.nr_procs,
        cpu_usage_cores=(None if prev is None else
                         _scaled(rate(prev.cpu_usage_usec, cur.cpu_usage_usec, elapsed_s), 1e-6)),
        cpu_max_cores=cur.cpu_max_cores,
        memory_current_bytes=cur.memory_current_bytes, memory_high_bytes=cur.memory_high_bytes,
        memory_max_bytes=cur.memory_max_bytes,
        psi_cpu_some_percent=cur.cpu.some_percent, psi_cpu_full_percent=cur.cpu.full_percent,
        psi_memory_some_percent=cur.memory.some_percent, psi_memory_full_percent=cur.memory.full_percent,
        psi_io_some_percent=cur.io.some_percent, psi_io_full_percent=cur.io.full_percent,
        faults_per_second=(None if prev is None else
                           rate(prev.memory_faults_total, cur.memory_faults_total, elapsed_s)),
        oom_kills_total=cur.oom_kills_total,
    )


def _scaled(v: float | None, k: float) -> float | None:
    return None if v is None else v * k


def local_rows(cur: Sequence[CgroupReading], prev: Mapping[str, CgroupReading],
               elapsed_s: float) -> tuple[Row, ...]:
    """The whole cgroup tree, in the pre-order the readings come in."""
    out = []
    for r in cur:
        pp = parent_path(r.path)
        out.append(cgroup_row(r, prev.get(r.path), elapsed_s, "cgroup:" + r.path,
                              None if pp is None else "cgroup:" + pp))
    return tuple(out)


def _sum_limits(values: Iterable[float | int | None]) -> Any:
    """A class's limit over its cgroups: the sum when every one has a limit, else None (no limit)."""
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals)  # type: ignore[arg-type]


def _max_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def daemon_rows(classes: Sequence[Mapping[str, Any]], prev_classes: Mapping[str, Mapping[str, Any]],
                readings: Mapping[str, CgroupReading], prev_readings: Mapping[str, CgroupReading],
                elapsed_s: float) -> tuple[Row, ...]:
    """Policy classes (the API's `snapshot`: ClassView dicts), each followed by its cgroups as read
    locally. `prev_classes`: the previous snapshot's classes by name, for the probe counters' rates."""
    out: list[Row] = []
    for c in classes:
        name = str(c["name"])
        key = "class:" + name
        paths = [str(p) for p in c.get("cgroups") or ()]
        mine = [readings[p] for p in paths if p in readings]
        prev = prev_classes.get(name)
        alloc = (c.get("allocation") or {}).get("cpu")
        demand = (c.get("demand") or {}).get("cpu")
        runq = c.get("runq_p99_seconds")
        out.append(Row(
            key=key, kind="class", name=name, path=name, parent=None,
            # the API says only whether the class is populated: the count comes from its cgroups
            nr_procs=sum(r.nr_procs or 0 for r in mine) if mine else None,
            cpu_allocation_cores=None if alloc is None else float(alloc),
            cpu_demand_cores=None if demand is None else float(demand),
            cpu_usage_cores=c.get("cpu_usage_cores"),
            cpu_max_cores=_sum_limits(r.cpu_max_cores for r in mine),
            memory_current_bytes=c.get("memory_current_bytes"),
            memory_high_bytes=_sum_limits(r.memory_high_bytes for r in mine),
            memory_max_bytes=_sum_limits(r.memory_max_bytes for r in mine),
            runq_p99_seconds=None if runq is None else float(runq),
            psi_cpu_some_percent=c.get("cpu_some_avg10"),
            psi_cpu_full_percent=_max_known(r.cpu.full_percent for r in mine),
            psi_memory_some_percent=c.get("memory_some_avg10"),
            psi_memory_full_percent=_max_known(r.memory.full_percent for r in mine),
            psi_io_some_percent=c.get("io_some_avg10"),
            psi_io_full_percent=_max_known(r.io.full_percent for r in mine),
            faults_per_second=None if prev is None else rate(prev.get("faults_total"), c.get("faults_total"),
                                                             elapsed_s),
            reclaim_seconds_per_second=None if prev is None else rate(
                prev.get("reclaim_seconds_total"), c.get("reclaim_seconds_total"), elapsed_s),
            oom_kills_total=c.get("oom_kills_total"),
            tier=c.get("tier"), weight=c.get("weight"), memory_guard=c.get("memory_guard"),
            seconds_to_oom=c.get("seconds_to_oom"),
        ))
        for p in paths:
            r = readings.get(p)
            ckey = f"{key}:{p}"
            if r is None:  # matched by the daemon, not readable here (gone, or another mount)
                out.append(Row(key=ckey, kind="cgroup", name=p, path=p, parent=key))
            else:
                out.append(cgroup_row(r, prev_readings.get(p), elapsed_s, ckey, key, name=p))
    return tuple(out)


# -- daemon state, decision, jobs, events ------------------------------------------------------------


def daemon_state(status: Mapping[str, Any]) -> DaemonState:
    """From the API's `status` reply (DaemonView.to_dict, classes counted)."""
    return DaemonState(
        verdict=str(status.get("verdict", "")), mode=str(status.get("mode", "")),
        mode_reason=str(status.get("mode_reason") or ""), pid=int(status.get("pid") or 0),
        policy_path=str(status.get("policy_path") or ""),
        policy_description=str(status.get("policy_description") or ""),
        interval_seconds=float(status.get("interval_seconds") or 0.0),
        ticks_total=int(status.get("ticks_total") or 0), last_tick_seconds=status.get("last_tick_seconds"),
        last_decision_unix=status.get("last_decision_unix"),
        last_writes_count=len(status.get("last_writes") or ()),
        writes_total=int(status.get("writes_total") or 0),
        writes_failed_total=int(status.get("writes_failed_total") or 0),
        memory_guard=str(status.get("memory_guard") or "off"), last_error=status.get("last_error"))


def decision_of(plan: Mapping[str, Any], explain: Mapping[str, Any]) -> Decision:
    """From the API's `plan` (the last decision's writes) and `explain` (binding constraints)."""
    writes = tuple(WriteView(str(w.get("op", "")), str(w.get("path", "")), str(w.get("new", "")),
                             str(w.get("reason", "")), bool(w.get("available", True)))
                   for w in plan.get("writes") or ())
    bindings = tuple(BindingView(str(b.get("kind", "")), str(b.get("resource", "")), b.get("cls"),
                                 int(b.get("tier") or 0), float(b.get("dual") or 0.0),
                                 tuple(str(t) for t in b.get("to") or ()))
                     for b in explain.get("bindings") or ())
    return Decision(plan.get("last_decision_unix"), writes, int(plan.get("pending") or 0),
                    int(plan.get("unavailable") or 0), len(plan.get("drift") or ()), bindings)


STRAGGLERS_KEPT = 5


def job_view(j: Mapping[str, Any]) -> JobView:
    """From a JobState dict (the API's `jobs`, or a state file read locally)."""
    ranks = tuple(RankView(int(r.get("rank", 0)), str(r.get("status", "")), r.get("pid"), r.get("last_step"),
                           r.get("step_s")) for r in j.get("ranks") or ())
    steps = [r.step_seconds for r in ranks if r.step_seconds is not None]
    strag = [StragglerView(int(s.get("rank", 0)), float(s.get("step_s") or 0.0), float(s.get("factor") or 0.0),
                           int(s.get("restart") or 0)) for s in j.get("stragglers") or ()]
    return JobView(
        key=str(j.get("key", "")), name=str(j.get("name", "")), status=str(j.get("status", "")),
        cls=str(j.get("cls", "")), world_size=int(j.get("world_size") or 0), nproc=int(j.get("nproc") or 0),
        nnodes=int(j.get("nnodes") or 1), restarts=int(j.get("restart") or 0),
        max_restarts=int(j.get("max_restarts") or 0), started_unix=j.get("started_unix"),
        step_median_seconds=statistics.median(steps) if steps else None,
        step_max_seconds=max(steps) if steps else None,
        stragglers_total=len(strag), stragglers=tuple(strag[-STRAGGLERS_KEPT:]), ranks=ranks)


ACTIVE_JOB_STATES = frozenset({"starting", "running", "restarting", "stopping"})


def jobs_in_order(jobs: Iterable[JobView]) -> tuple[JobView, ...]:
    """Running jobs first, then the ended ones, newest first: a host keeps the state files of
    every job it ran, and the ones that still run are what a person looks for."""
    return tuple(sorted(jobs, key=lambda j: (j.status not in ACTIVE_JOB_STATES, -(j.started_unix or 0.0), j.key)))


def events_of(journal_json: str) -> tuple[Event, ...]:
    """`journalctl -o json` output (one JSON object per line) -> events, oldest first. Lines that
    are not JSON (a truncated last line) are skipped: the tail is a courtesy, never an error."""
    out = []
    for line in journal_json.splitlines():
        try:
            e = json.loads(line)
            t = int(e.get("__REALTIME_TIMESTAMP", 0)) / 1e6
            msg = e.get("MESSAGE", "")
            if isinstance(msg, list):  # journald gives non-UTF-8 messages as byte arrays
                msg = bytes(msg).decode("utf-8", "replace")
            out.append(Event(t, int(e.get("PRIORITY", 6)), str(msg)))
        except (ValueError, TypeError, AttributeError):
            continue
    return tuple(out)


# -- what the table shows: sort, filter, tree or flat ----------------------------------------------

# Sortable columns, left to right: `<` and `>` step through them. Row attributes and --json keys.
COLUMN_IDS = (
    "name", "nr_procs", "cpu_allocation_cores", "cpu_usage_cores", "cpu_max_cores",
    "memory_current_bytes", "memory_high_bytes", "memory_max_bytes",
    "runq_p50_seconds", "runq_p99_seconds",
    "psi_cpu_some_percent", "psi_memory_some_percent", "psi_memory_full_percent",
    "psi_io_some_percent", "psi_io_full_percent",
    "faults_per_second", "reclaim_seconds_per_second", "oom_kills_total",
)


@dataclass(frozen=True)
class ViewState:
    """How the person looks at the model: what `<` `>` `I` `/` `t` and space changed."""

    sort_column: str = "cpu_usage_cores"
    descending: bool = True
    tree: bool = True
    filter_text: str = ""
    paused: bool = False


def step_sort(view: ViewState, step: int) -> ViewState:
    """`<` (-1) and `>` (+1): the neighbouring column, in its natural direction (numbers biggest
    first, names A to Z); stops at either end, as htop's does."""
    i = COLUMN_IDS.index(view.sort_column) if view.sort_column in COLUMN_IDS else 0
    col = COLUMN_IDS[min(len(COLUMN_IDS) - 1, max(0, i + step))]
    if col == view.sort_column:
        return view
    return replace(view, sort_column=col, descending=col != "name")


def sort_rows(rows: Iterable[Row], column: str, descending: bool) -> list[Row]:
    """Rows without a value go last in either direction (as blank cells), ties by path."""
    by_path = sorted(rows, key=lambda r: r.path)
    if column == "name":
        return sorted(by_path, key=lambda r: r.path.lower(), reverse=descending)
    have = [r for r in by_path if getattr(r, column) is not None]
    missing = [r for r in by_path if getattr(r, column) is None]
    have.sort(key=lambda r: getattr(r, column), reverse=descending)
    return have + missing


def _matches(row: Row, needle: str) -> bool:
    return needle in row.path.lower() or needle in row.name.lower()


def visible_rows(rows: Sequence[Row], view: ViewState) -> list[tuple[Row, int]]:
    """(row, indent) in display order.

    Flat: every row that matches the filter, sorted. Tree: parents before their children, siblings
    sorted; with a filter, the matching rows and their ancestors (a match keeps its place in the
    tree, as htop's filtered tree does).
    """
    needle = view.filter_text.strip().lower()
    if not view.tree:
        shown = [r for r in rows if _matches(r, needle)] if needle else list(rows)
        return [(r, 0) for r in sort_rows(shown, view.sort_column, view.descending)]
    by_key = {r.key: r for r in rows}
    keep: set[str] | None = None
    if needle:
        keep = set()
        for r in rows:
            if _matches(r, needle):
                k: str | None = r.key
                while k is not None and k not in keep:
                    keep.add(k)
                    k = by_key[k].parent if k in by_key else None
    children: dict[str | None, list[Row]] = {}
    for r in rows:
        if keep is not None and r.key not in keep:
            continue
        parent = r.parent if r.parent in by_key else None
        children.setdefault(parent, []).append(r)
    out: list[tuple[Row, int]] = []
    stack: list[tuple[Row, int]] = [(r, 0) for r in reversed(
        sort_rows(children.get(None, ()), view.sort_column, view.descending))]
    while stack:
        r, depth = stack.pop()
        out.append((r, depth))
        kids = children.get(r.key)
        if kids:
            stack.extend((c, depth + 1) for c in reversed(sort_rows(kids, view.sort_column, view.descending)))
    return out
