"""[energy] and [class.energy] CPU settings as cpufreq Writes (op "cpufreq", path: the sysfs file),
per cpufreq policy: governor, then EPP, then max frequency. energy/plan.py puts them in the Plan.

Where each knob's value comes from, per policy: the owning class's key (cpufreq_classes.py: a
policy wholly inside a class's exclusive CPUs), else the host-wide [energy] key, else, if aios-host
changed the knob before and nothing asks for it now (a class gave those CPUs up, a profile stopped
asking), the value the journal recorded before that first change: the state a rollback restores.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from aios_host.actuate.state import JournaledValues
from aios_host.energy.cpufreq_classes import ClassCpufreq, owner_of
from aios_host.errors import AiosError
from aios_host.kernel import cpufreq
from aios_host.kernel.root import SysRoot
from aios_host.policy.plan import Write
from aios_host.policy.schema import EnergySpec

PROFILE_GOVERNOR = {"performance": "performance", "powersave": "powersave"}
PROFILE_EPP = {"performance": "performance", "balanced": None, "powersave": "power"}
_FREQ = re.compile(r"^(\d+(?:\.\d+)?)\s*(%|kHz|MHz|GHz)$")
_FREQ_KHZ = {"kHz": 1, "MHz": 1000, "GHz": 1_000_000}


def max_freq_khz(spec: str, p: cpufreq.CpufreqPolicy) -> int:
    m = _FREQ.match(spec.strip())
    if not m:
        raise AiosError(f"[energy] cpu_max_freq {spec!r}: expected a share (80%) or a frequency (2.4GHz)")
    value, unit = float(m.group(1)), m.group(2)
    khz = p.cpuinfo_max_freq_khz * value / 100 if unit == "%" else value * _FREQ_KHZ[unit]
    return int(min(max(khz, p.cpuinfo_min_freq_khz), p.cpuinfo_max_freq_khz))


GOVERNOR, EPP, MAX_FREQ = "scaling_governor", "energy_performance_preference", "scaling_max_freq"


class _Want(NamedTuple):
    """One knob's value for one cpufreq policy and where it comes from."""

    value: str  # a governor, an EPP, or kHz
    reason: str
    source: str  # "host" ([energy]), "class NAME" ([class.energy]) or "original" (the journal's)


class _Journal:
    """The journal's cpufreq values (energy_plan's `journal`), read at most once per plan and only
    when needed. Unreadable (not root): said once in a note unless `quiet`, then taken as empty."""

    def __init__(self, load: Callable[[], JournaledValues], notes: list[str], quiet: bool) -> None:
        self._load, self._notes, self._quiet = load, notes, quiet
        self._values: JournaledValues | None = None

    def values(self) -> JournaledValues:
        if self._values is None:
            try:
                self._values = self._load()
            except AiosError as exc:
                self._values = JournaledValues({}, {})
                if not self._quiet:
                    self._notes.append(f"cpufreq: the journal cannot be read ({exc}); knobs no setting asks for "
                                       "are planned as they are, not back at the values aios-host found")
        return self._values


def _host_wants(p: cpufreq.CpufreqPolicy, e: EnergySpec) -> dict[str, _Want]:
    wants = {}
    if e.cpu_governor:
        wants[GOVERNOR] = _Want(e.cpu_governor, f"[energy] cpu_governor {e.cpu_governor}", "host")
    elif e.profile in PROFILE_GOVERNOR:
        gov = PROFILE_GOVERNOR[e.profile]
        wants[GOVERNOR] = _Want(gov, f"[energy] profile {e.profile}: governor {gov}", "host")
    epp = PROFILE_EPP.get(e.profile)
    if epp:
        wants[EPP] = _Want(epp, f"[energy] profile {e.profile}: EPP {epp}", "host")
    if e.cpu_max_freq:
        khz = max_freq_khz(e.cpu_max_freq, p)
        wants[MAX_FREQ] = _Want(str(khz), f"[energy] cpu_max_freq {e.cpu_max_freq} = {khz} kHz", "host")
    return wants


def _class_wants(p: cpufreq.CpufreqPolicy, c: ClassCpufreq) -> dict[str, _Want]:
    who = f"class {c.name}"
    wants = {}
    if c.governor:
        wants[GOVERNOR] = _Want(c.governor, f"{who}: energy.cpu_governor {c.governor}", who)
    if c.epp:
        wants[EPP] = _Want(c.epp, f"{who}: energy.cpu_epp {c.epp}", who)
    if c.max_freq:
        khz = max_freq_khz(c.max_freq, p)
        wants[MAX_FREQ] = _Want(str(khz), f"{who}: energy.cpu_max_freq {c.max_freq} = {khz} kHz", who)
    return wants


