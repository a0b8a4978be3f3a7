"""The daemon's energy sampler on fake kernel roots and the fake NVML: what each part reads, the
counters since the sampler opened (RAPL wraps, an NVML counter that restarts), and a host with
none of it: reasons, no errors."""

from __future__ import annotations

import pytest

from aios_host.energy.telemetry import EnergySampler
from aios_host.kernel.gpu import GpuUnavailable
from aios_host.kernel.root import SysRoot
from tests.unit.energy.fake_cpufreq import FakeCpufreqKernel, FakePolicy
from tests.unit.energy.fake_nvml import FakeGpu, fake_gpu_backend
from tests.unit.energy.sim_job import Clock
from tests.unit.energy.test_rapl import RANGE_UJ, fake_rapl


def no_gpu():
    raise GpuUnavailable("NVML: NVML Shared Library Not Found (libnvidia-ml.so.1 not found: no NVIDIA driver "
                         "installed)")


def test_a_host_without_gpu_rapl_or_cpufreq_samples_nothing_and_says_why(tmp_path):
    sampler = EnergySampler(SysRoot(tmp_path), no_gpu, clock=Clock())
    sampler.open()
    s = sampler.sample()
    assert (s.gpus, s.zones, s.policies) == ((), (), ())
    assert s.gpu_reason.startswith("NVML: NVML Shared Library Not Found")
    assert s.rapl_reason.startswith("/sys/class/powercap absent")
    assert s.cpufreq_reason.startswith("/sys/devices/system/cpu/cpufreq absent")
    d = s.to_dict()
    assert [d[k]["available"] for k in ("gpus", "rapl", "cpufreq")] == [False, False, False]
    assert d["host"] == {"parts": [], "power_watts": None, "energy_joules": None}
    assert s.cpu_energy_joules is None


def test_nvml_is_opened_in_open_not_before(tmp_path):
    opened = []
    sampler = EnergySampler(SysRoot(tmp_path), lambda: opened.append(1) or no_gpu())
    assert opened == []  # constructing it (on the loop's thread) touches no NVML
    sampler.open()
    assert opened == [1]


@pytest.mark.parametrize("exc", [RuntimeError("ctypes: undefined symbol nvmlInit_v2\nmore"), OSError(5, "EIO")])
def test_any_failure_of_the_nvml_library_is_a_reason_not_a_dead_source(tmp_path, exc):
    def broken():
        raise exc

    sampler = EnergySampler(SysRoot(tmp_path), broken)
    sampler.open()
    s = sampler.sample()
    assert s.gpus == () and s.gpu_reason.startswith("NVML: ") and "\n" not in s.gpu_reason


def test_gpu_sensors_limits_and_energy_since_open(tmp_path):
    clock = Clock()
    backend, nvml = fake_gpu_backend(FakeGpu(uuid="GPU-a", limit_mw=600_000, demand_mw=450_000),
                                     FakeGpu(uuid="GPU-b", bmc_limit_mw=400_000, demand_mw=500_000), clock=clock)
    sampler = EnergySampler(SysRoot(tmp_path), lambda: backend, clock=clock)
    sampler.open()
    first = sampler.sample()
    assert [g.energy_joules for g in first.gpus] == [0.0, 0.0]
    clock.t += 10.0
    s = sampler.sample()
    a, b = s.gpus
    assert (a.index, a.uuid, a.name) == (0, "GPU-a", "NVIDIA H100 80GB HBM3")
    assert a.power_watts == 450.0 and a.energy_joules == pytest.approx(4500.0)
    assert a.energy_counter_joules == pytest.approx(123_456.789 + 4500.0)
    assert a.sm_clock_hertz == 1980e6 and a.utilization_ratio == 0.97
    assert (a.power_limit_watts, a.enforced_power_limit_watts) == (600.0, 600.0)
    assert (a.power_limit_min_watts, a.power_limit_max_watts) == (200.0, 700.0)
    # the BMC's 400 W binds below the 700 W set: the board draws 400 W of its 500 W demand
    assert (b.power_limit_watts, b.enforced_power_limit_watts, b.power_watts) == (700.0, 400.0, 400.0)
    assert "SwPowerCap" in b.clock_event_reasons and not b.external_slowdown
    assert s.host() == {"parts": ["gpu"], "power_watts": 850.0, "energy_joules": pytest.approx(8500.0)}
    assert s.gpu(1) is b and s.gpu(5) is None


