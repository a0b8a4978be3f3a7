"""The energy metrics: a hand-built view with GPUs, RAPL zones, cpufreq policies and an auto search,
scraped over HTTP, checked by value and by promtool; none of them for a host without those parts
or while the energy sample is stale."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest

from aios_host import metrics
from aios_host.daemon.view import DaemonView, SourceHealth
from aios_host.energy.telemetry import CpufreqSample, EnergySample, GpuSample, ZoneSample
from tests.unit.test_metrics import PROMTOOL, _Latest, _samples, _scrape, _value

GPU0 = GpuSample(0, "GPU-8c2a41b5", "NVIDIA H100 80GB HBM3", power_watts=412.5, energy_joules=12345.5,
                 energy_counter_joules=9.9e6, sm_clock_hertz=1.755e9, utilization_ratio=0.97, power_limit_watts=450.0,
                 enforced_power_limit_watts=450.0, power_limit_min_watts=200.0, power_limit_max_watts=700.0)
GPU1 = GpuSample(1, "GPU-1f00aa00", "NVIDIA H100 80GB HBM3", error="GPU is lost")  # nothing to export but its info
SAMPLE = EnergySample(
    t=1000.0, gpus=(GPU0, GPU1),
    zones=(ZoneSample("intel-rapl:0", "package-0", 5000.0, 180.0, True),
           ZoneSample("intel-rapl:0:0", "core", 3000.0, None, False)),
    policies=(CpufreqSample("policy0", 2.4e9), CpufreqSample("policy1", None)))
AUTO = ({"job": "train1", "class": "train", "gpus": [0], "state": "hold", "setting_watts": 450.0},
        {"job": "train2", "class": "train", "gpus": [1], "state": "waiting", "reason": "gpu1: GPU is lost"})


def _v(s: dict, metric: str, **labels: str) -> float:
    return s[(metric, frozenset(labels.items()))]  # labels named "name" too


def _view(sample: EnergySample | None = SAMPLE, ok: bool = True, auto: tuple = AUTO) -> DaemonView:
    return DaemonView(version="0.1.0", pid=424242, started_unix=1.7e9, policy_path="/etc/aios-host/policy.toml",
                      policy_description="", mode="active", mode_reason="", interval_seconds=1.0,
                      sources=(SourceHealth("energy", ok=ok, age_seconds=0.4),), energy=sample, energy_auto=auto)


@pytest.fixture
def latest() -> _Latest:
    return _Latest(_view())


@pytest.fixture
def url(latest: _Latest):
    server, thread = metrics.serve(metrics.make_registry(latest), host="127.0.0.1", port=0)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        metrics.stop(server, thread)


def test_energy_values(url: str) -> None:
    s = _samples(_scrape(url))
    g0 = {"gpu": "0", "uuid": "GPU-8c2a41b5"}
    assert _v(s, "aios_gpu_info", **g0, name="NVIDIA H100 80GB HBM3") == 1
    assert _value(s, "aios_gpu_power_watts", **g0) == 412.5
    assert _value(s, "aios_gpu_energy_joules_total", **g0) == 12345.5
    assert _value(s, "aios_gpu_sm_clock_hertz", **g0) == 1.755e9
    assert _value(s, "aios_gpu_utilization_ratio", **g0) == 0.97
    assert _value(s, "aios_gpu_power_limit_watts", **g0) == 450.0
    assert _value(s, "aios_gpu_enforced_power_limit_watts", **g0) == 450.0
    # the lost GPU: known, but none of its readings (absent, not 0)
    assert _v(s, "aios_gpu_info", gpu="1", uuid="GPU-1f00aa00", name="NVIDIA H100 80GB HBM3") == 1
    assert not any(name != "aios_gpu_info" and dict(labels).get("gpu") == "1" and name.startswith("aios_gpu_")
                   for name, labels in s)
    assert _v(s, "aios_rapl_energy_joules_total", zone="intel-rapl:0", name="package-0") == 5000.0
    assert _v(s, "aios_rapl_energy_joules_total", zone="intel-rapl:0:0", name="core") == 3000.0
    assert _v(s, "aios_rapl_power_watts", zone="intel-rapl:0", name="package-0") == 180.0
    assert ("aios_rapl_power_watts", frozenset({"zone": "intel-rapl:0:0", "name": "core"}.items())) not in s
    assert _value(s, "aios_cpufreq_frequency_hertz", policy="policy0") == 2.4e9
    assert ("aios_cpufreq_frequency_hertz", frozenset({"policy": "policy1"}.items())) not in s
    assert _value(s, "aios_energy_auto_power_limit_watts", **{"class": "train", "gpu": "0"}) == 450.0
    assert sum(1 for name, _ in s if name == "aios_energy_auto_power_limit_watts") == 1  # not the waiting one
    for name, labels in s:
        assert not {"job", "instance"} & {k for k, _ in labels}, name
        assert "424242" not in {v for _, v in labels}


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason=f"{PROMTOOL} missing (apt-get install prometheus)")
def test_promtool_check_energy_metrics(url: str) -> None:
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=_scrape(url), capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout + res.stderr == ""


@pytest.mark.parametrize("view", [
    _view(EnergySample(t=1.0, gpu_reason="NVML: no devices", rapl_reason="/sys/class/powercap absent",
                       cpufreq_reason="/sys/devices/system/cpu/cpufreq absent"), auto=()),  # this host, the VM
    _view(ok=False),  # stale: a GPU that stopped answering has no power reading today
    _view(None),  # no sample yet
], ids=["no-parts", "stale", "none-yet"])
def test_no_energy_metrics_without_a_fresh_sample_of_something(latest: _Latest, url: str, view: DaemonView) -> None:
    latest.view = view
    names = {name for name, _ in _samples(_scrape(url))}
    assert not any(n.startswith(("aios_gpu_", "aios_rapl_", "aios_cpufreq_", "aios_energy_")) for n in names)
    assert "aios_source_up" in names and "aios_daemon_ticks_total" in names


def test_energy_metrics_with_the_rest(latest: _Latest, url: str) -> None:
    from tests.unit.test_metrics import _view as full_view

    latest.view = replace(full_view(), sources=(*full_view().sources, SourceHealth("energy", True, 0.1)),
                          energy=SAMPLE)
    s = _samples(_scrape(url))
    assert _value(s, "aios_daemon_ticks_total") == 10
    assert _value(s, "aios_gpu_power_watts", gpu="0", uuid="GPU-8c2a41b5") == 412.5
