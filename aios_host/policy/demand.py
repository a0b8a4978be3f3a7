"""Snapshot of the host -> the solver's Problem: CPU, the one resource the engine allocates.

CPU demand = measured usage x (1 + PRESSURE_GAIN * cpu PSI some avg10 / 100): a class stalled on
CPU asks for more than it now uses (25% stalled -> 50% more). A class with nothing measured (a new
cgroup, no processes) asks for its max, or the whole capacity. Guarantee: cpu.min (an exclusive
class: its whole cores). The allocation drives cpu.weight (mapping.py).

Memory and io are not in the Problem: every memory file is written as the policy says (mapping.py)
and io.weight is the class's io.weight or weight, so an LP allocation of either would be a number
nothing uses. The memory guarantees (max(min, low) of each class) are still checked against the
memory after the reserve, with the solver's message (check_memory_guarantees), because the kernel
cannot honour protections that add up to more than the host has.

Run-queue latency (eBPF, aios_host.probes) is the same signal seen from the scheduler: a class
whose run-queue p99 is above RUNQ_TARGET_USEC waits for CPU, so its CPU demand is raised by
RUNQ_GAIN x (p99 / target - 1), capped at RUNQ_GAIN (p99 at twice the target -> 50% more). PSI
and run-queue latency measure one starvation, so the larger of the two raises apply, not both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import Inventory
from aios_host.policy.problem import ClassDemand, Problem
from aios_host.policy.schema import Policy
from aios_host.policy.solver import check_guarantees
from aios_host.policy.targets import ClassTarget

PRESSURE_GAIN = 2.0
RUNQ_TARGET_USEC = 5000.0  # p99 wait for a CPU above this: the class is short of CPU
RUNQ_GAIN = 0.5


class ClassUsage(NamedTuple):
    """A class's measured use. A NamedTuple: the daemon makes one per class per tick."""

    cpu_cores: float | None = None
    # Ignored: memory is not allocated (module docstring) and measure() no longer reads it. Kept so
    # that callers which still pass it (tests/unit/model, tests/bench/bench_decide.py) keep working.
    memory_bytes: float | None = None
    cpu_some_avg10: float = 0.0
    memory_some_avg10: float = 0.0  # ignored, as memory_bytes
    runq_p99_usec: float | None = None  # from the sched probe; None without eBPF


def cpu_raise(u: ClassUsage) -> float:
    """The fraction by which a class's CPU demand exceeds its usage: PSI or run-queue latency."""
    psi = PRESSURE_GAIN * u.cpu_some_avg10 / 100
    runq = 0.0
    if u.runq_p99_usec is not None and u.runq_p99_usec > RUNQ_TARGET_USEC:
        runq = RUNQ_GAIN * min(1.0, u.runq_p99_usec / RUNQ_TARGET_USEC - 1)
    return max(psi, runq)


def cpu_demand(u: ClassUsage) -> float | None:
    """The CPU (cores) a class asks for: its usage raised by its stall (cpu_raise); None when
    nothing was measured (build_problem then asks for its max)."""
    return None if u.cpu_cores is None else u.cpu_cores * (1 + cpu_raise(u))


@dataclass(frozen=True)
class Capacity:
    cpu_cores: float
    memory_bytes: float
    cpus_total: int
    memory_total_bytes: float

    def as_problem(self) -> dict[str, float]:
        return {"cpu": self.cpu_cores}


def capacity(policy: Policy, inv: Inventory) -> Capacity:
    cpus, mem = float(inv.cpu_count), float(inv.memory_total_bytes)
    return Capacity(
        cpu_cores=max(0.0, cpus - policy.host.reserve_cores.resolve(cpus)),
        memory_bytes=max(0.0, mem - policy.host.reserve_memory.resolve(mem)),
        cpus_total=inv.cpu_count,
        memory_total_bytes=mem,
    )


