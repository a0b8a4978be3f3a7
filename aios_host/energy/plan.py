"""The policy's [energy] as Writes in the same Plan as the cgroup writes: shown by `policy apply
--dry-run`, journaled before they are made, undone by `policy rollback` and on daemon exit, and
reconciled from the journal after a crash, by the machinery every other write goes through.

- cpufreq, per policy (policyN, which sets the frequency of all its related_cpus), op "cpufreq":
  scaling_governor (cpu_governor, else the profile's: performance -> "performance", powersave ->
  "powersave"; balanced leaves it), then energy_performance_preference (the profile's, where the
  driver has EPP and the governor it will have is not performance: intel_pstate/amd-pstate refuse
  any EPP but "performance" under it with EBUSY), then scaling_max_freq (cpu_max_freq: a share of
  cpuinfo_max_freq or a frequency, clamped to the cpuinfo range, in kHz). The write and its undo go
  through kernel/cpufreq.py's writers, which check the value against what the driver offers and
  read it back. A class with exclusive cores may set cpu_governor / cpu_epp / cpu_max_freq of its
  own ([class.energy]): they go, key by key instead of the host-wide ones, on the policies whose
  related_cpus lie wholly inside its CPUs of this decision; a policy that straddles its CPUs and
  others keeps the host-wide settings and gets a note (cpufreq_classes.py). A knob that no setting
  asks for on a policy (a class gave those CPUs up, a profile stopped asking) goes back to the
  value the journal recorded before aios-host first changed it, if it did.
- NVML, per GPU, op "nvml": the power limit (gpu_power_limit: a share of the maximum constraint or
  watts, clamped to nvmlDeviceGetPowerManagementLimitConstraints, in mW), path
  "nvml/<index>/<uuid>/power_limit_mw". The journaled original is the limit as it was, not the
  maximum (Zeus restores the maximum); NVML limits outlive the process, so a crash is reconciled
  from the journal at the next start like any other write. The `auto` search (auto_runner.py)
  also locks SM clocks, path "nvml/<index>/<uuid>/locked_sm_clocks_mhz", value "<min>-<max>" MHz
  or "none" (unlocked: its journaled original, so undo and rollback reset the lock).
A host without cpufreq or a GPU gets no writes for them: a note says so (`policy explain`, the
daemon's log), and the rest of the policy applies. Where tuned, power-profiles-daemon or TLP own
the CPU knobs, the cpufreq writes are left out too (`[energy] cpu_owner = "defer"`, the default),
or made anyway (`"take-over"`): the other daemon may write them back.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aios_host.actuate.state import JournaledValues, StateStore, journaled_values
from aios_host.energy.cpufreq_classes import ClassCpufreq
from aios_host.energy.cpufreq_plan import cpufreq_writes
from aios_host.energy.cpufreq_plan import max_freq_khz as max_freq_khz  # its home before cpufreq_plan.py
from aios_host.errors import AiosError
from aios_host.kernel import cpufreq
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger
from aios_host.policy.plan import Write
from aios_host.policy.schema import EnergySpec

log = get_logger("aios_host.energy")

NVML_PREFIX = "nvml/"
_POWER = re.compile(r"^(\d+(?:\.\d+)?)\s*(%|W)$")


@dataclass(frozen=True)
class EnergyPlan:
    writes: tuple[Write, ...]
    notes: tuple[str, ...]  # why something the policy asks for is not written on this host


def power_limit_mw(spec: str, min_mw: int, max_mw: int) -> int:
    m = _POWER.match(spec.strip())
    if not m:
        raise AiosError(f"[energy] gpu_power_limit {spec!r}: expected a share (70%) or watts (300W)")
    value, unit = float(m.group(1)), m.group(2)
    mw = max_mw * value / 100 if unit == "%" else value * 1000
    return int(min(max(mw, min_mw), max_mw))


def _gpu_writes(backend: Any, e: EnergySpec, notes: list[str]) -> list[Write]:
    out = []
    for i in range(backend.device_count()):
        knobs = backend.knobs(i)
        if knobs.power is None:
            notes.append(f"gpu{i}: power limit is observe-only ({knobs.absent.get('power_limit', 'absent')})")
            continue
        want = power_limit_mw(str(e.gpu_power_limit), knobs.power.min_mw, knobs.power.max_mw)
        if want != knobs.power.limit_mw:
            uuid = backend.info(i).uuid
            out.append(Write("nvml", f"{NVML_PREFIX}{i}/{uuid}/power_limit_mw", str(knobs.power.limit_mw),
                             str(want), f"[energy] gpu_power_limit {e.gpu_power_limit} = {want / 1000:g} W",
                             "nvml"))
    return out


def energy_plan(root: SysRoot, e: EnergySpec, gpu: Callable[[], Any] | None = None,
                owners: Callable[[], list[str]] | None = None, classes: Sequence[ClassCpufreq] = (),
                journal: Callable[[], JournaledValues] | None = None) -> EnergyPlan:
    """The writes that bring this host's cpufreq and GPUs to the policy's [energy], and the
    cpufreq policies inside a class's exclusive CPUs to its [class.energy] (`classes`, from the
    decision's placement: cpufreq_classes.class_cpufreq). `gpu` opens the GPU backend (default: the
    process's NVML), `owners` names active owners of the CPU knobs, `journal` reads the journal's
    cpufreq values (default: the journal under `root`)."""
    notes: list[str] = []
    cpu = cpufreq_writes(root, e, notes, classes,
                         journal or (lambda: journaled_values(StateStore(root), "cpufreq")))
    if cpu and e.cpu_owner == "defer":
        active = (owners or _active_owners)()
        if active:
            notes.append(f"cpufreq: {', '.join(active)} own the CPU knobs; [energy] cpu_owner = \"defer\": "
                         "not written (\"take-over\" writes them anyway)")
            cpu = []
    gpu_writes: list[Write] = []
    if e.gpu_power_limit:
        try:
            backend = (gpu or shared_gpu_backend)()
            gpu_writes = _gpu_writes(backend, e, notes)
        except AiosError as exc:
            notes.append(f"GPU: none ({exc}); [energy] gpu_power_limit not applied")
    return EnergyPlan(tuple(cpu + gpu_writes), tuple(notes))


def _active_owners() -> list[str]:
    from aios_host.kernel.power_owners import detect_knob_owners

    return [o for o in detect_knob_owners().owners]


_GPU: list[Any] = []
# The daemon's energy sampler opens it on its own thread while the loop may plan or write: one
# opener at a time, so that there is one backend (and one nvmlInit) per process.
_GPU_LOCK = threading.Lock()


def shared_gpu_backend() -> Any:
    """One NVML backend per process (nvmlInit once); GpuUnavailable when there is none."""
    with _GPU_LOCK:
        if not _GPU:
            from aios_host.kernel.gpu import open_gpu_backend

            _GPU.append(open_gpu_backend())
        return _GPU[0]


# -- doing and undoing one write (actuate/apply.py) ---------------------------------------------


LOCKED_SM_CLOCKS_KNOB = "locked_sm_clocks_mhz"  # value "<min>-<max>" (MHz, from the supported list) or "none"
UNLOCKED = "none"


def locked_clocks_value(min_mhz: int, max_mhz: int) -> str:
    return f"{min_mhz}-{max_mhz}"


def parse_locked_clocks(value: str) -> tuple[int, int] | None:
    """"none": unlocked (nvmlDeviceResetGpuLockedClocks); "<min>-<max>": locked; else AiosError."""
    v = value.strip()
    if v == UNLOCKED:
        return None
    lo, sep, hi = v.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit():
        raise AiosError(f"locked SM clocks {value!r}: expected \"<min>-<max>\" in MHz or \"none\"")
    return int(lo), int(hi)


def _policy_and_knob(path: str) -> tuple[str, str]:
    head, _, knob = path.rpartition("/")
    return head.rpartition("/")[2], knob


def set_value(root: SysRoot, op: str, path: str, value: str, gpu: Callable[[], Any] | None = None) -> None:
    """Write one energy knob through its checking writer (a refusal raises, one line)."""
    if op == "cpufreq":
        policy, knob = _policy_and_knob(path)
        if knob == "scaling_governor":
            cpufreq.set_governor(root, policy, value)
        elif knob == "energy_performance_preference":
            cpufreq.set_epp(root, policy, value)
        elif knob == "scaling_max_freq":
            p = cpufreq.read_policy(root, policy)
            cpufreq.set_freq_limits(root, policy, min(p.min_freq_khz, int(value)), int(value))
        else:
            raise AiosError(f"{path}: not a cpufreq knob aios-host writes")
    elif op == "nvml":
        head, knob = path[len(NVML_PREFIX):].split("/", 1)[0], path.rpartition("/")[2]
        if not path.startswith(NVML_PREFIX) or not head.isdigit():
            raise AiosError(f"{path}: not an NVML knob aios-host writes")
        index = int(head)
        if knob == "power_limit_mw" and value.strip().isdigit():
            (gpu or shared_gpu_backend)().set_power_limit(index, int(value))
        elif knob == LOCKED_SM_CLOCKS_KNOB:
            clocks = parse_locked_clocks(value)
            if clocks is None:
                (gpu or shared_gpu_backend)().reset_sm_clocks(index)
            else:
                (gpu or shared_gpu_backend)().lock_sm_clocks(index, *clocks)
        else:
            raise AiosError(f"{path}: {value!r} is not a value of an NVML knob aios-host writes")
    else:
        raise AiosError(f"{path}: op {op!r} is not an energy write")
