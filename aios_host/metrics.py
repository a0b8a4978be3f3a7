"""Prometheus exposition of the daemon's latest DaemonView.

One custom collector turns the view into metric families at scrape time, so a scrape costs the
loop nothing: it reads the immutable view the loop last published and never calls into it. The
registry is a dedicated one (not prometheus_client's global REGISTRY) holding that collector and
the ProcessCollector, whose process_cpu_seconds_total and process_resident_memory_bytes are the
daemon's own cost.

Naming: `aios_` prefix, base units (seconds, bytes, ratio; cores for CPU, as node_exporter and
cAdvisor count CPUs), `_total` on counters, cAdvisor-like names for per-cgroup figures. Labels
carry class, cgroup, resource and source names only: never a pid (unbounded cardinality), and
never `job` or `instance` (Prometheus sets those itself; a clash renames ours to exported_*).

Demand and allocation are one metric per resource (aios_class_demand_cpu_cores,
aios_class_demand_memory_bytes, ...), not one metric with a `resource` label: cores and bytes
summed or compared across one metric would be meaningless, and a unit in the name is what
Prometheus' naming rules and `promtool check metrics` expect.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from itertools import accumulate
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from aios_host import osthread
from aios_host.daemon.view import TICK_BUCKETS_S, ClassView, DaemonView

# 9868: unassigned in Prometheus' default-port list; not node_exporter's 9100, dcgm-exporter's 9400
# or the Pushgateway's 9091, which share GPU hosts with us.
DEFAULT_PORT = 9868

# Metric-name suffix per resource of ClassView.demand/allocation: the engine allocates cpu
# (aios_host.policy.problem.RESOURCES); memory demand is measured and checked against capacity.
RESOURCE_UNITS = {"cpu": "cpu_cores", "memory": "memory_bytes"}

_PSI = (("cpu", "cpu_some_avg10"), ("memory", "memory_some_avg10"), ("io", "io_some_avg10"))
_MEMORY_EVENTS = (("high", "memory_events_high_total"), ("max", "memory_events_max_total"),
                  ("oom", "memory_events_oom_total"), ("oom_kill", "memory_events_oom_kill_total"))
_HOST_PSI = (("cpu", "host_cpu_some_avg10"), ("memory", "host_memory_some_avg10"), ("io", "host_io_some_avg10"))


def _cgroup_label(cls: ClassView) -> str:
    # The view sums a class's figures over its cgroups; the label names all of them (sorted, comma
    # separated), so a change in the matched set starts a new series instead of faking a counter
    # reset in the old one.
    return ",".join(sorted(cls.cgroups))


class ViewCollector(Collector):
    """Metric families from the latest DaemonView; nothing before the first view exists."""

    def __init__(self, get_view: Callable[[], DaemonView | None]) -> None:
        self._get_view = get_view

    def collect(self) -> Iterator[Metric]:
        view = self._get_view()  # one read: every family of this scrape comes from the same tick
        if view is None:
            return
        for family in (*_daemon_families(view), *_class_families(view.classes), *_source_families(view),
                       *_host_families(view), *_energy_families(view)):
            # A family without samples (no probes, no sources yet) would still print HELP and TYPE.
            if family.samples:
                yield family



def _daemon_families(view: DaemonView) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "aios_daemon_info",
        "The running aios-host daemon: version, policy file and mode (active, observe-only, dry-run); always 1.",
        labels=("version", "policy", "mode"),
    )
    info.add_metric((view.version, view.policy_path, view.mode), 1.0)
    yield info

    yield CounterMetricFamily("aios_daemon_ticks_total", "Control-loop ticks completed since start.", view.ticks_total)

    # The view counts each tick once, in the first bucket whose bound holds it (+Inf last);
    # Prometheus buckets are cumulative (le = "less or equal"), so they are summed up here.
    if len(view.tick_bucket_counts) != len(TICK_BUCKETS_S) + 1:
        raise ValueError(f"tick_bucket_counts has {len(view.tick_bucket_counts)} entries, "
                         f"want {len(TICK_BUCKETS_S) + 1} (TICK_BUCKETS_S and +Inf)")
    bounds = [floatToGoString(b) for b in TICK_BUCKETS_S] + ["+Inf"]
    yield HistogramMetricFamily(
        "aios_daemon_tick_duration_seconds",
        "Wall time of one control-loop tick (measure, decide, write).",
        buckets=list(zip(bounds, accumulate(view.tick_bucket_counts), strict=True)),
        sum_value=view.tick_seconds_sum,
    )

    yield CounterMetricFamily("aios_daemon_writes_total",
                              "cgroupfs and D-Bus writes made since start.", view.writes_total)
    yield CounterMetricFamily("aios_daemon_writes_failed_total",
                              "Writes that failed since start.", view.writes_failed_total)
    yield GaugeMetricFamily("aios_daemon_writes_pending",
                            "Writes wanted but held back by hysteresis (hold ticks, cool-down).", view.writes_pending)
    yield GaugeMetricFamily("aios_daemon_writes_unavailable",
                            "Writes wanted that this host cannot take (a controller is missing).",
                            view.writes_unavailable)
    yield GaugeMetricFamily("aios_daemon_drift_files",
                            "Files whose kernel value differs from what the daemon last wrote.", len(view.drift))
    if view.probe_cpu_seconds_total is not None:
        yield CounterMetricFamily("aios_probe_cpu_seconds_total",
                                  "Kernel run time of the daemon's eBPF programs since they attached.",
                                  view.probe_cpu_seconds_total)


def _class_families(classes: tuple[ClassView, ...]) -> Iterator[Metric]:
    cg = ("class", "cgroup")
    cpu = CounterMetricFamily("aios_cgroup_cpu_usage_seconds_total",
                              "CPU time used by the class's cgroups (cpu.stat usage_usec).", labels=cg)
    mem = GaugeMetricFamily("aios_cgroup_memory_usage_bytes",
                            "Memory charged to the class's cgroups (memory.current).", labels=cg)
    procs = GaugeMetricFamily("aios_cgroup_populated",
                              "1 while a process is in the class's cgroups (cgroup.events populated), else 0.",
                              labels=cg)
    psi = GaugeMetricFamily("aios_cgroup_pressure_some_ratio",
                            "Share of the last 10 s in which some task of the class's cgroups stalled on the "
                            "resource (PSI some avg10 / 100).", labels=(*cg, "resource"))
    runq = GaugeMetricFamily("aios_class_runqueue_latency_p99_seconds",
                             "99th percentile of run-queue wait in the last tick (eBPF sched probe).",
                             labels=("class",))
    faults = CounterMetricFamily("aios_class_page_faults_total",
                                 "Page faults since the probes attached (eBPF faults probe).", labels=("class",))
    reclaim = CounterMetricFamily("aios_class_reclaim_stall_seconds_total",
                                  "Time stalled in direct and memcg reclaim since the probes attached.",
                                  labels=("class",))
    ooms = CounterMetricFamily("aios_class_oom_kills_total", "OOM kills in the class since the probes attached.",
                               labels=("class",))
    events = CounterMetricFamily("aios_cgroup_memory_events_total",
                                 "memory.events counts of the class cgroup the memory guard reads, its subtree's "
                                 "events included (high: over memory.high, max: reclaimed at memory.max, oom: reclaim "
                                 "there failed, oom_kill: processes killed).", labels=(*cg, "event"))
    tto = GaugeMetricFamily("aios_class_memory_seconds_to_oom",
                            "Time until the class's memory use reaches its limit or the host's available memory, "
                            "at its present growth; 0 in a tick after the kernel reclaimed or OOM-killed at its "
                            "own memory.max (absent when not growing).", labels=("class",))
    guard = GaugeMetricFamily("aios_class_memory_guard_step",
                              "The memory guard's last escalation step on the class: 0 none, 1 memory.high "
                              "tightened, 2 frozen, 3 killed.", labels=("class",))
    demand = {r: GaugeMetricFamily(f"aios_class_demand_{u}",
                                   f"Smoothed {r} demand of the class as the policy engine saw it.", labels=("class",))
              for r, u in RESOURCE_UNITS.items()}
    alloc = {r: GaugeMetricFamily(f"aios_class_allocation_{u}",
                                  f"Amount of {r} the policy engine allocated to the class.", labels=("class",))
             for r, u in RESOURCE_UNITS.items()}

    for c in classes:
        cl = (c.name, _cgroup_label(c))
        procs.add_metric(cl, int(c.populated))
        if c.cpu_usage_seconds_total is not None:
            cpu.add_metric(cl, c.cpu_usage_seconds_total)
        if c.memory_current_bytes is not None:
            mem.add_metric(cl, c.memory_current_bytes)
        for resource, attr in _PSI:
            avg10 = getattr(c, attr)
            if avg10 is not None:
                psi.add_metric((*cl, resource), avg10 / 100.0)
        if c.runq_p99_seconds is not None:
            runq.add_metric((c.name,), c.runq_p99_seconds)
        if c.faults_total is not None:
            faults.add_metric((c.name,), c.faults_total)
        if c.reclaim_seconds_total is not None:
            reclaim.add_metric((c.name,), c.reclaim_seconds_total)
        if c.oom_kills_total is not None:
            ooms.add_metric((c.name,), c.oom_kills_total)
        for event, attr in _MEMORY_EVENTS:
            count = getattr(c, attr)
            if count is not None:
                events.add_metric((*cl, event), count)
        if c.seconds_to_oom is not None:
            tto.add_metric((c.name,), c.seconds_to_oom)
        guard.add_metric((c.name,), _GUARD_STEP.get(c.memory_guard, 0))
        # A resource the engine does not know has no unit to name it by: left out rather than
        # exported under a guessed unit (test_metrics checks the table covers every resource).
        for r, v in c.demand.items():
            if r in demand:
                demand[r].add_metric((c.name,), v)
        for r, v in c.allocation.items():
            if r in alloc:
                alloc[r].add_metric((c.name,), v)

    yield from (cpu, mem, procs, psi, runq, faults, reclaim, ooms, events, tto, guard,
                *demand.values(), *alloc.values())


def _source_families(view: DaemonView) -> Iterator[Metric]:
    up = GaugeMetricFamily("aios_source_up",
                           "1 if the source's last sample arrived within its deadline, else 0.", labels=("source",))
    age = GaugeMetricFamily("aios_source_age_seconds",
                            "Age of the sample of the source the loop last used.", labels=("source",))
    skips = CounterMetricFamily("aios_source_skips_total",
                                "Ticks that used a stale sample of the source, or none.", labels=("source",))
    for s in view.sources:
        up.add_metric((s.name,), 1.0 if s.ok else 0.0)
        if s.age_seconds is not None:
            age.add_metric((s.name,), s.age_seconds)
        skips.add_metric((s.name,), s.skips_total)
    yield from (up, age, skips)


_GUARD_STEP = {"ok": 0, "tighten": 1, "freeze": 2, "kill": 3}


def _host_families(view: DaemonView) -> Iterator[Metric]:
    psi = GaugeMetricFamily("aios_host_pressure_some_ratio",
                            "Share of the last 10 s in which some task on the host stalled on the resource "
                            "(/proc/pressure some avg10 / 100).", labels=("resource",))
    for resource, attr in _HOST_PSI:
        avg10 = getattr(view, attr)
        if avg10 is not None:
            psi.add_metric((resource,), avg10 / 100.0)
    yield psi
    yield GaugeMetricFamily("aios_host_capacity_cpu_cores",
                            "CPU the policy engine may hand out, in cores.", view.capacity_cpu_cores)
    yield GaugeMetricFamily("aios_host_capacity_memory_bytes",
                            "Memory the policy engine may hand out.", view.capacity_memory_bytes)
    if view.host_available_bytes is not None:
        yield GaugeMetricFamily("aios_host_memory_available_bytes",
                                "MemAvailable + SwapFree, as the memory guard reads it.", view.host_available_bytes)
    if view.host_seconds_to_oom is not None:
        yield GaugeMetricFamily("aios_host_memory_seconds_to_oom",
                                "Time until the host's available memory runs out at its present growth.",
                                view.host_seconds_to_oom)


def _energy_families(view: DaemonView) -> Iterator[Metric]:
    """GPUs (NVML), RAPL zones and cpufreq policies from the energy source's latest sample. Nothing
    when the host has none of them, and nothing while the sample is stale: a power reading from a
    GPU that stopped answering is not today's (aios_source_up{source="energy"} says why)."""
    source = next((s for s in view.sources if s.name == "energy"), None)
    e = view.energy
    if e is None or source is None or not source.ok:
        return
    g_lab = ("gpu", "uuid")
    info = GaugeMetricFamily("aios_gpu_info", "A GPU NVML sees: its model; always 1.", labels=("gpu", "uuid", "name"))
    power = GaugeMetricFamily("aios_gpu_power_watts", "Board power draw (nvmlDeviceGetPowerUsage).", labels=g_lab)
    energy = CounterMetricFamily("aios_gpu_energy_joules_total",
                                 "GPU energy since the daemon started (NVML total energy counter).", labels=g_lab)
    sm = GaugeMetricFamily("aios_gpu_sm_clock_hertz", "Current SM clock.", labels=g_lab)
    util = GaugeMetricFamily("aios_gpu_utilization_ratio",
                             "Share of the last sample period in which a kernel ran on the GPU.", labels=g_lab)
    limit = GaugeMetricFamily("aios_gpu_power_limit_watts", "Power limit set (nvmlDeviceGetPowerManagementLimit).",
                              labels=g_lab)
    enforced = GaugeMetricFamily("aios_gpu_enforced_power_limit_watts",
                                 "Power limit that binds: the lowest of ours, the BMC's and the VBIOS's.", labels=g_lab)
    for g in e.gpus:
        lab = (str(g.index), g.uuid)
        info.add_metric((*lab, g.name), 1.0)
        for fam, value in ((power, g.power_watts), (energy, g.energy_joules), (sm, g.sm_clock_hertz),
                           (util, g.utilization_ratio), (limit, g.power_limit_watts),
                           (enforced, g.enforced_power_limit_watts)):
            if value is not None:
                fam.add_metric(lab, value)
    yield from (info, power, energy, sm, util, limit, enforced)

    z_lab = ("zone", "name")
    rapl_e = CounterMetricFamily("aios_rapl_energy_joules_total",
                                 "RAPL zone energy since the daemon started (powercap energy_uj, wraps counted). "
                                 "A package's core/uncore zones are parts of it; dram is not.", labels=z_lab)
    rapl_p = GaugeMetricFamily("aios_rapl_power_watts", "RAPL zone power over the last sampling interval.",
                               labels=z_lab)
    for z in e.zones:
        rapl_e.add_metric((z.zone, z.name), z.energy_joules)
        if z.power_watts is not None:
            rapl_p.add_metric((z.zone, z.name), z.power_watts)
    yield from (rapl_e, rapl_p)

    freq = GaugeMetricFamily("aios_cpufreq_frequency_hertz",
                             "Current frequency of a cpufreq policy's CPUs (scaling_cur_freq).", labels=("policy",))
    for p in e.policies:
        if p.frequency_hertz is not None:
            freq.add_metric((p.policy,), p.frequency_hertz)
    yield freq

    auto = GaugeMetricFamily("aios_energy_auto_power_limit_watts",
                             "Power limit the auto search has set on a GPU of a job of the class.",
                             labels=("class", "gpu"))
    for a in view.energy_auto:
        if a.get("state") not in ("waiting", "ended") and a.get("setting_watts") is not None:
            for gpu in a.get("gpus", ()):  # a GPU is searched for one job at a time: no duplicate series
                auto.add_metric((str(a["class"]), str(gpu)), float(a["setting_watts"]))
    yield auto


