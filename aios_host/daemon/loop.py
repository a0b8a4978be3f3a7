"""The daemon: one loop that senses and acts every interval.

    tick = requests from the API -> targets (re-resolved every rescan_s) -> read the classes'
           cgroup files (held open, pread) + the probes' latest sample (off the loop) ->
           smoothed usage -> [only when demand moved, a held write is due, or every recheck_s]
           decide (solve, desired state, plan) -> route (systemd units via D-Bus) ->
           hysteresis -> journal originals -> write -> publish a DaemonView

A steady host does the first half only: no solve, no plan, no write, no log line. The API, the
metrics and `aios-host status` read the published DaemonView and never call into the loop;
changes they ask for (policy apply / rollback / reload) are queued and run at the next tick.

Modes: "active" writes; "dry-run" computes and logs plans, writes nothing; "observe-only" is
forced where writing cannot work (not root; no cgroup v2 controller the policy needs), said once,
and still serves the API and metrics; "paused" after an API rollback until the next apply.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from aios_host import __version__, osthread
from aios_host.actuate.apply import do_write, undo_all
from aios_host.actuate.state import DaemonJournal, StateStore
from aios_host.daemon.guard import GuardRunner, GuardView
from aios_host.daemon.hysteresis import Hysteresis
from aios_host.daemon.measure import CgroupReader, ClassProbeFigures, ClassReading, class_probe_figures
from aios_host.daemon.memguard import MemoryEvents
from aios_host.daemon.ownership import CLASSES_SCOPE, CLASSES_SLICE, Router, make_router
from aios_host.daemon.smoothing import UsageSmoother
from aios_host.daemon.sources import SlowSource
from aios_host.daemon.view import TICK_BUCKETS_S, ClassView, DaemonView
from aios_host.energy.auto_jobs import auto_classes, followed_jobs
from aios_host.energy.auto_runner import AutoPowerRunner
from aios_host.errors import AiosError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel import systemd
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import Inventory, read_inventory
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger
from aios_host.policy.demand import ClassUsage, cpu_demand
from aios_host.policy.engine import Decision, check_on_host, decide, decisive
from aios_host.policy.plan import Plan, Write
from aios_host.policy.schema import Policy, load_policy
from aios_host.policy.solver import decisive_demands
from aios_host.policy.targets import ClassTarget, resolve_targets

log = get_logger("aios_host.daemon")

DAEMON_PROBES = ("sched", "faults", "reclaim", "oom")  # what demand and the views use
# The probes' per-cgroup maps are plain hashes of LoadOptions.max_cgroups entries, and cgroup ids
# are never reused: without pruning, a long-running daemon on a host that creates cgroups (a scope
# per session, cron run, container, job rank) fills them, after which new cgroups go uncounted
# (drops "stats_map"). Entries of removed cgroups are deleted this often, on the probes' thread.
PROBE_PRUNE_EVERY_S = 60.0
_BLOCKING_FILES = ("memory.high", "memory.max")  # the kernel reclaims inside the write
# RAPL must be read at least once per counter wrap and NVML's energy counter updates every 10-100
# ms: the energy source samples every interval, but not faster than this.
ENERGY_MIN_INTERVAL_S = 0.5


@dataclass(frozen=True)
class DaemonOptions:
    policy_path: str
    interval_s: float = 1.0
    dry_run: bool = False
    keep_on_exit: bool = False
    probes: bool = True
    root: str = "/"
    hold_ticks: int = 3
    cooldown_s: float = 10.0
    half_life_s: float = 5.0
    rescan_s: float = 5.0  # re-resolve targets (new cgroups, new matching processes)
    recheck_s: float = 10.0  # decide even on a steady host: finds drift
    demand_deadband: float = 0.10  # relative move of a class's smoothed CPU that re-decides
    write_timeout_s: float = 2.0
    probe_deadline_s: float | None = None  # default 3 intervals
    energy: bool = True  # sample RAPL, NVML and cpufreq off the loop; run the `auto` GPU power search


def _moved(before: float, now: float, band: float) -> bool:
    """Whether a class's CPU figure (cores) moved past the demand deadband: band of it, at least
    0.05 cores."""
    return abs(now - before) > max(0.05, band * before)


def _validate(opts: DaemonOptions) -> None:
    if not (0.05 <= opts.interval_s <= 3600):
        raise AiosError(f"--interval {opts.interval_s:g}: must be between 0.05 and 3600 seconds")


def _class_views(classes_spec: Any, targets: Mapping[str, ClassTarget], readings: Mapping[str, ClassReading],
                 usage: Mapping[str, ClassUsage], figs: Mapping[str, ClassProbeFigures],
                 columns: Mapping[str, tuple[dict[str, float], dict[str, float]]],
                 guard: GuardView) -> tuple[ClassView, ...]:
    """One ClassView per policy class, from one tick's frozen inputs (Daemon.view)."""
    classes = []
    none: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for spec in classes_spec:
        name = spec.name
        t = targets.get(name)
        r = readings.get(name)
        u = usage.get(name)
        f = figs.get(name)
        demand, alloc = columns.get(name, none)
        classes.append(ClassView(
            name, spec.priority, float(spec.weight),
            tuple("/" + c for c in t.cgroups) if t else (), bool(t and t.owned),
            bool(r and r.populated),
            r.cpu_usage_usec / 1e6 if r and r.cpu_usage_usec is not None else None,
            u.cpu_cores if u else None,
            r.memory_current_bytes if r else None,
            r.cpu_some_avg10 if r else None,
            r.memory_some_avg10 if r else None,
            r.io_some_avg10 if r else None,
            u.runq_p99_usec / 1e6 if u and u.runq_p99_usec is not None else None,
            f.faults_total if f else None,
            f.reclaim_ns_total / 1e9 if f else None,
            f.oom_kills_total if f else None,
            demand, alloc,
            *_guard_of(guard, name)))
    return tuple(classes)


