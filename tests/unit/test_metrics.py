"""aios_host.metrics: a hand-built DaemonView scraped over real HTTP, checked by value and by promtool."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from aios_host import metrics
from aios_host.daemon.view import TICK_BUCKETS_S, ClassView, DaemonView, SourceHealth
from aios_host.policy.problem import RESOURCES, UNITS

PROMTOOL = "/usr/bin/promtool"
PID = 424242  # distinctive, so a pid leaking into a label value is recognisable

# One tick count per bucket (+Inf last), 10 ticks: 3 within 2.5 ms, 5 more within 5 ms, 2 slower than 5 s.
PER_BUCKET = (0, 3, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2)


def _view() -> DaemonView:
    train = ClassView(
        name="train", tier=2, weight=4.0, cgroups=("/aios.slice/aios-host.service/train",), owned=True,
        populated=True, cpu_usage_seconds_total=1234.5, cpu_usage_cores=7.5, memory_current_bytes=8 << 30,
        cpu_some_avg10=12.5, memory_some_avg10=0.0, io_some_avg10=3.0, runq_p99_seconds=0.004,
        faults_total=1000, reclaim_seconds_total=0.25, oom_kills_total=1,
        memory_events_high_total=40, memory_events_max_total=6, memory_events_oom_total=2,
        memory_events_oom_kill_total=None,  # a key this kernel's memory.events lacks
        demand={"cpu": 8.0, "memory": float(10 << 30), "io": 0.5},
        allocation={"cpu": 6.0, "memory": float(9 << 30), "io": 0.4},
    )
    # Two matched cgroups, no probe figures: its probe metrics must be absent, not 0.
    batch = ClassView(
        name="batch", tier=0, weight=1.0, cgroups=("/system.slice/b.service", "/system.slice/a.service"),
        owned=False, populated=True, cpu_usage_seconds_total=50.0, memory_current_bytes=1 << 20,
        cpu_some_avg10=40.0, demand={"cpu": 2.0, "memory": float(1 << 30)}, allocation={"cpu": 1.0},
    )
    return DaemonView(
        version="0.1.0", pid=PID, started_unix=1.7e9, policy_path="/etc/aios-host/policy.toml",
        policy_description="test", mode="active", mode_reason="", interval_seconds=1.0,
        ticks_total=10, tick_bucket_counts=PER_BUCKET, tick_seconds_sum=10.04,
        writes_total=17, writes_failed_total=2, writes_pending=1, writes_unavailable=0,
        drift=({"path": "/sys/fs/cgroup/x/cpu.weight", "applied": "100", "now": "50"},),
        classes=(train, batch),
        sources=(SourceHealth("probes", ok=True, age_seconds=0.5, skips_total=3),
                 SourceHealth("nvml", ok=False, age_seconds=None, skips_total=7, last_error="no GPU")),
        probes_attached=("sched",), probe_cpu_seconds_total=0.75,
        host_cpu_some_avg10=20.0, host_memory_some_avg10=1.5, host_io_some_avg10=None,
        host_cpus=16, host_memory_bytes=64 << 30, capacity_cpu_cores=15.0, capacity_memory_bytes=float(60 << 30),
    )


class _Latest:
    """Stands in for the daemon's one-assignment swap of its latest view."""

    def __init__(self, view: DaemonView | None) -> None:
        self.view = view

    def __call__(self) -> DaemonView | None:
        return self.view


@pytest.fixture
def latest() -> _Latest:
    return _Latest(_view())


