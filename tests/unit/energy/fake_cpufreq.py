"""A fake cpufreq sysfs that behaves as the kernel does, for the writers' tests.

`FakeCpufreqKernel` is a SysRoot over a temp dir whose writes to cpufreq files go through a model
of drivers/cpufreq/cpufreq.c (and intel_pstate / amd-pstate / acpi-cpufreq specifics) instead of
landing in the file:

- min/max are freq QoS *requests* (5.5+): the policy reads max = clamp(max_req, cpuinfo range),
  min = clamp(min_req, cpuinfo_min, max), so a min above the max reads as the max and comes back
  when the max is raised; `qos=False` is the pre-5.5 kernel, where min > max is EINVAL.
  A driver with a frequency table rounds min up and max down to table entries.
- a governor not in scaling_available_governors, a non-number frequency, an unknown EPP or
  boost value: EINVAL.
- intel_pstate / amd-pstate-epp under the performance governor: EPP reads "performance" and any
  other EPP write is EBUSY; leaving performance brings the previous EPP back.
- intel_pstate no_turbo=1 lowers cpuinfo_max_freq to the base frequency (the max follows);
  turbo disabled by the BIOS makes no_turbo=0 EPERM.

Every accepted write is appended to `writes`, so tests can check order and that nothing was
written at all.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path

from aios_host.errors import KernelError
from aios_host.kernel.cgroup_format import format_cpu_list
from aios_host.kernel.cpufreq import CPUFREQ_DIR, INTEL_PSTATE_DIR
from aios_host.kernel.root import SysRoot

EPP_CHOICES = ("default", "performance", "balance_performance", "balance_power", "power")
DRIVERS = {
    # driver: (available governors, has EPP, boost form, frequency table)
    "intel_pstate": (("performance", "powersave"), True, "no_turbo", False),
    "amd-pstate-epp": (("performance", "powersave"), True, "policy", False),
    "acpi-cpufreq": (("conservative", "ondemand", "userspace", "powersave", "performance", "schedutil"),
                     False, "global", True),
}
EPP_BUSY_DRIVERS = ("intel_pstate", "amd-pstate-epp")


@dataclass
class FakePolicy:
    cpus: tuple[int, ...]
    cpuinfo_min_khz: int = 800_000
    turbo_max_khz: int = 3_500_000
    base_max_khz: int = 2_400_000  # the max without turbo
    governor: str = "powersave"
    epp: str = "balance_performance"
    default_epp: str = "balance_performance"
    min_req_khz: int | None = None  # None: cpuinfo min (the kernel's initial request)
    max_req_khz: int | None = None
    boost: bool = True  # per-policy boost (amd-pstate form)
    table_khz: tuple[int, ...] = field(default=())


class FakeCpufreqKernel(SysRoot):
    def __init__(self, root: Path, driver: str = "intel_pstate", policies: list[FakePolicy] | None = None,
                 qos: bool = True, turbo_disabled_by_bios: bool = False) -> None:
        super().__init__(root)
        self.driver = driver
        self.governors, self.has_epp, self.boost_form, has_table = DRIVERS[driver]
        self.policies = policies if policies is not None else [FakePolicy((0, 1)), FakePolicy((2, 3))]
        self.qos = qos
        self.turbo_disabled_by_bios = turbo_disabled_by_bios
        self.no_turbo = turbo_disabled_by_bios
        self.global_boost = True
        self.writes: list[tuple[str, str]] = []
        for p in self.policies:
            if has_table and not p.table_khz:
                p.table_khz = tuple(range(p.cpuinfo_min_khz, p.turbo_max_khz + 1, 100_000))
            p.min_req_khz = p.cpuinfo_min_khz if p.min_req_khz is None else p.min_req_khz
            p.max_req_khz = p.turbo_max_khz if p.max_req_khz is None else p.max_req_khz
        for i in range(len(self.policies)):
            self._publish(i)
        if self.boost_form == "no_turbo":
            self._put(f"{INTEL_PSTATE_DIR}/no_turbo", str(int(self.no_turbo)))
        elif self.boost_form == "global":
            self._put(f"{CPUFREQ_DIR}/boost", str(int(self.global_boost)))

    # -- the kernel's state, as the files show it ---------------------------------------------

    def _put(self, kernel_path: str, text: str) -> None:
        p = self.path(kernel_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")

    def policy_path(self, i: int) -> str:
        return f"{CPUFREQ_DIR}/policy{self.policies[i].cpus[0]}"

    def cpuinfo_max(self, p: FakePolicy) -> int:
        turbo_off = self.no_turbo if self.boost_form == "no_turbo" else not (
            p.boost if self.boost_form == "policy" else self.global_boost)
        return p.base_max_khz if turbo_off else p.turbo_max_khz

    def effective(self, p: FakePolicy) -> tuple[int, int]:
        """(min, max) the policy reads: cpufreq_set_policy's aggregation and verify clamps."""
        assert p.min_req_khz is not None and p.max_req_khz is not None
        hi = self.cpuinfo_max(p)
        mx = min(max(p.max_req_khz, p.cpuinfo_min_khz), hi)
        mn = min(max(p.min_req_khz, p.cpuinfo_min_khz), mx)
        if p.table_khz:
            mn = min([f for f in p.table_khz if f >= mn] or [p.table_khz[-1]])  # CPUFREQ_RELATION_L
            mx = max([f for f in p.table_khz if f <= mx] or [p.table_khz[0]])  # CPUFREQ_RELATION_H
            mn = min(mn, mx)
        return mn, mx

    def shown_epp(self, p: FakePolicy) -> str:
        if self.driver in EPP_BUSY_DRIVERS and p.governor == "performance":
            return "performance"
        return p.epp

    def _publish(self, i: int) -> None:
        p, d = self.policies[i], self.policy_path(i)
        mn, mx = self.effective(p)
        files = {
            "related_cpus": format_cpu_list(p.cpus), "affected_cpus": format_cpu_list(p.cpus),
            "scaling_driver": self.driver, "scaling_governor": p.governor,
            "scaling_available_governors": " ".join(self.governors),
            "scaling_min_freq": str(mn), "scaling_max_freq": str(mx), "scaling_cur_freq": str(mx),
            "cpuinfo_min_freq": str(p.cpuinfo_min_khz), "cpuinfo_max_freq": str(self.cpuinfo_max(p)),
        }
        if self.has_epp:
            files["energy_performance_preference"] = self.shown_epp(p)
            files["energy_performance_available_preferences"] = " ".join(EPP_CHOICES)
        if self.boost_form == "policy":
            files["boost"] = str(int(p.boost))
        if p.table_khz:
            files["scaling_available_frequencies"] = " ".join(map(str, sorted(p.table_khz, reverse=True)))
        for name, text in files.items():
            self._put(f"{d}/{name}", text)

    def _publish_all(self) -> None:
        for i in range(len(self.policies)):
            self._publish(i)

    # -- writes --------------------------------------------------------------------------------

    def _refuse(self, kernel_path: str, value: str, err: int) -> KernelError:
        return KernelError(f"write {value.strip()!r}", self.path(kernel_path), err)

    def write_text(self, kernel_path, value: str) -> None:
        kp = str(kernel_path)
        if not self.exists(kp):
            super().write_text(kp, value)  # ENOENT, as for any mistyped name
        v = value.strip()
        if kp == f"{INTEL_PSTATE_DIR}/no_turbo" or kp == f"{CPUFREQ_DIR}/boost":
            self._write_global_boost(kp, v)
        else:
            i = next((i for i in range(len(self.policies)) if kp.startswith(self.policy_path(i) + "/")), None)
            if i is None:
                super().write_text(kp, value)
                self.writes.append((kp, v))
                return
            self._write_policy(i, kp, kp.rsplit("/", 1)[1], v)
        self.writes.append((kp, v))
        self._publish_all()

    def _write_global_boost(self, kp: str, v: str) -> None:
        if v not in ("0", "1"):
            raise self._refuse(kp, v, errno.EINVAL)
        if kp.endswith("no_turbo"):
            if v == "0" and self.turbo_disabled_by_bios:
                raise self._refuse(kp, v, errno.EPERM)
            self.no_turbo = v == "1"
        else:
            self.global_boost = v == "1"
        self._put(kp, v)

    def _write_policy(self, i: int, kp: str, name: str, v: str) -> None:
        p = self.policies[i]
        if name == "scaling_governor":
            if v not in self.governors:
                raise self._refuse(kp, v, errno.EINVAL)
            p.governor = v
        elif name in ("scaling_min_freq", "scaling_max_freq"):
            if not v.isdigit():
                raise self._refuse(kp, v, errno.EINVAL)
            khz = int(v)
            mn, mx = self.effective(p)
            crosses = khz > mx if name == "scaling_min_freq" else khz < mn
            if not self.qos and crosses:
                raise self._refuse(kp, v, errno.EINVAL)  # pre-5.5: cpufreq_set_policy's min > max check
            if name == "scaling_min_freq":
                p.min_req_khz = khz
            else:
                p.max_req_khz = khz
            if not self.qos:  # no requests remembered: the policy holds what it shows
                p.min_req_khz, p.max_req_khz = self.effective(p)
        elif name == "energy_performance_preference":
            if v not in EPP_CHOICES:
                raise self._refuse(kp, v, errno.EINVAL)
            if self.driver in EPP_BUSY_DRIVERS and p.governor == "performance" and v != "performance":
                raise self._refuse(kp, v, errno.EBUSY)
            if p.governor != "performance":
                p.epp = p.default_epp if v == "default" else v
        elif name == "boost":
            if v not in ("0", "1"):
                raise self._refuse(kp, v, errno.EINVAL)
            p.boost = v == "1"
        else:
            raise self._refuse(kp, v, errno.EACCES)  # a read-only attribute (cpuinfo_*, related_cpus)
