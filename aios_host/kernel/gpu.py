"""NVIDIA GPUs through NVML (pynvml, the nvidia-ml-py package): what each device is, its sensors,
and the two energy actuators that are not deprecated: the board power limit and locked SM clocks.
Application clocks (nvmlDeviceSetApplicationsClocks) are deprecated and never used.

Writers follow kernel/knob.py's contract: read old, write, read back, return a KnobChange whose
`old` a rollback writes back through the same writer. Two NVML facts shape them:

- The power limit reads back (nvmlDeviceGetPowerManagementLimit), but what binds is the enforced
  limit (nvmlDeviceGetEnforcedPowerLimit): the lowest of ours, the BMC's and the VBIOS's. A lower
  enforced limit is recorded in the change's note, not fought.
- Locked clocks cannot be read back: NVML has no getter. The backend remembers what it locked;
  a lock set by someone else (nvidia-smi -lgc) is invisible, and a reset clears it too.

NVML_ERROR_NO_PERMISSION / NOT_SUPPORTED / FUNCTION_NOT_FOUND make a sensor None and a knob absent
(observe only, `KnobUnavailable`), never a crash. Under MIG only device-level knobs are used: the
power limit and persistence mode; a clock lock would act on every instance's tenant at once.

NvmlBackend takes the pynvml module as an argument, so tests hand it a fake module that raises
the same pynvml.NVMLError subclasses with the real error codes (tests/unit/energy/fake_nvml.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aios_host.errors import AiosError
from aios_host.kernel.knob import KnobChange, KnobRefused, KnobUnavailable
from aios_host.log import get_logger

POWER_LIMIT = "power_limit"
LOCKED_SM_CLOCKS = "locked_sm_clocks"
PERSISTENCE_MODE = "persistence_mode"

# nvmlClocksEventReason* bits (nvml.h; the same values as the older ClocksThrottleReason* names).
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x001: "GpuIdle",
    0x002: "ApplicationsClocksSetting",
    0x004: "SwPowerCap",  # the power limit binds: ours, or a lower enforced one
    0x008: "HwSlowdown",  # something outside the GPU: power brake, PSU, thermal sensor
    0x010: "SyncBoost",
    0x020: "SwThermalSlowdown",
    0x040: "HwThermalSlowdown",
    0x080: "HwPowerBrakeSlowdown",  # the board's external power brake (BMC / PSU) asserted
    0x100: "DisplayClockSetting",
}
# Slowdowns that no aios-host setting causes: a measurement under them says nothing about ours.
EXTERNAL_SLOWDOWNS = frozenset({"HwSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown", "SwThermalSlowdown"})

_log = get_logger("aios_host.kernel.gpu")


def decode_clock_event_reasons(mask: int) -> tuple[str, ...]:
    """Names of the set bits, lowest first; a bit nvml.h did not name when this was written
    shows as "0x200"."""
    names = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(CLOCK_EVENT_REASONS.get(bit, f"{bit:#x}"))
        bit <<= 1
    return tuple(names)


class GpuError(AiosError):
    """An NVML call failed in a way that is not "absent here" (GPU lost, unknown error)."""


class GpuUnavailable(GpuError):
    """NVML cannot be used at all: no pynvml, no libnvidia-ml, no driver."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    pci_bus_id: str  # "00000000:18:00.0"
    numa_node: int | None
    cpu_affinity: tuple[int, ...] | None  # CPUs NVML calls close to the device
    mig_enabled: bool | None  # None: the device has no MIG (before Ampere)


@dataclass(frozen=True)
class GpuSensors:
    power_mw: int | None
    energy_mj: int | None  # total since the driver loaded (Volta and later)
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    gpu_util_pct: int | None
    mem_util_pct: int | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: int | None
    clock_event_mask: int | None

    @property
    def clock_event_reasons(self) -> tuple[str, ...]:
        return () if self.clock_event_mask is None else decode_clock_event_reasons(self.clock_event_mask)

    @property
    def external_slowdown(self) -> bool:
        return bool(EXTERNAL_SLOWDOWNS & set(self.clock_event_reasons))


