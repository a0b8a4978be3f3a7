"""Per-class measurement for one tick: cgroupfs files held open (pread), plus the probes' view.

ClassReading is raw and cumulative where the kernel is (cpu usage); rates come from two
readings. Several cgroups matched by one class are summed (PSI: the worst of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aios_host.errors import KernelError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import HeldFiles
from aios_host.model.hist import hist_delta, percentile
from aios_host.policy.targets import ClassTarget
from aios_host.probes.sample import EMPTY_HIST, CgroupCounters, ProbeSample

_FILES = ("cgroup.events", "cpu.stat", "memory.current", "cpu.pressure", "memory.pressure", "io.pressure")


@dataclass(frozen=True)
class ClassReading:
    populated: bool  # any process in any of its cgroups (cgroup.events "populated 1")
    cpu_usage_usec: int | None  # cumulative, summed over its cgroups
    memory_current_bytes: int | None
    cpu_some_avg10: float | None
    memory_some_avg10: float | None
    io_some_avg10: float | None


def _some_avg10(text: str | None) -> float | None:
    if not text:
        return None
    return fmt.parse_pressure(text).some.avg10


def _flat_value(text: str, key: str) -> int | None:
    # cpu.stat / cgroup.events are "key value" lines; parse only the key we need (hot path)
    i = text.find(key + " ")
    if i < 0:
        return None
    j = text.find("\n", i)
    return int(text[i + len(key) + 1:j if j >= 0 else None])


class CgroupReader:
    """Reads the classes' cgroup files every tick through HeldFiles."""

    def __init__(self, fs: CgroupFs) -> None:
        self.fs = fs
        self.held = HeldFiles(fs.root)

    def _cgroup(self, rel: str) -> dict[str, str | None] | None:
        base = f"{self.fs.mount}/{rel}" if rel else self.fs.mount
        out: dict[str, str | None] = {}
        try:
            for f in _FILES:
                out[f] = self.held.read(f"{base}/{f}")
        except KernelError:
            self.held.forget_under(base)  # removed (ENODEV) or not readable: absent this tick
            return None
        if out["cgroup.events"] is None and out["cpu.stat"] is None:
            self.held.forget_under(base)  # no such cgroup (yet): look again next tick
            return None
        return out

    def read(self, targets: Mapping[str, ClassTarget]) -> dict[str, ClassReading]:
        out: dict[str, ClassReading] = {}
        for name, t in targets.items():
            populated = False
            cpu: int | None = None
            mem: int | None = None
            psi: list[float | None] = [None, None, None]
            for rel in t.cgroups:
                files = self._cgroup(rel)
                if files is None:
                    continue
                ev = files["cgroup.events"]
                populated = populated or bool(ev and _flat_value(ev, "populated"))
                if files["cpu.stat"]:
                    u = _flat_value(files["cpu.stat"], "usage_usec")
                    if u is not None:
                        cpu = (cpu or 0) + u
                if files["memory.current"]:
                    mem = (mem or 0) + int(files["memory.current"])
                for i, f in enumerate(("cpu.pressure", "memory.pressure", "io.pressure")):
                    v = _some_avg10(files[f])
                    if v is not None:
                        psi[i] = v if psi[i] is None else max(psi[i], v)  # type: ignore[type-var]
            out[name] = ClassReading(populated, cpu, mem, psi[0], psi[1], psi[2])
        return out

    def close(self) -> None:
        self.held.close()


@dataclass(frozen=True)
class ClassProbeFigures:
    runq_p99_usec: float | None  # over the interval between two probe samples
    faults_total: int
    reclaim_ns_total: int
    reclaim_ms_per_s: float  # over the interval
    oom_kills_total: int


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def class_probe_figures(
    before: ProbeSample | None,
    after: ProbeSample,
    paths: Mapping[int, str],
    targets: Mapping[str, ClassTarget],
) -> dict[str, ClassProbeFigures]:
    """Pure: the probe counters of every cgroup at or below a class's cgroups, summed per class.
    `paths` maps cgroup ids to "/a/b" paths. The run-queue p99 is of the interval's histogram."""
    roots = {n: tuple("/" + r.strip("/") for r in t.cgroups) for n, t in targets.items()}
    ids_of: dict[str, list[int]] = {n: [] for n in targets}
    for cg_id in after.cgroups:
        p = paths.get(cg_id)
        if p is None:
            continue
        for n, r in roots.items():
            if _under(p, r):
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
