"""Who may write which cgroup: systemd's single-writer rule, applied to the daemon's plans.

With systemd as PID 1, systemd owns every cgroup it created and rewrites their control files from
unit properties (a plain `systemctl daemon-reload` undoes anything written behind its back).
So (systemd's CGROUP_DELEGATION document):
- aios-host's own class cgroups live in a transient scope it asks systemd for, with Delegate=yes:
  aios.slice/aios-classes.scope/<class>. Not in the daemon's own service: systemd 252 puts a
  (re)started service's main process into the service's own cgroup, which the no-internal-process
  rule forbids once its children have controllers (a watchdog restart failed with 219/CGROUP in
  the VM); systemd 254's DelegateSubgroup= is what solves that inside a service. A scope needs no
  new process after it starts: the founding `sleep infinity` moves to <scope>/_holder (`_` never
  starts a class name), the scope outlives a crashed daemon with its workloads in place, the next
  daemon adopts it, and a daemon that restores everything stops it. Stopping or restarting the
  daemon's service never touches the workloads.
- a class that matches a systemd unit's cgroup is changed through D-Bus (SetUnitProperties,
  runtime) and restored the same way: a Write with op "unit", path "UNIT/FILE", `new` the control
  file value and `old` the unit's original properties (JSON); its CPUWeight is the solver's
  cpu.weight scaled so that the heaviest class weighs what the policy gives it (`weight`, on
  systemd's scale: 100 by default), at most UNIT_CPU_WEIGHT_MAX;
- controllers on systemd's cgroups are enabled by systemd itself when a unit asks for them, so
  the plan's "enable" steps outside our subtree are dropped;
- anything else (a cgroup inside another unit's subtree, the root cgroup) is not ours: the write
  is marked unavailable with the reason, and never made;
- the scope's cgroup is the parent of every class cgroup, and cgroup v2 bounds a child's
  effective memory.min/low by its parent's and shares CPU among aios.slice's children by the
  parent's weight. So the scope's MemoryMin/MemoryLow become the sum of its classes' and its
  CPUWeight the sum of its classes' cpu.weight (never below systemd's default 100, so that idle
  classes, weight 1 each, do not leave a class that wakes up starved until the next decision),
  set through D-Bus like any unit and restored on exit;
- aios.slice itself competes at the top level with system.slice and user.slice (100 each): this
  daemon, journald, the admin's shell. When classes match units outside it (a protected service in
  system.slice), the weights the solver gave them can only compare with our classes' across that
  level: aios.slice's CPUWeight becomes 100 x (the classes' weight inside aios.slice) / (the
  unit-matched classes' weight outside), so a protected unit of weight 10000 faces a batch class of
  weight 10 as it would as a sibling (assuming the outside slices keep systemd's 100); leaving it
  at 100 gave a protected service 46% of its solo throughput in the VM isolation bench. Either way
  aios.slice never weighs more than the most important class in it that is using CPU (the solver
  allocated it some): that class's policy weight, as a user would give it to a unit
  (CPUWeight=1000 for a protected service, 10 for batch); 100 while none is; with no unit-matched
  classes outside, exactly that. All in 1..UNIT_CPU_WEIGHT_MAX:
  at 10000, four CPU hogs in aios.slice starved journald and the test runner in the VM; at 100
  against a protected class at 1000, this daemon's own ticks (at system.slice's equal share) cost
  the protected service's p99 1.7x its solo figure where static CPUWeight=1000/10 cost 0.95x.
Without systemd (or on a fake root), aios-host owns its managed_root directly, as the CLI does.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any, Protocol

from aios_host.actuate.apply import SystemdUnitSetter
from aios_host.errors import AiosError, KernelError
from aios_host.kernel import systemd
from aios_host.kernel.cgroup import Cgroup, CgroupFs
from aios_host.kernel.procfs import read_pid1_comm
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger
from aios_host.policy.plan import ENERGY_OPS, DesiredCgroup, Plan, Write
from aios_host.policy.schema import Policy

log = get_logger("aios_host.daemon")
CLASSES_SCOPE = "aios-classes.scope"
CLASSES_SLICE = "aios.slice"
HOLDER_LEAF = "_holder"
SCOPE_CPU_WEIGHT_FLOOR = 100  # systemd's default CPUWeight
# The most a unit-matched class or aios.slice weighs against systemd's default 100: the services
# beside them (this daemon, journald) keep at least 1/11 of a saturated CPU each.
UNIT_CPU_WEIGHT_MAX = 1000


class Router(Protocol):
    bus: Any

    def adapt_policy(self, policy: Policy) -> Policy: ...
    def unavailable_reason(self, policy: Policy) -> str: ...
    def route(self, plan: Plan, desired: Sequence[DesiredCgroup]) -> Plan: ...
    def describe(self) -> str: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


class CgroupfsRouter:
    """No systemd: every planned cgroupfs write is ours to make."""

    bus = None

    def adapt_policy(self, policy: Policy) -> Policy:
        return policy

    def unavailable_reason(self, policy: Policy) -> str:
        return ""

    def route(self, plan: Plan, desired: Sequence[DesiredCgroup]) -> Plan:
        return plan

    def describe(self) -> str:
        return "cgroupfs (no systemd)"

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class SystemdRouter:
    def __init__(self, fs: CgroupFs, bus: systemd.SystemdBus, base: str, own_unit: str) -> None:
        self.fs = fs
        self._bus = bus
        self.bus = SystemdUnitSetter(bus)
        self.base = base  # the delegated classes scope's cgroup, relative to the mount
        self.own_unit = own_unit

    def adapt_policy(self, policy: Policy) -> Policy:
        if policy.host.managed_root.strip("/") != self.base:
            log.info("managed_root_delegated", policy_managed_root=policy.host.managed_root, used=self.base,
                     why="systemd owns every cgroup outside the service's delegated subtree")
        host = policy.host.model_copy(update={"managed_root": self.base})
        return policy.model_copy(update={"host": host})

    def unavailable_reason(self, policy: Policy) -> str:
        return ""  # owned classes live in the classes scope, unit-matched ones go through D-Bus

    def _ours(self, rel: str) -> bool:
        return rel == self.base or rel.startswith(self.base + "/")

    def route(self, plan: Plan, desired: Sequence[DesiredCgroup]) -> Plan:
        mount = self.fs.mount + "/"
        out: list[Write] = []
        heaviest = max((int(d.files["cpu.weight"][0]) for d in desired if "cpu.weight" in d.files), default=100)
        top = _policy_top(desired)
        for unit, w in self._own_unit_writes(desired):
            uw = self._unit_write(unit, w)
            if uw is not None:
                out.append(uw)
        for w in plan.writes:
            if w.op == "move" or w.op in ENERGY_OPS:
                # into one of our class cgroups (its undo writes the source back); or cpufreq/NVML,
                # which no systemd unit owns
                out.append(w)
                continue
            path = w.path[len(mount):] if w.path.startswith(mount) else ""
            rel = path if w.op == "mkdir" else path.rpartition("/")[0]
            if self._ours(rel):
                out.append(w)
                continue
            if w.op == "enable":
                continue  # systemd enables what a unit's properties need on its own cgroups
            unit, below = systemd.unit_of_cgroup(rel)
            outer = _outer_leaf_unit(rel)
            if outer is not None and outer != unit:
                # inside a service's or scope's own subtree (user@.service runs a systemd of its
                # own there): not the system manager's unit, and not ours
                unit, below = outer, True
            if w.op == "write" and unit is not None and not below:
                if path.endswith("/cpu.weight"):
                    w = w._replace(new=str(_unit_weight(int(w.new), heaviest, top)))
                uw = self._unit_write(unit, w)
                if uw is not None:
                    out.append(uw)
                continue
            owner = f"{unit}'s own subtree" if unit and below else "systemd"
            out.append(w._replace(available=False,
                                  reason=f"{w.reason}; /{rel} belongs to {owner}, not delegated to aios-host"))
        return Plan(tuple(out))

    def _own_unit_writes(self, desired: Sequence[DesiredCgroup]) -> list[tuple[str, Write]]:
        """What our own units must carry for the classes below them (see the module docstring)."""
        sums = {"memory.min": 0, "memory.low": 0, "cpu.weight": 0}
        weight_in_slice = weight_outside = 0
        for d in desired:
            weight = int(d.files["cpu.weight"][0]) if "cpu.weight" in d.files else 0
            if d.rel.startswith(CLASSES_SLICE + "/"):
                weight_in_slice += weight
            else:
                weight_outside += weight
            if not self._ours(d.rel):
                continue
            for f in sums:
                if f in d.files:
                    sums[f] += int(d.files[f][0])
        out = []
        for f, total in sums.items():
            if f == "cpu.weight":
                value = max(SCOPE_CPU_WEIGHT_FLOOR, min(10000, total))
                why = f"sum of the classes' cpu.weight below {self.own_unit}"
            else:
                value = total
                why = f"sum of the classes' {f} below {self.own_unit} (a child's is bounded by its parent's)"
            out.append((self.own_unit, self._file_write(self.base, f, value, why)))
        # aios.slice never weighs more than the most important class in it that uses CPU (its policy
        # weight), nor more than UNIT_CPU_WEIGHT_MAX: CPU hogs of a batch class must not outweigh
        # system.slice (with an idle unit-matched class outside, the ratio below came to 1000 and a
        # restarted daemon took 90 s to start behind four hogs in the VM)
        busy = [d for d in desired if d.rel.startswith(CLASSES_SLICE + "/") and d.cpu_alloc_cores > 0]
        top_busy = max(busy, key=lambda d: d.class_weight, default=None)
        cap = max(1, min(UNIT_CPU_WEIGHT_MAX, top_busy.class_weight)) if top_busy else SCOPE_CPU_WEIGHT_FLOOR
        busy_why = (f"the weightiest class using CPU in {CLASSES_SLICE}, {top_busy.cls}, has weight "
                    f"{top_busy.class_weight}" if top_busy else f"no class in {CLASSES_SLICE} uses CPU")
        if weight_outside:
            ratio = max(1, round(100 * weight_in_slice / weight_outside))
            slice_weight = min(ratio, cap)
            why = (f"classes inside {CLASSES_SLICE} weigh {weight_in_slice}, unit-matched classes outside "
                   f"{weight_outside}, against systemd's 100 for the other slices; at most {cap}: {busy_why}")
        else:
            slice_weight, why = cap, f"no class outside {CLASSES_SLICE}; {busy_why}"
        out.append((CLASSES_SLICE, self._file_write(CLASSES_SLICE, "cpu.weight", slice_weight, why)))
        return out

    def _file_write(self, rel: str, file: str, value: int, why: str) -> Write:
        path = f"{self.fs.mount}/{rel}/{file}"
        old = self.fs.root.read_optional(path)
        return Write("write", path, None if old is None else old.strip(), str(value), why,
                     file.partition(".")[0], True)

    def _unit_write(self, unit: str, w: Write) -> Write | None:
        file = w.path.rpartition("/")[2]
        props = systemd.file_to_properties(file, w.new)
        if isinstance(props, systemd.NotExpressible):
            return w._replace(available=False, reason=f"{w.reason}; {unit}: {props}")
        expected = systemd.properties_to_file(file, props)
        if w.old is not None and expected == w.old.strip():
            return None  # systemd rounds (CPUQuota to 10 ms/s): what it would write is already there
        return Write("unit", f"{unit}/{file}", self.bus.originals(unit, file), w.new, w.reason, w.controller, True)

    def describe(self) -> str:
        return f"systemd: {self.own_unit}, delegated subtree /{self.base}"

    def release(self) -> None:
        """After a full restore: stop the classes scope if only its holder is left in it."""
        left = [c.name for c in self.fs.cgroup(self.base).children() if c.name != HOLDER_LEAF]
        if left:
            log.warning("classes_scope_kept", scope=self.own_unit, cgroups=",".join(sorted(left)))
            return
        systemd.stop_unit(self._bus, self.own_unit)
        log.info("classes_scope_stopped", scope=self.own_unit)

    def close(self) -> None:
        self._bus.close()


def _policy_top(desired: Sequence[DesiredCgroup]) -> int:
    """What the heaviest class weighs on systemd's scale: its policy weight, in 1..UNIT_CPU_WEIGHT_MAX."""
    heaviest = max(desired, key=lambda d: int(d.files["cpu.weight"][0]) if "cpu.weight" in d.files else 0,
                   default=None)
    return max(1, min(UNIT_CPU_WEIGHT_MAX, heaviest.class_weight if heaviest else SCOPE_CPU_WEIGHT_FLOOR))


