"""CPU frequency scaling (Documentation/admin-guide/pm/cpufreq.rst): read and write one cpufreq
policy (/sys/devices/system/cpu/cpufreq/policyN, which spans its related_cpus) through a SysRoot.

Writers follow kernel/knob.py's contract: read old, write, read back, return a KnobChange whose
`old` a rollback writes back through the same writer. What each writer knows about the kernel:

- governor: must be one of scaling_available_governors, else the kernel answers EINVAL.
- min/max (kHz): since 5.5 (freq QoS) the kernel keeps the written values as *requests* and
  clamps: a min above the max reads back as the max, and comes back once the max is raised; a
  table driver (acpi-cpufreq) also rounds to a table frequency. Before 5.5 a min above the max
  was EINVAL. `set_freq_limits` writes in the order both kernels accept and reports what the
  policy reads afterwards. A hidden request (a min clamped by someone else's max) cannot be read,
  so a rollback restores the effective values, not such a request.
- energy_performance_preference: one of energy_performance_available_preferences; intel_pstate
  and amd-pstate-epp answer EBUSY to anything but "performance" while the governor is
  "performance", which becomes one line saying so.
- boost, in its driver's form: intel_pstate/no_turbo (1 = off, global), policyN/boost (per
  policy, 6.x) or cpufreq/boost (global). A global file changes every policy at once.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import NamedTuple

from aios_host.errors import KernelError, ParseError
from aios_host.kernel.cgroup_format import parse_cpu_list
from aios_host.kernel.knob import KnobChange, KnobRefused, KnobUnavailable
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger

CPUFREQ_DIR = "/sys/devices/system/cpu/cpufreq"
INTEL_PSTATE_DIR = "/sys/devices/system/cpu/intel_pstate"
# Drivers whose EPP write is refused with EBUSY under the performance governor (HWP / CPPC
# autonomous mode: the performance policy pins EPP to 0).
EPP_LOCKED_BY_PERFORMANCE = frozenset({"intel_pstate", "amd-pstate-epp", "amd-pstate"})

_POLICY_FILES = [
    "related_cpus", "scaling_driver", "scaling_governor", "scaling_available_governors",
    "scaling_min_freq", "scaling_max_freq", "cpuinfo_min_freq", "cpuinfo_max_freq", "scaling_cur_freq",
    "energy_performance_preference", "energy_performance_available_preferences",
]

_log = get_logger("aios_host.kernel.cpufreq")


class FreqLimits(NamedTuple):
    min_khz: int
    max_khz: int


@dataclass(frozen=True)
class Boost:
    enabled: bool
    path: str  # the file that switches it
    inverted: bool  # intel_pstate/no_turbo: "1" means boost is off
    scope: str  # "policy" or "global" (every policy at once)


@dataclass(frozen=True)
class CpufreqPolicy:
    name: str  # "policy0"
    cpus: tuple[int, ...]  # related_cpus: every CPU this policy sets the frequency of
    driver: str
    governor: str
    available_governors: tuple[str, ...]
    min_freq_khz: int
    max_freq_khz: int
    cpuinfo_min_freq_khz: int
    cpuinfo_max_freq_khz: int
    cur_freq_khz: int | None
    epp: str | None  # None: this driver has no energy_performance_preference
    available_epp: tuple[str, ...]
    boost: Boost | None

    @property
    def path(self) -> str:
        return f"{CPUFREQ_DIR}/{self.name}"


def policy_dir(policy: str) -> str:
    if not policy.startswith("policy") or not policy[6:].isdigit():
        raise KnobUnavailable(f"{policy!r} is not a cpufreq policy name (policy0, policy1, ...)")
    return f"{CPUFREQ_DIR}/{policy}"


def list_policies(root: SysRoot) -> list[str]:
    """Policy names in CPU order ("policy0", "policy4", ...); empty without a cpufreq driver."""
    names = [d for d in root.subdirs(CPUFREQ_DIR) if d.startswith("policy") and d[6:].isdigit()]
    return sorted(names, key=lambda d: int(d[6:]))


def absent_reason(root: SysRoot) -> str:
    """Why there is no policy to read, as one line (call when list_policies is empty)."""
    if not root.is_dir(CPUFREQ_DIR):
        return f"{CPUFREQ_DIR} absent: a kernel without CONFIG_CPU_FREQ"
    return f"{CPUFREQ_DIR} has no policies: a VM or a kernel without a cpufreq driver"


def _int(path: str, text: str | None) -> int | None:
    if text is None or not text.strip() or text.strip() == "<unknown>":
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ParseError(path, text, "not a frequency in kHz") from None


def _required_int(path: str, text: str | None) -> int:
    value = _int(path, text)
    if value is None:
        raise KnobUnavailable(f"{path}: absent; not a cpufreq policy directory")
    return value


def read_boost(root: SysRoot, policy: str, driver: str) -> Boost | None:
    """The boost switch in this driver's form, None when it has none."""
    if driver in ("intel_pstate", "intel_cpufreq"):
        text = root.read_optional(f"{INTEL_PSTATE_DIR}/no_turbo")
        if text is not None:
            return Boost(text.strip() != "1", f"{INTEL_PSTATE_DIR}/no_turbo", True, "global")
    for path, scope in ((f"{policy_dir(policy)}/boost", "policy"), (f"{CPUFREQ_DIR}/boost", "global")):
        text = root.read_optional(path)
        if text is not None:
            return Boost(text.strip() == "1", path, False, scope)
    return None


