"""Per-class CPU frequency: which cpufreq policies take a class's [class.energy] cpu_governor /
cpu_epp / cpu_max_freq instead of the host-wide [energy].

A cpufreq policy (policyN) sets the frequency of all its related_cpus at once. It can carry a
class's settings only if every one of those CPUs is the class's own: the exclusive CPUs
policy/cores.py placed for it in this decision (the schema refuses the keys on a class without
exclusive cores). So, per cpufreq policy:

- related_cpus wholly inside one such class's CPUs: that class's keys; a key the class leaves
  unset falls back to the host-wide one;
- no CPU of such a class: the host-wide [energy];
- some CPUs of such a class and others (another class's, shared ones): the host-wide [energy], and a
  note naming the policy, whose CPUs are whose, and why (the policy cannot be set per class).

A new placement moves the settings with it: the policies the class no longer has are planned at the
host-wide settings again (energy/plan.py), the new ones at the class's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aios_host.kernel.cgroup_format import format_cpu_list
from aios_host.kernel.cpufreq import CpufreqPolicy
from aios_host.policy.schema import CLASS_CPUFREQ_KEYS, Policy


@dataclass(frozen=True)
class ClassCpufreq:
    """One class's cpufreq settings and the exclusive CPUs it has in this decision."""

    name: str
    cpus: frozenset[int]
    governor: str | None = None
    epp: str | None = None
    max_freq: str | None = None  # as the policy file says it: "80%", "2.4GHz"

    def keys(self) -> str:
        """The [class.energy] keys it sets, as a note names them."""
        given = zip(CLASS_CPUFREQ_KEYS, (self.governor, self.epp, self.max_freq), strict=True)
        return ", ".join(f"energy.{k}" for k, v in given if v is not None)


def class_cpufreq(policy: Policy, placement: Mapping[str, Sequence[int]]) -> tuple[ClassCpufreq, ...]:
    """The classes with per-class cpufreq settings, each with the CPUs `placement` (the decision's
    CoreAssignment.cpus) gave it. A class with no CPUs placed has nowhere to apply them."""
    out = []
    for c in policy.classes:
        e = c.energy
        if all(getattr(e, k) is None for k in CLASS_CPUFREQ_KEYS):
            continue
        cpus = frozenset(placement.get(c.name, ()))
        if cpus:
            out.append(ClassCpufreq(c.name, cpus, e.cpu_governor, e.cpu_epp, e.cpu_max_freq))
    return tuple(out)


def owner_of(p: CpufreqPolicy, classes: Sequence[ClassCpufreq]) -> tuple[ClassCpufreq | None, str | None]:
    """(the class whose settings `p` takes, or None for the host-wide ones; a note when `p` straddles
    a class's exclusive CPUs and others, so that the class's settings cannot go on it)."""
    cpus = frozenset(p.cpus)
    touching = [c for c in classes if c.cpus & cpus]
    if not touching:
        return None, None
    if len(touching) == 1 and cpus <= touching[0].cpus:
        return touching[0], None
    held = "; ".join(f"class {c.name}: {format_cpu_list(sorted(c.cpus & cpus))}" for c in touching)
    rest = cpus.difference(*(c.cpus for c in touching))
    others = f"; other cpus: {format_cpu_list(sorted(rest))}" if rest else ""
    asked = "; ".join(f"{c.name}'s {c.keys()}" for c in touching)
    return None, (f"cpufreq {p.name} (cpus {format_cpu_list(p.cpus)}) straddles exclusive cpu sets ({held}{others}): "
                  f"one setting covers all its cpus, so it does not take {asked}; the host-wide [energy] applies to it")