def _original_want(p: cpufreq.CpufreqPolicy, knob: str, journal: _Journal) -> _Want | None:
    """Back to what the knob had before aios-host changed it, when no setting asks for it any more
    (a class gave these CPUs up, a profile stopped asking): the state a rollback would restore."""
    old = journal.values().original.get(f"{p.path}/{knob}")
    if old is None:
        return None
    if knob == MAX_FREQ:
        if not old.isdigit():
            return None
        # within today's cpuinfo range (turbo may be off now): the writer refuses anything outside
        old = str(min(max(int(old), p.cpuinfo_min_freq_khz), p.cpuinfo_max_freq_khz))
    return _Want(old, f"back to {old}, as aios-host found it: no setting asks for it now", "original")


def _policy_writes(p: cpufreq.CpufreqPolicy, wants: Mapping[str, _Want], notes: list[str],
                   journal: _Journal) -> list[Write]:
    """Governor, then EPP (which depends on the governor it will have), then the max frequency.

    intel_pstate / amd-pstate-epp show EPP "performance" under the performance governor and bring
    back the one they had when it leaves. A rollback must restore that hidden one, so entering
    performance journals it first (a write of the EPP it has: no change), and leaving performance
    takes it from the journal as the EPP the policy will have (else as read, "performance")."""
    out = []
    gov, epp_now = p.governor, p.epp
    epp_path = f"{p.path}/{EPP}"
    w = wants.get(GOVERNOR)
    if w and w.value != p.governor:
        if w.value in p.available_governors:
            pinning = p.driver in cpufreq.EPP_LOCKED_BY_PERFORMANCE and p.epp is not None
            if pinning and w.value == "performance":
                out.append(Write("cpufreq", epp_path, p.epp, p.epp, f"kept at {p.epp}: {p.driver} hides it under "
                                 "the performance governor; journaled for the rollback", "cpufreq"))
            elif pinning and p.governor == "performance":
                epp_now = journal.values().last.get(epp_path, p.epp)
            out.append(Write("cpufreq", f"{p.path}/{GOVERNOR}", p.governor, w.value, w.reason, "cpufreq"))
            gov = w.value
        elif w.source != "original":
            notes.append(f"cpufreq {p.name}: governor {w.value!r} ({w.reason}) not offered by {p.driver} "
                         f"({', '.join(p.available_governors)})")
    w = wants.get(EPP)
    asked = w is not None and w.source.startswith("class ")  # named for these CPUs: say why not
    if w and w.value != epp_now:
        if p.epp is None:
            if asked:
                notes.append(f"cpufreq {p.name}: {p.driver or 'no driver'} has no energy_performance_preference; "
                             f"{w.reason} not applied")
        elif gov == "performance":
            # intel_pstate / amd-pstate pin EPP under performance (EBUSY): a profile's EPP is moot
            # there; one a class names is said
            if asked:
                notes.append(f"cpufreq {p.name}: {w.reason} not applied: under the performance governor "
                             f"{p.driver} takes only 'performance'")
        elif w.value in p.available_epp:
            out.append(Write("cpufreq", epp_path, epp_now, w.value, w.reason, "cpufreq"))
        elif w.source != "original":
            notes.append(f"cpufreq {p.name}: EPP {w.value!r} ({w.reason}) not offered by {p.driver}")
    w = wants.get(MAX_FREQ)
    if w and w.value != str(p.max_freq_khz):
        out.append(Write("cpufreq", f"{p.path}/{MAX_FREQ}", str(p.max_freq_khz), w.value, w.reason, "cpufreq"))
    return out


def cpufreq_writes(root: SysRoot, e: EnergySpec, notes: list[str], classes: Sequence[ClassCpufreq],
                   load_journal: Callable[[], JournaledValues]) -> list[Write]:
    """Every cpufreq policy's writes towards its settings (notes: what cannot be set, and why)."""
    asked = bool(e.cpu_governor or e.profile in PROFILE_GOVERNOR or PROFILE_EPP.get(e.profile)
                 or e.cpu_max_freq or classes)
    names = cpufreq.list_policies(root)
    if not names:
        if asked:
            what = "[energy] and per-class" if classes else "[energy]"
            notes.append(f"cpufreq: {cpufreq.absent_reason(root)}; {what} CPU settings not applied")
        return []
    journal = _Journal(load_journal, notes, quiet=not asked)
    if not asked and not journal.values().original:
        return []  # nothing asked, nothing of ours to put back: not even a read of the policies
    out = []
    for p in (cpufreq.read_policy(root, n) for n in names):
        owner, note = owner_of(p, classes)
        if note:
            notes.append(note)
        wants = _host_wants(p, e)
        if owner is not None:
            wants.update(_class_wants(p, owner))  # key by key: what the class leaves is the host's
        for knob in (GOVERNOR, EPP, MAX_FREQ):
            if knob not in wants and (back := _original_want(p, knob, journal)) is not None:
                wants[knob] = back
        out += _policy_writes(p, wants, notes, journal)
    return out