@pytest.fixture
def url(latest: _Latest) -> Iterator[str]:
    server, thread = metrics.serve(metrics.make_registry(latest), host="127.0.0.1", port=0)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        metrics.stop(server, thread)


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _all_samples(text: str) -> list[Sample]:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def test_scrape_values(url: str) -> None:
    s = _samples(_scrape(url))
    train = {"class": "train", "cgroup": "/aios.slice/aios-host.service/train"}
    batch = {"class": "batch", "cgroup": "/system.slice/a.service,/system.slice/b.service"}

    assert _value(s, "aios_daemon_info", version="0.1.0", policy="/etc/aios-host/policy.toml", mode="active") == 1
    assert _value(s, "aios_daemon_ticks_total") == 10
    assert _value(s, "aios_daemon_writes_total") == 17
    assert _value(s, "aios_daemon_writes_failed_total") == 2
    assert _value(s, "aios_daemon_writes_pending") == 1
    assert _value(s, "aios_daemon_drift_files") == 1
    assert _value(s, "aios_probe_cpu_seconds_total") == 0.75

    # Histogram: cumulative buckets from the view's per-bucket counts; _count is the +Inf bucket.
    h = "aios_daemon_tick_duration_seconds"
    assert _value(s, h + "_bucket", le="0.001") == 0
    assert _value(s, h + "_bucket", le="0.0025") == 3
    assert _value(s, h + "_bucket", le="0.005") == 8
    assert _value(s, h + "_bucket", le="5.0") == 8
    assert _value(s, h + "_bucket", le="+Inf") == 10
    assert _value(s, h + "_count") == 10
    assert _value(s, h + "_sum") == pytest.approx(10.04)
    assert sum(1 for name, _ in s if name == h + "_bucket") == len(TICK_BUCKETS_S) + 1

    assert _value(s, "aios_cgroup_cpu_usage_seconds_total", **train) == 1234.5
    assert _value(s, "aios_cgroup_cpu_usage_seconds_total", **batch) == 50.0
    assert _value(s, "aios_cgroup_memory_usage_bytes", **train) == 8 << 30
    assert _value(s, "aios_cgroup_populated", **batch) == 1
    assert _value(s, "aios_cgroup_pressure_some_ratio", **train, resource="cpu") == pytest.approx(0.125)
    assert _value(s, "aios_cgroup_pressure_some_ratio", **train, resource="memory") == 0.0
    assert _value(s, "aios_cgroup_pressure_some_ratio", **batch, resource="cpu") == pytest.approx(0.4)
    assert ("aios_cgroup_pressure_some_ratio", frozenset({**batch, "resource": "io"}.items())) not in s

    assert _value(s, "aios_class_runqueue_latency_p99_seconds", **{"class": "train"}) == 0.004
    assert _value(s, "aios_class_page_faults_total", **{"class": "train"}) == 1000
    assert _value(s, "aios_class_reclaim_stall_seconds_total", **{"class": "train"}) == 0.25
    assert _value(s, "aios_class_oom_kills_total", **{"class": "train"}) == 1
    for event, n in (("high", 40), ("max", 6), ("oom", 2)):
        assert _value(s, "aios_cgroup_memory_events_total", **train, event=event) == n
    assert ("aios_cgroup_memory_events_total", frozenset({**train, "event": "oom_kill"}.items())) not in s
    assert not any(name == "aios_cgroup_memory_events_total" and ("class", "batch") in labels for name, labels in s)
    for probe_metric in ("aios_class_runqueue_latency_p99_seconds", "aios_class_page_faults_total",
                         "aios_class_reclaim_stall_seconds_total", "aios_class_oom_kills_total"):
        assert (probe_metric, frozenset({"class": "batch"}.items())) not in s, probe_metric

    assert _value(s, "aios_class_demand_cpu_cores", **{"class": "train"}) == 8.0
    assert _value(s, "aios_class_demand_memory_bytes", **{"class": "train"}) == 10 << 30
    # "io" has no unit in metrics.RESOURCE_UNITS: left out, not exported under a guessed unit.
    assert not any(name.startswith(("aios_class_demand_io", "aios_class_allocation_io")) for name, _ in s)
    assert _value(s, "aios_class_allocation_cpu_cores", **{"class": "batch"}) == 1.0
    assert _value(s, "aios_class_allocation_memory_bytes", **{"class": "train"}) == 9 << 30
    assert ("aios_class_allocation_memory_bytes", frozenset({"class": "batch"}.items())) not in s

    assert _value(s, "aios_source_up", source="probes") == 1
    assert _value(s, "aios_source_up", source="nvml") == 0
    assert _value(s, "aios_source_age_seconds", source="probes") == 0.5
    assert ("aios_source_age_seconds", frozenset({"source": "nvml"}.items())) not in s
    assert _value(s, "aios_source_skips_total", source="nvml") == 7

    assert _value(s, "aios_host_pressure_some_ratio", resource="cpu") == pytest.approx(0.2)
    assert ("aios_host_pressure_some_ratio", frozenset({"resource": "io"}.items())) not in s
    assert _value(s, "aios_host_capacity_cpu_cores") == 15.0
    assert _value(s, "aios_host_capacity_memory_bytes") == 60 << 30

    # The daemon's own cost, from ProcessCollector (reads /proc/self).
    assert _value(s, "process_cpu_seconds_total") >= 0
    assert _value(s, "process_resident_memory_bytes") > 0