@dataclass(frozen=True)
class PowerLimits:
    limit_mw: int  # what is set (nvmlDeviceGetPowerManagementLimit)
    enforced_mw: int | None  # what binds: the lowest of every limit
    min_mw: int  # nvmlDeviceGetPowerManagementLimitConstraints
    max_mw: int
    default_mw: int | None


@dataclass(frozen=True)
class GpuKnobs:
    power: PowerLimits | None
    supported_sm_clocks_mhz: tuple[int, ...]  # at the highest memory clock, highest first
    locked_sm_clocks_mhz: tuple[int, int] | None  # what this backend locked; None: not locked by us
    persistence_mode: bool | None
    absent: dict[str, str] = field(default_factory=dict)  # knob -> why it is observe-only


class GpuBackend(Protocol):
    def device_count(self) -> int: ...
    def info(self, index: int) -> GpuInfo: ...
    def sensors(self, index: int) -> GpuSensors: ...
    def knobs(self, index: int) -> GpuKnobs: ...
    def power_limits(self, index: int) -> PowerLimits | None: ...
    def supported_sm_clocks_mhz(self, index: int) -> tuple[int, ...]: ...
    def set_power_limit(self, index: int, power_limit_mw: int) -> KnobChange[int]: ...
    def restore_power_limit(self, index: int) -> KnobChange[int] | None: ...
    def lock_sm_clocks(self, index: int, min_mhz: int, max_mhz: int) -> KnobChange[tuple[int, int] | None]: ...
    def reset_sm_clocks(self, index: int) -> KnobChange[tuple[int, int] | None]: ...
    def set_persistence_mode(self, index: int, enabled: bool) -> KnobChange[bool]: ...
    def close(self) -> None: ...


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _cpus_of_mask(words: Any) -> tuple[int, ...]:
    """nvmlDeviceGetCpuAffinity's array of 64-bit words -> CPU ids."""
    return tuple(w * 64 + b for w, word in enumerate(words) for b in range(64) if int(word) >> b & 1)


# nvmlInit failures a user can act on (codes from nvml.h: this must work without pynvml too).
_INIT_HINTS = {
    12: " (libnvidia-ml.so.1 not found: no NVIDIA driver installed)",  # NVML_ERROR_LIBRARY_NOT_FOUND
    9: " (the nvidia kernel module is not loaded)",  # NVML_ERROR_DRIVER_NOT_LOADED
    18: " (libnvidia-ml and the kernel module are from different drivers: reboot)",  # LIB_RM_VERSION_MISMATCH
}


