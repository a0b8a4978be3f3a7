import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_host.kernel import gpu
from aios_host.kernel.gpu import GpuError, GpuUnavailable, NvmlBackend
from aios_host.kernel.knob import KnobRefused, KnobUnavailable
from tests.unit.energy.fake_nvml import H100_CLOCKS_MHZ, FakeGpu, FakeNvml, fake_gpu_backend

SETTERS = ("nvmlDeviceSetPowerManagementLimit", "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks",
           "nvmlDeviceSetPersistenceMode")


def writes(nvml: FakeNvml) -> list[str]:
    return [c for c in nvml.calls if c in SETTERS]


def test_the_fake_raises_the_real_pynvml_classes():
    nvml = FakeNvml(root=False)
    with pytest.raises(pynvml.NVMLError_NoPermission) as exc:
        nvml.nvmlDeviceSetPowerManagementLimit(nvml.gpus[0], 300_000)
    assert exc.value.value == pynvml.NVML_ERROR_NO_PERMISSION == 4


# -- opening -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "line"), [
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
     "NVML: NVML Shared Library Not Found (libnvidia-ml.so.1 not found: no NVIDIA driver installed)"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "NVML: Driver Not Loaded (the nvidia kernel module is not loaded)"),
    (pynvml.NVML_ERROR_NO_PERMISSION, "NVML: Insufficient Permissions"),
])
def test_nvml_that_does_not_start_is_one_line(code, line):
    with pytest.raises(GpuUnavailable) as exc:
        NvmlBackend(FakeNvml(init_error=code))
    assert str(exc.value) == line


def test_close_shuts_nvml_down_once():
    b, nvml = fake_gpu_backend()
    assert nvml.initialised == 1
    b.close()
    b.close()
    assert nvml.initialised == 0


# -- what the device is --------------------------------------------------------------------------


def test_info(monkeypatch):
    monkeypatch.setattr(gpu.os, "cpu_count", lambda: 128)  # two 64-bit words of affinity mask
    b, _ = fake_gpu_backend(FakeGpu(cpu_affinity_words=(0xF0, 0x1)), FakeGpu(numa_node=-1, mig=True))
    assert b.device_count() == 2
    i = b.info(0)
    assert (i.name, i.pci_bus_id, i.numa_node, i.mig_enabled) == ("NVIDIA H100 80GB HBM3", "00000000:18:00.0", 0,
                                                                 False)
    assert i.cpu_affinity == (4, 5, 6, 7, 64)
    assert b.info(1).numa_node is None and b.info(1).mig_enabled is True


def test_an_older_gpu_without_numa_or_mig():
    b, _ = fake_gpu_backend(unsupported={"nvmlDeviceGetNumaNodeId", "nvmlDeviceGetMigMode"})
    assert b.info(0).numa_node is None and b.info(0).mig_enabled is None


def test_no_such_device_is_one_line():
    b, _ = fake_gpu_backend()
    with pytest.raises(GpuError, match="gpu3: no such device"):
        b.sensors(3)


# -- sensors -------------------------------------------------------------------------------------


def test_energy_advances_with_the_power_drawn():
    b, nvml = fake_gpu_backend(FakeGpu(demand_mw=500_000))
    s0 = b.sensors(0)
    assert s0.power_mw == 500_000 and s0.clock_event_reasons == ()
    nvml.advance(10)
    assert b.sensors(0).energy_mj - s0.energy_mj == 5_000_000  # 500 W for 10 s = 5 kJ
    b.set_power_limit(0, 300_000)
    s1 = b.sensors(0)
    nvml.advance(10)
    s2 = b.sensors(0)
    assert s1.power_mw == 300_000 and s2.energy_mj - s1.energy_mj == 3_000_000
    assert s2.clock_event_reasons == ("SwPowerCap",) and not s2.external_slowdown


def test_sensor_readings():
    b, _ = fake_gpu_backend()
    s = b.sensors(0)
    assert (s.sm_clock_mhz, s.mem_clock_mhz, s.temperature_c) == (1980, 2619, 41)
    assert (s.gpu_util_pct, s.mem_util_pct) == (97, 48)
    assert (s.memory_used_bytes, s.memory_total_bytes) == (10 * 2**30, 80 * 2**30)


def test_idle_and_outside_slowdowns_are_told_apart():
    b, _ = fake_gpu_backend(FakeGpu(demand_mw=60_000), FakeGpu(hw_slowdown=True))
    assert b.sensors(0).clock_event_reasons == ("GpuIdle",)
    assert b.sensors(1).clock_event_reasons == ("HwSlowdown",) and b.sensors(1).external_slowdown


