"""The class's values from the policy engine -> limits of each rank.

A job names a policy class. Its ranks together get what the policy writes on that class's cgroup
on this host, divided equally between the local ranks. The class's values are not recomputed here:
class_share runs the same engine steps as `policy apply` (capacity, problem, solve, exclusive cores)
and takes the class cgroup's files from mapping.desired_state, so a rank's limits and the class
cgroup's can never follow two formulas:

    CPUWeight=    the class cgroup's cpu.weight (not divided: it is relative, and a rank's siblings
                  are ranks of the same class, which all get the same value)
    CPUQuota=     the class cgroup's cpu.max / nproc (only where the class has a max)
    AllowedCPUs=  the class's exclusive cores (its cpuset.cpus), split in contiguous blocks
    MemoryHigh=   the class cgroup's memory.high / nproc (so "auto" is mapping's: the memory after
                  the reserve less every other class's protection, capped at memory.max)
    MemoryMax=    the class cgroup's memory.max / nproc

Memory sizes are divided in whole pages, rounded down, so nproc ranks never add up to more than the
class: a rank's value x nproc is within nproc pages below the class's.

Where the policy comes from: the spec's `policy`, else the policy of the last `policy apply`
on this host (/run/aios-host/state.json). Without either, ranks run without limits of their own
(under the class cgroup, which carries whatever limits were applied to it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from aios_host.errors import AiosError
from aios_host.kernel.inventory import Inventory
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger

log = get_logger("aios_host.supervisor.limits")
PAGE = 4096


@dataclass(frozen=True)
class ClassShare:
    """What one class gets on this host: the values desired_state writes on its cgroup, parsed."""

    name: str
    cpu_weight: int  # the class cgroup's cpu.weight
    cpu_cores: float  # the solver's allocation (placement sizes thread counts by it)
    cpu_max_cores: float | None  # the class cgroup's cpu.max, in cores; None: no cpu.max written
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
            cpu_weight=share.cpu_weight,
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
    """Run the policy engine as `policy apply` does, without a usage sample (a class's demand is its
    max or the host), and return the values desired_state gives `cls`'s cgroup. Raises AiosError if
    the policy has no such class."""
    from aios_host.kernel import cgroup_format as fmt
    from aios_host.policy.demand import build_problem, capacity
    from aios_host.policy.engine import assign
    from aios_host.policy.mapping import desired_state
    from aios_host.policy.schema import load_policy
    from aios_host.policy.solver import solve
    from aios_host.policy.targets import ClassTarget

    policy = load_policy(policy_path)
    try:
        policy.cls(cls)
    except KeyError:
        names = ", ".join(c.name for c in policy.classes) or "none"
        raise AiosError(f"{policy_path}: no class {cls!r} (classes: {names}); fix the job's class") from None
    cap = capacity(policy, inv)
    smt = max(len(c) for c in inv.cores) if inv.cores else 1
    alloc = solve(build_problem(policy, cap, {}, smt=smt))
    cores = assign(policy, inv)
    managed_root = policy.host.managed_root.strip("/")
    # Every class as its one owned cgroup <managed_root>/<name>: that is where the job's ranks run.
    # (A class matched to several existing cgroups has its values divided between them by
    # desired_state; its jobs still run under <managed_root>/<name> and get the class's whole values.)
    targets = {c.name: ClassTarget(c.name, (f"{managed_root}/{c.name}",), owned=True) for c in policy.classes}
    desired = desired_state(policy, targets, alloc, cores, inv, cap.cpu_cores, cap.memory_bytes)
    files = {f: value for f, (value, _) in next(d for d in desired if d.cls == cls).files.items()}
    cpu_max = fmt.parse_cpu_max(files["cpu.max"]) if "cpu.max" in files else None
    return ClassShare(
        name=cls,
        cpu_weight=int(files["cpu.weight"]),
        cpu_cores=float(alloc.amounts[cls]["cpu"]),
        cpu_max_cores=cpu_max.cores if cpu_max is not None else None,
        memory_high_bytes=int(files["memory.high"]) if "memory.high" in files else None,
        memory_max_bytes=int(files["memory.max"]) if "memory.max" in files else None,
        # The exclusive cores desired_state wrote as the class's cpuset.cpus (the same assignment):
        # a class without exclusive cores may also get a cpuset.cpus (the cores not held
        # exclusively), which is not the class's own to split between ranks.
        exclusive_cpus=fmt.parse_cpu_list(files["cpuset.cpus"]) if cls in cores.cpus else (),
        policy=policy_path,
        managed_root=managed_root,
    )


def resolve_share(root: SysRoot, policy: str | None, cls: str, inv: Inventory) -> ClassShare | None:
    path = policy or applied_policy_path(root)
    if path is None:
        log.info("job_limits_none", reason="no policy given and none applied", cls=cls)
        return None
    return class_share(path, cls, inv)
