"""Models built in the tests, deterministic to the byte: a frozen clock, fixed readings. The
daemon's and the local source's rows are built by model.py's own builders from API-shaped dicts
and CgroupReadings, so the fakes exercise the same code the command runs."""

from __future__ import annotations

import math

from aios_host.tui.model import (
    BindingView,
    CgroupReading,
    DaemonState,
    Decision,
    Event,
    GpuStats,
    HostStats,
    Psi,
    TopModel,
    WriteView,
    daemon_rows,
    job_view,
    jobs_in_order,
    local_rows,
)

T0 = 1_700_000_000.0  # the frozen clock: 2023-11-14 22:13:20 UTC
GiB = 2**30
MiB = 2**20


def history(n: int = 40) -> dict[str, tuple[float, ...]]:
    """Smooth, deterministic series for the sparklines."""
    return {
        "cpu_usage_percent": tuple(50 + 30 * math.sin(i / 4) for i in range(n)),
        "memory_used_percent": tuple(40 + i / 2 for i in range(n)),
        "psi_cpu_some_percent": tuple(5 + 4 * math.sin(i / 3) for i in range(n)),
        "psi_memory_some_percent": tuple(0.5 * (i % 7) for i in range(n)),
        "psi_io_some_percent": tuple(2 + math.cos(i / 5) for i in range(n)),
    }


HOST = HostStats(cpu_count=64, cpu_usage_percent=63.2, memory_total_bytes=512 * GiB,
                 memory_available_bytes=301 * GiB, cpu=Psi(4.1, 0.0), memory=Psi(0.3, 0.1), io=Psi(1.2, 0.4))


def reading(path: str, usage_s: float, mem_mib: float | None = None, *, high_mib: float | None = None,
            max_mib: float | None = None, cpu_max: float | None = None, procs: int = 1, faults: int = 0,
            psi: tuple[float, float, float] = (0.0, 0.0, 0.0), oom: int | None = 0) -> CgroupReading:
    cpu, mem, io = psi
    return CgroupReading(
        path=path, nr_procs=procs, cpu_usage_usec=int(usage_s * 1e6), cpu_max_cores=cpu_max,
        memory_current_bytes=None if mem_mib is None else int(mem_mib * MiB),
        memory_high_bytes=None if high_mib is None else int(high_mib * MiB),
        memory_max_bytes=None if max_mib is None else int(max_mib * MiB),
        memory_faults_total=faults, oom_kills_total=oom,
        cpu=Psi(cpu, cpu / 2), memory=Psi(mem, mem / 2), io=Psi(io, io / 3))


def local_tree(scale: float = 1.0) -> list[CgroupReading]:
    """A small host's cgroup tree; `scale` moves the cumulative counters (two calls a second apart
    make the rates)."""
    s = scale
    return [
        reading("/", 9000 * s, None, procs=212, faults=int(5e6 * s), psi=(4.1, 0.3, 1.2), oom=None),
        reading("/aios.slice", 5000 * s, 61440, procs=0, faults=int(3e6 * s), psi=(2.0, 0.2, 0.1)),
        reading("/aios.slice/training", 4000 * s, 40960, high_mib=45056, max_mib=49152, cpu_max=48.0, procs=8,
                faults=int(2e6 * s), psi=(1.1, 0.1, 0.0)),
        reading("/aios.slice/inference", 1000 * s, 20000, high_mib=20480, max_mib=24576, procs=4,
                faults=int(1e6 * s), psi=(12.5, 6.2, 0.0)),
        reading("/aios.slice/batch", 10 * s, 480, max_mib=512, cpu_max=2.0, procs=3, faults=int(9e5 * s),
                psi=(45.0, 25.0, 8.0), oom=2),
        reading("/system.slice", 3000 * s, 3072, procs=150, faults=int(1e6 * s), psi=(0.5, 0.0, 2.0)),
        reading("/system.slice/sshd.service", 2 * s, 12, procs=1, faults=100),
        reading("/system.slice/journald.service", 40 * s, 200, procs=1, faults=3000),
        reading("/user.slice", 500 * s, 1024, procs=50, faults=int(2e5 * s), psi=(0.2, 0.0, 0.0)),
    ]


def local_model(**kw: object) -> TopModel:
    before = {r.path: r for r in local_tree(1.0)}
    rows = local_rows(local_tree(1.0 + 0.9 / 9000), before, 1.0)  # "/" used 0.9 cores over 1 s
    args: dict[str, object] = dict(time_unix=T0, interval_seconds=1.0, source="local", host=HOST, rows=rows,
                                   history=history(), daemon_note="/run/aios-host/api.sock: the aios-host daemon "
                                   "is not running (No such file or directory)")
    args.update(kw)
    return TopModel(**args)  # type: ignore[arg-type]


def class_dict(name: str, tier: int, cgroups: list[str], alloc: float, usage: float, mem_gib: float, *,
               psi: tuple[float, float, float] = (0.0, 0.0, 0.0), runq_ms: float | None = 0.4,
               faults: int = 0, reclaim_s: float = 0.0, oom: int = 0, guard: str = "ok") -> dict[str, object]:
    """A ClassView.to_dict() as the API's `snapshot` returns it."""
    return {"name": name, "tier": tier, "weight": 1.0, "cgroups": cgroups, "owned": True, "populated": True,
            "cpu_usage_seconds_total": 1000.0, "cpu_usage_cores": usage, "memory_current_bytes": int(mem_gib * GiB),
            "cpu_some_avg10": psi[0], "memory_some_avg10": psi[1], "io_some_avg10": psi[2],
            "runq_p99_seconds": None if runq_ms is None else runq_ms / 1e3, "faults_total": faults,
            "reclaim_seconds_total": reclaim_s, "oom_kills_total": oom, "demand": {"cpu": alloc * 1.1},
            "allocation": {"cpu": alloc}, "memory_guard": guard, "seconds_to_oom": None}