def _guard_of(guard: GuardView, name: str) -> tuple[str, float | None, int | None, int | None, int | None, int | None]:
    """ClassView's last fields: guard state, seconds to OOM, memory.events high/max/oom/oom_kill."""
    g = guard.classes.get(name)
    if g is None:
        return "ok", None, None, None, None, None
    return (g.state, _finite(g.seconds_to_oom), *(g.events or MemoryEvents()))


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no infinity: "no end in sight" is null


class Daemon:
    def __init__(self, opts: DaemonOptions, probe_factory: Callable[[SysRoot], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, root: SysRoot | None = None,
                 gpu_factory: Callable[[], Any] | None = None) -> None:
        _validate(opts)
        self.opts = opts
        self.root = root or SysRoot(opts.root)
        self.fs = CgroupFs(self.root)
        self.clock = clock
        self.policy: Policy = load_policy(opts.policy_path)  # bad file: one line, exit 1
        self.policy_path = opts.policy_path
        self.router: Router = make_router(self.root, self.fs)
        self.policy_effective = self.router.adapt_policy(self.policy)
        self.inv: Inventory = read_inventory(self.root)
        cap = check_on_host(self.policy, self.inv)  # a policy this host cannot meet: one line, exit 1
        self.guard = GuardRunner(self.fs, self.policy_effective, cap.memory_bytes)
        self._inv_key = self._inventory_key()
        self.reader = CgroupReader(self.fs)
        self.smoother = UsageSmoother(opts.half_life_s)
        self.hysteresis = Hysteresis(opts.hold_ticks, opts.cooldown_s)
        self.journal = DaemonJournal(StateStore(self.root), opts.policy_path)
        self.targets: dict[str, ClassTarget] = {}
        self._targets_at: float | None = None
        self._probe_source: SlowSource[Any] | None = None
        self._probe_run_ns: int | None = None  # written by the probes' thread, read by _publish
        self._probe_factory = probe_factory
        self._probe_prev: Any = None
        self._probe_figs: dict[str, ClassProbeFigures] = {}
        self._probe_holder: dict[str, Any] = {}
        self._gpu_factory = gpu_factory  # the energy sampler's GPU backend (default: the process's NVML)
        self._energy_source: SlowSource[Any] | None = None
        self._energy_sample: Any = None  # the latest EnergySample, fresh or not (the view shows its age)
        self.auto = AutoPowerRunner()
        self._auto_classes: tuple[Any, tuple[Any, ...]] = (None, ())
        self._readings: dict[str, ClassReading] = {}
        self._usage: dict[str, ClassUsage] = {}
        self._index: Any = None
        self._decided_usage: dict[str, ClassUsage] | None = None
        self._decided_demand: dict[str, float] = {}  # decisive CPU demands of the last decision
        self._prev_alloc: Mapping[str, float] = {}  # CPU allocation of the last decision acted on
        self._decided_at: float | None = None
        self._pending = 0
        self._decision: Decision | None = None
        self._last_written: dict[str, str] = {}  # path -> the value we wrote last
        self._in_flight: dict[str, concurrent.futures.Future[None]] = {}
        self._failed_at: dict[tuple[str, str, str], float] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="write",
                                                           initializer=osthread.set_name, initargs=("aios-write",))
        self._requests: queue.Queue[tuple[dict[str, Any], queue.Queue[dict[str, Any]]]] = queue.Queue()
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._said_unavailable: set[str] = set()
        self._columns: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        self._columns_of: Decision | None = None
        self._journal_open = False
        self._logged_plan: frozenset[tuple[str, str, str]] = frozenset()
        self.mode, self.mode_reason = self._initial_mode()
        self._paused = False
        self._view_lock = threading.Lock()
        # (daemon-wide view without classes, the per-class inputs of the latest tick); `view` builds
        self._published: tuple[DaemonView, tuple[Any, ...] | None] = (self._empty_view(), None)
        self._view: DaemonView = self._published[0]
        self._view_of: tuple[Any, ...] | None = None
        self._counts = {"ticks": 0, "writes": 0, "failed": 0}
        self._buckets = [0] * (len(TICK_BUCKETS_S) + 1)
        self._tick_sum = 0.0
        self._last_writes: tuple[dict[str, Any], ...] = ()
        self._last_decision_unix: float | None = None
        self._drift: tuple[dict[str, str], ...] = ()
        self._said_energy: set[str] = set()
        self._last_error: str | None = None
        self._unavailable = 0
        self._status_line = ""
        self._watchdog_s = systemd.watchdog_interval_s()
        self._watchdog_at = 0.0

    # -- set-up ---------------------------------------------------------------------------------

    def _initial_mode(self) -> tuple[str, str]:
        if self.opts.dry_run:
            return "dry-run", "--dry-run: plans are computed and logged, nothing is written"
        if self.root.is_host and os.geteuid() != 0:
            return "observe-only", "not root: cgroup files cannot be written"
        wanted = {"cpu", "memory", "io"}
        have = set(self.fs.cgroup("").controllers())
        if not wanted & have:
            return "observe-only", (f"{self.fs.mount}/cgroup.controllers has none of cpu, memory, io "
                                    "(a hybrid cgroup host): nothing the policy sets can be written")
        reason = self.router.unavailable_reason(self.policy)
        if reason:
            return "observe-only", reason
        return "active", ""

    def _inventory_key(self) -> tuple[str | None, str | None]:
        return (self.root.read_optional("/sys/devices/system/cpu/online"),
                (self.root.read_optional("/proc/meminfo") or "").split("\n", 1)[0])

    def start(self) -> None:
        """Reconcile with the journal, start the probes' source, make the first decision."""
        # Only a daemon that writes keeps a journal: observe-only (perhaps not root) and dry runs
        # leave any record a crashed daemon left for the next writing one to adopt.
        adopted = self.journal.open() if self.mode == "active" else 0
        self._journal_open = self.mode == "active"
        if adopted:
            # A previous daemon died without restoring (SIGKILL, OOM, power to the process only):
            # its originals are kept as recorded, so our exit restores what the host had first.
            log.warning("daemon_reconciled", adopted_changes=adopted, journal=str(self.journal.store.path))
            self.auto.adopt(self.journal.writes())  # its auto power limits go back unless a search takes them
        if self.mode_reason:
            log.warning("daemon_mode", mode=self.mode, reason=self.mode_reason)
        if self.opts.probes:
            self._start_probes()
        if self.opts.energy:
            self._start_energy()
        log.info("daemon_started", policy=self.policy_path, mode=self.mode, interval_s=self.opts.interval_s,
                 owner=self.router.describe(), version=__version__)

    def _start_probes(self) -> None:
        from aios_host.probes.cgroup_ids import CgroupIndex

        self._index = CgroupIndex(self.fs, clock=self.clock)
        holder: dict[str, Any] = {}

        def setup() -> None:
            if self._probe_factory is not None:
                holder["p"] = self._probe_factory(self.root)
                return
            from aios_host.probes.loader import LoadOptions, ProbeSet

            holder["p"] = ProbeSet(self.root, LoadOptions(probes=DAEMON_PROBES)).load()

        next_prune = [self.clock() + PROBE_PRUNE_EVERY_S]

        def sample() -> Any:
            p = holder["p"]
            for ev in p.poll(0):
                if getattr(ev, "kind", "") == "oom":
                    log.warning("oom_kill", pid=ev.pid, comm=ev.comm, cgroup_id=ev.cgroup_id)
            if self.clock() >= next_prune[0]:
                next_prune[0] = self.clock() + PROBE_PRUNE_EVERY_S
                self._prune_probe_maps(p)
            self._probe_run_ns = self._probe_run_time_ns(p)
            return p.read()

        def teardown() -> None:
            if "p" in holder:
                holder["p"].close()

        deadline = self.opts.probe_deadline_s or 3 * self.opts.interval_s
        self._probe_holder = holder
        self._probe_source = SlowSource("probes", sample, self.opts.interval_s, deadline, setup, teardown,
                                        clock=self.clock).start()

    def _probe_run_time_ns(self, probes: Any) -> int | None:
        """The kernel's run time of our programs, while kernel.bpf_stats_enabled is 1. The daemon
        does not turn it on (timing every run costs two clock reads, and the service runs without
        CAP_SYS_ADMIN and with /proc/sys read-only): an admin who wants the figure sets the sysctl,
        as `aios-host probe stats` does for its own measurement."""
        from aios_host.probes.stats import read_bpf_stats_enabled

        if not hasattr(probes, "prog_counters") or read_bpf_stats_enabled(self.root) != "1":
            return None
        try:
            return sum(c.run_time_ns for c in probes.prog_counters())
        except (OSError, AiosError):
            return None

    def _prune_probe_maps(self, probes: Any) -> None:
        """Delete the map entries of cgroups that are gone. A cgroup made after the walk loses its
        entry too (its counters restart from zero, read as a new entry: hist_delta), so the tree
        is walked right before the prune rather than taken from the index, which can be rescan_s
        old."""
        from aios_host.probes.cgroup_ids import walk_ids

        try:
            n = probes.prune(walk_ids(self.fs))
        except Exception as exc:  # noqa: BLE001 - a failed prune must not cost the tick its sample
            log.warning("probe_prune_failed", error=str(exc))
            return
        if n:
            log.info("probe_maps_pruned", entries=n)

    def wait_probes(self, timeout_s: float) -> bool:
        return self._probe_source.wait_ready(timeout_s) if self._probe_source else False

    def _start_energy(self) -> None:
        """RAPL, NVML and cpufreq on a thread of their own: NVML is opened there (a missing driver
        is a reason in the sample) and a GPU that answers slowly makes the sample stale, never the
        tick slow."""
        from aios_host.energy.telemetry import EnergySampler

        sampler = EnergySampler(self.root, self._gpu_factory, clock=self.clock)
        interval = max(self.opts.interval_s, ENERGY_MIN_INTERVAL_S)
        self._energy_source = SlowSource("energy", sampler.sample, interval, 3 * interval, sampler.open,
                                         clock=self.clock).start()

    def wait_energy(self, timeout_s: float) -> bool:
        return self._energy_source.wait_ready(timeout_s) if self._energy_source else False

    # -- the tick -------------------------------------------------------------------------------

    def tick(self) -> None:
        t0 = self.clock()
        try:
            self._serve_requests()
            if self._reload:
                self._reload = False
                self._do_reload()
            self._tick_body(t0)
            self._last_error = None
        except AiosError as exc:
            # One bad tick (a cgroup removed mid-plan, a policy the host cannot meet any more) is
            # logged and retried next tick; the loop itself never dies of it.
            self._last_error = str(exc)
            log.error("tick_failed", error=str(exc))
        dt = self.clock() - t0
        self._counts["ticks"] += 1
        self._tick_sum += dt
        i = next((k for k, b in enumerate(TICK_BUCKETS_S) if dt <= b), len(TICK_BUCKETS_S))
        self._buckets[i] += 1
        self._publish(dt)
        self._notify()

    def _tick_body(self, now: float) -> None:
        if self._targets_at is None or now - self._targets_at >= self.opts.rescan_s:
            self._rescan(now)
        readings = self.reader.read(self.targets)
        figs = self._probe_figures()
        usage = self.smoother.update(readings, figs, now)
        self._readings = readings
        self._usage = usage
        self._guard_tick(now)
        self._energy_tick(now)
        if not self._should_decide(usage, now):
            return
        decision = decide(self.policy_effective, self.fs, self.inv, self.targets, usage)
        self._decision = decision
        for note in decision.energy_notes:  # once each: the host will not change under us
            if note not in self._said_energy:
                self._said_energy.add(note)
                log.warning("energy_not_applied", note=note)
        self._decided_usage, self._decided_at = usage, now
        self._decided_demand = decisive_demands(decision.problem)
        plan = self.router.route(decision.plan, decision.desired)
        self._act(plan, decision, now)

    def _rescan(self, now: float) -> None:
        key = self._inventory_key()
        if key != self._inv_key:
            self.inv, self._inv_key = read_inventory(self.root), key
            log.info("inventory_changed", cpus=self.inv.cpu_count, memory_bytes=self.inv.memory_total_bytes)
            self._decided_usage = None
        targets = resolve_targets(self.fs, self.policy_effective)
        if targets != self.targets:
            self._decided_usage = None  # new cgroups or processes: decide now
        self.targets, self._targets_at = targets, now

    def _probe_figures(self) -> dict[str, ClassProbeFigures] | None:
        if self._probe_source is None:
            return None
        s = self._probe_source.latest()
        if s.value is None or not s.fresh:
            return None  # stale: demand from cgroupfs alone this tick (a skip was counted)
        if self._probe_prev is None or s.value.t_ns != self._probe_prev.t_ns:
            paths = self._index.covering(s.value.cgroups)  # walks the tree only for a new cgroup
            self._probe_figs = class_probe_figures(self._probe_prev, s.value, paths, self.targets)
            self._probe_prev = s.value
        return self._probe_figs

    def _should_decide(self, usage: dict[str, ClassUsage], now: float) -> bool:
        if self._decided_usage is None or self._decided_at is None:
            return True
        # A held write needs the next decisions only to count its hold ticks, then to be
        # confirmed when its file's cool-down ends; in between the same demand decides the same.
        if self._pending and now >= self.hysteresis.next_due_s():
            return True
        if now - self._decided_at >= self.opts.recheck_s:
            return True
        # Demand, not its inputs: run-queue p99 moves by more than any band from one second to the
        # next, but it raises demand only above its target and by a capped amount (cpu_raise). And
        # only as far as it can change the allocation: a protected class asking 3.5 or 4.2 cores
        # of a 2-core host gets the host either way (engine.decisive); measured in the VM
        # isolation bench, busy phases otherwise re-decided nearly every tick for nothing. The
        # per-class check comes first: it is free on a steady host, where decisive() would cost
        # ~1.5 ms a tick at 1000 classes.
        band = self.opts.demand_deadband
        moved = False
        for name, u in usage.items():
            old = self._decided_usage.get(name)
            if old is None or (u.cpu_cores is None) != (old.cpu_cores is None):
                return True
            d0, d1 = cpu_demand(old), cpu_demand(u)
            if d0 is not None and d1 is not None and _moved(d0, d1, band):
                moved = True
                break
        if not moved:
            return False
        now_demand = decisive(self.policy_effective, self.inv, usage)
        for name, d1 in now_demand.items():
            d0 = self._decided_demand.get(name)
            if d0 is None or _moved(d0, d1, band):
                return True
        return False

    def _guard_tick(self, now: float) -> None:
        """The memory guard acts every tick, outside the plan's hysteresis: senpai's steps and the
        escalation are control actions with their own pacing (memguard.py)."""
        actions = self.guard.tick(now, self.targets)
        if not actions:
            return
        acting = self.mode == "active" and not self._paused
        if acting:
            self.journal.record([w for w, _ in actions])  # originals first, as for every write
        for w, act in actions:
            step = act.step if act else "senpai"
            if not acting:
                log.info("memory_guard_would", step=step, cgroup=w.path, old=w.old, new=w.new, reason=w.reason,
                         mode="paused" if self._paused else self.mode)
                continue
            if act:  # an escalation step: a warning of its own, besides the write's event
                log.warning("memory_guard", step=step, cgroup=w.path, old=w.old, new=w.new, reason=w.reason)
            self._write(w, "memory_guard")
        self._send_notices(acting)

    def _energy_tick(self, now: float) -> None:
        """The energy source's latest sample, and one step of the `auto` GPU power searches: their
        writes are journaled and written as every other write, outside the plan's hysteresis (the
        search paces itself: one setting per measurement window)."""
        if self._energy_source is None:
            return
        sampled = self._energy_source.latest()
        self._energy_sample = sampled.value
        if self._auto_classes[0] is not self.policy:  # per policy, not per tick (1000 classes)
            self._auto_classes = (self.policy, auto_classes(self.policy))
        classes = self._auto_classes[1]
        if not classes and not self.auto.wants_jobs():
            return
        acting = self.mode == "active" and not self._paused
        try:
            self.auto.tick(now, followed_jobs(self.root, classes), classes, sampled.value if sampled.fresh else None,
                           self._auto_write if acting else None, self._journaled_original,
                           mode="paused" if self._paused else self.mode)
        except AiosError as exc:  # one job's trouble must not cost the tick its decision
            log.error("energy_auto_failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug in the search must not stop the loop that shares the CPU
            log.error("energy_auto_bug", error=repr(exc), exc_info=True)

    def _auto_write(self, w: Write) -> bool:
        self.journal.record([w])  # originals first, as for every write
        return self._write(w, "energy_auto")

    def _journaled_original(self, path: str) -> str | None:
        """The value `path` had before the daemon's first change of it (this daemon's or a crashed
        one's), if the journal has it: what the auto search restores, not the maximum."""
        if not self._journal_open:
            return None
        return next((w.old for w in self.journal.writes() if w.op == "nvml" and w.path == path), None)

    def _send_notices(self, acting: bool) -> None:
        """The pre-kill notices of jobs that asked (guard_notice): the signal to each rank."""
        for n in self.guard.take_notices():
            if not acting:
                log.info("memory_guard_notice_would", job=n.job, rank=n.rank, pid=n.pid, signal=n.signal,
                         grace_s=n.grace_s)
                continue
            try:
                os.kill(n.pid, signal.Signals[n.signal])
                log.warning("memory_guard_notice", job=n.job, rank=n.rank, pid=n.pid, signal=n.signal,
                            grace_s=n.grace_s)
            except OSError as exc:
                log.warning("memory_guard_notice_failed", job=n.job, rank=n.rank, pid=n.pid, error=str(exc))

    def _act(self, plan: Plan, decision: Decision, now: float) -> None:
        held_by_guard = self.guard.held_paths()
        if held_by_guard:  # senpai or an escalation step owns these memory.high files now
            plan = Plan(tuple(w for w in plan.writes if w.path not in held_by_guard))
        rising = self._rising_tiers(decision)
        selected, held = self.hysteresis.select(plan.writes, now, self._tier_of_path() if plan.writes else None,
                                                rising)
        self._pending = held
        unavailable = [w for w in selected if not w.available] if self.mode == "active" else []
        for w in unavailable:  # in observe-only the mode line said it once for all
            if w.path not in self._said_unavailable:
                self._said_unavailable.add(w.path)
                log.warning("write_unavailable", path=w.path, new=w.new, reason=w.reason,
                            controller=w.controller)
        self._unavailable = len([w for w in plan.writes if not w.available])
        # A write that failed is retried after the cool-down, not every tick (a refused process
        # move would otherwise log an error per second).
        writes = [w for w in selected if w.available and w.path not in self._in_flight
                  and now - self._failed_at.get((w.op, w.path, w.new), -float("inf")) >= self.opts.cooldown_s]
        # Drift: the kernel no longer has what we wrote (someone else wrote it).
        self._drift = tuple({"path": w.path, "applied": self._last_written[w.path], "now": w.old or ""}
                            for w in plan.writes if w.op in ("write", "unit")
                            and self._last_written.get(w.path) == w.new)
        if not writes:
            return
        as_dicts = tuple(w.to_dict() for w in writes)
        if as_dicts != self._last_writes:
            self._last_decision_unix, self._last_writes = time.time(), as_dicts
        why = self._binding_of(decision)
        if self.mode != "active" or self._paused:
            # Each distinct decision is logged once, not every tick it stays the same.
            key = frozenset((w.op, w.path, w.new) for w in writes)
            if key != self._logged_plan:
                self._logged_plan = key
                log.info("plan", mode="paused" if self._paused else self.mode, writes=len(writes), held=held)
                for w in writes:
                    log.info("would_write", op=w.op, cgroup=w.path, old=w.old, new=w.new, reason=w.reason,
                             binding=why)
            self.hysteresis.written(writes, now)
            return
        self.journal.record(writes)  # originals first: a crash after this loses nothing
        done = []
        for w in writes:
            if self._write(w, why):
                done.append(w)
            else:
                self._failed_at[(w.op, w.path, w.new)] = now
        self.hysteresis.written(done, now)

    def _rising_tiers(self, decision: Decision) -> dict[str, int]:
        """{"cpu": the highest tier of a class whose CPU allocation rose since the last decision
        by more than the demand deadband}, or {}. In the VM isolation bench, with the protected
        class matched by unit, its CPUWeight sat at its cap, no rise was written, and the batch
        class's fall (and aios.slice's) waited out hold and cool-down: the first ~10 s of a busy
        phase ran at half protection."""
        alloc = decision.allocation.amounts.column("cpu")
        prev, self._prev_alloc = self._prev_alloc, alloc
        band = self.opts.demand_deadband
        tiers = [spec.priority for spec in self.policy_effective.classes
                 if alloc.get(spec.name, 0.0) > (p := prev.get(spec.name, 0.0)) and _moved(p, alloc[spec.name], band)]
        return {"cpu": max(tiers)} if tiers else {}

    def _tier_of_path(self) -> Callable[[str], int | None]:
        """The priority of the class a written path belongs to: its class cgroups' files (and their
        subtrees: job ranks), or "UNIT/FILE" of a unit-matched class; for the units around the
        delegated subtree (aios-classes.scope, aios.slice), the highest priority inside it, so
        that they make room for a higher class outside it as a class of theirs would; None for
        anything else."""
        prefixes: list[tuple[str, int]] = []
        inside: list[int] = []
        for spec in self.policy.classes:
            t = self.targets.get(spec.name)
            if t and t.owned and t.cgroups:
                inside.append(spec.priority)
            for rel in t.cgroups if t else ():
                prefixes.append((f"{self.fs.mount}/{rel}/", spec.priority))
                unit = rel.rpartition("/")[2]
                if unit.endswith((".service", ".scope", ".slice")):
                    prefixes.append((f"{unit}/", spec.priority))
        if inside:
            prefixes += [(f"{CLASSES_SCOPE}/", max(inside)), (f"{CLASSES_SLICE}/", max(inside))]
        prefixes.sort(key=lambda p: -len(p[0]))  # the deepest cgroup first: a class inside another's

        def tier_of(path: str) -> int | None:
            return next((tier for prefix, tier in prefixes if path.startswith(prefix)), None)

        return tier_of

    def _binding_of(self, decision: Decision) -> str:
        b = [f"{x.kind}:{x.resource}" + (f":{x.cls}" if x.cls else "") for x in decision.allocation.bindings]
        return ",".join(b[:4]) or "none"

    def _write(self, w: Write, binding: str) -> bool:
        bus = self.router.bus
        try:
            # NVML can answer slowly too (a GPU falling off the bus): its writes wait at most as long.
            if (w.op == "write" and w.path.rpartition("/")[2] in _BLOCKING_FILES) or w.op == "nvml":
                fut = self._pool.submit(do_write, self.root, w, bus)
                try:
                    fut.result(timeout=self.opts.write_timeout_s)
                except concurrent.futures.TimeoutError:
                    # The kernel is reclaiming inside the write; it completes on its own. Do not
                    # queue another write to the same file until it has.
                    self._in_flight[w.path] = fut
                    fut.add_done_callback(lambda _f, p=w.path: self._in_flight.pop(p, None))
                    log.warning("cgroup_write_timeout", cgroup=w.path, new=w.new,
                                timeout_s=self.opts.write_timeout_s)
                    self._last_written[w.path] = w.new
                    self._counts["writes"] += 1
                    return True
            else:
                do_write(self.root, w, bus)
        except AiosError as exc:
            self._counts["failed"] += 1
            log.error("cgroup_write_failed", op=w.op, cgroup=w.path, old=w.old, new=w.new, error=str(exc))
            return False
        self._counts["writes"] += 1
        self._last_written[w.path] = w.new
        log.info("cgroup_write", op=w.op, cgroup=w.path, old=w.old, new=w.new, reason=w.reason,
                 binding=binding)
        return True

    # -- requests, signals, reload --------------------------------------------------------------

    def request(self, req: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        """Called from an API thread: queue a change for the loop and wait for its answer."""
        reply: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        self._requests.put((req, reply))
        self._wake.set()
        try:
            return reply.get(timeout=timeout_s)
        except queue.Empty:
            return {"ok": False, "error": f"the daemon's loop did not answer within {timeout_s:g} s"}

    def _serve_requests(self) -> None:
        while True:
            try:
                req, reply = self._requests.get_nowait()
            except queue.Empty:
                return
            reply.put(self.answer(req))

    def answer(self, req: dict[str, Any]) -> dict[str, Any]:
        """A change request's reply, on the loop's thread; a refusal is one line and changes nothing."""
        try:
            return self._handle(req)
        except AiosError as exc:
            return {"ok": False, "error": str(exc)}

    def _handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "policy.apply":
            path = req.get("path")
            if not isinstance(path, str) or not path:
                return {"ok": False, "error": "policy.apply: 'path' (a policy file) is required"}
            self._switch_policy(path)
            self._paused = False
            return {"ok": True, "policy": path, "mode": self.mode}
        if cmd == "policy.rollback":
            n = self.restore()
            self._paused = True
            return {"ok": True, "restored": n, "mode": "paused"}
        if cmd == "reload":
            self._switch_policy(self.policy_path)
            return {"ok": True, "policy": self.policy_path}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _switch_policy(self, path: str) -> None:
        policy = load_policy(path)  # raises with one line: the old policy stays in force
        cap = check_on_host(policy, self.inv)  # so does one this host cannot meet
        self.policy, self.policy_path = policy, path
        self.policy_effective = self.router.adapt_policy(policy)
        self.guard.set_policy(self.policy_effective, cap.memory_bytes)
        self.journal.policy = path
        self.hysteresis.reset()
        self._targets_at = None
        self._decided_usage = None
        log.info("policy_loaded", policy=path, classes=len(policy.classes))

    def _do_reload(self) -> None:
        systemd.sd_notify("RELOADING=1")
        try:
            self._switch_policy(self.policy_path)
        except AiosError as exc:
            log.error("policy_reload_failed", policy=self.policy_path, error=str(exc))
        finally:
            systemd.sd_notify("READY=1")

    def install_signals(self) -> None:
        def on_term(signum: int, _frame: object) -> None:
            self._stop = True
            self._wake.set()

        def on_hup(_signum: int, _frame: object) -> None:
            self._reload = True
            self._wake.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Tick every interval until SIGTERM/SIGINT."""
        first = True
        next_at = self.clock()
        while not self._stop:
            self.tick()
            if first:
                first = False
                systemd.sd_notify("READY=1", f"STATUS={self._summary()}")
                if ready is not None:
                    ready()
            next_at += self.opts.interval_s
            delay = next_at - self.clock()
            if delay < 0:  # late (a slow tick): start again from now instead of bursting
                next_at, delay = self.clock(), 0.0
            self._wake.wait(delay)
            self._wake.clear()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    # -- shutdown -------------------------------------------------------------------------------

    def restore(self) -> int:
        """Put back every original in the journal (newest change first)."""
        if not self._journal_open:
            return 0
        writes = self.journal.writes()
        failures = undo_all(self.root, writes, self.router.bus)
        if failures:
            raise AiosError(f"restore incomplete ({len(failures)} of {len(writes)} failed): {failures[0]}; "
                            f"the journal {self.journal.store.path} keeps them for `aios-host policy rollback`")
        self.journal.close()
        self._last_written.clear()
        self.hysteresis.reset()
        self._decided_usage = None
        log.info("daemon_restored", changes=len(writes))
        return len(writes)

    def shutdown(self) -> None:
        systemd.sd_notify("STOPPING=1")
        if self._probe_source is not None:
            self._probe_source.stop()
        if self._energy_source is not None:
            self._energy_source.stop()
        for fut in list(self._in_flight.values()):
            fut.result(timeout=self.opts.write_timeout_s * 5)
        self._pool.shutdown(wait=True)
        if self.opts.keep_on_exit:
            self.journal.close(status="applied")
            log.info("daemon_stopped", restored=0, kept=True)
        else:
            try:
                n = self.restore()
                self.router.release()
            except AiosError as exc:
                log.error("daemon_restore_failed", error=str(exc))
                raise
            log.info("daemon_stopped", restored=n, kept=False)
        self.reader.close()
        self.router.close()

    # -- what others read -----------------------------------------------------------------------

    def _summary(self) -> str:
        v = self._published[0]  # the daemon-wide figures: no need to build the classes' views
        mode = "paused" if self._paused else v.mode
        return (f"{mode}; {len(self.policy.classes)} classes; {v.writes_total} writes; "
                f"tick {1000 * (v.last_tick_seconds or 0):.1f} ms")

    def _notify(self) -> None:
        now = self.clock()
        if self._watchdog_s is not None and now - self._watchdog_at >= self._watchdog_s:
            systemd.sd_notify("WATCHDOG=1")
            self._watchdog_at = now
        line = self._summary()
        if line.split(";")[:3] != self._status_line.split(";")[:3]:
            systemd.sd_notify(f"STATUS={line}")
        self._status_line = line

    def _empty_view(self) -> DaemonView:
        return DaemonView(
            version=__version__, pid=os.getpid(), started_unix=time.time(), policy_path=self.policy_path,
            policy_description=str(self.policy.description or ""), mode=self.mode, mode_reason=self.mode_reason,
            interval_seconds=self.opts.interval_s, host_cpus=self.inv.cpu_count,
            host_memory_bytes=int(self.inv.memory_total_bytes))

    def _decided_columns(self) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
        """(demand, allocation) per class of the current decision, built once per decision."""
        d = self._decision
        if d is None:
            return {}
        if self._columns_of is not d:
            demands = {c.name: c.demand for c in d.problem.classes}
            self._columns = {
                spec.name: ({k: float(v) for k, v in demands.get(spec.name, {}).items()},
                            {k: float(v) for k, v in d.allocation.amounts.get(spec.name, {}).items()})
                for spec in self.policy.classes}
            self._columns_of = d
        return self._columns

    @property
    def view(self) -> DaemonView:
        """What the API, the metrics and `status` show of the latest tick. The per-class part is
        built here, when asked, at most once per tick: at 1000 classes building it cost a fifth of
        a steady tick, every tick, for a scrape every 15 s. Called from the API's and the metrics'
        threads: it reads only what _publish froze (new dicts and tuples each tick)."""
        with self._view_lock:
            head, inputs = self._published
            if self._view_of is not inputs:
                self._view = replace(head, classes=_class_views(*inputs) if inputs else ())
                self._view_of = inputs
            return self._view

    def _publish(self, tick_s: float) -> None:
        """Freeze what this tick shows: the daemon-wide figures now (cheap), the per-class ones as
        references to this tick's own dicts, built into ClassViews by `view` when asked."""
        d = self._decision
        psi = {r: self._host_psi(r) for r in ("cpu", "memory", "io")}
        inputs = (self.policy.classes, self.targets, self._readings, self._usage, self._probe_figs,
                  self._decided_columns(), self.guard.view)
        head = replace(
            self._published[0],
            policy_path=self.policy_path, policy_description=str(self.policy.description or ""),
            mode="paused" if self._paused else self.mode, mode_reason=self.mode_reason,
            ticks_total=self._counts["ticks"], last_tick_unix=time.time(), last_tick_seconds=tick_s,
            tick_bucket_counts=tuple(self._buckets), tick_seconds_sum=self._tick_sum,
            last_decision_unix=self._last_decision_unix, last_writes=self._last_writes,
            writes_total=self._counts["writes"], writes_failed_total=self._counts["failed"],
            writes_pending=self._pending, writes_unavailable=self._unavailable, drift=self._drift,
            bindings=tuple(b._asdict() for b in d.allocation.bindings) if d else (),
            sources=tuple(src.health() for src in (self._probe_source, self._energy_source) if src is not None),
            probes_attached=tuple(sorted(getattr(self._probe_holder.get("p"), "loaded", {}))),
            probe_cpu_seconds_total=None if self._probe_run_ns is None else self._probe_run_ns / 1e9,
            host_cpu_some_avg10=psi["cpu"], host_memory_some_avg10=psi["memory"], host_io_some_avg10=psi["io"],
            host_cpus=self.inv.cpu_count, host_memory_bytes=int(self.inv.memory_total_bytes),
            capacity_cpu_cores=d.capacity.cpu_cores if d else 0.0,
            capacity_memory_bytes=d.capacity.memory_bytes if d else 0.0,
            memory_guard=self._guard_summary(),
            host_available_bytes=_finite(self.guard.view.host_available_bytes),
            host_seconds_to_oom=_finite(self.guard.view.host_seconds_to_oom),
            last_error=self._last_error,
            energy=self._energy_sample, energy_auto=self.auto.view())
        with self._view_lock:
            self._published = (head, inputs)

    def _guard_summary(self) -> str:
        if not self.guard.active():
            return "off"
        if not self.guard.enabled:
            return "senpai only (escalation off)"
        return f"danger: {self.guard.view.danger}" if self.guard.view.danger else "watching"

    def _host_psi(self, resource: str) -> float | None:
        try:
            text = self.reader.held.read(f"/proc/pressure/{resource}")
        except AiosError:
            return None
        return fmt.pressure_avg10s(text)[0] if text else None