@pytest.mark.parametrize("kw", [{"old_pynvml": True},
                                {"unsupported": {"nvmlDeviceGetCurrentClocksEventReasons"}}])
def test_clock_reasons_from_the_older_throttle_name(kw):
    b, nvml = fake_gpu_backend(FakeGpu(demand_mw=900_000), **kw)
    assert b.sensors(0).clock_event_reasons == ("SwPowerCap",)
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in nvml.calls


@given(st.sets(st.sampled_from(sorted(gpu.CLOCK_EVENT_REASONS))), st.sets(st.integers(9, 40)))
def test_decoding_clock_reasons_keeps_every_bit(known, unknown_bits):
    mask = sum(known) + sum(1 << b for b in unknown_bits)
    names = gpu.decode_clock_event_reasons(mask)
    assert {gpu.CLOCK_EVENT_REASONS[b] for b in known} <= set(names)
    back = sum(next(b for b, n in gpu.CLOCK_EVENT_REASONS.items() if n == name) if not name.startswith("0x")
               else int(name, 16) for name in names)
    assert back == mask


def test_unsupported_sensors_are_none_not_errors():
    b, _ = fake_gpu_backend(FakeGpu(mig=True), unsupported={"nvmlDeviceGetTotalEnergyConsumption"},
                            missing={"nvmlDeviceGetTemperature"})
    s = b.sensors(0)
    assert s.energy_mj is None and s.temperature_c is None and s.gpu_util_pct is None  # util: MIG
    assert s.power_mw is not None


def test_a_lost_gpu_is_an_error_not_an_absent_sensor():
    b, nvml = fake_gpu_backend()
    nvml.lost = True
    with pytest.raises(GpuError, match="gpu0: nvmlDeviceGetUtilizationRates: GPU is lost"):
        b.sensors(0)


# -- power limit ---------------------------------------------------------------------------------


def test_knobs_of_an_h100():
    b, _ = fake_gpu_backend(FakeGpu(bmc_limit_mw=450_000))
    k = b.knobs(0)
    assert k.power == gpu.PowerLimits(700_000, 450_000, 200_000, 700_000, 700_000)
    assert k.supported_sm_clocks_mhz == H100_CLOCKS_MHZ and k.locked_sm_clocks_mhz is None
    assert k.persistence_mode is False and k.absent == {}


@settings(deadline=None)  # each example opens a backend: slow on a loaded host, and that is not a bug
@given(st.integers(0, 1_000_000))
def test_power_limit_within_the_constraints_or_refused_untouched(mw):
    b, nvml = fake_gpu_backend()
    if 200_000 <= mw <= 700_000:
        ch = b.set_power_limit(0, mw)
        assert (ch.old, ch.new, ch.took) == (700_000, mw, True)
        assert nvml.gpus[0].limit_mw == mw
    else:
        with pytest.raises(KnobRefused, match=rf"{mw} mW is outside 200000..700000 mW"):
            b.set_power_limit(0, mw)
        assert writes(nvml) == [] and nvml.gpus[0].limit_mw == 700_000


def test_a_lower_enforced_limit_is_recorded():
    b, nvml = fake_gpu_backend(FakeGpu(bmc_limit_mw=450_000, demand_mw=650_000))
    ch = b.set_power_limit(0, 600_000)
    assert ch.took and ch.new == 600_000
    assert ch.note == "enforced limit 450000 mW is lower: a BMC or VBIOS limit binds"
    assert b.sensors(0).power_mw == 450_000


def test_restore_goes_back_to_the_first_recorded_original():
    b, nvml = fake_gpu_backend(FakeGpu(limit_mw=650_000))
    assert b.restore_power_limit(0) is None  # nothing written yet
    b.set_power_limit(0, 400_000)
    b.set_power_limit(0, 300_000)
    assert b.original_power_limits_mw == {0: 650_000}
    ch = b.restore_power_limit(0)
    assert (ch.old, ch.new) == (300_000, 650_000) and nvml.gpus[0].limit_mw == 650_000
    assert b.restore_power_limit(0) is None


def test_the_same_limit_writes_nothing():
    b, nvml = fake_gpu_backend()
    assert not b.set_power_limit(0, 700_000).written and writes(nvml) == []


