"""The memory guard in the daemon's loop: reads what memguard.py decides on, and turns its decisions
into Writes the loop journals and makes (or logs, in a dry run).

Every tick, for the classes aios-host owns (a class cgroup in its subtree; unit-matched classes
belong to systemd and are left to systemd-oomd): memory.current, memory.pressure (`some` total),
memory.stat (what cannot be reclaimed: unevictable + shmem, and anon when the host has no swap),
memory.events and memory.events.local (high, max, oom, oom_kill counts: shown; a rise of the class's
own max or oom makes its time to OOM 0), and, for the host, /proc/meminfo (MemAvailable +
SwapFree, used = MemTotal - MemAvailable).
- A class whose policy says memory.high = "auto" gets senpai's loop (SenpaiLoop) on its cgroup.
- With [memory_guard] enabled, Escalation acts on the lowest unprotected tier when the host is in
  danger: memory.high = what it uses now, then cgroup.freeze = 1, then cgroup.kill = 1 (the whole
  class cgroup: a job's ranks inside it go as one gang), and thaws when the danger has passed.
  A kill is also recorded in /run/aios-host/guard-kills.json so that a supervisor whose ranks
  died of it names the cause "memory guard".
While the guard holds a class's memory.high (senpai, or a tightening), the policy's plan does not
write that file: `held_paths` says which.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from aios_host.daemon.memguard import (
    PAGE,
    Action,
    Escalation,
    GuardClass,
    GuardParams,
    MemoryEvents,
    OomClock,
    SenpaiLoop,
    SenpaiParams,
    hit_own_limit,
)
from aios_host.errors import AiosError, ParseError
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.cgroup_format import pressure_avg10s
from aios_host.log import get_logger
from aios_host.policy.plan import Write
from aios_host.policy.schema import Policy
from aios_host.policy.targets import ClassTarget

log = get_logger("aios_host.daemon")
KILLS_FILE = "/run/aios-host/guard-kills.json"
KILLS_KEPT = 64


@dataclass(frozen=True)
class ClassMemory:
    current_bytes: int
    some_total_usec: int
    floor_bytes: int  # what reclaim cannot take
    events: MemoryEvents | None = None  # memory.events (the subtree's); None: no such file
    own_events: MemoryEvents | None = None  # the class's own (memory.events.local), for its limit


class ClassGuard(NamedTuple):
    state: str  # the escalation's last step on the class ("ok": none)
    seconds_to_oom: float  # inf: not growing; 0: at its memory.max (or out of headroom) now
    events: MemoryEvents | None = None


@dataclass(frozen=True)
class GuardView:
    """What status, the API and the metrics show of the guard."""

    host_available_bytes: float
    host_seconds_to_oom: float
    danger: str | None
    classes: Mapping[str, ClassGuard]


def _meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def _stat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().isdigit():
            out[k] = int(v)
    return out


def _some_total(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                k, _, v = field.partition("=")
                if k == "total":
                    return int(v)
    return 0


@dataclass(frozen=True)
class Notice:
    """A signal the memory guard owes a job's rank before it kills the rank's class."""

    pid: int
    signal: str  # "SIGUSR1", ...
    grace_s: float
    job: str
    rank: int


class GuardRunner:
    def __init__(self, fs: CgroupFs, policy: Policy, memory_capacity_bytes: float) -> None:
        self.fs = fs
        self.set_policy(policy, memory_capacity_bytes)
        self.senpai: dict[str, SenpaiLoop] = {}
        self.clocks: dict[str, OomClock] = {}
        self.own_events: dict[str, MemoryEvents] = {}  # class -> its memory.events(.local) last tick
        self.host_clock = OomClock()
        self.held: dict[str, str] = {}  # memory.high path -> the class holding it
        self.before_tighten: dict[str, tuple[str, str]] = {}  # class -> (rel, memory.high before)
        self.notices: list[Notice] = []  # signals for the loop to send (it knows whether it acts)
        self._asking: dict[str, list[Notice]] = {}  # class -> the ranks that asked for a notice
        self.view = GuardView(math.inf, math.inf, None, {})

    def set_policy(self, policy: Policy, memory_capacity_bytes: float) -> None:
        g = policy.memory_guard
        cap = memory_capacity_bytes
        self.policy = policy
        self._any_auto = any(c.memory.high == "auto" for c in policy.classes)  # not per tick
        self.enabled = g.enabled
        self.senpai_params = SenpaiParams(
            interval_ticks=g.interval_seconds, pressure_usec=int(g.pressure_ms * 1000), max_probe=g.max_probe,
            max_backoff=g.max_backoff, min_bytes=int(g.min_size.resolve(cap)), max_bytes=int(g.max_size.resolve(cap)))
        before = getattr(self, "escalation", None)
        self.escalation = Escalation(GuardParams(
            danger_available_bytes=int(g.danger_available.resolve(cap)),
            safe_available_bytes=int(g.safe_available.resolve(cap)), danger_seconds=g.danger_seconds,
            step_s=g.step_seconds, thaw_s=g.thaw_seconds, danger_pressure_full_pct=g.danger_pressure_full))
        if before is not None:
            # A new policy must not forget what the guard froze or tightened: with a fresh state a
            # class frozen just before a reload stayed frozen for good (seen in the VM), and so did
            # the next job whose ranks were moved into it.
            e = self.escalation
            e.level, e.last_step_at, e.noticed_at = before.level, before.last_step_at, before.noticed_at
            e.safe_since, e.in_danger = before.safe_since, before.in_danger

    def active(self) -> bool:
        return self.enabled or self._any_auto

    def held_paths(self) -> frozenset[str]:
        return frozenset(self.held)

    def _read_class(self, rel: str, no_swap: bool) -> ClassMemory | None:
        cg = self.fs.cgroup(rel)
        cur = cg.read_optional("memory.current")
        if cur is None:
            return None
        stat = _stat(cg.read_optional("memory.stat") or "")
        floor = stat.get("unevictable", 0) + stat.get("shmem", 0) + (stat.get("anon", 0) if no_swap else 0)
        ev = cg.read_attrs(["memory.events", "memory.events.local"])
        events = None if ev["memory.events"] is None else MemoryEvents.of(_stat(ev["memory.events"]))
        # Since 5.2 memory.events counts the subtree's events too: a rank at its own memory.max
        # (the supervisor gives each rank a share of the class's) would read as the class at its
        # limit. memory.events.local is the class's own; before 5.2 memory.events was, and there
        # is no .local.
        local = ev["memory.events.local"]
        own = events if local is None else MemoryEvents.of(_stat(local))
        return ClassMemory(int(cur), _some_total(cg.read_optional("memory.pressure") or ""), floor, events, own)

    def tick(self, now_s: float, targets: Mapping[str, ClassTarget]) -> list[tuple[Write, Action | None]]:
        """The guard's writes this tick, each with the escalation step it belongs to (None: senpai)."""
        if not self.active():
            return []
        mi = _meminfo(self.fs.root.read_optional("/proc/meminfo") or "")
        available = mi.get("MemAvailable", 0) + mi.get("SwapFree", 0)
        total = mi.get("MemTotal", 0)
        no_swap = mi.get("SwapTotal", 0) == 0
        host_tto = self.host_clock.update(now_s, total - mi.get("MemAvailable", 0), available)
        out: list[tuple[Write, Action | None]] = []
        guard_classes = []
        per_class: dict[str, ClassGuard] = {}
        for spec in self.policy.classes:
            t = targets.get(spec.name)
            if t is None or not t.owned or not t.cgroups:
                continue
            rel = t.cgroups[0]
            if not self.fs.exists(rel):
                continue  # the plan makes it later in this tick
            mem = self._read_class(rel, no_swap)
            if mem is None:
                continue
            max_text = (self.fs.cgroup(rel).read_optional("memory.max") or "max").strip()
            headroom = available if max_text == "max" else min(available, int(max_text) - mem.current_bytes)
            # The class's own max or oom count rose: the kernel reclaimed or OOM-killed at its
            # memory.max since the last tick, whatever the slope says. Shown only: the escalation
            # answers the host running out. A class at its own limit is the kernel's memcg OOM's
            # to handle inside it, and that limit (the policy's memory.max, or systemd's MemoryMax=)
            # is the user's decision; freezing or killing a tier makes no room under that limit.
            at_limit = hit_own_limit(self.own_events.get(spec.name), mem.own_events)
            if mem.own_events is None:
                self.own_events.pop(spec.name, None)
            else:
                self.own_events[spec.name] = mem.own_events
            tto = self.clocks.setdefault(spec.name, OomClock()).update(now_s, mem.current_bytes, headroom, at_limit)
            per_class[spec.name] = ClassGuard(self.escalation.state(spec.name), tto, mem.events)
            populated = (self.fs.cgroup(rel).read_optional("cgroup.events") or "").find("populated 1") >= 0
            grace = None
            if self.escalation.state(spec.name) in ("freeze", "notice"):  # a kill is next: who asked?
                asking = self._asking[spec.name] = self._ranks_asking_notice(rel)
                grace = max((n.grace_s for n in asking), default=None)
            guard_classes.append(GuardClass(spec.name, spec.priority, spec.memory.protect, populated,
                                            mem.current_bytes, grace))
            high_path = f"{self.fs.mount}/{rel}/memory.high"
            if spec.memory.high == "auto" and not populated:
                self.senpai.pop(spec.name, None)  # an empty class: its next workload starts a new loop
                self.held[high_path] = spec.name
            elif spec.memory.high == "auto" and self.escalation.state(spec.name) == "ok":
                loop = self.senpai.setdefault(spec.name, SenpaiLoop(self.senpai_params))
                self.held[high_path] = spec.name
                new = loop.step(mem.some_total_usec, mem.current_bytes, mem.floor_bytes)
                if new is not None:
                    out.append((self._write(rel, "memory.high", str(new),
                                            f"senpai: stall {mem.some_total_usec} us total, floor "
                                            f"{mem.floor_bytes // PAGE * PAGE} B"), None))
        why = None
        if self.enabled:
            full = self._host_pressure_full()
            why = self.escalation.danger(available, host_tto, full)
            for act in self.escalation.step(now_s, available, host_tto, guard_classes, full):
                out.extend((w, act) for w in self._action_writes(act, targets))
        self.view = GuardView(float(available), host_tto, why, per_class)
        return out

    def _host_pressure_full(self) -> float | None:
        """/proc/pressure/memory's full avg10, when the policy acts on it (None: off, or no PSI)."""
        if self.escalation.params.danger_pressure_full_pct is None:
            return None
        text = self.fs.root.read_optional("/proc/pressure/memory")
        try:
            return pressure_avg10s(text)[1] if text else None
        except ParseError:
            return None

    def _action_writes(self, act: Action, targets: Mapping[str, ClassTarget]) -> list[Write]:
        t = targets.get(act.cls)
        if t is None or not t.cgroups:
            return []
        rel = t.cgroups[0]
        high_path = f"{self.fs.mount}/{rel}/memory.high"
        reason = f"memory guard {act.step}: {act.reason}"
        if act.step == "tighten":
            self.held[high_path] = act.cls
            w = self._write(rel, "memory.high", str(max(PAGE, act.value or PAGE)), reason)
            if w.old is not None:
                self.before_tighten.setdefault(act.cls, (rel, w.old))
            return [w]
        if act.step == "freeze":
            return [self._write(rel, "cgroup.freeze", "1", reason)]
        if act.step == "notice":
            # thawed, so that the ranks can take the signal and checkpoint, with memory.high just
            # above what they use (not throttled while they do; they cannot grow much); the kill
            # follows their grace
            self.notices.extend(self._asking.get(act.cls, ()))
            out = []
            high = self._write(rel, "memory.high", str(act.value or PAGE), reason)
            if high.old is not None and high.old != "max" and int(high.old) < int(high.new):
                out.append(high)  # only ever raised: a lower limit set since stays
            return [*out, self._write(rel, "cgroup.freeze", "0", reason)]
        if act.step == "kill":
            self._record_kill(rel, act)
            return [self._write(rel, "cgroup.kill", "1", reason)]
        if act.step == "thaw":
            return [self._write(rel, "cgroup.freeze", "0", reason)]
        # release: memory.high back to what it was before the tightening (a policy that sets one
        # writes its own again at its next decision; senpai restarts from usage). Left tightened,
        # the next workload of the class was throttled below any danger and never acted on (the
        # squeeze bench, runs 4 and 5).
        spec = next((c for c in self.policy.classes if c.name == act.cls), None)
        if spec is None or spec.memory.high != "auto":
            self.held.pop(high_path, None)
        self.senpai.pop(act.cls, None)
        before = self.before_tighten.pop(act.cls, None)
        if before is None:
            return []
        return [self._write(before[0], "memory.high", before[1], reason)]

    def _write(self, rel: str, file: str, value: str, reason: str) -> Write:
        path = f"{self.fs.mount}/{rel}/{file}"
        old = None if file == "cgroup.kill" else self.fs.root.read_optional(path)
        return Write("write", path, None if old is None else old.strip(), value, reason, "memory", True)

    def take_notices(self) -> list[Notice]:
        out, self.notices = self.notices, []
        return out

    def _ranks_asking_notice(self, rel: str) -> list[Notice]:
        """The ranks in the cgroup's subtree whose job asked for a notice before a kill (the spec's
        guard_notice), from the supervisors' records: pid and start time, as match.job reads them."""
        from aios_host.kernel.procfs import read_pid_stat
        from aios_host.supervisor.state import JobStore

        inside = set(self._pids_below(rel))
        store = JobStore(self.fs.root)
        out = []
        try:
            keys = store.keys()
        except OSError:
            return []
        for key in keys:
            try:
                st = store.load(key)
            except AiosError:
                continue
            if not st.active or not st.guard_notice:
                continue
            for r in st.ranks:
                stat = read_pid_stat(self.fs.root, r.pid) if r.pid in inside and r.pid else None
                if stat is not None and stat.start_ticks == r.pid_start:
                    out.append(Notice(r.pid, st.guard_notice, st.guard_grace_s, st.key, r.rank))
        return out

    def _pids_below(self, rel: str) -> list[int]:
        """Every process in the cgroup's subtree, just before the kill: a job rank that the daemon
        moved there (match.job) is known to its supervisor by pid, not by this cgroup."""
        pids: set[int] = set()
        try:
            for cg in self.fs.walk(rel):
                pids.update(int(p) for p in (cg.read_optional("cgroup.procs") or "").split() if p.isdigit())
        except AiosError:
            pass  # gone already: the kill write will say so
        return sorted(pids)

    def _record_kill(self, rel: str, act: Action) -> None:
        """For supervisors: which cgroup the guard killed, when and why (the newest KILLS_KEPT)."""
        root = self.fs.root
        try:
            kills = json.loads(root.read_optional(KILLS_FILE) or "[]")
        except ValueError:
            kills = []
        kills = [k for k in kills if isinstance(k, dict)][-(KILLS_KEPT - 1):]
        kills.append({"cgroup": "/" + rel, "at_unix": time.time(), "class": act.cls, "reason": act.reason,
                      "pids": self._pids_below(rel)})
        path = Path(root.path(KILLS_FILE))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(kills))
            os.replace(tmp, path)  # a reader never sees half a file
        except OSError as exc:
            log.warning("guard_kill_record_failed", path=str(path), error=str(exc))
