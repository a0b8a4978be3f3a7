"""Snapshot of the host -> the solver's Problem.

Demand c_ir = measured usage x (1 + PRESSURE_GAIN * PSI some avg10 / 100): a class stalled on a
resource asks for more than it now uses (25% stalled -> 50% more). A class with nothing measured
(a new cgroup, no processes) asks for its max, or the whole capacity. Guarantees: cpu.min (an
exclusive class: its whole cores), memory max(min, low).

Run-queue latency (eBPF, aios_host.probes) is the same signal seen from the scheduler: a class
whose run-queue p99 is above RUNQ_TARGET_USEC waits for CPU, so its CPU demand is raised by
RUNQ_GAIN x (p99 / target - 1), capped at RUNQ_GAIN (p99 at twice the target -> 50% more). PSI
and run-queue latency measure one starvation, so the larger of the two raises apply, not both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import Inventory
from aios_host.policy.problem import ClassDemand, Problem
from aios_host.policy.schema import Policy
from aios_host.policy.targets import ClassTarget
from aios_host.policy.units import Quantity

PRESSURE_GAIN = 2.0
RUNQ_TARGET_USEC = 5000.0  # p99 wait for a CPU above this: the class is short of CPU
RUNQ_GAIN = 0.5


@dataclass(frozen=True)
class ClassUsage:
    cpu_cores: float | None = None
    memory_bytes: float | None = None
    cpu_some_avg10: float = 0.0
    memory_some_avg10: float = 0.0
    runq_p99_usec: float | None = None  # from the sched probe; None without eBPF


def cpu_raise(u: ClassUsage) -> float:
    """The fraction by which a class's CPU demand exceeds its usage: PSI or run-queue latency."""
    psi = PRESSURE_GAIN * u.cpu_some_avg10 / 100
    runq = 0.0
    if u.runq_p99_usec is not None and u.runq_p99_usec > RUNQ_TARGET_USEC:
        runq = RUNQ_GAIN * min(1.0, u.runq_p99_usec / RUNQ_TARGET_USEC - 1)
    return max(psi, runq)


@dataclass(frozen=True)
class Capacity:
    cpu_cores: float
    memory_bytes: float
    cpus_total: int
    memory_total_bytes: float

    def as_problem(self) -> dict[str, float]:
        return {"cpu": self.cpu_cores, "memory": self.memory_bytes, "io": 1.0}


def capacity(policy: Policy, inv: Inventory) -> Capacity:
    cpus, mem = float(inv.cpu_count), float(inv.memory_total_bytes)
    return Capacity(
        cpu_cores=max(0.0, cpus - policy.host.reserve_cores.resolve(cpus)),
        memory_bytes=max(0.0, mem - policy.host.reserve_memory.resolve(mem)),
        cpus_total=inv.cpu_count,
        memory_total_bytes=mem,
    )


def measure(fs: CgroupFs, targets: dict[str, ClassTarget], interval_s: float) -> dict[str, ClassUsage]:
    """CPU rate over `interval_s`, memory.current and PSI of each class's existing cgroups."""

    def read(rel: str) -> tuple[int | None, int | None, float, float]:
        if not fs.exists(rel):
            return None, None, 0.0, 0.0
        cg = fs.cgroup(rel)
        if not cg.read_optional("cgroup.procs") or not cg.populated():
            return None, None, 0.0, 0.0
        stat = cg.read_optional("cpu.stat")
        usage = int(stat.split("usage_usec", 1)[1].split()[0]) if stat and "usage_usec" in stat else None
        mem = cg.read_optional("memory.current")
        cpu_p, mem_p = cg.pressure("cpu"), cg.pressure("memory")
        return (usage, int(mem) if mem else None,
                cpu_p.some.avg10 if cpu_p else 0.0, mem_p.some.avg10 if mem_p else 0.0)

    first = {n: [read(r) for r in t.cgroups] for n, t in targets.items()}
    if interval_s > 0:
        time.sleep(interval_s)
    out: dict[str, ClassUsage] = {}
    for name, t in targets.items():
        second = [read(r) for r in t.cgroups]
        cpu = mem = None
        cpu_p = mem_p = 0.0
        for a, b in zip(first[name], second, strict=True):
            if a[0] is not None and b[0] is not None and interval_s > 0:
                cpu = (cpu or 0.0) + max(0, b[0] - a[0]) / 1e6 / interval_s
            if b[1] is not None:
                mem = (mem or 0.0) + b[1]
            cpu_p, mem_p = max(cpu_p, b[2]), max(mem_p, b[3])
        out[name] = ClassUsage(cpu, mem, cpu_p, mem_p)
    return out


def _q(q: Quantity | None, cap: float) -> float | None:
    return None if q is None else q.resolve(cap)


def build_problem(
    policy: Policy, cap: Capacity, usage: dict[str, ClassUsage], smt: int = 1
) -> Problem:
    classes = []
    for spec in policy.classes:
        u = usage.get(spec.name, ClassUsage())
        cpu_min = _q(spec.cpu.min, cap.cpu_cores)
        if spec.cpu.exclusive and cpu_min is not None:
            cpu_min = cpu_min * smt  # whole physical cores, every SMT sibling
        cpu_max = _q(spec.cpu.max, cap.cpu_cores)
        mem_min = max((v for v in (_q(spec.memory.min, cap.memory_bytes),
                                   _q(spec.memory.low, cap.memory_bytes)) if v is not None),
                      default=None)
        mem_max = _q(spec.memory.max, cap.memory_bytes)
        if u.cpu_cores is not None:
            cpu_demand = u.cpu_cores * (1 + cpu_raise(u))
        else:
            cpu_demand = cpu_max if cpu_max is not None else cap.cpu_cores
        if u.memory_bytes is not None:
            mem_demand = u.memory_bytes * (1 + PRESSURE_GAIN * u.memory_some_avg10 / 100)
        else:
            mem_demand = mem_max if mem_max is not None else cap.memory_bytes
        mins = {k: v for k, v in (("cpu", cpu_min), ("memory", mem_min)) if v is not None}
        maxes = {k: v for k, v in (("cpu", cpu_max), ("memory", mem_max)) if v is not None}
        if spec.cpu.exclusive and cpu_min is not None:
            maxes["cpu"] = cpu_min  # exactly its cores: no more, no less
            cpu_demand = cpu_min
        classes.append(
            ClassDemand(
                name=spec.name,
                weight=float(spec.weight),
                priority=spec.priority,
                demand={"cpu": cpu_demand, "memory": mem_demand, "io": 1.0},
                min=mins,
                max=maxes,
            )
        )
    return Problem(capacity=cap.as_problem(), classes=tuple(classes))
