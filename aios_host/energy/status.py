"""What the energy knobs are set to and what the host draws, read once: the data behind
`aios-host energy status` and doctor's energy section.

Counters (RAPL energy_uj, NVML total energy) are read twice, `interval_s` apart, so that energy
and power cover the same window. Every part that is missing says why in one line and the rest is
still read: a host without cpufreq may have GPUs, a GPU host may hide RAPL from non-root.
cpufreq and RAPL are read through the SysRoot; NVML and systemd/D-Bus are always this host's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from aios_host.errors import AiosError
from aios_host.kernel import cpufreq, rapl
from aios_host.kernel.gpu import GpuBackend, GpuInfo, GpuKnobs, GpuSensors, GpuUnavailable, open_gpu_backend
from aios_host.kernel.power_owners import KnobOwners, OwnerChecks, detect_knob_owners
from aios_host.kernel.root import SysRoot


@dataclass(frozen=True)
class ZoneReading:
    zone: rapl.RaplZone
    energy_uj: int | None  # over the interval; None without one
    elapsed_s: float

    @property
    def power_w(self) -> float | None:
        return None if self.energy_uj is None or self.elapsed_s <= 0 else self.energy_uj / 1e6 / self.elapsed_s


@dataclass(frozen=True)
class GpuReading:
    info: GpuInfo
    sensors: GpuSensors  # at the end of the interval
    knobs: GpuKnobs
    energy_mj: int | None  # over the interval
    elapsed_s: float


@dataclass
class EnergyStatus:
    interval_s: float
    policies: list[cpufreq.CpufreqPolicy] = field(default_factory=list)
    cpufreq_reason: str | None = None
    zones: list[ZoneReading] = field(default_factory=list)
    rapl_reason: str | None = None
    gpus: list[GpuReading] = field(default_factory=list)
    gpu_reason: str | None = None
    owners: KnobOwners | None = None

    def summary_lines(self) -> list[str]:
        """One line per part: "cpufreq: none (why)" or what is there."""
        lines = []
        if self.cpufreq_reason:
            lines.append(f"cpufreq: none ({self.cpufreq_reason})")
        else:
            drivers = sorted({p.driver for p in self.policies})
            governors = sorted({p.governor for p in self.policies})
            lines.append(f"cpufreq: {len(self.policies)} policies, driver {', '.join(drivers)}, "
                         f"governor {', '.join(governors)}")
        if self.rapl_reason:
            lines.append(f"RAPL: none ({self.rapl_reason})")
        else:
            lines.append(f"RAPL: {len(self.zones)} zone(s) ({', '.join(z.zone.name for z in self.zones)})")
        if self.gpu_reason:
            lines.append(f"GPU: none ({self.gpu_reason})")
        else:
            names = sorted({g.info.name for g in self.gpus})
            lines.append(f"GPU: {len(self.gpus)} device(s) ({', '.join(names)}) through NVML")
        if self.owners is not None:
            lines.append(f"other owners of the CPU knobs: {self.owners.summary()}")
        return lines

    def to_dict(self) -> dict[str, object]:
        return {
            "interval_seconds": self.interval_s,
            "cpufreq": {"available": not self.cpufreq_reason, "reason": self.cpufreq_reason,
                        "policies": [_policy_dict(p) for p in self.policies]},
            "rapl": {"available": not self.rapl_reason, "reason": self.rapl_reason,
                     "zones": [_zone_dict(z) for z in self.zones]},
            "gpus": {"available": not self.gpu_reason, "reason": self.gpu_reason,
                     "devices": [_gpu_dict(g) for g in self.gpus]},
            "owners": None if self.owners is None else self.owners.to_dict(),
        }


def _policy_dict(p: cpufreq.CpufreqPolicy) -> dict[str, object]:
    d = asdict(p)
    d["policy"] = d.pop("name")
    d["epp"], d["available_epp"] = p.epp, list(p.available_epp)
    d["boost"] = None if p.boost is None else {"enabled": p.boost.enabled, "path": p.boost.path,
                                               "scope": p.boost.scope}
    return d


def _zone_dict(z: ZoneReading) -> dict[str, object]:
    return {"zone": z.zone.zone, "name": z.zone.name,
            "energy_joules": None if z.energy_uj is None else z.energy_uj / 1e6,
            "power_watts": z.power_w, "max_energy_range_joules": z.zone.max_energy_range_uj / 1e6}


def _w(mw: int | None) -> float | None:
    return None if mw is None else mw / 1000


def _gpu_dict(g: GpuReading) -> dict[str, object]:
    s, k, p = g.sensors, g.knobs, g.knobs.power
    return {
        "index": g.info.index, "name": g.info.name, "uuid": g.info.uuid, "pci_bus_id": g.info.pci_bus_id,
        "numa_node": g.info.numa_node,
        "cpu_affinity": None if g.info.cpu_affinity is None else list(g.info.cpu_affinity),
        "mig_enabled": g.info.mig_enabled,
        "power_watts": _w(s.power_mw),
        "energy_joules": _w(g.energy_mj),
        "average_power_watts": None if g.energy_mj is None or g.elapsed_s <= 0 else g.energy_mj / 1e3 / g.elapsed_s,
        "energy_total_joules": _w(s.energy_mj),
        "sm_clock_mhz": s.sm_clock_mhz, "mem_clock_mhz": s.mem_clock_mhz,
        "gpu_utilization_percent": s.gpu_util_pct, "memory_utilization_percent": s.mem_util_pct,
        "memory_used_bytes": s.memory_used_bytes, "memory_total_bytes": s.memory_total_bytes,
        "temperature_celsius": s.temperature_c,
        "clock_event_reasons": list(s.clock_event_reasons), "external_slowdown": s.external_slowdown,
        "power_limit_watts": None if p is None else _w(p.limit_mw),
        "enforced_power_limit_watts": None if p is None else _w(p.enforced_mw),
        "power_limit_min_watts": None if p is None else _w(p.min_mw),
        "power_limit_max_watts": None if p is None else _w(p.max_mw),
        "default_power_limit_watts": None if p is None else _w(p.default_mw),
        "supported_sm_clocks_mhz": list(k.supported_sm_clocks_mhz),
        "locked_sm_clocks_mhz": None if k.locked_sm_clocks_mhz is None else list(k.locked_sm_clocks_mhz),
        "persistence_mode": k.persistence_mode,
        "absent_knobs": dict(k.absent),
    }


def _read_cpufreq(root: SysRoot, status: EnergyStatus) -> None:
    try:
        if not cpufreq.list_policies(root):
            status.cpufreq_reason = cpufreq.absent_reason(root)
            return
        status.policies = cpufreq.read_policies(root)
    except AiosError as exc:
        status.cpufreq_reason = f"unreadable: {exc}"


def _start_rapl(root: SysRoot, status: EnergyStatus) -> list[rapl.EnergyCounter]:
    """Counters of every readable zone, each read once."""
    try:
        found = rapl.find_zones(root)
        status.rapl_reason = found.reason
        counters = [rapl.EnergyCounter(z) for z in found.zones]
        for c in counters:
            c.sample(root)
        return counters
    except AiosError as exc:
        status.rapl_reason = f"unreadable: {exc}"
        return []


def _finish_rapl(root: SysRoot, counters: list[rapl.EnergyCounter], elapsed_s: float, status: EnergyStatus) -> None:
    try:
        status.zones = [ZoneReading(c.zone, c.sample(root) if elapsed_s > 0 else None, elapsed_s) for c in counters]
    except AiosError as exc:
        status.rapl_reason = f"unreadable: {exc}"


def _open_gpus(status: EnergyStatus, factory: Callable[[], GpuBackend]) -> GpuBackend | None:
    try:
        backend = factory()
    except GpuUnavailable as exc:
        status.gpu_reason = str(exc)
        return None
    if backend.device_count() == 0:
        status.gpu_reason = "NVML: no devices"
    return backend


def gather_energy_status(root: SysRoot, interval_s: float = 1.0,
                         gpu_backend: Callable[[], GpuBackend] | None = None,
                         owner_checks: OwnerChecks | None = None,
                         sleep: Callable[[float], None] = time.sleep,
                         clock: Callable[[], float] = time.monotonic) -> EnergyStatus:
    """Read everything; counters twice, `interval_s` apart (0: once, no energy or average power)."""
    status = EnergyStatus(interval_s)
    _read_cpufreq(root, status)
    counters = _start_rapl(root, status)
    backend = _open_gpus(status, gpu_backend or open_gpu_backend)
    try:
        gpus = range(backend.device_count()) if backend is not None else range(0)
        gpu_start_mj = {i: backend.sensors(i).energy_mj for i in gpus} if backend is not None else {}
        start = clock()
        if interval_s > 0 and (counters or gpus):
            sleep(interval_s)
        elapsed_s = clock() - start if interval_s > 0 else 0.0
        _finish_rapl(root, counters, elapsed_s, status)
        for i in gpus:
            assert backend is not None
            s, e0 = backend.sensors(i), gpu_start_mj[i]
            energy = s.energy_mj - e0 if elapsed_s > 0 and s.energy_mj is not None and e0 is not None else None
            status.gpus.append(GpuReading(backend.info(i), s, backend.knobs(i), energy, elapsed_s))
    except AiosError as exc:  # a GPU lost between two reads: report it, keep the rest
        status.gpu_reason, status.gpus = f"NVML: {exc}", []
    finally:
        if backend is not None:
            backend.close()
    status.owners = detect_knob_owners(owner_checks)
    return status
