"""`aios-host energy status`, doctor's energy section, and the status they print."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aios_host.cli import main
from aios_host.energy import status as energy_status
from aios_host.energy.status import gather_energy_status
from aios_host.kernel.gpu import GpuUnavailable
from aios_host.kernel.knob import KnobUnavailable
from aios_host.kernel.power_owners import OwnerChecks
from tests.unit.energy.fake_cpufreq import FakeCpufreqKernel
from tests.unit.energy.fake_nvml import FakeGpu, FakeNvml, fake_gpu_backend
from tests.unit.energy.test_rapl import fake_rapl
from tests.unit.fixtures import HYBRID, fake_cgroup, fake_host, put

REPO = Path(__file__).resolve().parents[3]
NO_OWNERS = OwnerChecks(sd_booted=lambda: True, units_active=lambda units: set(), bus_names_with_owner=lambda n: set())


def no_gpu():
    raise GpuUnavailable("NVML: NVML Shared Library Not Found")


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


class CountingRapl:
    """energy_uj that advances by `step_uj` on every read, past the wrap."""

    def __init__(self, root, step_uj):
        self.root, self.step_uj = root, step_uj

    def __call__(self, kernel_path):
        text = type(self.root).read_text(self.root, kernel_path)
        if str(kernel_path).endswith("energy_uj"):
            p = self.root.path(kernel_path)
            p.write_text(f"{(int(text) + self.step_uj) % 262_143_328_850}\n")
        return text


def full_host(tmp_path):
    """cpufreq (intel_pstate, 2 policies) and one RAPL package, on one fake root."""
    root = FakeCpufreqKernel(tmp_path)
    # 200 J below the wrap: with 150 J per read, the interval's two reads straddle it
    fake_rapl(tmp_path, {"intel-rapl:0": ("package-0", 262_143_328_850 - 200_000_000)})
    return root


def test_gather_measures_rapl_and_gpu_energy_over_one_interval(tmp_path):
    root = full_host(tmp_path)
    root.read_text = CountingRapl(root, 150_000_000)  # 150 J per read, wrapping on the second
    clock = Clock()
    nvml = FakeNvml([FakeGpu(demand_mw=400_000)], clock=clock)
    from aios_host.kernel.gpu import NvmlBackend

    st = gather_energy_status(root, interval_s=2.0, gpu_backend=lambda: NvmlBackend(nvml), owner_checks=NO_OWNERS,
                              sleep=clock.sleep, clock=clock)
    assert st.cpufreq_reason is None and [p.name for p in st.policies] == ["policy0", "policy2"]
    (zone,) = st.zones
    assert zone.energy_uj == 150_000_000 and zone.power_w == 75.0  # 150 J over 2 s, across the wrap
    (g,) = st.gpus
    assert g.energy_mj == 800_000 and g.sensors.power_mw == 400_000  # 400 W for 2 s
    assert nvml.initialised == 0  # closed
    d = st.to_dict()
    assert d["rapl"]["zones"][0]["power_watts"] == 75.0 and d["gpus"]["devices"][0]["energy_joules"] == 800.0
    assert d["gpus"]["devices"][0]["average_power_watts"] == 400.0


def test_a_part_that_fails_half_way_says_so_and_the_rest_is_read(tmp_path):
    root = full_host(tmp_path)
    b, nvml = fake_gpu_backend()
    real_sensors = b.sensors

    def lost_on_second_read(i, calls=[]):  # noqa: B006 - counts calls
        calls.append(i)
        if len(calls) > 1:
            nvml.lost = True
        return real_sensors(i)

    b.sensors = lost_on_second_read
    st = gather_energy_status(root, interval_s=0.01, gpu_backend=lambda: b, owner_checks=NO_OWNERS)
    assert st.gpus == [] and st.gpu_reason == "NVML: gpu0: nvmlDeviceGetUtilizationRates: GPU is lost"
    assert len(st.policies) == 2 and len(st.zones) == 1


def test_status_json_shape(tmp_path, monkeypatch, capsys):
    full_host(tmp_path)
    b, _ = fake_gpu_backend(FakeGpu(bmc_limit_mw=450_000))
    monkeypatch.setattr(energy_status, "open_gpu_backend", lambda: b)
    monkeypatch.setattr(energy_status, "detect_knob_owners", lambda checks: _owners())
    assert main(["energy", "status", "--json", "--interval", "0.01", "--root", str(tmp_path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"interval_seconds", "cpufreq", "rapl", "gpus", "owners"}
    p0 = d["cpufreq"]["policies"][0]
    assert {k for k in p0 if k.endswith("_khz")} == {"min_freq_khz", "max_freq_khz", "cpuinfo_min_freq_khz",
                                                     "cpuinfo_max_freq_khz", "cur_freq_khz"}
    assert p0["policy"] == "policy0" and p0["cpus"] == [0, 1] and p0["boost"]["enabled"] is True
    z = d["rapl"]["zones"][0]
    assert z["zone"] == "intel-rapl:0" and z["energy_joules"] == 0.0 and z["power_watts"] == 0.0
    g = d["gpus"]["devices"][0]
    assert g["power_limit_watts"] == 700.0 and g["enforced_power_limit_watts"] == 450.0
    assert (g["power_limit_min_watts"], g["power_limit_max_watts"]) == (200.0, 700.0)
    assert g["power_watts"] == 450.0 and g["clock_event_reasons"] == [] and g["temperature_celsius"] == 41
    assert g["supported_sm_clocks_mhz"][0] == 1980 and g["absent_knobs"] == {}
    numbers = [k for part in (p0, z, g) for k, v in part.items() if isinstance(v, float)]
    units = ("_khz", "_mhz", "_watts", "_joules", "_percent", "_bytes", "_celsius", "_seconds")
    assert numbers and all(k.endswith(units) for k in numbers), numbers
    assert d["owners"]["owners"] == []


def _owners():
    from aios_host.kernel.power_owners import detect_knob_owners

    return detect_knob_owners(NO_OWNERS)


def test_status_text_on_a_host_with_everything(tmp_path, monkeypatch, capsys):
    full_host(tmp_path)
    b, _ = fake_gpu_backend(root=False)
    with pytest.raises(KnobUnavailable):
        b.set_power_limit(0, 300_000)
    monkeypatch.setattr(energy_status, "open_gpu_backend", lambda: b)
    monkeypatch.setattr(energy_status, "detect_knob_owners", lambda checks: _owners())
    assert main(["energy", "status", "--interval", "0", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cpufreq: 2 policies, driver intel_pstate, governor powersave" in out
    assert "policy2  2-3   powersave  800000   3500000" in out
    assert "RAPL: 1 zone(s) (package-0)" in out and "GPU: 1 device(s) (NVIDIA H100 80GB HBM3) through NVML" in out
    assert "power_limit: NVML nvmlDeviceSetPowerManagementLimit: Insufficient Permissions" in out
    assert "other owners of the CPU knobs: none" in out


def test_status_says_none_plainly_on_an_empty_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(energy_status, "open_gpu_backend", no_gpu)
    monkeypatch.setattr(energy_status, "detect_knob_owners", lambda checks: _owners())
    assert main(["energy", "status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "cpufreq: none (/sys/devices/system/cpu/cpufreq absent: a kernel without CONFIG_CPU_FREQ)",
        "RAPL: none (/sys/class/powercap absent: no powercap driver (intel_rapl_msr) loaded, or a VM)",
        "GPU: none (NVML: NVML Shared Library Not Found)",
    ]


def test_doctor_has_an_energy_section(tmp_path, monkeypatch, capsys):
    fake_host(tmp_path, HYBRID)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/unified", HYBRID)
    put(tmp_path, "/sys/devices/system/cpu/cpufreq/.keep", "")
    monkeypatch.setattr(energy_status, "open_gpu_backend", no_gpu)
    monkeypatch.setattr(energy_status, "detect_knob_owners", lambda checks: _owners())
    main(["doctor", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert ("energy:\n  cpufreq: none (/sys/devices/system/cpu/cpufreq has no policies: a VM or a kernel without "
            "a cpufreq driver)\n  RAPL: none (") in out
    main(["doctor", "--json", "--root", str(tmp_path)])
    d = json.loads(capsys.readouterr().out)
    assert d["energy"]["gpus"] == {"available": False, "reason": "NVML: NVML Shared Library Not Found", "devices": []}


def _host_has_cpufreq() -> bool:
    d = "/sys/devices/system/cpu/cpufreq"
    return os.path.isdir(d) and any(n.startswith("policy") for n in os.listdir(d))


def _host_nvml_error() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - whatever stops NVML here
        return str(exc)
    pynvml.nvmlShutdown()
    return None


def test_energy_status_on_this_host():
    """The real host, as a user runs it: what it lacks is one plain line each, exit 0."""
    r = subprocess.run([sys.executable, "-m", "aios_host", "energy", "status", "--interval", "0.1"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stdout.splitlines()
    cpufreq_none = [ln for ln in lines if ln.startswith("cpufreq: none (")]
    assert bool(cpufreq_none) == (not _host_has_cpufreq())
    nvml_error = _host_nvml_error()
    gpu_none = [ln for ln in lines if ln.startswith("GPU: none (NVML: ")]
    assert bool(gpu_none) == (nvml_error is not None)
    if nvml_error:
        assert nvml_error in gpu_none[0]
    assert any(ln.startswith("other owners of the CPU knobs: ") for ln in lines)
    j = subprocess.run([sys.executable, "-m", "aios_host", "energy", "status", "--json", "--interval", "0"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert j.returncode == 0 and json.loads(j.stdout)["cpufreq"]["available"] == _host_has_cpufreq()


@pytest.mark.parametrize("bad", ["-1", "61", "soon"])
def test_interval_is_checked(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["energy", "status", "--interval", bad])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