def test_an_nvml_counter_that_starts_again_counts_on(tmp_path):
    clock = Clock()
    gpu = FakeGpu(demand_mw=100_000)
    backend, _ = fake_gpu_backend(gpu, clock=clock)
    sampler = EnergySampler(SysRoot(tmp_path), lambda: backend, clock=clock)
    sampler.open()
    sampler.sample()
    clock.t += 1.0
    assert sampler.sample().gpus[0].energy_joules == pytest.approx(100.0)
    gpu.energy_mj = 0  # the driver reloaded
    clock.t += 1.0
    assert sampler.sample().gpus[0].energy_joules == pytest.approx(200.0)


def test_a_lost_gpu_is_an_error_on_that_device_only(tmp_path):
    backend, nvml = fake_gpu_backend(FakeGpu(uuid="GPU-a"))
    sampler = EnergySampler(SysRoot(tmp_path), lambda: backend, clock=Clock())
    sampler.open()
    nvml.lost = True
    (g,) = sampler.sample().gpus
    assert g.uuid == "GPU-a" and g.power_watts is None and "GPU is lost" in g.error
    nvml.lost = False
    assert sampler.sample().gpus[0].error is None


def test_observe_only_limits_and_pre_volta_counters_are_absent_not_errors(tmp_path):
    backend, _ = fake_gpu_backend(FakeGpu(), unsupported={"nvmlDeviceGetPowerManagementLimitConstraints",
                                                          "nvmlDeviceGetTotalEnergyConsumption"})
    sampler = EnergySampler(SysRoot(tmp_path), lambda: backend, clock=Clock())
    sampler.open()
    (g,) = sampler.sample().gpus
    assert g.error is None and g.power_limit_watts is None and g.energy_joules is None
    assert g.power_watts == 450.0


def test_rapl_energy_since_open_across_a_wrap_and_what_counts_for_the_host(tmp_path):
    clock = Clock()
    root = fake_rapl(tmp_path, {"intel-rapl:0": ("package-0", RANGE_UJ - 1_000_000), "intel-rapl:0:0": ("core", 0),
                                "intel-rapl:0:1": ("dram", 100), "intel-rapl:1": ("psys", 0)})
    sampler = EnergySampler(root, no_gpu, clock=clock)
    sampler.open()
    first = sampler.sample()
    assert [z.power_watts for z in first.zones] == [None] * 4
    dev = tmp_path / "sys/devices/virtual/powercap/intel-rapl"
    (dev / "intel-rapl:0/energy_uj").write_text("2000000\n")  # wrapped: 1 J before the wrap, 2 J after
    (dev / "intel-rapl:0/intel-rapl:0:0/energy_uj").write_text("2500000\n")
    (dev / "intel-rapl:0/intel-rapl:0:1/energy_uj").write_text("500100\n")
    (dev / "intel-rapl:1/energy_uj").write_text("9000000\n")
    clock.t += 2.0
    s = sampler.sample()
    by_name = {z.name: z for z in s.zones}
    assert by_name["package-0"].energy_joules == pytest.approx(3.0)
    assert by_name["package-0"].power_watts == pytest.approx(1.5)
    assert [n for n, z in by_name.items() if z.host_part] == ["package-0", "dram"]  # core: part of the package
    assert s.cpu_energy_joules == pytest.approx(3.5)
    assert s.host()["parts"] == ["rapl"] and s.host()["energy_joules"] == pytest.approx(3.5)


def test_rapl_readable_by_root_only_is_a_reason(tmp_path):
    from tests.unit.energy.test_rapl import UnreadableEnergy

    fake_rapl(tmp_path, {"intel-rapl:0": ("package-0", 1)})
    sampler = EnergySampler(UnreadableEnergy(tmp_path), no_gpu, clock=Clock())
    sampler.open()
    s = sampler.sample()
    assert s.zones == () and "readable by root only" in s.rapl_reason


def test_cpufreq_current_frequency_per_policy(tmp_path):
    root = FakeCpufreqKernel(tmp_path, "intel_pstate", [FakePolicy((0, 1)), FakePolicy((2, 3))])
    (tmp_path / "sys/devices/system/cpu/cpufreq/policy2/scaling_cur_freq").write_text("2400000\n")
    sampler = EnergySampler(root, no_gpu, clock=Clock())
    sampler.open()
    s = sampler.sample()
    assert s.cpufreq_reason is None
    assert [(p.policy, p.frequency_hertz) for p in s.policies][1] == ("policy2", 2.4e9)


def test_a_zone_that_vanishes_is_a_reason_for_that_sample(tmp_path):
    root = fake_rapl(tmp_path, {"intel-rapl:0": ("package-0", 1)})
    sampler = EnergySampler(root, no_gpu, clock=Clock())
    sampler.open()
    (tmp_path / "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj").unlink()
    s = sampler.sample()
    assert s.zones == () and s.rapl_reason.startswith("unreadable: ") and "energy_uj" in s.rapl_reason
