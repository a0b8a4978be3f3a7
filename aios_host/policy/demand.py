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


def build_problem(
    policy: Policy, cap: Capacity, usage: dict[str, ClassUsage], smt: int = 1
) -> Problem:
    cpu_cap, mem_cap = cap.cpu_cores, cap.memory_bytes
    none = ClassUsage()
    classes = []
    for spec in policy.classes:
        u = usage.get(spec.name, none)
        cpu, mem = spec.cpu, spec.memory
        mins: dict[str, float] = {}
        maxes: dict[str, float] = {}
        if cpu.max is not None:
            maxes["cpu"] = cpu.max.resolve(cpu_cap)
        if u.cpu_cores is not None:
            cpu_demand = u.cpu_cores * (1 + cpu_raise(u))
        else:
            cpu_demand = maxes.get("cpu", cpu_cap)
        if cpu.min is not None:
            mins["cpu"] = cpu.min.resolve(cpu_cap)
            if cpu.exclusive:
                # Whole physical cores, every SMT sibling; exactly its cores: no more, no less.
                mins["cpu"] = maxes["cpu"] = cpu_demand = mins["cpu"] * smt
        if mem.min is not None or mem.low is not None:
            mins["memory"] = max(q.resolve(mem_cap) for q in (mem.min, mem.low) if q is not None)
        if mem.max is not None:
            maxes["memory"] = mem.max.resolve(mem_cap)
        if u.memory_bytes is not None:
            mem_demand = u.memory_bytes * (1 + PRESSURE_GAIN * u.memory_some_avg10 / 100)
        else:
            mem_demand = maxes.get("memory", mem_cap)
        demand = {"cpu": cpu_demand, "memory": mem_demand, "io": 1.0}
        classes.append(ClassDemand(spec.name, float(spec.weight), spec.priority, demand, mins, maxes))
    return Problem(capacity=cap.as_problem(), classes=tuple(classes))