def test_no_permission_makes_the_knob_absent_from_then_on():
    b, nvml = fake_gpu_backend(root=False)
    with pytest.raises(KnobUnavailable) as exc:
        b.set_power_limit(0, 300_000)
    assert str(exc.value) == ("gpu0 power_limit: NVML nvmlDeviceSetPowerManagementLimit: Insufficient Permissions "
                              "(observe only)")
    assert b.knobs(0).absent == {"power_limit": "NVML nvmlDeviceSetPowerManagementLimit: Insufficient Permissions"}
    n = len(nvml.calls)
    with pytest.raises(KnobUnavailable):
        b.set_power_limit(0, 300_000)
    assert "nvmlDeviceSetPowerManagementLimit" not in nvml.calls[n:]  # not asked again
    assert b.sensors(0).power_mw == 450_000  # sensors still work: observe only


def test_no_power_management_is_absent_in_knobs():
    b, _ = fake_gpu_backend(unsupported={"nvmlDeviceGetPowerManagementLimitConstraints"})
    k = b.knobs(0)
    assert k.power is None and "Not Supported" in k.absent["power_limit"]
    with pytest.raises(KnobUnavailable):
        b.set_power_limit(0, 300_000)


# -- locked clocks -------------------------------------------------------------------------------


def test_lock_and_reset_sm_clocks():
    b, nvml = fake_gpu_backend()
    ch = b.lock_sm_clocks(0, 210, 1410)
    assert (ch.old, ch.new) == (None, (210, 1410)) and nvml.gpus[0].locked_mhz == (210, 1410)
    assert b.sensors(0).sm_clock_mhz == 1410
    assert b.knobs(0).locked_sm_clocks_mhz == (210, 1410)
    ch2 = b.lock_sm_clocks(0, 1200, 1200)
    assert ch2.old == (210, 1410)
    r = b.reset_sm_clocks(0)
    assert (r.old, r.new) == ((1200, 1200), None) and nvml.gpus[0].locked_mhz is None


def test_an_unsupported_clock_is_refused_with_the_nearest():
    b, nvml = fake_gpu_backend()
    with pytest.raises(KnobRefused) as exc:
        b.lock_sm_clocks(0, 210, 1400)
    assert str(exc.value) == ("gpu0 locked_sm_clocks_mhz: 1400 MHz is not a supported SM clock "
                              f"(210..1980 MHz, {len(H100_CLOCKS_MHZ)} steps; nearest below: 1395)")
    assert writes(nvml) == []


def test_supported_clocks_come_from_the_highest_memory_clock():
    b, _ = fake_gpu_backend()
    assert b.supported_sm_clocks_mhz(0)[0] == 1980  # at 2619 MHz; at 1593 MHz the fake lists only <= 1410


def test_under_mig_only_device_level_knobs():
    b, nvml = fake_gpu_backend(FakeGpu(mig=True))
    with pytest.raises(KnobUnavailable, match="MIG mode is on"):
        b.lock_sm_clocks(0, 210, 1410)
    k = b.knobs(0)
    assert k.supported_sm_clocks_mhz == () and "MIG" in k.absent["locked_sm_clocks"]
    assert b.set_power_limit(0, 400_000).took and b.set_persistence_mode(0, True).took
    assert "nvmlDeviceSetGpuLockedClocks" not in nvml.calls


# -- persistence ---------------------------------------------------------------------------------


def test_persistence_mode_reads_back():
    b, nvml = fake_gpu_backend()
    ch = b.set_persistence_mode(0, True)
    assert (ch.old, ch.new) == (False, True) and nvml.gpus[0].persistence
    assert not b.set_persistence_mode(0, True).written


def test_the_fake_has_pynvmls_names_and_arities():
    """The fake is only worth what its likeness is: every function it offers exists in pynvml and
    takes the same positional arguments, and every name the backend looks up exists in both."""
    import inspect
    import re
    from pathlib import Path

    for name, fn in vars(FakeNvml).items():
        if not name.startswith("nvml"):
            continue
        real = getattr(pynvml, name)
        required = [p for p in inspect.signature(real).parameters.values() if p.default is inspect.Parameter.empty]
        assert len(inspect.signature(fn).parameters) - 1 == len(required), name
    used = set(re.findall(r'"(nvml\w+)"', Path(gpu.__file__).read_text()))
    used |= set(re.findall(r"(?:\bn|nvml)\.(NVML_\w+)", Path(gpu.__file__).read_text()))
    assert used and all(hasattr(pynvml, u) for u in used), sorted(u for u in used if not hasattr(pynvml, u))
    assert {u for u in used if u.startswith("nvml")} <= set(vars(FakeNvml))
