"""A fake pynvml module for NvmlBackend's tests: H100-like devices that raise the real
pynvml.NVMLError subclasses with the real error codes, so the backend's code runs unchanged.

What it models of NVML and the board:
- power limit constraints 200..700 W, default 700 W; nvmlDeviceSetPowerManagementLimit outside
  them is INVALID_ARGUMENT, and without root NO_PERMISSION (as the driver answers a non-root
  caller); the enforced limit is the lower of ours and an optional BMC limit;
- the board draws min(demand, enforced limit) and its energy counter (mJ) advances with that power
  over simulated time (`advance`), or over a given clock;
- supported graphics clocks (1980 down to 210 MHz in 15 MHz steps) at one memory clock (2619 MHz);
  locked clocks, persistence mode, MIG mode;
- `unsupported`: function names that answer NOT_SUPPORTED; `missing`: names the module lacks
  (an older pynvml); `lost`: every call answers GPU_IS_LOST.
`calls` records every call by name, so tests can check that nothing was written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pynvml

H100_CLOCKS_MHZ = tuple(range(1980, 209, -15))
H100_MEM_CLOCK_MHZ = 2619


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-8c2a41b5-0000-4000-8000-000000000000"
    bus_id: bytes = b"00000000:18:00.0"
    numa_node: int = 0
    cpu_affinity_words: tuple[int, ...] = (0x0F,)  # CPUs 0-3
    min_limit_mw: int = 200_000
    max_limit_mw: int = 700_000
    default_limit_mw: int = 700_000
    limit_mw: int = 700_000
    bmc_limit_mw: int | None = None  # a lower limit set outside NVML's user limit (BMC, VBIOS)
    demand_mw: int = 450_000  # what the running job would draw without a cap
    idle_mw: int = 70_000
    energy_mj: int = 123_456_789
    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = H100_MEM_CLOCK_MHZ
    graphics_clocks_mhz: tuple[int, ...] = H100_CLOCKS_MHZ
    locked_mhz: tuple[int, int] | None = None
    mig: bool = False
    persistence: bool = False
    temperature_c: int = 41
    hw_slowdown: bool = False
    memory_total_bytes: int = 80 * 2**30
    memory_used_bytes: int = 10 * 2**30

    @property
    def enforced_mw(self) -> int:
        return self.limit_mw if self.bmc_limit_mw is None else min(self.limit_mw, self.bmc_limit_mw)

    @property
    def power_mw(self) -> int:
        return min(self.demand_mw, self.enforced_mw)


class FakeNvml:
    """Module-like: NvmlBackend(FakeNvml(...)) calls the same names it calls on pynvml."""

    def __init__(self, gpus: list[FakeGpu] | None = None, *, root: bool = True, init_error: int | None = None,
                 unsupported: set[str] | None = None, missing: set[str] | None = None,
                 clock: Callable[[], float] | None = None, old_pynvml: bool = False) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.root = root
        self.init_error = init_error
        self.unsupported = set(unsupported or ())
        self.missing = set(missing or ())
        if old_pynvml:  # before the ClocksEventReasons rename (R535)
            self.missing.add("nvmlDeviceGetCurrentClocksEventReasons")
        self.lost = False
        self.calls: list[str] = []
        self.initialised = 0
        self._clock = clock
        self._last_t = clock() if clock else 0.0
        # The real error classes and constants, so `except nvml.NVMLError` matches both.
        for name in dir(pynvml):
            if name.startswith(("NVML_", "NVMLError", "nvmlClocks")):
                setattr(self, name, getattr(pynvml, name))

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and not name.startswith("nvmlClocks"):
            if name in object.__getattribute__(self, "missing"):
                raise AttributeError(name)
            fn = object.__getattribute__(self, name)
            return object.__getattribute__(self, "_wrap")(name, fn)
        return object.__getattribute__(self, name)

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.calls.append(name)
            if name not in ("nvmlInit", "nvmlShutdown"):
                if self.lost:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
                if name in self.unsupported:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return fn(*args)
        return call

    # -- simulated time ------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        for g in self.gpus:
            g.energy_mj += round(g.power_mw * seconds)

    def _tick(self) -> None:
        if self._clock is not None:
            now = self._clock()
            self.advance(now - self._last_t)
            self._last_t = now

    # -- library -------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    # -- identity ------------------------------------------------------------------------------

    def nvmlDeviceGetName(self, g: FakeGpu) -> str:
        return g.name

    def nvmlDeviceGetUUID(self, g: FakeGpu) -> str:
        return g.uuid

    def nvmlDeviceGetPciInfo(self, g: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(busId=g.bus_id)

    def nvmlDeviceGetNumaNodeId(self, g: FakeGpu) -> int:
        return g.numa_node

    def nvmlDeviceGetCpuAffinity(self, g: FakeGpu, words: int) -> list[int]:
        return list(g.cpu_affinity_words[:words]) + [0] * max(0, words - len(g.cpu_affinity_words))

    def nvmlDeviceGetMigMode(self, g: FakeGpu) -> list[int]:
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if g.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    # -- sensors -------------------------------------------------------------------------------

    def nvmlDeviceGetPowerUsage(self, g: FakeGpu) -> int:
        return g.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, g: FakeGpu) -> int:
        self._tick()
        return g.energy_mj

    def nvmlDeviceGetClockInfo(self, g: FakeGpu, clock_type: int) -> int:
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return g.mem_clock_mhz
        top = g.locked_mhz[1] if g.locked_mhz else g.graphics_clocks_mhz[0]
        return min(g.sm_clock_mhz, top)

    def nvmlDeviceGetUtilizationRates(self, g: FakeGpu) -> SimpleNamespace:
        if g.mig:  # per-device utilisation is not reported under MIG
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        busy = 0 if g.demand_mw <= g.idle_mw else 97
        return SimpleNamespace(gpu=busy, memory=busy // 2)

    def nvmlDeviceGetMemoryInfo(self, g: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(total=g.memory_total_bytes, used=g.memory_used_bytes,
                               free=g.memory_total_bytes - g.memory_used_bytes)

    def nvmlDeviceGetTemperature(self, g: FakeGpu, sensor: int) -> int:
        return g.temperature_c

    def _reasons(self, g: FakeGpu) -> int:
        mask = 0
        if g.demand_mw <= g.idle_mw:
            mask |= pynvml.nvmlClocksThrottleReasonGpuIdle
        if g.demand_mw > g.enforced_mw:
            mask |= pynvml.nvmlClocksThrottleReasonSwPowerCap
        if g.hw_slowdown:
            mask |= pynvml.nvmlClocksThrottleReasonHwSlowdown
        return mask

    def nvmlDeviceGetCurrentClocksEventReasons(self, g: FakeGpu) -> int:
        return self._reasons(g)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, g: FakeGpu) -> int:
        return self._reasons(g)

    # -- power limit ---------------------------------------------------------------------------

    def nvmlDeviceGetPowerManagementLimitConstraints(self, g: FakeGpu) -> list[int]:
        return [g.min_limit_mw, g.max_limit_mw]

    def nvmlDeviceGetPowerManagementLimit(self, g: FakeGpu) -> int:
        return g.limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, g: FakeGpu) -> int:
        return g.default_limit_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, g: FakeGpu) -> int:
        return g.enforced_mw

    def nvmlDeviceSetPowerManagementLimit(self, g: FakeGpu, limit_mw: int) -> None:
        self._need_root()
        if not g.min_limit_mw <= limit_mw <= g.max_limit_mw:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._tick()  # energy so far at the old limit
        g.limit_mw = limit_mw

    # -- clocks --------------------------------------------------------------------------------

    def nvmlDeviceGetSupportedMemoryClocks(self, g: FakeGpu) -> list[int]:
        return [g.mem_clock_mhz, 1593]

    def nvmlDeviceGetSupportedGraphicsClocks(self, g: FakeGpu, mem_mhz: int) -> list[int]:
        if mem_mhz != g.mem_clock_mhz:
            return [c for c in g.graphics_clocks_mhz if c <= 1410]
        return list(g.graphics_clocks_mhz)

    def nvmlDeviceSetGpuLockedClocks(self, g: FakeGpu, min_mhz: int, max_mhz: int) -> None:
        self._need_root()
        if g.mig:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if min_mhz > max_mhz:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._tick()  # energy so far at the old clock
        g.locked_mhz = (min_mhz, max_mhz)

    def nvmlDeviceResetGpuLockedClocks(self, g: FakeGpu) -> None:
        self._need_root()
        self._tick()
        g.locked_mhz = None

    # -- persistence ---------------------------------------------------------------------------

    def nvmlDeviceGetPersistenceMode(self, g: FakeGpu) -> int:
        return pynvml.NVML_FEATURE_ENABLED if g.persistence else pynvml.NVML_FEATURE_DISABLED

    def nvmlDeviceSetPersistenceMode(self, g: FakeGpu, mode: int) -> None:
        self._need_root()
        g.persistence = mode == pynvml.NVML_FEATURE_ENABLED

    def _need_root(self) -> None:
        if not self.root:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)


def fake_gpu_backend(*gpus: FakeGpu, **kwargs: Any):
    """(NvmlBackend over a FakeNvml, the FakeNvml): the FakeGpuBackend of the tests."""
    from aios_host.kernel.gpu import NvmlBackend

    nvml = FakeNvml(list(gpus) or None, **kwargs)
    return NvmlBackend(nvml), nvml