class NvmlBackend:
    """GpuBackend over NVML. Opening it initialises NVML (GpuUnavailable when it cannot);
    close() shuts NVML down. `nvml` is the pynvml module, or a fake of it."""

    def __init__(self, nvml: Any | None = None) -> None:
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                raise GpuUnavailable("NVML: python module pynvml (nvidia-ml-py) is not installed") from None
        self._nvml = nvml
        self._absent_codes = frozenset({nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_NO_PERMISSION,
                                        nvml.NVML_ERROR_FUNCTION_NOT_FOUND, nvml.NVML_ERROR_NO_DATA})
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            hint = _INIT_HINTS.get(exc.value, "")
            raise GpuUnavailable(f"NVML: {exc}{hint}") from None
        self._open = True
        try:
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(int(nvml.nvmlDeviceGetCount()))]
        except nvml.NVMLError as exc:
            self.close()
            raise GpuUnavailable(f"NVML: listing devices: {exc}") from None
        self._original_power_limit_mw: dict[int, int] = {}
        self._locked_mhz: dict[int, tuple[int, int]] = {}
        self._absent: dict[int, dict[str, str]] = {}

    def close(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass  # shutting down a library that is going away: nothing left to do

    def __enter__(self) -> NvmlBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def original_power_limits_mw(self) -> dict[int, int]:
        """Power limits as they were before this backend's first write to each device."""
        return dict(self._original_power_limit_mw)

    # -- calls ---------------------------------------------------------------------------------

    def device_count(self) -> int:
        return len(self._handles)

    def _handle(self, index: int) -> Any:
        if not 0 <= index < len(self._handles):
            raise GpuError(f"gpu{index}: no such device (NVML sees {len(self._handles)})")
        return self._handles[index]

    def _sensor(self, index: int, fn_name: str, *args: Any) -> Any | None:
        """A read that may be absent here: None for NOT_SUPPORTED, NO_PERMISSION, an older driver
        without the function; GpuError for anything else (a lost GPU is not "absent")."""
        fn: Callable[..., Any] | None = getattr(self._nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(self._handle(index), *args)
        except self._nvml.NVMLError as exc:
            if exc.value in self._absent_codes:
                return None
            raise GpuError(f"gpu{index}: {fn_name}: {exc}") from None

    def _knob_call(self, index: int, knob: str, fn_name: str, *args: Any) -> Any:
        """A call that belongs to a knob: absent codes make the knob absent for this backend's
        life (open a new backend to probe again), and NVML is not asked again."""
        if knob in self._absent.get(index, {}):
            raise self._absent_error(index, knob)
        fn = getattr(self._nvml, fn_name, None)
        if fn is None:
            raise self._mark_absent(index, knob, f"this pynvml has no {fn_name}")
        try:
            return fn(self._handle(index), *args)
        except self._nvml.NVMLError as exc:
            if exc.value in self._absent_codes:
                raise self._mark_absent(index, knob, f"NVML {fn_name}: {exc}") from None
            if exc.value == self._nvml.NVML_ERROR_INVALID_ARGUMENT:
                raise KnobRefused(f"gpu{index} {knob}: NVML {fn_name}{tuple(args)}: {exc}") from None
            raise GpuError(f"gpu{index} {knob}: NVML {fn_name}: {exc}") from None

    def _mark_absent(self, index: int, knob: str, reason: str) -> KnobUnavailable:
        """Record the knob as observe-only; the error to raise."""
        if knob not in self._absent.setdefault(index, {}):
            # info, not warning: an absent knob is a fact of the host (MIG, no root), and the
            # caller that needed it gets KnobUnavailable
            _log.info("gpu_knob_absent", gpu=index, knob=knob, reason=reason)
        self._absent[index][knob] = reason
        return self._absent_error(index, knob)

    def _absent_error(self, index: int, knob: str) -> KnobUnavailable:
        return KnobUnavailable(f"gpu{index} {knob}: {self._absent[index][knob]} (observe only)")

    # -- what the device is --------------------------------------------------------------------

    def info(self, index: int) -> GpuInfo:
        n = self._nvml
        pci = self._sensor(index, "nvmlDeviceGetPciInfo")
        numa = self._sensor(index, "nvmlDeviceGetNumaNodeId")
        words = ((os.cpu_count() or 1) + 63) // 64  # 64 CPUs per word of the mask
        affinity = self._sensor(index, "nvmlDeviceGetCpuAffinity", words)
        mig = self._sensor(index, "nvmlDeviceGetMigMode")
        return GpuInfo(
            index=index,
            name=_text(self._sensor(index, "nvmlDeviceGetName") or "?"),
            uuid=_text(self._sensor(index, "nvmlDeviceGetUUID") or "?"),
            pci_bus_id=_text(pci.busId) if pci is not None else "?",
            numa_node=numa if isinstance(numa, int) and numa >= 0 else None,
            cpu_affinity=_cpus_of_mask(affinity) if affinity is not None else None,
            mig_enabled=None if mig is None else mig[0] == n.NVML_DEVICE_MIG_ENABLE,
        )

    def sensors(self, index: int) -> GpuSensors:
        n = self._nvml
        util = self._sensor(index, "nvmlDeviceGetUtilizationRates")  # NOT_SUPPORTED under MIG
        mem = self._sensor(index, "nvmlDeviceGetMemoryInfo")
        # The newer name first (R535+); older drivers only have the ThrottleReasons symbol.
        reasons = self._sensor(index, "nvmlDeviceGetCurrentClocksEventReasons")
        if reasons is None:
            reasons = self._sensor(index, "nvmlDeviceGetCurrentClocksThrottleReasons")
        return GpuSensors(
            power_mw=self._sensor(index, "nvmlDeviceGetPowerUsage"),
            energy_mj=self._sensor(index, "nvmlDeviceGetTotalEnergyConsumption"),
            sm_clock_mhz=self._sensor(index, "nvmlDeviceGetClockInfo", n.NVML_CLOCK_SM),
            mem_clock_mhz=self._sensor(index, "nvmlDeviceGetClockInfo", n.NVML_CLOCK_MEM),
            gpu_util_pct=None if util is None else int(util.gpu),
            mem_util_pct=None if util is None else int(util.memory),
            memory_used_bytes=None if mem is None else int(mem.used),
            memory_total_bytes=None if mem is None else int(mem.total),
            temperature_c=self._sensor(index, "nvmlDeviceGetTemperature", n.NVML_TEMPERATURE_GPU),
            clock_event_mask=None if reasons is None else int(reasons),
        )

    # -- what can be set -----------------------------------------------------------------------

    def _power_limits(self, index: int) -> PowerLimits:
        lo, hi = self._knob_call(index, POWER_LIMIT, "nvmlDeviceGetPowerManagementLimitConstraints")
        return PowerLimits(
            limit_mw=int(self._knob_call(index, POWER_LIMIT, "nvmlDeviceGetPowerManagementLimit")),
            enforced_mw=self._sensor(index, "nvmlDeviceGetEnforcedPowerLimit"),
            min_mw=int(lo), max_mw=int(hi),
            default_mw=self._sensor(index, "nvmlDeviceGetPowerManagementDefaultLimit"),
        )

    def power_limits(self, index: int) -> PowerLimits | None:
        """The power limit, the enforced one and the constraints; None when the knob is absent.
        Four NVML calls, where knobs() makes a dozen: what a sampler every second can afford."""
        try:
            return self._power_limits(index)
        except KnobUnavailable:
            return None

    def supported_sm_clocks_mhz(self, index: int) -> tuple[int, ...]:
        """SM clocks the device can be locked to, at its highest memory clock, highest first."""
        self._refuse_under_mig(index)
        mem = self._knob_call(index, LOCKED_SM_CLOCKS, "nvmlDeviceGetSupportedMemoryClocks")
        if not mem:
            raise self._mark_absent(index, LOCKED_SM_CLOCKS, "NVML lists no supported memory clocks")
        clocks = self._knob_call(index, LOCKED_SM_CLOCKS, "nvmlDeviceGetSupportedGraphicsClocks", max(mem))
        return tuple(sorted({int(c) for c in clocks}, reverse=True))

    def _refuse_under_mig(self, index: int) -> None:
        if self.info(index).mig_enabled:
            raise self._mark_absent(index, LOCKED_SM_CLOCKS,
                                    "MIG mode is on: only device-level knobs (power limit, persistence) are used")

    def knobs(self, index: int) -> GpuKnobs:
        """Every knob's current value, or why it is absent. Never raises KnobUnavailable."""
        def probe(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except KnobUnavailable:
                return None

        power = probe(lambda: self._power_limits(index))
        clocks = probe(lambda: self.supported_sm_clocks_mhz(index)) or ()
        persistence = probe(lambda: self._knob_call(index, PERSISTENCE_MODE, "nvmlDeviceGetPersistenceMode"))
        return GpuKnobs(
            power=power,
            supported_sm_clocks_mhz=clocks,
            locked_sm_clocks_mhz=self._locked_mhz.get(index),
            persistence_mode=None if persistence is None else persistence == self._nvml.NVML_FEATURE_ENABLED,
            absent=dict(self._absent.get(index, {})),
        )

    # -- writers -------------------------------------------------------------------------------

    def set_power_limit(self, index: int, power_limit_mw: int) -> KnobChange[int]:
        knob = f"gpu{index} power_limit_mw"
        before = self._power_limits(index)
        if not before.min_mw <= power_limit_mw <= before.max_mw:
            raise KnobRefused(f"{knob}: {power_limit_mw} mW is outside {before.min_mw}..{before.max_mw} mW "
                              "(nvmlDeviceGetPowerManagementLimitConstraints)")
        if before.limit_mw == power_limit_mw:
            return KnobChange(knob, before.limit_mw, power_limit_mw, power_limit_mw, written=False,
                              note=_enforced_note(before))
        self._knob_call(index, POWER_LIMIT, "nvmlDeviceSetPowerManagementLimit", power_limit_mw)
        self._original_power_limit_mw.setdefault(index, before.limit_mw)
        after = self._power_limits(index)
        change = KnobChange(knob, before.limit_mw, power_limit_mw, after.limit_mw, note=_enforced_note(after))
        _log_change(change, index)
        return change

    def restore_power_limit(self, index: int) -> KnobChange[int] | None:
        """Back to the limit before this backend's first write; None when it wrote none."""
        original = self._original_power_limit_mw.get(index)
        if original is None:
            return None
        change = self.set_power_limit(index, original)
        if change.took:
            del self._original_power_limit_mw[index]
        return change

    def lock_sm_clocks(self, index: int, min_mhz: int, max_mhz: int) -> KnobChange[tuple[int, int] | None]:
        """nvmlDeviceSetGpuLockedClocks: the SM clock stays within min..max, both from the
        supported list (min = max pins it; min = the lowest supported caps it)."""
        knob = f"gpu{index} locked_sm_clocks_mhz"
        supported = self.supported_sm_clocks_mhz(index)
        for v in (min_mhz, max_mhz):
            if v not in supported:
                below = [c for c in supported if c <= v]
                hint = f"; nearest below: {below[0]}" if below else ""
                raise KnobRefused(f"{knob}: {v} MHz is not a supported SM clock "
                                  f"({supported[-1]}..{supported[0]} MHz, {len(supported)} steps{hint})")
        if min_mhz > max_mhz:
            raise KnobRefused(f"{knob}: min {min_mhz} MHz is above max {max_mhz} MHz")
        old = self._locked_mhz.get(index)
        self._knob_call(index, LOCKED_SM_CLOCKS, "nvmlDeviceSetGpuLockedClocks", min_mhz, max_mhz)
        self._locked_mhz[index] = (min_mhz, max_mhz)
        change = KnobChange(knob, old, (min_mhz, max_mhz), (min_mhz, max_mhz),
                            note="NVML cannot read a clock lock back: new is what was set")
        _log_change(change, index)
        return change

    def reset_sm_clocks(self, index: int) -> KnobChange[tuple[int, int] | None]:
        """nvmlDeviceResetGpuLockedClocks: clears any lock, ours or one set with nvidia-smi."""
        knob = f"gpu{index} locked_sm_clocks_mhz"
        self._refuse_under_mig(index)
        old = self._locked_mhz.get(index)
        self._knob_call(index, LOCKED_SM_CLOCKS, "nvmlDeviceResetGpuLockedClocks")
        self._locked_mhz.pop(index, None)
        change: KnobChange[tuple[int, int] | None] = KnobChange(knob, old, None, None)
        _log_change(change, index)
        return change

    def set_persistence_mode(self, index: int, enabled: bool) -> KnobChange[bool]:
        """Persistence keeps the driver loaded with no client, so limits and locks survive the
        last process exiting (without it the driver may reset them when it unloads)."""
        n = self._nvml
        knob = f"gpu{index} persistence_mode"
        old = self._knob_call(index, PERSISTENCE_MODE, "nvmlDeviceGetPersistenceMode") == n.NVML_FEATURE_ENABLED
        if old == enabled:
            return KnobChange(knob, old, enabled, enabled, written=False)
        self._knob_call(index, PERSISTENCE_MODE, "nvmlDeviceSetPersistenceMode",
                        n.NVML_FEATURE_ENABLED if enabled else n.NVML_FEATURE_DISABLED)
        new = self._knob_call(index, PERSISTENCE_MODE, "nvmlDeviceGetPersistenceMode") == n.NVML_FEATURE_ENABLED
        change = KnobChange(knob, old, enabled, new)
        _log_change(change, index)
        return change


def _enforced_note(p: PowerLimits) -> str:
    if p.enforced_mw is not None and p.enforced_mw < p.limit_mw:
        return f"enforced limit {p.enforced_mw} mW is lower: a BMC or VBIOS limit binds"
    return ""


def _log_change(change: KnobChange, index: int) -> None:
    log = _log.info if change.took else _log.warning
    log("gpu_write", gpu=index, knob=change.knob, old=change.old, requested=change.requested, new=change.new,
        note=change.note)


def open_gpu_backend() -> NvmlBackend:
    """NVML on this host; GpuUnavailable (one line: "NVML: <why>") when it cannot be used."""
    return NvmlBackend()