def measure(fs: CgroupFs, targets: dict[str, ClassTarget], interval_s: float) -> dict[str, ClassUsage]:
    """CPU rate over `interval_s` and CPU PSI of each class's existing cgroups."""

    def read(rel: str) -> tuple[int | None, float]:
        if not fs.exists(rel):
            return None, 0.0
        cg = fs.cgroup(rel)
        if not cg.read_optional("cgroup.procs") or not cg.populated():
            return None, 0.0
        stat = cg.read_optional("cpu.stat")
        usage = int(stat.split("usage_usec", 1)[1].split()[0]) if stat and "usage_usec" in stat else None
        cpu_p = cg.pressure("cpu")
        return usage, cpu_p.some.avg10 if cpu_p else 0.0

    first = {n: [read(r) for r in t.cgroups] for n, t in targets.items()}
    if interval_s > 0:
        time.sleep(interval_s)
    out: dict[str, ClassUsage] = {}
    for name, t in targets.items():
        second = [read(r) for r in t.cgroups]
        cpu = None
        cpu_p = 0.0
        for a, b in zip(first[name], second, strict=True):
            if a[0] is not None and b[0] is not None and interval_s > 0:
                cpu = (cpu or 0.0) + max(0, b[0] - a[0]) / 1e6 / interval_s
            cpu_p = max(cpu_p, b[1])
        out[name] = ClassUsage(cpu_cores=cpu, cpu_some_avg10=cpu_p)
    return out


def check_memory_guarantees(policy: Policy, memory_bytes: float) -> None:
    """Raise InfeasibleError when the memory protections (max(min, low) per class) add up to more
    than `memory_bytes`, or a class's protection exceeds its memory.max. Memory is not allocated,
    but the solver's guarantee check says this in the same words, so it is given the guarantees as
    a Problem of its own (demand 0: check_guarantees only reads mins and maxes)."""
    classes = []
    for spec in policy.classes:
        mem = spec.memory
        if mem.min is None and mem.low is None:
            continue
        protection = max(q.resolve(memory_bytes) for q in (mem.min, mem.low) if q is not None)
        cap = {"memory": mem.max.resolve(memory_bytes)} if mem.max is not None else {}
        classes.append(ClassDemand(spec.name, 1.0, 0, {"memory": 0.0}, {"memory": protection}, cap))
    if classes:
        check_guarantees(Problem({"memory": memory_bytes}, tuple(classes)))


def build_problem(
    policy: Policy, cap: Capacity, usage: dict[str, ClassUsage], smt: int = 1
) -> Problem:
    """The CPU problem of `policy` on this host; InfeasibleError first if its memory guarantees
    cannot be met (the CPU guarantees are checked by the solver)."""
    check_memory_guarantees(policy, cap.memory_bytes)
    return cpu_problem(policy, cap, usage, smt)


def cpu_problem(policy: Policy, cap: Capacity, usage: dict[str, ClassUsage], smt: int = 1) -> Problem:
    """build_problem() without the memory check: what the daemon compares every tick."""
    cpu_cap = cap.cpu_cores
    none = ClassUsage()
    classes = []
    for spec in policy.classes:
        u = usage.get(spec.name, none)
        cpu = spec.cpu
        mins: dict[str, float] = {}
        maxes: dict[str, float] = {}
        if cpu.max is not None:
            maxes["cpu"] = cpu.max.resolve(cpu_cap)
        measured = cpu_demand(u)
        demand = measured if measured is not None else maxes.get("cpu", cpu_cap)
        if cpu.min is not None:
            mins["cpu"] = cpu.min.resolve(cpu_cap)
            if cpu.exclusive:
                # Whole physical cores, every SMT sibling; exactly its cores: no more, no less.
                mins["cpu"] = maxes["cpu"] = demand = mins["cpu"] * smt
        classes.append(ClassDemand(spec.name, float(spec.weight), spec.priority, {"cpu": demand}, mins, maxes))
    return Problem(capacity=cap.as_problem(), classes=tuple(classes))