def make_registry(get_view: Callable[[], DaemonView | None]) -> CollectorRegistry:
    """A registry with the view collector and the daemon's own process metrics."""
    # auto_describe stays off: registering must not collect, as there may be no view yet.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewCollector(get_view))
    ProcessCollector(registry=registry)
    return registry


def serve(registry: CollectorRegistry, host: str = "127.0.0.1",
          port: int = DEFAULT_PORT) -> tuple[WSGIServer, threading.Thread]:
    """Serve `registry` on http://host:port/metrics from a daemon thread; port 0 picks a free one.

    Loopback by default: the figures name the host's workloads, so exposing them is the admin's
    choice. The bound port is server.server_port; stop() shuts the server down.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    if thread.native_id is not None:  # started by prometheus_client: named from outside
        osthread.name_thread(thread.native_id, "aios-metrics")
    return server, thread


def serve_socket(registry: CollectorRegistry, sock: socket.socket) -> tuple[WSGIServer, threading.Thread]:
    """Serve `registry` on a listening socket someone else bound: systemd's, by socket activation
    (systemd/aios-host.socket). The service then needs no AF_INET of its own and runs with
    PrivateNetwork=yes: the socket belongs to the host's network namespace, the service does not.
    No socket is made here (TCPServer.__init__ makes one even with bind_and_activate=False, which
    RestrictAddressFamilies=AF_UNIX refuses with EAFNOSUPPORT)."""
    import socketserver

    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, make_wsgi_app

    class Server(ThreadingWSGIServer):
        def __init__(self) -> None:
            socketserver.BaseServer.__init__(self, sock.getsockname()[:2], _SilentHandler)
            self.socket = sock
            self.address_family = sock.family
            # what HTTPServer.server_bind and WSGIServer.server_bind set up after a bind()
            self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
            self.setup_environ()

    server = Server()
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=osthread.named("aios-metrics", server.serve_forever), name="metrics", daemon=True)
    thread.start()
    return server, thread


def stop(server: WSGIServer, thread: threading.Thread, timeout_s: float = 5.0) -> None:
    """Stop serve()'s server: end serve_forever, close the listening socket, join the thread."""
    server.shutdown()
    server.server_close()
    thread.join(timeout_s)
