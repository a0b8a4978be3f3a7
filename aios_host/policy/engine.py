"""decide(): policy + host snapshot -> Problem -> Allocation (+ exclusive cores) -> desired
cgroup values -> Plan. Pure apart from reading the host through the kernel layer."""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator
from dataclasses import dataclass

from aios_host.energy.cpufreq_classes import class_cpufreq
from aios_host.energy.plan import energy_plan
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import Inventory
from aios_host.policy.cores import assign_cores
from aios_host.policy.demand import Capacity, ClassUsage, build_problem, capacity, cpu_problem
from aios_host.policy.mapping import desired_state, memory_files, protections
from aios_host.policy.plan import DesiredCgroup, Plan, make_plan
from aios_host.policy.problem import Allocation, CoreAssignment, CoreRequest, Problem
from aios_host.policy.schema import Policy
from aios_host.policy.solver import decisive_demands, solve
from aios_host.policy.targets import ClassTarget


@dataclass(frozen=True)
class Decision:
    policy: Policy
    capacity: Capacity
    problem: Problem
    allocation: Allocation
    cores: CoreAssignment
    targets: dict[str, ClassTarget]
    desired: list[DesiredCgroup]
    plan: Plan
    energy_notes: tuple[str, ...] = ()  # what of [energy] / [class.energy] this host cannot take, and why


def core_requests(policy: Policy, inv: Inventory) -> list[CoreRequest]:
    gpu_node = {i: g.numa_node for i, g in enumerate(inv.gpus)}
    reqs = []
    for spec in policy.classes:
        if not spec.cpu.exclusive or spec.cpu.min is None:
            continue
        node = spec.cpu.numa
        if node is None and spec.cpu.gpus:
            nodes = [gpu_node.get(g, -1) for g in spec.cpu.gpus]
            node = nodes[0] if nodes and nodes[0] >= 0 else None
        reqs.append(CoreRequest(spec.name, int(spec.cpu.min.value), node))
    return reqs


def reserved_cpus(policy: Policy, inv: Inventory) -> list[int]:
    """The system reserve, as whole cores from the lowest-numbered (where IRQs and init live)."""
    n = math.ceil(policy.host.reserve_cores.resolve(inv.cpu_count) / max(1, len(inv.cores[0])))
    return [c for core in inv.cores[:n] for c in core]


def assign(policy: Policy, inv: Inventory) -> CoreAssignment:
    reqs = core_requests(policy, inv)
    if not reqs:
        return CoreAssignment({}, {})
    return assign_cores(
        reqs,
        inv.cores,
        {c.id: c.numa_node for c in inv.cpus},
        {c.id: c.llc_id for c in inv.cpus},
        reserved=reserved_cpus(policy, inv),
    )


def _smt(inv: Inventory) -> int:
    """Threads per core: an exclusive class's whole cores are this many CPUs each."""
    return max(len(c) for c in inv.cores) if inv.cores else 1


def decisive(policy: Policy, inv: Inventory, usage: dict[str, ClassUsage]) -> dict[str, float]:
    """The CPU demands decide() would solve with, as far as they can change what it decides
    (solver.decisive_demands): the daemon decides again only when one of these moves."""
    return decisive_demands(cpu_problem(policy, capacity(policy, inv), usage, smt=_smt(inv)))


def check_on_host(policy: Policy, inv: Inventory) -> Capacity:
    """What `policy check` and a daemon switching policy verify beyond the file itself: the
    guarantees fit this host (the LP with no demand is feasible), exclusive cores can be given, and
    no memory limit comes to nothing here. Raises with one line; returns the capacity."""
    cap = capacity(policy, inv)
    smt = _smt(inv)
    solve(build_problem(policy, cap, {}, smt=smt))
    assign(policy, inv)
    prot = protections(policy, cap.memory_bytes)
    for spec in policy.classes:
        memory_files(spec, prot, cap.memory_bytes, 1)
    return cap


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """decide() allocates a few container objects per class (dicts, Writes, DesiredCgroups), none
    in a reference cycle; left on, the cyclic collector walks every live object (the policy's
    pydantic models included) again and again while they pile up: a third of decide()'s time at
    1000 classes. Reference counting still frees everything; the collector resumes afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def decide(
    policy: Policy,
    fs: CgroupFs,
    inv: Inventory,
    targets: dict[str, ClassTarget],
    usage: dict[str, ClassUsage],
) -> Decision:
    with _cyclic_gc_paused():
        cap = capacity(policy, inv)
        smt = _smt(inv)
        problem = build_problem(policy, cap, usage, smt=smt)
        allocation = solve(problem)
        cores = assign(policy, inv)
        desired = desired_state(policy, targets, allocation, cores, inv, cap.cpu_cores, cap.memory_bytes)
        # What each class uses of its allocation: a guaranteed minimum is allocated whether or not
        # the class runs anything, and the systemd router must not take an empty guaranteed class
        # for a busy one (aios.slice then outweighed system.slice with only CPU hogs in it, and
        # starved the daemon and the services there in the VM isolation bench).
        demand_cpu = {c.name: float(c.demand.get("cpu", 0.0)) for c in problem.classes}
        desired = [d._replace(cpu_alloc_cores=min(d.cpu_alloc_cores, demand_cpu.get(d.cls, 0.0))) for d in desired]
        plan = make_plan(fs, desired)
        # per-class cpufreq settings follow the exclusive CPUs this decision placed
        energy = energy_plan(fs.root, policy.energy, classes=class_cpufreq(policy, cores.cpus))
        plan = Plan(plan.writes + energy.writes)
        return Decision(policy, cap, problem, allocation, cores, targets, desired, plan, energy.notes)
