"""Per-class measurement for one tick: cgroupfs files held open (pread), plus the probes' view.

ClassReading is raw and cumulative where the kernel is (cpu usage); rates come from two
readings. Several cgroups matched by one class are summed (PSI: the worst of them).

What is read when (at 1000 classes each pread of a kernfs file is ~2.7 usec, and reading all six
files every tick was most of a 23 ms tick):
- every tick: cpu.stat (usage: the rate the demand follows), except for an idle cgroup (its usage
  did not move between its last two reads: a sleeping service, of which a host with 1000 classes
  has many), read every `psi_every` ticks until it moves (it is seen to wake up to one tick later);
- when inotify says it changed (kernel/watch.py): cgroup.events (populated), so a class that
  empties is seen at the next tick and a steady host reads none; where it cannot be watched, on
  the PSI cadence;
- every `psi_every` ticks (2 at 1 s: the kernel recomputes PSI averages every 2 s, PSI_FREQ, so
  reading faster re-reads the same numbers): cpu.pressure (CPU pressure raises demand);
- every `rare_every` ticks (10): memory.current, memory.pressure and io.pressure, which only the
  views and metrics show (the engine does not allocate memory or io; the memory guard reads its
  own classes' files at its own pace).
The slower reads are spread over the ticks (cgroup i is read when (i + tick) % every == 0), so no
tick pays for all of them; a cgroup seen for the first time is read whole at once. In between,
the last values are carried.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from aios_host.errors import KernelError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import HeldFiles
from aios_host.kernel.watch import ModifyWatch
from aios_host.model.hist import hist_delta, percentile
from aios_host.policy.targets import ClassTarget
from aios_host.probes.sample import EMPTY_HIST, CgroupCounters, ProbeSample


class ClassReading(NamedTuple):
    """One class's raw figures this tick. A NamedTuple: one is made per class per tick (1000
    classes), and a frozen dataclass's __init__ costs several times a tuple's."""

    populated: bool  # any process in any of its cgroups (cgroup.events "populated 1")
    cpu_usage_usec: int | None  # cumulative, summed over its cgroups
    memory_current_bytes: int | None
    cpu_some_avg10: float | None
    memory_some_avg10: float | None
    io_some_avg10: float | None
    # False: cpu_usage_usec was carried from an earlier tick, not read now (an idle cgroup between
    # its reads); the smoother then has nothing new to smooth
    cpu_fresh: bool = True


class _Psi(NamedTuple):
    populated: bool
    cpu_some_avg10: float | None


class _Rare(NamedTuple):
    memory_current_bytes: int | None
    memory_some_avg10: float | None
    io_some_avg10: float | None


class _Paths(NamedTuple):
    """The host paths of the files read from one cgroup."""

    cpu_stat: str
    cgroup_events: str
    cpu_pressure: str
    memory_pressure: str
    memory_current: str
    io_pressure: str


_FILES = _Paths("cpu.stat", "cgroup.events", "cpu.pressure", "memory.pressure", "memory.current", "io.pressure")


def _some_avg10(text: str | None) -> float | None:
    return fmt.pressure_avg10s(text)[0] if text else None


def _flat_value(text: str, key: str) -> int | None:
    # cpu.stat / cgroup.events are "key value" lines; parse only the key we need (hot path)
    i = text.find(key + " ")
    if i < 0:
        return None
    j = text.find("\n", i)
    return int(text[i + len(key) + 1:j if j >= 0 else None])


_EMPTY = ClassReading(False, None, None, None, None, None)


class CgroupReader:
    """Reads the classes' cgroup files every tick through HeldFiles; cgroup.events only when
    inotify says it changed (kernel/watch.py), or on the PSI cadence where it cannot be watched."""

    def __init__(self, fs: CgroupFs, psi_every: int = 2, rare_every: int = 10) -> None:
        self.fs = fs
        self.held = HeldFiles(fs.root)
        self.events = ModifyWatch()
        self.psi_every = max(1, psi_every)
        self.rare_every = max(1, rare_every)
        self._tick = 0
        self._changed: set[Hashable] = set()  # this tick's cgroups whose cgroup.events changed
        self._psi: dict[str, _Psi] = {}
        self._rare: dict[str, _Rare] = {}
        self._paths: dict[str, _Paths] = {}  # rel -> its files' host paths, built once per cgroup
        self._last_usage: dict[str, int | None] = {}  # rel -> usage_usec at its last read
        self._idle: dict[str, int] = {}  # rel -> usage_usec, unchanged between its last two reads

    def _paths_of(self, rel: str) -> _Paths:
        base = self.fs.root.path(f"{self.fs.mount}/{rel}" if rel else self.fs.mount).as_posix()
        paths = self._paths[rel] = _Paths(*(f"{base}/{name}" for name in _FILES))
        return paths

    def _gone(self, rel: str) -> None:
        paths = self._paths.pop(rel, None)
        if paths is not None:
            self.held.forget_prefixes((paths.cpu_stat.rsplit("/", 1)[0] + "/",))
        self.events.forget(rel)
        self._last_usage.pop(rel, None)
        self._idle.pop(rel, None)
        self._psi.pop(rel, None)
        self._rare.pop(rel, None)

    def _cgroup(self, rel: str, phase: int, may_carry: bool) -> tuple[int | None, bool, _Psi, _Rare] | None:
        """(usage_usec, whether it was read this tick, PSI-cadence figures, rare figures) of one
        cgroup; None when it is not there. With may_carry, the usage of an idle cgroup (it did not
        move between its last two reads) is carried on the ticks between the PSI cadence's."""
        idle_usage = self._idle.get(rel) if may_carry else None
        if idle_usage is not None and phase % self.psi_every and phase % self.rare_every and rel not in self._changed:
            psi, rare = self._psi.get(rel), self._rare.get(rel)
            if psi is not None and rare is not None:
                return idle_usage, False, psi, rare
        paths = self._paths.get(rel) or self._paths_of(rel)
        read = self.held.read_host_path  # host paths: no root prefixing per read (hot path)
        try:
            stat = read(paths.cpu_stat)
            psi = self._psi.get(rel)
            psi_due = psi is None or phase % self.psi_every == 0
            if psi is None or rel in self._changed or (psi_due and not self.events.watched(rel)):
                if psi is None:  # watched before the first read: no change falls between the two
                    self.events.watch(rel, paths.cgroup_events)
                events = read(paths.cgroup_events)
                if events is None and stat is None:
                    self._gone(rel)  # no such cgroup (yet): look again next tick
                    return None
                populated = bool(events and _flat_value(events, "populated"))
                psi = self._psi[rel] = _Psi(populated, _some_avg10(read(paths.cpu_pressure)) if psi_due or psi is None
                                            else psi.cpu_some_avg10)
            elif psi_due:
                psi = self._psi[rel] = _Psi(psi.populated, _some_avg10(read(paths.cpu_pressure)))
            rare = self._rare.get(rel)
            if rare is None or phase % self.rare_every == 0:
                mem = read(paths.memory_current)
                rare = self._rare[rel] = _Rare(int(mem) if mem else None, _some_avg10(read(paths.memory_pressure)),
                                               _some_avg10(read(paths.io_pressure)))
        except KernelError:
            self._gone(rel)  # removed (ENODEV) or not readable: absent this tick
            return None
        if stat is None:
            return None, True, psi, rare
        # cpu.stat's first line is usage_usec on every kernel with cgroup v2: slice it (hot path)
        usage = int(stat[11:stat.index("\n")]) if stat.startswith("usage_usec ") else _flat_value(stat, "usage_usec")
        if usage is not None and self._last_usage.get(rel) == usage:
            self._idle[rel] = usage
        else:
            self._idle.pop(rel, None)
        self._last_usage[rel] = usage
        return usage, True, psi, rare

    def read(self, targets: Mapping[str, ClassTarget]) -> dict[str, ClassReading]:
        self._tick += 1
        tick = self._tick
        self._changed = self.events.changed()
        out: dict[str, ClassReading] = {}
        one = self._cgroup
        for i, (name, t) in enumerate(targets.items()):
            if len(t.cgroups) == 1:  # the usual case: no summing
                got = one(t.cgroups[0], i + tick, True)
                if got is None:
                    out[name] = _EMPTY
                else:
                    usage, fresh, p, r = got
                    out[name] = ClassReading(p.populated, usage, r.memory_current_bytes, p.cpu_some_avg10,
                                             r.memory_some_avg10, r.io_some_avg10, fresh)
                continue
            populated = False
            cpu: int | None = None
            mem: int | None = None
            psi: list[float | None] = [None, None, None]
            for rel in t.cgroups:
                got = self._cgroup(rel, i + tick, False)  # a sum is of usages read at one time
                if got is None:
                    continue
                usage, _, p, r = got
                populated = populated or p.populated
                if usage is not None:
                    cpu = (cpu or 0) + usage
                if r.memory_current_bytes is not None:
                    mem = (mem or 0) + r.memory_current_bytes
                for k, v in enumerate((p.cpu_some_avg10, r.memory_some_avg10, r.io_some_avg10)):
                    if v is not None:
                        psi[k] = v if psi[k] is None else max(psi[k], v)  # type: ignore[type-var]
            out[name] = ClassReading(populated, cpu, mem, psi[0], psi[1], psi[2])
        return out

    def close(self) -> None:
        self.held.close()
        self.events.close()


