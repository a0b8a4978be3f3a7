"""Energy telemetry for the daemon: RAPL zones, each GPU's sensors and power limit (NVML), each
cpufreq policy's current frequency, read by `EnergySampler` on the daemon's "energy" SlowSource
thread (daemon/sources.py). NVML calls can stall (a GPU falling off the bus answers after
seconds), so the loop never makes them: it takes the latest sample.

Counters are cumulative since the sampler opened. RAPL's energy_uj wraps at max_energy_range_uj
(rapl.EnergyCounter adds across the wrap; it needs one sample per wrap period, ~20 minutes at full
power). NVML's total energy counter runs since the driver loaded and starts again from 0 if the
driver reloads. The raw NVML counter is kept beside the total: the auto search differences it
over whole training steps.

A part the host lacks (no driver or no GPU, no powercap, no cpufreq) is an empty tuple with a
one-line reason, never an error. NVML is opened (and pynvml imported) only in `open()`, on the
source's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aios_host.errors import AiosError
from aios_host.kernel import cpufreq, rapl
from aios_host.kernel.gpu import GpuBackend, GpuInfo
from aios_host.kernel.knob import KnobUnavailable
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger

log = get_logger("aios_host.energy")


def _per_1000(v: int | None) -> float | None:
    """mW -> W, mJ -> J."""
    return None if v is None else v / 1000


@dataclass(frozen=True)
class GpuSample:
    index: int
    uuid: str
    name: str
    power_watts: float | None = None
    energy_joules: float | None = None  # since the sampler opened
    energy_counter_joules: float | None = None  # NVML's counter as read (since the driver loaded)
    sm_clock_hertz: float | None = None
    utilization_ratio: float | None = None
    power_limit_watts: float | None = None  # what is set
    enforced_power_limit_watts: float | None = None  # what binds (a BMC or VBIOS limit can be lower)
    power_limit_min_watts: float | None = None
    power_limit_max_watts: float | None = None
    clock_event_reasons: tuple[str, ...] = ()
    external_slowdown: bool = False  # HwSlowdown, thermal, power brake: nothing aios-host set
    # SM clocks the GPU can be locked to, highest first (read once, at the first sample); empty:
    # not lockable here, and sm_clocks_absent says why (MIG, NOT_SUPPORTED, NO_PERMISSION)
    supported_sm_clocks_mhz: tuple[int, ...] = ()
    sm_clocks_absent: str | None = None
    error: str | None = None  # this device could not be read this time

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class ZoneSample:
    zone: str  # "intel-rapl:0"
    name: str  # "package-0", "dram", "core"
    energy_joules: float  # since the sampler opened, wraps included
    power_watts: float | None  # over the last sampling interval; None on the first sample
    host_part: bool  # counted in the host's CPU energy (see counts_for_host)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CpufreqSample:
    policy: str  # "policy0"
    frequency_hertz: float | None  # scaling_cur_freq

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def counts_for_host(zone: rapl.RaplZone) -> bool:
    """Whether a zone is summed into the host's CPU energy: the packages and DRAM. A package's
    core/uncore zones are parts of it (counted twice if added), DRAM is not part of the package
    counter (a separate RAPL domain), and psys is the whole platform, overlapping the others."""
    return (zone.is_package and zone.name.startswith("package")) or zone.name == "dram"


@dataclass(frozen=True)
class EnergySample:
    t: float  # the sampler's clock (monotonic seconds) when this sample was taken
    gpus: tuple[GpuSample, ...] = ()
    gpu_reason: str | None = None  # why there are no GPUs; None when NVML answered
    zones: tuple[ZoneSample, ...] = ()
    rapl_reason: str | None = None
    policies: tuple[CpufreqSample, ...] = ()
    cpufreq_reason: str | None = None

    def gpu(self, index: int) -> GpuSample | None:
        return next((g for g in self.gpus if g.index == index), None)

    @property
    def cpu_energy_joules(self) -> float | None:
        """RAPL energy of the packages and DRAM since the sampler opened; None without RAPL."""
        parts = [z.energy_joules for z in self.zones if z.host_part]
        return sum(parts) if parts else None

    def host(self) -> dict[str, Any]:
        """Host power and energy = GPUs + RAPL, each where present; `parts` names what is in it."""
        gpu_p = [g.power_watts for g in self.gpus if g.power_watts is not None]
        gpu_e = [g.energy_joules for g in self.gpus if g.energy_joules is not None]
        cpu_p = [z.power_watts for z in self.zones if z.host_part and z.power_watts is not None]
        cpu_e = self.cpu_energy_joules
        parts = [name for name, there in (("gpu", bool(gpu_e)), ("rapl", cpu_e is not None)) if there]
        if not parts:
            return {"parts": [], "power_watts": None, "energy_joules": None}
        return {"parts": parts, "power_watts": sum(gpu_p) + sum(cpu_p) if gpu_p or cpu_p else None,
                "energy_joules": sum(gpu_e) + (cpu_e or 0.0)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": {"available": self.gpu_reason is None, "reason": self.gpu_reason,
                     "devices": [g.to_dict() for g in self.gpus]},
            "rapl": {"available": self.rapl_reason is None, "reason": self.rapl_reason,
                     "zones": [z.to_dict() for z in self.zones]},
            "cpufreq": {"available": self.cpufreq_reason is None, "reason": self.cpufreq_reason,
                        "policies": [p.to_dict() for p in self.policies]},
            "host": self.host(),
        }


def _default_gpu() -> GpuBackend:
    from aios_host.energy.plan import shared_gpu_backend  # the process's one NVML (nvmlInit once)

    return shared_gpu_backend()


class _GpuTotal:
    """Energy since the first reading, from a counter that may start again from 0 (a driver
    reload): a reading below the previous one counts from 0."""

    def __init__(self) -> None:
        self.total_mj = 0
        self._last: int | None = None

    def update(self, reading_mj: int) -> int:
        if self._last is not None:
            self.total_mj += reading_mj - self._last if reading_mj >= self._last else reading_mj
        self._last = reading_mj
        return self.total_mj


class EnergySampler:
    """open() once (on the source's thread), then sample() every interval. `open_gpu` gives the
    GPU backend (default: the process's shared NVML backend, which this never closes: the
    daemon's power-limit writes use the same one)."""

    def __init__(self, root: SysRoot, open_gpu: Callable[[], GpuBackend] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self._open_gpu = open_gpu or _default_gpu
        self._clock = clock
        self._rapl: list[rapl.EnergyCounter] = []
        self._rapl_reason: str | None = "not opened"
        self._rapl_last_t: float | None = None
        self._gpu: GpuBackend | None = None
        self._gpu_reason: str | None = "not opened"
        self._infos: list[GpuInfo] = []
        self._gpu_totals: dict[int, _GpuTotal] = {}
        self._sm_clocks: dict[int, tuple[tuple[int, ...], str | None]] = {}

    def open(self) -> None:
        self._open_rapl()
        self._open_gpus()
        log.info("energy_sources", gpus=len(self._infos), gpu_reason=self._gpu_reason, rapl_zones=len(self._rapl),
                 rapl_reason=self._rapl_reason)

    def _open_rapl(self) -> None:
        try:
            found = rapl.find_zones(self.root)
        except AiosError as exc:
            self._rapl_reason = f"unreadable: {exc}"
            return
        self._rapl_reason = found.reason
        self._rapl = [rapl.EnergyCounter(z) for z in found.zones]

    def _open_gpus(self) -> None:
        try:
            backend = self._open_gpu()
            count = backend.device_count()
            infos = [backend.info(i) for i in range(count)]
        except AiosError as exc:
            self._gpu_reason = str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - pynvml/ctypes failing any other way is still "no GPU here"
            self._gpu_reason = f"NVML: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return
        if not infos:
            self._gpu_reason = "NVML: no devices"
            return
        self._gpu, self._infos, self._gpu_reason = backend, infos, None

    # -- one sample ------------------------------------------------------------------------------

    def sample(self) -> EnergySample:
        t = self._clock()
        zones, rapl_reason = self._sample_rapl(t)
        policies, cpufreq_reason = self._sample_cpufreq()
        return EnergySample(t=t, gpus=tuple(self._sample_gpu(i) for i in self._infos), gpu_reason=self._gpu_reason,
                            zones=zones, rapl_reason=rapl_reason, policies=policies, cpufreq_reason=cpufreq_reason)

    def _sample_rapl(self, t: float) -> tuple[tuple[ZoneSample, ...], str | None]:
        if not self._rapl:
            return (), self._rapl_reason
        dt = None if self._rapl_last_t is None else t - self._rapl_last_t
        out = []
        try:
            for c in self._rapl:
                delta_uj = c.sample(self.root)
                power = delta_uj / 1e6 / dt if dt else None
                out.append(ZoneSample(c.zone.zone, c.zone.name, c.total_uj / 1e6, power, counts_for_host(c.zone)))
        except AiosError as exc:  # a zone gone or unreadable this time: said, and tried again next sample
            return (), f"unreadable: {exc}"
        self._rapl_last_t = t
        return tuple(out), None

    def _sample_cpufreq(self) -> tuple[tuple[CpufreqSample, ...], str | None]:
        try:
            names = cpufreq.list_policies(self.root)
            if not names:
                return (), cpufreq.absent_reason(self.root)
            out = []
            for name in names:
                text = self.root.read_optional(f"{cpufreq.CPUFREQ_DIR}/{name}/scaling_cur_freq")
                khz = text.strip() if text else ""
                out.append(CpufreqSample(name, int(khz) * 1000.0 if khz.isdigit() else None))
            return tuple(out), None
        except AiosError as exc:
            return (), f"unreadable: {exc}"

    def _sample_gpu(self, info: GpuInfo) -> GpuSample:
        assert self._gpu is not None
        i = info.index
        try:
            s = self._gpu.sensors(i)
            lim = self._gpu.power_limits(i)
        except AiosError as exc:  # a lost GPU: this device says so, the others are still read
            return GpuSample(i, info.uuid, info.name, error=str(exc))
        clocks, clocks_absent = self._supported_sm_clocks(i)
        total = None
        if s.energy_mj is not None:
            total = self._gpu_totals.setdefault(i, _GpuTotal()).update(s.energy_mj) / 1000
        return GpuSample(
            index=i, uuid=info.uuid, name=info.name,
            power_watts=_per_1000(s.power_mw), energy_joules=total, energy_counter_joules=_per_1000(s.energy_mj),
            sm_clock_hertz=None if s.sm_clock_mhz is None else s.sm_clock_mhz * 1e6,
            utilization_ratio=None if s.gpu_util_pct is None else s.gpu_util_pct / 100,
            power_limit_watts=None if lim is None else _per_1000(lim.limit_mw),
            enforced_power_limit_watts=None if lim is None else _per_1000(lim.enforced_mw),
            power_limit_min_watts=None if lim is None else _per_1000(lim.min_mw),
            power_limit_max_watts=None if lim is None else _per_1000(lim.max_mw),
            clock_event_reasons=s.clock_event_reasons, external_slowdown=s.external_slowdown,
            supported_sm_clocks_mhz=clocks, sm_clocks_absent=clocks_absent)

    def _supported_sm_clocks(self, i: int) -> tuple[tuple[int, ...], str | None]:
        """The lockable SM clocks, read once per GPU (the list does not change while the driver
        runs); a read that failed (a lost GPU) is tried again at the next sample."""
        assert self._gpu is not None
        if i not in self._sm_clocks:
            try:
                clocks = tuple(self._gpu.supported_sm_clocks_mhz(i))
                self._sm_clocks[i] = (clocks, None if clocks else "NVML lists no supported SM clocks")
            except KnobUnavailable as exc:
                self._sm_clocks[i] = ((), str(exc))
            except AiosError as exc:
                return (), str(exc)
        return self._sm_clocks[i]