def test_names_labels_and_help(url: str) -> None:
    text = _scrape(url)
    for sample in _all_samples(text):
        assert sample.name.startswith(("aios_", "process_")), sample.name
        assert not {"job", "instance"} & set(sample.labels), sample
        assert not any("pid" in k for k in sample.labels), sample
        assert str(PID) not in sample.labels.values(), sample
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    assert typed and typed == helped


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason=f"{PROMTOOL} missing (apt-get install prometheus)")
def test_promtool_check_metrics(url: str) -> None:
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=_scrape(url), capture_output=True, text=True,
                         timeout=30, check=False)
    # promtool exits 0 on lint problems too (only parse errors fail), so its output must be empty as well.
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout + res.stderr == ""


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason=f"{PROMTOOL} missing (apt-get install prometheus)")
def test_memory_events_family_passes_promtool(url: str) -> None:
    text = _scrape(url)
    family = [ln for ln in text.splitlines() if ln.startswith(("aios_cgroup_memory_events",
                                                                "# HELP aios_cgroup_memory_events",
                                                                "# TYPE aios_cgroup_memory_events"))]
    assert "# TYPE aios_cgroup_memory_events_total counter" in family
    assert sum(1 for ln in family if not ln.startswith("#")) == 3  # train's high, max, oom
    res = subprocess.run([PROMTOOL, "check", "metrics"], input="\n".join(family) + "\n", capture_output=True,
                         text=True, timeout=30, check=False)
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


def test_promtool_flags_a_bad_name() -> None:
    # Guards the test above: this promtool does print lint problems for a counter without _total.
    if not shutil.which(PROMTOOL):
        pytest.skip(f"{PROMTOOL} missing (apt-get install prometheus)")
    res = subprocess.run([PROMTOOL, "check", "metrics"], input="# HELP x_ticks n\n# TYPE x_ticks counter\nx_ticks 1\n",
                         capture_output=True, text=True, timeout=30, check=False)
    assert "_total" in res.stdout + res.stderr


def test_scrape_reads_the_latest_view(latest: _Latest, url: str) -> None:
    assert _value(_samples(_scrape(url)), "aios_daemon_ticks_total") == 10
    latest.view = replace(latest.view, ticks_total=11, mode="observe-only")
    s = _samples(_scrape(url))
    assert _value(s, "aios_daemon_ticks_total") == 11
    assert _value(s, "aios_daemon_info", version="0.1.0", policy="/etc/aios-host/policy.toml",
                  mode="observe-only") == 1


def test_no_view_yields_only_process_metrics() -> None:
    assert list(metrics.ViewCollector(lambda: None).collect()) == []
    names = {fam.name for fam in metrics.make_registry(lambda: None).collect()}
    assert "process_cpu_seconds" in names  # prometheus_client names counter families without _total
    assert all(n.startswith("process_") for n in names), names


def test_every_engine_resource_has_a_metric_unit() -> None:
    # A resource the engine starts allocating would otherwise be silently missing from the metrics.
    assert set(RESOURCES) <= set(metrics.RESOURCE_UNITS)
    for resource, suffix in metrics.RESOURCE_UNITS.items():
        assert suffix == f"{resource}_{UNITS[resource]}"  # same unit as the engine's messages


def test_stop_closes_the_port(latest: _Latest) -> None:
    server, thread = metrics.serve(metrics.make_registry(latest), port=0)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    assert "aios_daemon_ticks_total" in _scrape(url)
    metrics.stop(server, thread)
    assert not thread.is_alive()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_wrong_bucket_count_is_an_error() -> None:
    bad = replace(_view(), tick_bucket_counts=(1, 2))
    with pytest.raises(ValueError, match="tick_bucket_counts"):
        list(metrics.ViewCollector(lambda: bad).collect())
