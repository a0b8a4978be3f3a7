"""The class's allocation from the policy engine -> limits of each rank.

A job names a policy class. Its ranks together get what the solver gives that class on this host,
divided equally between the local ranks:

    CPUWeight=    the class's weight (siblings in the job's slice share by it)
    CPUQuota=     the class's cpu.max / nproc (only where the class has a max)
    AllowedCPUs=  the class's exclusive cores, split in contiguous whole-core blocks
    MemoryHigh=   the class's memory.high ("auto": allocation + 25%) / nproc
    MemoryMax=    the class's memory.max / nproc

Where the policy comes from: the spec's `policy`, else the policy of the last `policy apply`
on this host (/run/aios-host/state.json). Without either, ranks run without limits of their own
(under the class cgroup, which carries whatever limits were applied to it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from aios_host.errors import AiosError
from aios_host.kernel.inventory import Inventory
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger

log = get_logger("aios_host.supervisor.limits")
PAGE = 4096
AUTO_HIGH_HEADROOM = 1.25  # as policy/mapping.py


@dataclass(frozen=True)
class ClassShare:
    """What one class gets on this host, in absolute units."""

    name: str
    weight: int
    cpu_cores: float  # the solver's allocation
    cpu_max_cores: float | None
    memory_bytes: float
    memory_high_bytes: int | None
    memory_max_bytes: int | None
    exclusive_cpus: tuple[int, ...] = ()
    policy: str = ""
    managed_root: str = "aios.slice"


@dataclass(frozen=True)
class RankLimits:
    cpu_weight: int | None = None
    cpu_quota_percent: float | None = None  # of one CPU, as systemd's CPUQuota=
    allowed_cpus: tuple[int, ...] = ()
    memory_high_bytes: int | None = None
    memory_max_bytes: int | None = None

    @property
    def empty(self) -> bool:
        return self == RankLimits()

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def systemd_properties(self) -> list[str]:
        """systemd.resource-control(5) assignments for `systemd-run -p`."""
        props = []
        if self.cpu_weight is not None:
            props.append(f"CPUWeight={self.cpu_weight}")
        if self.cpu_quota_percent is not None:
            props.append(f"CPUQuota={self.cpu_quota_percent:.0f}%")
        if self.allowed_cpus:
            props.append("AllowedCPUs=" + ",".join(map(str, self.allowed_cpus)))
        if self.memory_high_bytes is not None:
            props.append(f"MemoryHigh={self.memory_high_bytes}")
        if self.memory_max_bytes is not None:
            props.append(f"MemoryMax={self.memory_max_bytes}")
        return props

    def cgroup_files(self) -> dict[str, str]:
        """The same limits as cgroup v2 files, for ranks in cgroups of our own."""
        files = {}
        if self.cpu_weight is not None:
            files["cpu.weight"] = str(self.cpu_weight)
        if self.cpu_quota_percent is not None:
            files["cpu.max"] = f"{max(1000, round(self.cpu_quota_percent * 1000))} 100000"
        if self.allowed_cpus:
            files["cpuset.cpus"] = ",".join(map(str, self.allowed_cpus))
        if self.memory_high_bytes is not None:
            files["memory.high"] = str(self.memory_high_bytes)
        if self.memory_max_bytes is not None:
            files["memory.max"] = str(self.memory_max_bytes)
        return files


def _page(n: float) -> int:
    return max(PAGE, int(n) // PAGE * PAGE)


def split_limits(share: ClassShare, nproc: int, placements_cpus: list[tuple[int, ...]]) -> list[RankLimits]:
    """Per-rank limits: the class share divided by the local ranks. `placements_cpus`: the CPUs
    placement chose for each rank (used when the class has no exclusive cores)."""
    out = []
    excl = list(share.exclusive_cpus)
    blocks: list[tuple[int, ...]] = []
    if excl:
        per = max(1, len(excl) // nproc)
        blocks = [tuple(excl[i * per:(i + 1) * per]) or tuple(excl) for i in range(nproc)]
    for lr in range(nproc):
        quota = None
        if share.cpu_max_cores is not None:
            quota = max(1.0, 100.0 * share.cpu_max_cores / nproc)
        out.append(RankLimits(
            cpu_weight=share.weight,
            cpu_quota_percent=quota,
            allowed_cpus=blocks[lr] if blocks else placements_cpus[lr],
            memory_high_bytes=_page(share.memory_high_bytes / nproc) if share.memory_high_bytes else None,
            memory_max_bytes=_page(share.memory_max_bytes / nproc) if share.memory_max_bytes else None,
        ))
    return out


def applied_policy_path(root: SysRoot) -> str | None:
    """The policy file of the last successful `policy apply` on this host, if any."""
    from aios_host.actuate.state import StateStore

    try:
        records = StateStore(root).load()
    except AiosError:
        return None
    for rec in reversed(records):
        if rec.status == "applied":
            return rec.policy
    return None


def class_share(policy_path: str, cls: str, inv: Inventory) -> ClassShare:
    """Run the policy engine (no usage sample: a class's demand is its max or the host) and
    return `cls`'s share. Raises AiosError if the policy has no such class."""
    from aios_host.policy.demand import build_problem, capacity
    from aios_host.policy.engine import assign
    from aios_host.policy.schema import load_policy
    from aios_host.policy.solver import solve
    from aios_host.policy.units import Quantity

    policy = load_policy(policy_path)
    try:
        spec = policy.cls(cls)
    except KeyError:
        names = ", ".join(c.name for c in policy.classes) or "none"
        raise AiosError(f"{policy_path}: no class {cls!r} (classes: {names}); fix the job's class") from None
    cap = capacity(policy, inv)
    smt = max(len(c) for c in inv.cores) if inv.cores else 1
    alloc = solve(build_problem(policy, cap, {}, smt=smt))
    cores = assign(policy, inv)
    a = alloc.amounts[cls]
    mem_alloc = float(a["memory"])
    mem_max = spec.memory.max.resolve(cap.memory_bytes) if spec.memory.max is not None else None
    high: float | None
    if spec.memory.high == "auto":
        high = mem_alloc * AUTO_HIGH_HEADROOM
        if mem_max is not None:
            high = min(high, mem_max)
    elif isinstance(spec.memory.high, Quantity):
        high = spec.memory.high.resolve(cap.memory_bytes)
    else:
        high = None
    return ClassShare(
        name=cls,
        weight=spec.weight,
        cpu_cores=float(a["cpu"]),
        cpu_max_cores=spec.cpu.max.resolve(cap.cpu_cores) if spec.cpu.max is not None else None,
        memory_bytes=mem_alloc,
        memory_high_bytes=int(high) if high is not None and math.isfinite(high) else None,
        memory_max_bytes=int(mem_max) if mem_max is not None else None,
        exclusive_cpus=tuple(cores.cpus.get(cls, ())),
        policy=policy_path,
        managed_root=policy.host.managed_root.strip("/"),
    )


def resolve_share(root: SysRoot, policy: str | None, cls: str, inv: Inventory) -> ClassShare | None:
    path = policy or applied_policy_path(root)
    if path is None:
        log.info("job_limits_none", reason="no policy given and none applied", cls=cls)
        return None
    return class_share(path, cls, inv)
