"""The supervisor of one job instance (a job's ranks on this host): launch the gang, watch it,
end it as one, restart it within a budget.

One thread, one poll(2) loop over: each rank's pidfd (readable when it exits), each rank's
stdout/stderr pipe (cgroup launcher), the health socket (heartbeats), and a self-pipe for
SIGTERM/SIGINT/SIGHUP. Multi-host jobs also poll the agents' store every 100 ms.

- a rank that exits non-zero, or is killed, ends the gang: cgroup.kill of the job's cgroup (or of
  each unit's), then wait until cgroup.events says it is empty; the first failure is the cause.
- every rank exited 0: success; anything still in the job's cgroup (a daemonised helper) is killed.
- no heartbeat within heartbeat_timeout: hang; stacks are dumped, then the gang is killed.
- the whole gang restarts with backoff while restarts < max_restarts.
- SIGTERM (`job stop`): SIGTERM to every process of the job, stop_grace, then cgroup.kill.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aios_host.errors import AiosError
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import Inventory, read_inventory
from aios_host.kernel.procfs import read_pid1_comm
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger
from aios_host.supervisor import stacks
from aios_host.supervisor.backoff import restart_delay
from aios_host.supervisor.causes import Cause, CauseKind, classify, guard_kill_of, root_cause
from aios_host.supervisor.coord import LocalCoordinator, StoreCoordinator
from aios_host.supervisor.launch import (
    JOBS_SLICE,
    CgroupLauncher,
    LaunchRequest,
    RankProc,
    SystemdLauncher,
)
from aios_host.supervisor.limits import ClassShare, RankLimits, resolve_share, split_limits
from aios_host.supervisor.monitor import HealthMonitor, Report
from aios_host.supervisor.netinfo import interface_for, local_node_rank
from aios_host.supervisor.placement import Rendezvous, place_ranks, rank_env, resolve_backend
from aios_host.supervisor.ports import PortReservation, reserve_port
from aios_host.supervisor.spec import JobSpec
from aios_host.supervisor.state import JobState, JobStore, RankState, pid_start
from aios_host.supervisor.storehost import StoreHost

log = get_logger("aios_host.supervisor")

STATE_FLUSH_S = 1.0
EMPTY_TIMEOUT_S = 10.0
POLL_MAX_S = 60.0  # poll(2) takes int milliseconds: a long stop_grace is waited for in slices
# Our own bookkeeping variables: never passed on to ranks from the supervisor's environment.
_STRIP_ENV = ("AIOS_HEALTH_SOCKET", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
              "GROUP_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE")


def choose_launcher(root: SysRoot, wanted: str) -> str:
    """"systemd" when systemd is PID 1 and systemd-run exists; else our own cgroups."""
    if wanted != "auto":
        return wanted
    if read_pid1_comm(root) == "systemd" and root.is_host and shutil.which("systemd-run"):
        return "systemd"
    return "cgroup"


@dataclass
class GangResult:
    cause: Cause
    procs: list[RankProc]


class Supervisor:
    def __init__(
        self,
        spec: JobSpec,
        root: SysRoot | None = None,
        *,
        node_rank: int | None = None,
        spec_file: str | None = None,
        tee: IO[str] | None = None,
        echo: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        inventory: Inventory | None = None,
        lock_fd: int | None = None,
    ) -> None:
        self.spec = spec
        self.root = root or SysRoot("/")
        self.node_rank = node_rank if node_rank is not None else self._node_rank()
        self.key = spec.instance_key(self.node_rank)
        self.spec_file = spec_file
        self.tee = tee
        self._echo = echo
        self.rng = rng or random.Random()
        self.inv = inventory
        self._lock_fd = lock_fd  # the instance's lock, taken by `job run --detach` for us
        self.store = JobStore(self.root)
        self.log = log.bind(job=self.key)
        self._stop_signal: int | None = None
        self._wake_r = self._wake_w = -1
        self._logs: dict[int, IO[bytes]] = {}
        self._partial: dict[int, bytes] = {}
        self._health: socket.socket | None = None
        self._health_path: str | None = None
        self._port: PortReservation | None = None
        self._storehost: StoreHost | None = None  # hosts the ranks' TCPStore from a restart on
        self.state: JobState | None = None
        self._last_flush = 0.0

    # -- small helpers -------------------------------------------------------------------------

    def _node_rank(self) -> int:
        if self.spec.node_rank is not None:
            return self.spec.node_rank
        if self.spec.nnodes == 1:
            return 0
        return local_node_rank(self.spec.hosts)

    def echo(self, text: str) -> None:
        if self._echo is not None:
            self._echo(f"aios-host: job {self.key}: {text}")

    def _event(self, event: str, **fields: Any) -> None:
        self.log.info(event, **fields)

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.state is not None and (force or now - self._last_flush >= STATE_FLUSH_S):
            self.store.save(self.state)
            self._last_flush = now

    # -- signals -------------------------------------------------------------------------------

    def _on_signal(self, signo: int, _frame: object) -> None:
        if self._stop_signal is None:
            self._stop_signal = signo
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"s")

    def _install_signals(self) -> dict[int, Any]:
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        old = {}
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            old[s] = signal.signal(s, self._on_signal)
        return old

    # -- health socket -------------------------------------------------------------------------

    def _open_health(self) -> None:
        run_dir = self.store.run_dir(self.key)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        path = run_dir / "health.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(str(path))
        os.chmod(path, 0o666)  # ranks may run as another user (User= in a unit)
        self._health = s
        self._health_path = str(path)

    def _drain_health(self, monitor: HealthMonitor, now: float) -> None:
        assert self._health is not None
        while True:
            try:
                data = self._health.recv(256)
            except BlockingIOError:
                return
            except OSError:
                return
            rep = Report.decode(data)
            if rep is not None:
                monitor.report(rep, now)

    # -- rank output -----------------------------------------------------------------------------

    def _open_logs(self, nproc: int) -> Path:
        d = self.store.log_dir(self.key)
        d.mkdir(parents=True, exist_ok=True, mode=0o755)
        for lr in range(nproc):
            rank = self.node_rank * nproc + lr
            self._logs[rank] = open(self.store.rank_log(self.key, rank), "ab", buffering=0)  # noqa: SIM115
        return d

    def _log_line(self, rank: int, text: str) -> None:
        f = self._logs.get(rank)
        if f is not None:
            f.write(text.encode())

    def _output(self, proc: RankProc, data: bytes) -> None:
        f = self._logs.get(proc.rank)
        if f is not None:
            f.write(data)
        if self.tee is not None:
            buf = self._partial.get(proc.rank, b"") + data
            *lines, rest = buf.split(b"\n")
            self._partial[proc.rank] = rest
            for line in lines:
                self.tee.write(f"[rank{proc.rank}]: {line.decode('utf-8', 'replace')}\n")
            self.tee.flush()

    def _drain_output(self, procs: list[RankProc], deadline: float) -> None:
        """Read every pipe to EOF (all writers are gone once the cgroup is empty)."""
        open_fds = {p.out_fd: p for p in procs if p.out_fd is not None}
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_fds), [], [], max(0.0, deadline - time.monotonic()))
            for fd in ready:
                p = open_fds[fd]
                data = os.read(fd, 1 << 16)
                if data:
                    self._output(p, data)
                else:
                    os.close(fd)
                    p.out_fd = None
                    del open_fds[fd]
        for fd, p in open_fds.items():
            os.close(fd)
            p.out_fd = None
        if self.tee is not None:
            for p in procs:
                rest = self._partial.pop(p.rank, b"")
                if rest:
                    self.tee.write(f"[rank{p.rank}]: {rest.decode('utf-8', 'replace')}\n")
            self.tee.flush()

    # -- the job ---------------------------------------------------------------------------------

    def run(self) -> int:
        spec = self.spec
        # Handlers first: once the lock names us, `job stop` may SIGTERM us, and that must be a
        # graceful stop, not the default death before anything is written.
        old_signals = self._install_signals()
        try:
            lock_fd = (self.store.adopt_lock(self.key, self._lock_fd) if self._lock_fd is not None
                       else self.store.lock(self.key))
        except BaseException:
            self._restore_signals(old_signals)
            raise
        launcher: CgroupLauncher | SystemdLauncher | None = None
        coord: LocalCoordinator | StoreCoordinator = LocalCoordinator()
        try:
            inv = self.inv or read_inventory(self.root)
            backend = resolve_backend(spec.backend, len(inv.gpus), spec.nproc)
            share: ClassShare | None = resolve_share(self.root, spec.policy, spec.cls, inv)
            placements = place_ranks(inv, spec.nproc, self.node_rank, use_gpus=backend == "nccl",
                                     affinity=spec.cpu_affinity,
                                     cpu_cores=share.cpu_cores if share else None)
            limits = (split_limits(share, spec.nproc, [p.cpus for p in placements]) if share
                      else [RankLimits()] * spec.nproc)
            fs = CgroupFs(self.root)
            kind = choose_launcher(self.root, spec.launcher)
            managed_root = share.managed_root if share else "aios.slice"
            job_rel = f"{managed_root}/{spec.cls}/{JOBS_SLICE}/{self.key}"
            launcher = (SystemdLauncher(fs, self.key, spec.cls, spec.stop_grace) if kind == "systemd"
                        else CgroupLauncher(fs, job_rel))
            master_addr = spec.master_addr or (spec.hosts[0] if spec.hosts else "127.0.0.1")
            ifname = interface_for(master_addr)
            log_dir = self._open_logs(spec.nproc) if kind == "cgroup" else Path("")
            self._open_health()
            where = launcher.prepare(spec.nproc)
            self.state = JobState(
                key=self.key, name=spec.name, node_rank=self.node_rank, nnodes=spec.nnodes,
                nproc=spec.nproc, world_size=spec.world_size, supervisor_pid=os.getpid(),
                supervisor_start=pid_start(os.getpid()), supervisor_unit=str(where.get("scope") or "") or None,
                launcher=kind, backend=backend, cls=spec.cls, label=spec.label or spec.name,
                guard_notice=spec.guard_notice, guard_grace_s=spec.guard_grace,
                max_restarts=spec.restart.max_restarts,
                stop_grace=spec.stop_grace,
                master_addr=master_addr, cgroup=str(where.get("cgroup") or "") or None,
                cgroup_mount=fs.mount, log_dir=str(log_dir) if kind == "cgroup" else "journal",
                spec_file=self.spec_file, command=spec.argv(sys.executable),
                limits={"policy": share.policy if share else None,
                        "per_rank": [lim.to_dict() for lim in limits],
                        **({"slice": where["slice"]} if "slice" in where else {})},
                ranks=[RankState(p.rank, p.local_rank, cpus=list(p.cpus), gpu=p.gpu) for p in placements],
            )
            self._flush(force=True)
            if spec.nnodes > 1:
                coord = StoreCoordinator(spec.hosts[0], spec.rdzv_port, spec.nnodes, self.node_rank, spec.name)
                coord.start()
            if self.node_rank == 0:
                self._port = reserve_port(self.root, owner=self.key)
            if spec.nnodes == 1 and spec.restart.max_restarts > 0:
                self._storehost = StoreHost.spawn(
                    self._base_env(), str(log_dir / "storehost.log") if kind == "cgroup" else os.devnull)
            self._event("job_start", launcher=kind, backend=backend, nproc=spec.nproc, nnodes=spec.nnodes,
                        node=self.node_rank, cls=spec.cls, cgroup=self.state.cgroup)
            return self._generations(launcher, coord, placements, limits, backend, master_addr, ifname)
        finally:
            self._finish(launcher, coord, lock_fd, old_signals)

    def _finish(self, launcher: Any, coord: Any, lock_fd: int, old_signals: dict[int, Any]) -> None:
        with contextlib.suppress(Exception):
            coord.close()
        if self._storehost is not None:
            self._storehost.stop()
        if launcher is not None:
            try:
                launcher.cleanup()
            except AiosError as exc:
                self.log.warning("cleanup_failed", error=str(exc))
        if self._port is not None:
            self._port.release()
        if self._health is not None:
            self._health.close()
            with contextlib.suppress(OSError):
                os.unlink(self._health_path or "")
        with contextlib.suppress(OSError):
            self.store.run_dir(self.key).rmdir()
        for f in self._logs.values():
            f.close()
        if self.state is not None:
            if self.state.active:  # an exception ended us
                self.state.status = "failed"
            self._flush(force=True)
        self._restore_signals(old_signals)
        os.close(lock_fd)

    def _restore_signals(self, old_signals: dict[int, Any]) -> None:
        for s, h in old_signals.items():
            signal.signal(s, h)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _generations(self, launcher: Any, coord: Any, placements: list[Any], limits: list[RankLimits],
                     backend: str, master_addr: str, ifname: str | None) -> int:
        spec = self.spec
        st = self.state
        assert st is not None
        gen = 0
        while True:
            st.restart = gen
            st.status = "starting" if gen == 0 else "restarting"
            port = self._gang_port(coord, gen)
            st.master_port = port
            rdzv = Rendezvous(master_addr, port, spec.world_size, spec.nproc, spec.nnodes)
            result = self._run_gang(launcher, coord, gen, placements, limits, rdzv, backend, ifname)
            cause = result.cause
            st.causes.append({**cause.to_dict(), "restart": gen})
            st.cause = cause.to_dict()
            if cause.kind is CauseKind.SUCCESS:
                st.status, st.exit_code = "succeeded", 0
                self._event("job_succeeded", restarts=gen)
                self.echo(f"succeeded ({spec.world_size} ranks" + (f", {gen} restarts)" if gen else ")"))
                return 0
            stop = cause.kind is CauseKind.STOPPED or self._stop_signal is not None
            if stop:
                st.status, st.exit_code = "stopped", 143 if self._stop_signal != signal.SIGINT else 130
                st.cause = Cause(CauseKind.STOPPED, detail=cause.describe()
                                 if cause.kind is not CauseKind.STOPPED else cause.detail).to_dict()
                self._event("job_stopped", restarts=gen)
                self.echo("stopped")
                return st.exit_code
            if gen >= spec.restart.max_restarts:
                st.status, st.exit_code = "failed", cause.exit_code
                self._event("job_failed", cause=cause.describe(), restarts=gen, exit_code=cause.exit_code)
                budget = f" after {gen} restarts" if gen else ""
                self.echo(f"failed{budget}: {cause.describe()} (exit {cause.exit_code})")
                return cause.exit_code
            delay = restart_delay(spec.restart, gen + 1, self.rng)
            st.status = "restarting"
            self._flush(force=True)
            self._event("job_restart", restart=gen + 1, delay_s=round(delay, 3), cause=cause.describe())
            self.echo(f"{cause.describe()}; restarting all ranks ({gen + 1}/{spec.restart.max_restarts}) "
                      f"in {delay:.1f}s")
            if self._sleep(delay):
                st.status, st.exit_code = "stopped", 143
                st.cause = Cause(CauseKind.STOPPED, detail="during restart backoff").to_dict()
                self.echo("stopped")
                return 143
            gen += 1

    def _sleep(self, seconds: float) -> bool:
        """Sleep, unless a stop signal comes; True if one did."""
        deadline = time.monotonic() + seconds
        while self._stop_signal is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([self._wake_r], [], [], left)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 64)
        return True

    def _gang_port(self, coord: Any, gen: int) -> int:
        if self.node_rank != 0:
            return int(coord.wait_port(gen, timeout_s=600.0))
        assert self._port is not None
        if self._storehost is not None:
            self._storehost.close_store()  # the last generation's store frees the port
        if not self._port.rebind():
            self.log.warning("master_port_taken", port=self._port.port)
            self._port.release()
            self._port = reserve_port(self.root, owner=self.key)
        coord.publish_port(gen, self._port.port)
        return self._port.port

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
        return env

    def _run_gang(self, launcher: Any, coord: Any, gen: int, placements: list[Any], limits: list[RankLimits],
                  rdzv: Rendezvous, backend: str, ifname: str | None) -> GangResult:
        spec = self.spec
        st = self.state
        assert st is not None
        base = self._base_env()
        if self._port is not None:
            self._port.handoff()  # rank 0's TCPStore, or the store host's, binds it next
        # From a restart on, the store host (if it is up by now) listens before any rank starts.
        agent_store = (gen > 0 and self._storehost is not None
                       and self._storehost.open(rdzv.master_port, spec.world_size))
        if agent_store:
            base["TORCHELASTIC_USE_AGENT_STORE"] = "True"
        gpus = [p.gpu for p in placements if p.gpu is not None]
        cwd = spec.workdir or os.getcwd()
        argv = spec.argv(sys.executable)
        reqs = []
        for p, lim in zip(placements, limits, strict=True):
            env = rank_env(base, p, rdzv, job=spec.name, label=spec.label or spec.name, restart=gen,
                           max_restarts=spec.restart.max_restarts, backend=backend,
                           health_socket=self._health_path, gpus=gpus, socket_ifname=ifname, extra=spec.env)
            reqs.append(LaunchRequest(p.rank, p.local_rank, argv, env, cwd, p.cpus, lim, gen))
            self._log_line(p.rank, f"--- aios-host: job {self.key} rank {p.rank} restart {gen} "
                                   f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} ---\n")
        procs = launcher.start(reqs)
        for p, rs in zip(procs, st.ranks, strict=True):
            rs.pid, rs.unit = p.pid, p.unit
            rs.pid_start = pid_start(p.pid) if p.pid > 0 else None
            rs.cgroup = p.cgroup.rel if p.cgroup is not None else None
            rs.status, rs.exit, rs.last_step, rs.step_s = "running", None, None, None
        if hasattr(launcher, "limits_state") and launcher.limits_state:
            st.limits["applied"] = launcher.limits_state
        st.status = "running"
        self._flush(force=True)
        self._event("gang_started", restart=gen, pids=[p.pid for p in procs], master_port=rdzv.master_port,
                    store="store host" if agent_store else "rank 0")
        if gen == 0:
            self.echo(f"started {len(procs)} ranks ({launcher.kind}, {backend}, "
                      f"MASTER_ADDR={rdzv.master_addr}:{rdzv.master_port}); logs: "
                      f"{st.log_dir if launcher.kind == 'cgroup' else 'journalctl JOB=' + self.key}")
        cause = self._watch(launcher, coord, gen, procs)
        self._teardown(launcher, procs, cause)
        if cause.kind not in (CauseKind.SUCCESS, CauseKind.PEER):
            cause = coord.announce_failure(gen, Cause(cause.kind, cause.rank, cause.code, cause.detail,
                                                      self.node_rank if spec.nnodes > 1 else None))
        return GangResult(cause, procs)

    def _watch(self, launcher: Any, coord: Any, gen: int, procs: list[RankProc]) -> Cause:
        spec = self.spec
        st = self.state
        assert st is not None and self._health is not None
        monitor = HealthMonitor([p.rank for p in procs], gen, spec.heartbeat_timeout, spec.straggler_factor)
        poller = select.poll()
        by_fd: dict[int, tuple[str, RankProc | None]] = {self._wake_r: ("wake", None),
                                                        self._health.fileno(): ("health", None)}
        alive = []
        for p in procs:
            if p.status is not None:  # could not be started
                continue
            if p.pidfd is not None:
                by_fd[p.pidfd] = ("pid", p)
                alive.append(p)
            if p.out_fd is not None:
                by_fd[p.out_fd] = ("out", p)
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        failed = [p for p in procs if p.status is not None]
        if failed:
            return classify(failed[0].rank, failed[0].status, started=False)
        ranks_state = {rs.rank: rs for rs in st.ranks}
        single_node = spec.nnodes == 1
        reported_ok = False
        while True:
            if self._stop_signal is not None:
                return self._stop(launcher, procs, poller, by_fd)
            now = time.monotonic()
            timeouts = [STATE_FLUSH_S]
            if (dl := monitor.next_deadline()) is not None:
                timeouts.append(max(0.0, dl - now) + 0.01)
            if coord.poll_s is not None:
                timeouts.append(coord.poll_s)
            events = poller.poll(min(timeouts) * 1000)
            now = time.monotonic()
            failures: list[Cause] = []
            for fd, _ev in events:
                what, p = by_fd.get(fd, ("gone", None))
                if what == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 64)
                elif what == "health":
                    self._drain_health(monitor, now)
                elif what == "out":
                    assert p is not None
                    data = os.read(fd, 1 << 16)
                    if data:
                        self._output(p, data)
                    else:
                        poller.unregister(fd)
                        del by_fd[fd]
                        os.close(fd)
                        p.out_fd = None
                elif what == "pid":
                    assert p is not None
                    poller.unregister(fd)
                    del by_fd[fd]
                    failures.append(self._rank_exited(launcher, p, ranks_state))
                    alive.remove(p)
            failures = [c for c in failures if c.kind is not CauseKind.SUCCESS]
            if failures:
                # Ranks blocked in a collective fail right after the rank that broke it (gloo:
                # "Connection reset by peer", exit 1). Collect every exit that is already in,
                # then name the likeliest root cause, not whichever pidfd poll listed first.
                for p in list(alive):
                    if p.pidfd is not None and select.select([p.pidfd], [], [], 0)[0]:
                        poller.unregister(p.pidfd)
                        del by_fd[p.pidfd]
                        alive.remove(p)
                        c = self._rank_exited(launcher, p, ranks_state)
                        if c.kind is not CauseKind.SUCCESS:
                            failures.append(c)
                return root_cause(failures)
            if not alive:
                if single_node:
                    return Cause(CauseKind.SUCCESS)
                if not reported_ok:
                    coord.report_success(gen)
                    reported_ok = True
                if coord.all_succeeded(gen):
                    return Cause(CauseKind.SUCCESS)
            if (h := monitor.hang(now)) is not None:
                return self._hang(procs, h)
            for rank, t, med in monitor.new_stragglers():
                ev = {"rank": rank, "step_s": round(t, 6), "others_median_s": round(med, 6),
                      "factor": round(t / med, 2), "restart": gen}
                st.stragglers.append(ev)
                self._event("straggler", **ev)
                self.echo(f"straggler: rank {rank} step {t * 1e3:.1f} ms = {t / med:.1f}x the others' "
                          f"median {med * 1e3:.1f} ms")
            if coord.poll_s is not None and (peer := coord.peer_failure(gen)) is not None:
                if peer.node != self.node_rank:
                    if peer.kind is CauseKind.STOPPED:
                        return Cause(CauseKind.STOPPED, detail=f"stopped on node {peer.node}")
                    return Cause(CauseKind.PEER, peer.rank, peer.exit_code, peer.describe(), peer.node)
            for rank, h in monitor.ranks.items():
                rs = ranks_state[rank]
                if h.step >= 0:
                    rs.last_step = h.step
                    typ = h.typical()
                    rs.step_s = round(typ, 6) if typ is not None else None
            self._flush()

    def _rank_exited(self, launcher: Any, p: RankProc, ranks_state: dict[int, RankState]) -> Cause:
        status = launcher.reap(p)
        rs = ranks_state[p.rank]
        rs.exit = str(status)
        rs.status = "exited" if status.ok else "failed"
        cause = classify(p.rank, status, oom_kills=launcher.oom_kills(p),
                         systemd_result=p.systemd_result, started=p.started, guard_kill=self._guard_kill(p))
        self._event("rank_exit", rank=p.rank, status=str(status), cause=cause.kind.value)
        return cause

    def _guard_kill(self, p: RankProc) -> str | None:
        """Whether aios-host's memory guard killed a cgroup this rank was in since the job started
        (the daemon records each kill in guard-kills.json): the cause to name, or None."""
        if self.state is None:
            return None
        return guard_kill_of(self.root, "/" + p.cgroup.rel if p.cgroup is not None else "", self.state.started_unix,
                             pid=p.pid)

    def _hang(self, procs: list[RankProc], h: Any) -> Cause:
        st = self.state
        assert st is not None
        silent = ",".join(map(str, h.silent_ranks))
        self.echo(f"no heartbeat for {h.silent_s:.1f}s from rank(s) {silent} (last step {h.last_step}); "
                  "dumping stacks")
        methods: dict[int, str] = {}
        texts: dict[int, str] = {}
        for p in procs:
            if p.status is not None:
                continue
            method, text = stacks.dump_stacks(p.pid)
            methods[p.rank] = method
            if method == "py-spy":
                texts[p.rank] = text
            self._log_line(p.rank, f"--- aios-host: stacks of rank {p.rank} (pid {p.pid}, {method}) ---\n"
                                   f"{text}\n")
        if "sigusr1" in methods.values():
            time.sleep(0.5)  # let faulthandler write before the kill
        sus = stacks.suspects(texts)
        if len(sus) == 1:
            rank, why = sus[0], "stuck outside torch.distributed while the others wait in a collective"
        elif len(h.silent_ranks) < len(procs):
            busy = sorted({p.rank for p in procs} - set(h.silent_ranks))
            rank, why = h.rank, f"silent while rank(s) {busy} progress"
        else:
            rank, why = None, f"every rank silent; longest rank {h.rank}"
        ev = {"rank": rank, "silent_ranks": list(h.silent_ranks), "silent_s": round(h.silent_s, 3),
              "last_step": h.last_step, "restart": st.restart, "stacks": methods, "suspects": sus}
        st.hangs.append(ev)
        self._event("hang", **ev)
        return Cause(CauseKind.HANG, rank, None,
                     f"no heartbeat for {h.silent_s:.1f}s > heartbeat_timeout {self.spec.heartbeat_timeout:g}s; {why}")

    def _stop(self, launcher: Any, procs: list[RankProc], poller: Any, by_fd: dict[int, Any]) -> Cause:
        """Graceful: SIGTERM to every process of the job, wait stop_grace, then cgroup.kill."""
        st = self.state
        assert st is not None
        st.status = "stopping"
        self._flush(force=True)
        sig = self._stop_signal
        self._event("job_stopping", signal=sig, grace_s=self.spec.stop_grace)
        launcher.signal_all(procs, signal.SIGTERM)
        deadline = time.monotonic() + self.spec.stop_grace
        alive = [p for p in procs if p.status is None]
        while alive and time.monotonic() < deadline:
            for fd, _ev in poller.poll(min(POLL_MAX_S, max(0.0, deadline - time.monotonic())) * 1000):
                what, p = by_fd.get(fd, ("gone", None))
                if what == "pid" and p is not None:
                    poller.unregister(fd)
                    del by_fd[fd]
                    status = launcher.reap(p)
                    alive.remove(p)
                    rs = next(r for r in st.ranks if r.rank == p.rank)
                    rs.exit, rs.status = str(status), "exited" if status.ok else "stopped"
                elif what == "out" and p is not None:
                    data = os.read(fd, 1 << 16)
                    if data:
                        self._output(p, data)
                    else:
                        poller.unregister(fd)
                        del by_fd[fd]
                        os.close(fd)
                        p.out_fd = None
                elif what == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 64)
                elif what == "health":
                    assert self._health is not None
                    with contextlib.suppress(OSError):
                        while self._health.recv(256):
                            pass
        name = signal.Signals(sig).name if sig else "stop"
        detail = f"{name}; " + ("all ranks exited within the grace period" if not alive
                                else f"{len(alive)} rank(s) killed after {self.spec.stop_grace:g}s grace")
        return Cause(CauseKind.STOPPED, detail=detail)

    def _teardown(self, launcher: Any, procs: list[RankProc], cause: Cause) -> None:
        """End every process of the gang and make sure the job's cgroup is empty."""
        st = self.state
        assert st is not None
        t0 = time.monotonic()
        leftovers = launcher.leftover_pids(procs)
        if leftovers or any(p.status is None for p in procs):
            for p in procs:
                if p.status is None:
                    p.killed_by_us = True
            launcher.kill_all(procs)
        for p in procs:
            if p.status is None and p.pidfd is not None:
                status = launcher.reap(p)
                rs = next(r for r in st.ranks if r.rank == p.rank)
                rs.exit, rs.status = str(status), "killed"
        empty = launcher.wait_empty(procs, EMPTY_TIMEOUT_S)
        if not empty:
            left = launcher.leftover_pids(procs)
            self.log.error("gang_not_empty", pids=left)
            self.echo(f"WARNING: {len(left)} process(es) still in the job's cgroup after cgroup.kill: {left}")
        self._drain_output(procs, time.monotonic() + 5.0)
        for p in procs:
            if p.pidfd is not None:
                os.close(p.pidfd)
                p.pidfd = None
        launcher.finish_gang(procs)
        if cause.kind is not CauseKind.SUCCESS:
            killed = [p.rank for p in procs if p.killed_by_us]
            self._event("gang_ended", cause=cause.describe(), killed=killed,
                        teardown_ms=round((time.monotonic() - t0) * 1e3, 1), orphans=len(leftovers))
        for p in procs:
            self._log_line(p.rank, f"--- aios-host: rank {p.rank} {p.status} ({cause.describe()}) ---\n")
        self._flush(force=True)

