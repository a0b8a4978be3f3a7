"""Allocation -> the cgroup v2 values each class cgroup should have (DesiredCgroup).

- cpu.weight: proportional to the class's allocated cores (mean allocation = 100), so that under
  full contention the kernel's work-conserving shares reproduce the LP's split;
- cpu.max: only where the class has a max (a hard cap);
- cpuset.cpus/mems: exclusive classes get their whole cores; the other managed classes get the
  rest, so nothing else of ours runs on exclusive cores;
- memory.min / memory.low: the policy's protections, as written in it; memory.max: the hard limit;
  memory.high: a size, or "auto" = what the host has after the reserve minus every OTHER class's
  protection (min/low), capped at max: a class may grow until it would eat into memory promised to
  others, and is throttled there instead of pushing them into reclaim. "auto" depends on the policy
  and the host only, never on a measurement, so a re-apply does not move it (an earlier version
  used allocation + 25% and could write memory.high = 0 for a class the LP gave nothing);
- io.weight: the class's io.weight, else its weight; io.max per device.
Values are rounded the way the kernel stores them (memory to pages) so a re-apply plans nothing.
"""

from __future__ import annotations

from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.inventory import Inventory
from aios_host.policy.plan import DesiredCgroup
from aios_host.policy.problem import Allocation, CoreAssignment
from aios_host.policy.schema import Policy
from aios_host.policy.targets import ClassTarget
from aios_host.policy.units import Quantity, format_bytes, round_to_page

CPU_PERIOD_USEC = 100_000


def _bytes(q: Quantity | None, cap: float) -> int | None:
    return None if q is None else round_to_page(q.resolve(cap))


def _protection(mem_min: Quantity | None, mem_low: Quantity | None, cap: float) -> float:
    """memory a class is promised: the larger of its min and low."""
    lo = mem_min.resolve(cap) if mem_min is not None else 0.0
    return max(lo, mem_low.resolve(cap)) if mem_low is not None else lo


def desired_state(
    policy: Policy,
    targets: dict[str, ClassTarget],
    alloc: Allocation,
    cores: CoreAssignment,
    inv: Inventory,
    cpu_capacity: float,
    mem_capacity: float,
) -> list[DesiredCgroup]:
    total_cpu = sum(alloc.amounts[c.name]["cpu"] for c in policy.classes) or 1.0
    mean_cpu = total_cpu / max(1, len(policy.classes))
    exclusive_cpus = sorted({c for cpus in cores.cpus.values() for c in cpus})
    exclusive_set = set(exclusive_cpus)
    shared_cpus = [c.id for c in inv.cpus if c.id not in exclusive_set]
    all_nodes = sorted(inv.numa_nodes)
    protection = {c.name: _protection(c.memory.min, c.memory.low, mem_capacity) for c in policy.classes}
    total_protection = sum(protection.values())
    out: list[DesiredCgroup] = []
    for spec in policy.classes:
        t = targets[spec.name]
        n = max(1, len(t.cgroups))  # several matched cgroups share the class allocation equally
        a = alloc.amounts[spec.name]
        files: dict[str, tuple[str, str]] = {}
        cpu = a["cpu"]
        weight = max(1, min(10000, round(100 * cpu / mean_cpu))) if mean_cpu > 0 else 100
        files["cpu.weight"] = (str(weight), f"allocated {cpu:.2f} cores ({weight / 100:.2f}x the mean)")
        if spec.cpu.max is not None:
            quota = max(1000, round(spec.cpu.max.resolve(cpu_capacity) / n * CPU_PERIOD_USEC))
            cores_max = spec.cpu.max.resolve(cpu_capacity) / n
            what = f"{spec.cpu.max} of {cpu_capacity:g} cores" if spec.cpu.max.percent else f"{spec.cpu.max} cores"
            files["cpu.max"] = (f"{quota} {CPU_PERIOD_USEC}", f"hard cap {what} = {cores_max:.2f} cores")
        if spec.name in cores.cpus:
            cpus = cores.cpus[spec.name]
            files["cpuset.mems"] = (fmt.format_cpu_list(cores.numa_nodes[spec.name]), "NUMA nodes of its cores")
            why = f"exclusive: {len(cpus)} cpus = {spec.cpu.min} whole core(s)"
            files["cpuset.cpus"] = (fmt.format_cpu_list(cpus), why)
        elif exclusive_cpus and t.owned:
            files["cpuset.mems"] = (fmt.format_cpu_list(all_nodes), "all NUMA nodes")
            files["cpuset.cpus"] = (fmt.format_cpu_list(shared_cpus), "cores not held exclusively")
        mem = spec.memory
        mem_max = _bytes(mem.max, mem_capacity)
        if mem.min is not None:
            files["memory.min"] = (str(_bytes(mem.min, mem_capacity) // n // 4096 * 4096), f"min {mem.min}")
        low = _bytes(mem.low, mem_capacity)
        if low is not None:
            files["memory.low"] = (str(low // n // 4096 * 4096), f"low {mem.low}")
        if mem.high == "auto":
            others = total_protection - protection[spec.name]
            room = max(protection[spec.name], mem_capacity - others)
            high = round_to_page(room / n)
            why = f"auto: {format_bytes(mem_capacity)} less others' protection {format_bytes(others)}"
            if mem_max is not None and mem_max // n < high:
                high, why = mem_max // n // 4096 * 4096, f"auto, capped at max {mem.max}"
            files["memory.high"] = (str(high), why)
        elif isinstance(mem.high, Quantity):
            files["memory.high"] = (str(_bytes(mem.high, mem_capacity) // n // 4096 * 4096), f"high {mem.high}")
        if mem_max is not None:
            files["memory.max"] = (str(mem_max // n // 4096 * 4096), f"max {mem.max}")
        if spec.io.weight:
            files["io.weight"] = (f"default {spec.io.weight}", "io.weight")
        else:
            files["io.weight"] = (f"default {spec.weight}", "class weight")
        for dev, lim in sorted(spec.io.max.items()) if spec.io.max else ():
            limits: dict[str, fmt.Limit] = {
                "rbps": int(lim.rbps.value) if lim.rbps else fmt.MAX,
                "wbps": int(lim.wbps.value) if lim.wbps else fmt.MAX,
                "riops": lim.riops or fmt.MAX,
                "wiops": lim.wiops or fmt.MAX,
            }
            files[f"io.max {dev}"] = (fmt.format_io_max_line(dev, limits), f"io.max on {dev}")
        for rel in t.cgroups:
            out.append(DesiredCgroup(rel=rel, create=t.owned, files=files,
                                     move_pids=t.move_pids, cls=spec.name))
    return out