def daemon_classes(scale: float = 1.0) -> list[dict[str, object]]:
    s = scale
    return [
        class_dict("training", 10, ["/aios.slice/training"], 40.0, 38.7, 40.0, runq_ms=0.8, faults=int(2e6 * s),
                   reclaim_s=0.0),
        class_dict("inference", 5, ["/aios.slice/inference"], 16.0, 17.9, 19.5, psi=(12.5, 3.0, 0.0),
                   runq_ms=7.5, faults=int(1e6 * s), reclaim_s=0.02 * s),
        class_dict("batch", 0, ["/aios.slice/batch"], 1.5, 2.0, 0.47, psi=(45.0, 22.0, 8.0), runq_ms=61.0,
                   faults=int(9e5 * s), reclaim_s=0.4 * s, oom=2, guard="tighten"),
    ]


def daemon_model(**kw: object) -> TopModel:
    tree0 = {r.path: r for r in local_tree(1.0)}
    tree1 = {r.path: r for r in local_tree(1.0 + 1 / 9000)}
    prev = {str(c["name"]): c for c in daemon_classes(1.0)}
    rows = daemon_rows(daemon_classes(1.0 + 1e-3), prev, tree1, tree0, 1.0)
    jobs = jobs_in_order(job_view(j) for j in JOBS)
    args: dict[str, object] = dict(
        time_unix=T0, interval_seconds=1.0, source="daemon", host=HOST, rows=rows, history=history(),
        gpus=(GpuStats(0, "NVIDIA H200", 87.0, 101 * GiB, 141 * GiB, 612.0, 63.0, 1980.0),
              GpuStats(1, "NVIDIA H200", 12.0, 8 * GiB, 141 * GiB, 140.0, 41.0, 1755.0)),
        daemon=DaemonState(verdict="active", mode="active", mode_reason="", pid=4242,
                           policy_path="/etc/aios-host/policy.toml", policy_description="training first",
                           interval_seconds=1.0, ticks_total=86400, last_tick_seconds=0.004,
                           last_decision_unix=T0 - 12, last_writes_count=3, writes_total=311,
                           writes_failed_total=0, memory_guard="watching", last_error=None),
        jobs=jobs,
        decision=Decision(
            last_decision_unix=T0 - 12,
            writes=(WriteView("write", "/sys/fs/cgroup/aios.slice/training/cpu.weight", "667", "cpu: 40.0 cores of 64"),
                    WriteView("write", "/sys/fs/cgroup/aios.slice/inference/cpu.weight", "267", "cpu: 16.0 cores"),
                    WriteView("write", "/sys/fs/cgroup/aios.slice/batch/memory.high", "471859200",
                              "memory guard: tighten")),
            pending_writes=1, unavailable_writes=0, drift_files=0,
            bindings=(BindingView("capacity", "cpu", None, 10, 0.0244, ("training",)),
                      BindingView("demand", "cpu", "inference", 5, 0.0625),
                      BindingView("max", "cpu", "batch", 0, 0.0))),
        events=(Event(T0 - 30, 6, "daemon_ready socket=/run/aios-host/api.sock"),
                Event(T0 - 12, 6, "cgroup_write path=/sys/fs/cgroup/aios.slice/training/cpu.weight value=667"),
                Event(T0 - 5, 4, "memory_guard_tighten class=batch seconds_to_oom=41")),
    )
    args.update(kw)
    return TopModel(**args)  # type: ignore[arg-type]


def _ranks(n: int, step_s: float, slow: int | None = None) -> list[dict[str, object]]:
    return [{"rank": r, "local_rank": r, "pid": 1000 + r, "status": "running", "last_step": 5000,
             "step_s": step_s * (2.4 if r == slow else 1.0)} for r in range(n)]


JOBS = [
    {"key": "llama-ft", "name": "llama-ft", "status": "running", "cls": "training", "world_size": 8, "nproc": 8,
     "nnodes": 1, "restart": 0, "max_restarts": 3, "started_unix": T0 - 3600, "ranks": _ranks(8, 0.182, slow=5),
     "stragglers": [{"rank": 5, "step_s": 0.437, "others_median_s": 0.182, "factor": 2.4, "restart": 0}]},
    {"key": "eval-nightly", "name": "eval-nightly", "status": "restarting", "cls": "batch", "world_size": 2,
     "nproc": 2, "nnodes": 1, "restart": 1, "max_restarts": 2, "started_unix": T0 - 600,
     "ranks": _ranks(2, 0.051), "stragglers": []},
    {"key": "old-run", "name": "old-run", "status": "succeeded", "cls": "training", "world_size": 4, "nproc": 4,
     "nnodes": 1, "restart": 0, "max_restarts": 0, "started_unix": T0 - 86400, "ranks": [], "stragglers": []},
]


def big_rows(n: int, scale: float = 1.0) -> list[CgroupReading]:
    """n cgroups: / with n-1 leaves under 10 slices (the bench's and the 1000-row tests' tree)."""
    out = [reading("/", 100 * scale, None, procs=n)]
    slices = 10
    for s in range(slices):
        out.append(reading(f"/s{s:02d}.slice", 10 * scale, 100, procs=0))
        for i in range(s, n - 1 - slices, slices):
            out.append(reading(f"/s{s:02d}.slice/c{i:04d}", (i % 17) * scale, 1 + i % 50, high_mib=64,
                               max_mib=None if i % 3 else 80, procs=1 + i % 4, faults=int(i * 100 * scale),
                               psi=(i % 13, i % 7, i % 5)))
    return out
