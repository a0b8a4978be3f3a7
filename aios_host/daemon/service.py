"""`aios-host daemon`: the loop, its API socket and its metrics, started and stopped together.

Start-up: the policy is validated (a bad file: one line, exit 1, nothing changed); the journal of
originals is reconciled; the probes attach on their own thread (waited for up to
PROBE_READY_TIMEOUT_S, so READY=1 means "probes attached and the first decision made" where the
host has them); the API and the metrics are served; the first tick runs; READY=1.
Stop (SIGTERM/SIGINT): every recorded original is restored unless --keep-on-exit.
"""

from __future__ import annotations

import contextlib
import faulthandler
from dataclasses import asdict
from typing import Any

from aios_host import api, metrics
from aios_host.daemon.loop import Daemon, DaemonOptions
from aios_host.daemon.view import ClassView, DaemonView
from aios_host.errors import AiosError
from aios_host.kernel import systemd
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger

log = get_logger("aios_host.daemon")
PROBE_READY_TIMEOUT_S = 60.0
# NVML opens in well under a second where it works; a driver that hangs must not hold READY=1
# back for long (the loop goes on without its figures: the source is stale until it answers).
ENERGY_READY_TIMEOUT_S = 5.0
METRICS_SOCKET_NAME = "metrics"  # FileDescriptorName= in systemd/aios-host.socket


def make_handler(d: Daemon, root: SysRoot):  # type: ignore[no-untyped-def]
    def handle(req: dict[str, Any], _peer: api.Peer) -> dict[str, Any]:
        cmd = req["cmd"]
        v = d.view
        if cmd in api.WRITE_CMDS:
            return d.request(req)
        if cmd == "status":
            out = v.to_dict()
            out.pop("classes")
            out.pop("energy")  # the "energy" request's
            out.pop("energy_auto")
            out["classes"] = len(v.classes)
            out["memory_guard_classes"] = [guard_class(c) for c in v.classes
                                           if c.memory_guard != "ok" or c.seconds_to_oom is not None
                                           or any(_memory_events(c).values())]
            return {"ok": True, "status": out}
        if cmd == "snapshot":
            return {"ok": True, "classes": [c.to_dict() for c in v.classes], "sources": [asdict(s) for s in v.sources]}
        if cmd == "plan":
            return {"ok": True, "last_decision_unix": v.last_decision_unix, "writes": list(v.last_writes),
                    "pending": v.writes_pending, "unavailable": v.writes_unavailable, "drift": list(v.drift)}
        if cmd == "explain":
            return {"ok": True, "bindings": list(v.bindings),
                    "classes": [{"name": c.name, "demand": dict(c.demand), "allocation": dict(c.allocation)}
                                for c in v.classes]}
        if cmd == "energy":
            return energy_reply(v)
        if cmd == "jobs":
            from aios_host.supervisor.state import JobStore

            store = JobStore(root)
            jobs = []
            for k in store.keys():
                with contextlib.suppress(AiosError):
                    jobs.append(store.load(k).to_dict())
            return {"ok": True, "jobs": jobs}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    return handle


def _memory_events(c: ClassView) -> dict[str, int | None]:
    return {"high": c.memory_events_high_total, "max": c.memory_events_max_total,
            "oom": c.memory_events_oom_total, "oom_kill": c.memory_events_oom_kill_total}


def guard_class(c: ClassView) -> dict[str, Any]:
    """A class in the status answer's memory_guard_classes: the guard's state, time to OOM and
    the class's memory.events counts (a class with a count above 0 is listed even when calm)."""
    return {"name": c.name, "state": c.memory_guard, "seconds_to_oom": c.seconds_to_oom,
            "memory_events": _memory_events(c)}


def energy_reply(v: DaemonView) -> dict[str, Any]:
    """GPUs, RAPL zones and cpufreq policies as last sampled (each part says whether the host has
    it, and why not), host power and energy, and the `auto` searches' state."""
    source = next((s for s in v.sources if s.name == "energy"), None)
    out: dict[str, Any] = {"ok": True, "sampling": source is not None,
                           "source": None if source is None else asdict(source), "auto": list(v.energy_auto)}
    if v.energy is None:
        out["reason"] = "energy sampling is off (--no-energy)" if source is None else \
            (source.last_error or "no sample yet")
    else:
        out.update(v.energy.to_dict())
    return out


def run(opts: DaemonOptions, socket_path: str = api.SOCKET_PATH, metrics_port: int | None = metrics.DEFAULT_PORT,
        metrics_host: str = "127.0.0.1") -> int:
    # A watchdog kill is SIGABRT: print every thread's stack (to the journal) before dying, so a
    # wedged loop says where it was.
    faulthandler.enable(all_threads=True)
    d = Daemon(opts)
    d.install_signals()
    d.start()
    server = None
    msrv = None
    try:
        server = api.ApiServer(socket_path, make_handler(d, d.root)).start()
        passed = systemd.listen_sockets().get(METRICS_SOCKET_NAME)
        if passed is not None:  # systemd/aios-host.socket: --metrics-port/--metrics-address do not apply
            msrv = metrics.serve_socket(metrics.make_registry(lambda: d.view), passed)
            log.info("metrics_socket_activated", address=str(passed.getsockname()))
        elif metrics_port is not None:
            try:
                msrv = metrics.serve(metrics.make_registry(lambda: d.view), metrics_host, metrics_port)
            except OSError as exc:
                raise AiosError(f"metrics on {metrics_host}:{metrics_port}: {exc.strerror or exc} "
                                "(choose another with --metrics-port, or --metrics-port 0 to disable)") from None
        if opts.probes and not d.wait_probes(PROBE_READY_TIMEOUT_S):
            log.warning("probes_not_ready", waited_s=PROBE_READY_TIMEOUT_S)
        if opts.energy and not d.wait_energy(ENERGY_READY_TIMEOUT_S):
            log.warning("energy_not_ready", waited_s=ENERGY_READY_TIMEOUT_S)
        d.run(ready=lambda: log.info("daemon_ready", socket=socket_path, metrics_port=metrics_port,
                                     mode=d.mode))
    finally:
        if msrv is not None:
            metrics.stop(*msrv)
        if server is not None:
            server.stop()
        d.shutdown()
    return 0