def read_policy(root: SysRoot, policy: str) -> CpufreqPolicy:
    base = policy_dir(policy)
    a = root.read_attrs(base, _POLICY_FILES)

    def words(name: str) -> tuple[str, ...]:
        return tuple((a[name] or "").split())

    driver = (a["scaling_driver"] or "").strip()
    epp = a["energy_performance_preference"]
    return CpufreqPolicy(
        name=policy,
        cpus=parse_cpu_list(a["related_cpus"]) if a["related_cpus"] else (),
        driver=driver,
        governor=(a["scaling_governor"] or "").strip(),
        available_governors=words("scaling_available_governors"),
        min_freq_khz=_required_int(f"{base}/scaling_min_freq", a["scaling_min_freq"]),
        max_freq_khz=_required_int(f"{base}/scaling_max_freq", a["scaling_max_freq"]),
        cpuinfo_min_freq_khz=_required_int(f"{base}/cpuinfo_min_freq", a["cpuinfo_min_freq"]),
        cpuinfo_max_freq_khz=_required_int(f"{base}/cpuinfo_max_freq", a["cpuinfo_max_freq"]),
        cur_freq_khz=_int(f"{base}/scaling_cur_freq", a["scaling_cur_freq"]),
        epp=None if epp is None else epp.strip(),
        available_epp=words("energy_performance_available_preferences"),
        boost=read_boost(root, policy, driver),
    )


def read_policies(root: SysRoot) -> list[CpufreqPolicy]:
    return [read_policy(root, p) for p in list_policies(root)]


# -- writers -------------------------------------------------------------------------------------


def _log_change(change: KnobChange, policy: str) -> None:
    if not change.written:
        return
    log = _log.info if change.took else _log.warning
    log("cpufreq_write", policy=policy, knob=change.knob, old=change.old, requested=change.requested,
        new=change.new, note=change.note)


def set_governor(root: SysRoot, policy: str, governor: str) -> KnobChange[str]:
    before = read_policy(root, policy)
    path = f"{before.path}/scaling_governor"
    if governor not in before.available_governors:
        raise KnobRefused(f"{path}: governor {governor!r} is not one of scaling_available_governors "
                          f"({' '.join(before.available_governors) or 'none'})")
    if before.governor == governor:
        return KnobChange(path, before.governor, governor, governor, written=False)
    try:
        root.write_text(path, governor)
    except KernelError as exc:
        raise KnobRefused(f"{path}: governor {governor!r} refused: {exc.errno_name} "
                          f"({exc.detail or 'the kernel did not take it'})") from None
    new = read_policy(root, policy).governor
    change = KnobChange(path, before.governor, governor, new)
    _log_change(change, policy)
    return change


def _freq_write_order(current: FreqLimits, wanted: FreqLimits) -> tuple[str, str]:
    """Which of scaling_min_freq / scaling_max_freq to write first so that min <= max holds after
    each single write (pre-5.5 kernels refuse anything else with EINVAL; later ones clamp). Writing
    the max first is safe unless the new max is below the current min; then the min goes first."""
    if wanted.max_khz >= current.min_khz:
        return ("scaling_max_freq", "scaling_min_freq")
    return ("scaling_min_freq", "scaling_max_freq")


