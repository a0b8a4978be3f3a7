"""Allocation -> the cgroup v2 values each class cgroup should have (DesiredCgroup).

The allocation is of CPU only (problem.py): it sets cpu.weight. Every other file comes from the
policy and the host; supervisor/limits.py reads a class's values from here for its job's ranks.

- cpu.weight: proportional to the cores the class is entitled to (mean = 100), times
  TIER_WEIGHT_FACTOR for each priority tier it stands above the lowest. Entitled = the larger of
  its allocation and its guaranteed cpu.min: the kernel is work-conserving, so weight an idle class
  does not use costs nobody anything, while a guaranteed class that went idle (demand 0, so
  allocation 0) and wakes up must get its guarantee at once, not after the daemon's next decision.
  The tier factor makes the LP's "higher tiers are served first" hold in the kernel too: with
  weights merely proportional to allocations, a lower tier with unbounded demand (CPU hogs) takes
  half of whatever a higher tier's rising demand has not yet been allocated. 100 per tier is close
  to strict priority within cpu.weight's range (in the VM isolation bench, 10 per tier left a
  protected server 77% of its solo throughput against static CPUWeight=1000/10's 100%). Scaled
  down together when the largest would pass the kernel's 10000;
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
from aios_host.policy.plan import DesiredCgroup, PlanError
from aios_host.policy.problem import Allocation, CoreAssignment
from aios_host.policy.schema import ClassSpec, Policy
from aios_host.policy.targets import ClassTarget
from aios_host.policy.units import PAGE_SIZE_BYTES, Quantity, format_bytes, round_to_page

TIER_WEIGHT_FACTOR = 100  # cpu.weight multiplier per priority tier above the lowest

CPU_PERIOD_USEC = 100_000


def _protection(mem_min: Quantity | None, mem_low: Quantity | None, cap: float) -> float:
    """memory a class is promised: the larger of its min and low."""
    lo = mem_min.resolve(cap) if mem_min is not None else 0.0
    return max(lo, mem_low.resolve(cap)) if mem_low is not None else lo


def _share(q: Quantity, cap: float, n: int) -> str:
    """A memory size split between n cgroups, in pages, as the kernel will read it back."""
    return str(round_to_page(q.resolve(cap)) // n // 4096 * 4096)


def protections(policy: Policy, mem_capacity: float) -> dict[str, float]:
    return {c.name: _protection(c.memory.min, c.memory.low, mem_capacity)
            for c in policy.classes if c.memory.min is not None or c.memory.low is not None}


def memory_files(spec: ClassSpec, protection: dict[str, float], mem_capacity: float,
                 n: int) -> dict[str, tuple[str, str]]:
    """memory.min/low/high/max of one of the class's n cgroups. A memory.high or memory.max that
    comes to less than a page (an "auto" with every byte promised to other classes, a tiny share,
    a size split over many cgroups) is refused: the kernel would store 0 and reclaim or OOM-kill
    everything in the class."""
    mem, name = spec.memory, spec.name
    files: dict[str, tuple[str, str]] = {}
    if mem.min is not None:
        files["memory.min"] = (_share(mem.min, mem_capacity, n), f"min {mem.min}")
    if mem.low is not None:
        files["memory.low"] = (_share(mem.low, mem_capacity, n), f"low {mem.low}")
    if mem.high == "auto":
        own = protection.get(name, 0.0)
        others = sum(protection.values()) - own
        high = round_to_page(max(own, mem_capacity - others) / n)
        why = f"auto: {format_bytes(mem_capacity)} less others' protection {format_bytes(others)}"
        if mem.max is not None and round_to_page(mem.max.resolve(mem_capacity)) // n < high:
            high, why = int(_share(mem.max, mem_capacity, n)), f"auto, capped at max {mem.max}"
        files["memory.high"] = (str(high), why)
    elif mem.high is not None:
        files["memory.high"] = (_share(mem.high, mem_capacity, n), f"high {mem.high}")
    if mem.max is not None:
        files["memory.max"] = (_share(mem.max, mem_capacity, n), f"max {mem.max}")
    for f in ("memory.high", "memory.max"):
        if f in files and int(files[f][0]) < PAGE_SIZE_BYTES:
            per = f" per cgroup (split over {n})" if n > 1 else ""
            raise PlanError(f"class {name}: {f} comes to {files[f][0]} bytes{per} ({files[f][1]}): below one "
                            "page the kernel stores 0 and reclaims or OOM-kills the whole class")
    return files


def cpu_weights(policy: Policy, alloc: Allocation, cpu_capacity: float) -> dict[str, tuple[int, float]]:
    """{class: (cpu.weight, entitled cores)} as the module docstring says."""
    cpu_of = alloc.amounts.column("cpu")
    entitled = {}
    for spec in policy.classes:
        guaranteed = spec.cpu.min.resolve(cpu_capacity) if spec.cpu.min is not None else 0.0
        entitled[spec.name] = max(cpu_of[spec.name], guaranteed)
    if not any(entitled.values()):  # all idle and nothing guaranteed: equal, by tier alone
        share = {n: 1.0 for n in entitled}
    else:
        mean = sum(entitled.values()) / len(entitled)
        share = {n: e / mean for n, e in entitled.items()}
    rank = {p: i for i, p in enumerate(sorted({c.priority for c in policy.classes}))}
    raw = {c.name: 100 * share[c.name] * TIER_WEIGHT_FACTOR ** rank[c.priority] for c in policy.classes}
    top = max(raw.values(), default=0.0)
    scale = min(1.0, 10000 / top) if top > 0 else 1.0
    return {n: (max(1, min(10000, round(w * scale))), entitled[n]) for n, w in raw.items()}


def desired_state(
    policy: Policy,
    targets: dict[str, ClassTarget],
    alloc: Allocation,
    cores: CoreAssignment,
    inv: Inventory,
    cpu_capacity: float,
    mem_capacity: float,
) -> list[DesiredCgroup]:
    weights = cpu_weights(policy, alloc, cpu_capacity)
    exclusive_cpus = sorted({c for cpus in cores.cpus.values() for c in cpus})
    exclusive_set = set(exclusive_cpus)
    shared_cpus = [c.id for c in inv.cpus if c.id not in exclusive_set]
    all_nodes = sorted(inv.numa_nodes)
    protection = protections(policy, mem_capacity)
    out: list[DesiredCgroup] = []
    for spec in policy.classes:
        name = spec.name
        t = targets[name]
        n = len(t.cgroups) or 1  # several matched cgroups share the class allocation equally
        weight, entitled = weights[name]
        files: dict[str, tuple[str, str]] = {
            "cpu.weight": (str(weight), f"entitled to {entitled:.2f} cores (allocated or guaranteed), "
                                        f"tier {spec.priority}")}
        cpu_spec = spec.cpu
        if cpu_spec.max is not None:
            cores_max = cpu_spec.max.resolve(cpu_capacity) / n
            quota = max(1000, round(cores_max * CPU_PERIOD_USEC))
            what = (f"{cpu_spec.max} of {cpu_capacity:g} cores" if cpu_spec.max.percent
                    else f"{cpu_spec.max} cores")
            files["cpu.max"] = (f"{quota} {CPU_PERIOD_USEC}", f"hard cap {what} = {cores_max:.2f} cores")
        if name in cores.cpus:
            cpus = cores.cpus[name]
            files["cpuset.mems"] = (fmt.format_cpu_list(cores.numa_nodes[name]), "NUMA nodes of its cores")
            why = f"exclusive: {len(cpus)} cpus = {cpu_spec.min} whole core(s)"
            files["cpuset.cpus"] = (fmt.format_cpu_list(cpus), why)
        elif exclusive_cpus and t.owned:
            files["cpuset.mems"] = (fmt.format_cpu_list(all_nodes), "all NUMA nodes")
            files["cpuset.cpus"] = (fmt.format_cpu_list(shared_cpus), "cores not held exclusively")
        files.update(memory_files(spec, protection, mem_capacity, n))
        io = spec.io
        files["io.weight"] = (f"default {io.weight}", "io.weight") if io.weight else (
            f"default {spec.weight}", "class weight")
        for dev, lim in sorted(io.max.items()) if io.max else ():
            limits: dict[str, fmt.Limit] = {
                "rbps": int(lim.rbps.value) if lim.rbps else fmt.MAX,
                "wbps": int(lim.wbps.value) if lim.wbps else fmt.MAX,
                "riops": lim.riops or fmt.MAX,
                "wiops": lim.wiops or fmt.MAX,
            }
            files[f"io.max {dev}"] = (fmt.format_io_max_line(dev, limits), f"io.max on {dev}")
        alloc_cores = alloc.amounts.column("cpu")[name] / n
        for rel in t.cgroups:
            out.append(DesiredCgroup(rel, t.owned, files, t.move_pids, name, spec.weight, alloc_cores))
    return out
