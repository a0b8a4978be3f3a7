"""CPU package / DRAM energy from RAPL through powercap (Documentation/power/powercap/powercap.rst):
/sys/class/powercap/intel-rapl:N (a package) and intel-rapl:N:M (its core, uncore, dram parts),
each with `name`, `energy_uj` and `max_energy_range_uj`. AMD CPUs appear under the same names.

Read-only: nothing here writes a RAPL limit. energy_uj is a free-running counter that wraps to 0
after max_energy_range_uj (about 262 kJ on a server package: 20-40 minutes at full power), so
`EnergyCounter` must see at least one reading per wrap period. Since Linux 5.10 energy_uj is
readable by root only (CVE-2020-8694, "Platypus"): unreadable means "observe nothing", with that
reason, never an error that stops a caller.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from aios_host.errors import KernelError
from aios_host.kernel.root import SysRoot

POWERCAP_DIR = "/sys/class/powercap"
# intel-rapl-mmio:N (Tiger Lake and later) is the same package energy through MMIO: counting it
# as well would count the package twice, so only the MSR zones are taken.
ZONE_RE = re.compile(r"intel-rapl:\d+(:\d+)?")


@dataclass(frozen=True)
class RaplZone:
    zone: str  # "intel-rapl:0", "intel-rapl:0:2"
    name: str  # "package-0", "core", "uncore", "dram", "psys"
    max_energy_range_uj: int

    @property
    def path(self) -> str:
        return f"{POWERCAP_DIR}/{self.zone}"

    @property
    def is_package(self) -> bool:
        """A top zone: its energy includes its sub-zones' (sum packages only, never parts too)."""
        return self.zone.count(":") == 1


@dataclass(frozen=True)
class RaplZones:
    zones: tuple[RaplZone, ...]
    reason: str | None  # why there is nothing to read; None when every zone is readable


def _zone_names(root: SysRoot) -> list[str]:
    # The entries of a class directory are symlinks into /sys/devices: listdir, not subdirs().
    names = [n for n in root.listdir(POWERCAP_DIR) if ZONE_RE.fullmatch(n)]
    return sorted(names, key=lambda n: tuple(int(x) for x in n.split(":")[1:]))


def unreadable_reason(path: str, err: int) -> str:
    if err == errno.EACCES:
        return (f"{path}: readable by root only (Linux 5.10+, CVE-2020-8694); run as root "
                "to measure CPU energy")
    return f"{path}: unreadable ({errno.errorcode.get(err, err)})"


def read_energy_uj(root: SysRoot, zone: RaplZone) -> int:
    """The zone's counter now. KernelError (EACCES when not root) when it cannot be read."""
    path = f"{zone.path}/energy_uj"
    text = root.read_text(path)
    try:
        return int(text.strip())
    except ValueError:
        raise KernelError("read", root.path(path), errno.EIO, f"{text.strip()[:40]!r} is not a number") from None


def find_zones(root: SysRoot) -> RaplZones:
    """Every RAPL zone whose counter can be read, or none and why not."""
    if not root.is_dir(POWERCAP_DIR):
        return RaplZones((), f"{POWERCAP_DIR} absent: no powercap driver (intel_rapl_msr) loaded, or a VM")
    names = _zone_names(root)
    if not names:
        return RaplZones((), f"{POWERCAP_DIR} has no intel-rapl zones: no RAPL on this CPU, or a VM")
    zones = []
    for n in names:
        attrs = root.read_attrs(f"{POWERCAP_DIR}/{n}", ["name", "max_energy_range_uj"])
        try:
            max_range = int((attrs["max_energy_range_uj"] or "").strip())
        except ValueError:
            continue  # a zone without a counter range (a constraint-only zone): nothing to count
        zones.append(RaplZone(n, (attrs["name"] or n).strip(), max_range))
    if not zones:
        return RaplZones((), f"{POWERCAP_DIR}: no intel-rapl zone has max_energy_range_uj")
    try:
        read_energy_uj(root, zones[0])
    except KernelError as exc:
        return RaplZones((), unreadable_reason(f"{zones[0].path}/energy_uj", exc.errno))
    return RaplZones(tuple(zones), None)


def energy_delta_uj(prev_uj: int, cur_uj: int, max_energy_range_uj: int) -> int:
    """Energy between two readings of one counter, across at most one wrap: the counter counts up
    to max_energy_range_uj and starts again at 0."""
    if cur_uj >= prev_uj:
        return cur_uj - prev_uj
    return max_energy_range_uj - prev_uj + cur_uj


class EnergyCounter:
    """Accumulated energy of one zone from successive readings (`update`), wraps included."""

    def __init__(self, zone: RaplZone) -> None:
        self.zone = zone
        self.total_uj = 0
        self._last_uj: int | None = None

    def update(self, reading_uj: int) -> int:
        """Feed a reading; the energy since the previous one (0 for the first)."""
        delta = 0 if self._last_uj is None else energy_delta_uj(self._last_uj, reading_uj,
                                                                self.zone.max_energy_range_uj)
        self._last_uj = reading_uj
        self.total_uj += delta
        return delta

    def sample(self, root: SysRoot) -> int:
        """Read the zone and `update`: the energy since the previous sample, in uJ."""
        return self.update(read_energy_uj(root, self.zone))