def set_freq_limits(root: SysRoot, policy: str, min_khz: int, max_khz: int) -> KnobChange[FreqLimits]:
    """scaling_min_freq and scaling_max_freq as one change. Both must lie within cpuinfo_min_freq
    .. cpuinfo_max_freq (the kernel would clamp silently; a mistyped value should be an error)."""
    before = read_policy(root, policy)
    knob = f"{before.path}/scaling_{{min,max}}_freq"
    lo, hi = before.cpuinfo_min_freq_khz, before.cpuinfo_max_freq_khz
    if min_khz > max_khz:
        raise KnobRefused(f"{knob}: min {min_khz} kHz is above max {max_khz} kHz")
    for what, v in (("min", min_khz), ("max", max_khz)):
        if not lo <= v <= hi:
            raise KnobRefused(f"{knob}: {what} {v} kHz is outside cpuinfo_min_freq..cpuinfo_max_freq "
                              f"({lo}..{hi} kHz)")
    old = FreqLimits(before.min_freq_khz, before.max_freq_khz)
    wanted = FreqLimits(min_khz, max_khz)
    if old == wanted:
        return KnobChange(knob, old, wanted, old, written=False)
    for i, name in enumerate(_freq_write_order(old, wanted)):
        value = min_khz if name == "scaling_min_freq" else max_khz
        try:
            root.write_text(f"{before.path}/{name}", str(value))
        except KernelError as exc:
            now = _read_limits(root, policy)
            # After a first write that went through, the policy is half changed: say so, and hand
            # the caller what to roll back.
            changed = KnobChange(knob, old, wanted, now, note="refused half way") if i else None
            raise KnobRefused(f"{before.path}/{name}: {value} kHz refused: {exc.errno_name}; the policy "
                              f"reads {now.min_khz}..{now.max_khz} kHz (was {old.min_khz}..{old.max_khz})",
                              changed) from None
    new = _read_limits(root, policy)
    note = ""
    if new != wanted:
        # A frequency table rounds (min up, max down), or another QoS request (thermal, a second
        # writer, intel_pstate's own limits) wins the aggregation: report, don't fight it.
        note = (f"the kernel took {new.min_khz}..{new.max_khz} kHz: rounded to its frequency table or "
                f"limited by another frequency request")
    change = KnobChange(knob, old, wanted, new, note=note)
    _log_change(change, policy)
    return change


def _read_limits(root: SysRoot, policy: str) -> FreqLimits:
    p = read_policy(root, policy)
    return FreqLimits(p.min_freq_khz, p.max_freq_khz)


def set_epp(root: SysRoot, policy: str, epp: str) -> KnobChange[str]:
    before = read_policy(root, policy)
    path = f"{before.path}/energy_performance_preference"
    if before.epp is None:
        raise KnobUnavailable(f"{path}: absent; driver {before.driver or 'none'} has no energy-performance "
                              "preference (HWP/CPPC drivers intel_pstate and amd-pstate-epp do)")
    if epp not in before.available_epp:
        raise KnobRefused(f"{path}: {epp!r} is not one of energy_performance_available_preferences "
                          f"({' '.join(before.available_epp) or 'none'})")
    if before.epp == epp:
        return KnobChange(path, before.epp, epp, epp, written=False)
    try:
        root.write_text(path, epp)
    except KernelError as exc:
        if exc.errno == errno.EBUSY and before.governor == "performance" \
                and before.driver in EPP_LOCKED_BY_PERFORMANCE:
            raise KnobRefused(f"{path}: {epp!r} refused (EBUSY): under the performance governor "
                              f"{before.driver} accepts only 'performance'; set the governor to powersave "
                              "first") from None
        raise KnobRefused(f"{path}: {epp!r} refused: {exc.errno_name}") from None
    new = read_policy(root, policy).epp or ""
    # "default" reads back as the driver's default preference (e.g. balance_performance).
    note = f"the driver's default is {new!r}" if epp == "default" and new != epp else ""
    change = KnobChange(path, before.epp, epp, new, note=note)
    _log_change(change, policy)
    return change


def set_boost(root: SysRoot, policy: str, enabled: bool) -> KnobChange[bool]:
    """Boost (turbo) on or off through this driver's switch. A global switch (no_turbo,
    cpufreq/boost) changes every policy: the change's knob names that file."""
    before = read_policy(root, policy)
    if before.boost is None:
        raise KnobUnavailable(f"{before.path}: no boost switch for driver {before.driver or 'none'} "
                              f"(no {INTEL_PSTATE_DIR}/no_turbo, {before.path}/boost or {CPUFREQ_DIR}/boost)")
    b = before.boost
    if b.enabled == enabled:
        return KnobChange(b.path, b.enabled, enabled, enabled, written=False)
    value = "0" if enabled == b.inverted else "1"
    try:
        root.write_text(b.path, value)
    except KernelError as exc:
        why = ""
        if exc.errno == errno.EPERM and b.inverted:
            why = ": turbo is disabled by the firmware (BIOS), intel_pstate cannot turn it on"
        raise KnobRefused(f"{b.path}: {value!r} refused: {exc.errno_name}{why}") from None
    after = read_boost(root, policy, before.driver)
    change = KnobChange(b.path, b.enabled, enabled, after.enabled if after else b.enabled)
    _log_change(change, policy)
    return change