@dataclass(frozen=True)
class ClassProbeFigures:
    runq_p99_usec: float | None  # over the interval between two probe samples
    faults_total: int
    reclaim_ns_total: int
    reclaim_ms_per_s: float  # over the interval
    oom_kills_total: int


def _self_and_ancestors(path: str) -> list[str]:
    """"/a/b/c" -> ["/a/b/c", "/a/b", "/a", "/"]."""
    out = [path]
    while path not in ("/", ""):
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


def class_probe_figures(
    before: ProbeSample | None,
    after: ProbeSample,
    paths: Mapping[int, str],
    targets: Mapping[str, ClassTarget],
) -> dict[str, ClassProbeFigures]:
    """Pure: the probe counters of every cgroup at or below a class's cgroups, summed per class.
    `paths` maps cgroup ids to "/a/b" paths. The run-queue p99 is of the interval's histogram."""
    # class roots by path; each cgroup is found under them by walking its own ancestors: the cost
    # is cgroups x depth, not cgroups x classes (1000 classes, thousands of cgroups)
    classes_at: dict[str, list[str]] = {}
    for n, t in targets.items():
        for r in {"/" + r.strip("/") for r in t.cgroups}:
            classes_at.setdefault(r, []).append(n)
    ids_of: dict[str, list[int]] = {n: [] for n in targets}
    for cg_id in after.cgroups:
        p = paths.get(cg_id)
        if p is None:
            continue
        seen: set[str] = set()
        for anc in _self_and_ancestors(p):
            for n in classes_at.get(anc, ()):
                if n not in seen:  # a class whose cgroups nest counts a cgroup once
                    seen.add(n)
                    ids_of[n].append(cg_id)
    dt_s = (after.t_ns - before.t_ns) / 1e9 if before is not None else 0.0
    out = {}
    for n, ids in ids_of.items():
        hist = [0] * len(EMPTY_HIST)
        faults = reclaim = ooms = 0
        reclaim_before = 0
        for i in ids:
            a = after.counters(i)
            b = before.counters(i) if before is not None else CgroupCounters()
            for k, v in enumerate(hist_delta(b.runq_hist, a.runq_hist)):
                hist[k] += v
            faults += a.faults
            reclaim += a.direct_reclaim_ns + a.memcg_reclaim_ns
            reclaim_before += b.direct_reclaim_ns + b.memcg_reclaim_ns
            ooms += a.oom_kills
        p99 = percentile(tuple(hist), 0.99) if before is not None else None
        rate = (reclaim - reclaim_before) / 1e6 / dt_s if dt_s > 0 else 0.0
        out[n] = ClassProbeFigures(p99, faults, reclaim, max(0.0, rate), ooms)
    return out