def _unit_weight(weight: int, heaviest: int, top: int) -> int:
    """A unit-matched class's CPUWeight: the solver's class weights scaled so that the heaviest
    class weighs `top` (see _policy_top). A unit competes with the services beside it in its slice
    (journald, this daemon): at the solver's 10000 it starved them (the daemon into a watchdog kill
    in the VM); at 100 the daemon's own ticks took the protected service's share. Across slices,
    aios.slice's own weight carries the ratio (see _own_unit_writes), which scaling both sides alike
    leaves as it was."""
    return max(1, min(10000, round(weight * top / max(heaviest, 1))))


def _outer_leaf_unit(rel: str) -> str | None:
    """The outermost .service/.scope on the path: PID 1's units end there, whatever is below is
    the subtree that unit was delegated."""
    return next((p for p in rel.split("/") if p.endswith((".service", ".scope"))), None)


def _spawn_holder() -> int:
    """A process to found the scope with (a scope cannot be empty): `sleep infinity`, in a session
    of its own, so that it outlives a crashed daemon and keeps the scope (and the workloads' class
    cgroups in it) in place until the next daemon adopts it."""
    p = subprocess.Popen(["sleep", "infinity"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    return p.pid


def make_router(root: SysRoot, fs: CgroupFs) -> Router:
    """systemd as PID 1 on the real host: a SystemdRouter over the delegated classes scope, adopted
    when it is already there (a restart) or started. Anything else: plain cgroupfs."""
    if not root.is_host or read_pid1_comm(root) != "systemd":
        return CgroupfsRouter()
    bus = systemd.SystemdBus().connect()
    try:
        base = systemd.active_unit_cgroup(bus, CLASSES_SCOPE)
        adopted = base is not None
        if base is None:
            base = systemd.start_delegated_scope(bus, CLASSES_SCOPE, CLASSES_SLICE, [_spawn_holder()],
                                                 "aios-host class cgroups (delegated to aios-host)")
        holder = Cgroup(fs, f"{base}/{HOLDER_LEAF}")
        if not fs.exists(holder.rel):
            fs.root.mkdir(holder.kernel_path)
        # The no-internal-process rule: controllers reach the class cgroups only once no process
        # sits in the scope's own cgroup, so its founding process moves to a leaf.
        for pid in fs.cgroup(base).procs():
            fs.root.write_text(holder.file("cgroup.procs"), str(pid))
        log.info("cgroup_owner", scope=CLASSES_SCOPE, subtree=base, adopted=adopted)
        return SystemdRouter(fs, bus, base, CLASSES_SCOPE)
    except (AiosError, KernelError):
        bus.close()
        raise
