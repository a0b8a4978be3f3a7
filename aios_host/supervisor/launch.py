"""Starting ranks as managed units, watching them with pidfds, and ending them as one.

Two launchers with one interface, chosen once per job (features: is systemd PID 1?):

- CgroupLauncher (no systemd, e.g. this project's development hosts): every rank in a cgroup v2
  leaf of our own, <managed_root>/<class>/aios-jobs.slice/<job>/rank-<r>. The rank joins its
  cgroup before exec: a /bin/sh trampoline writes "0" to the leaf's cgroup.procs and execs the
  command, so nothing the rank forks can start outside it (Python's subprocess has no
  CLONE_INTO_CGROUP, and a preexec_fn is unsafe once the supervisor has threads). The child is
  started with posix_spawn (vfork: cheap, thread-safe), in a session of its own, with
  PR_SET_PDEATHSIG=SIGKILL (setpriv) so that a SIGKILLed supervisor does not leave ranks behind.
  Limits are cgroup files on the leaf when the tree has the controllers.

- SystemdLauncher (systemd is PID 1): one transient service per rank, `systemd-run
  --service-type=exec` in aios-<class>-jobs.slice (a slice under the class's slice
  aios-<class>.slice), with the solver's CPUWeight/CPUQuota/AllowedCPUs/MemoryHigh/MemoryMax,
  LogExtraFields=JOB/RANK/RESTART and stdout/stderr to the journal. RemainAfterExit=yes keeps
  ExecMainCode/ExecMainStatus/Result readable after the rank exits; the supervisor stops and
  resets the units when the gang ends. The units are services of PID 1, not children of the
  supervisor, so pdeathsig cannot tie them to it: the supervisor first moves itself into a
  transient scope of its own, aios-jobsup-<job>-<pid>.scope in system.slice, and every rank unit
  gets BindsTo= and After= that scope. A scope goes inactive when its last process exits, a
  SIGKILLed supervisor included, and systemd then stops every unit bound to it (SIGTERM, and
  SIGKILL after TimeoutStopSec=stop_grace): no rank outlives its supervisor under systemd either.

Both give a pidfd per rank (os.pidfd_open; for units, of the unit's MainPID), which the
supervisor polls; gang kill is cgroup.kill on the job's cgroup (or each unit's), then wait until
cgroup.events says "populated 0".
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aios_host.errors import AiosError, KernelError
from aios_host.kernel import systemd
from aios_host.kernel.cgroup import Cgroup, CgroupFs
from aios_host.kernel.procfs import parse_proc_cgroup
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger
from aios_host.supervisor.causes import LAUNCH_CGROUP_CODE, ExitStatus
from aios_host.supervisor.limits import RankLimits

log = get_logger("aios_host.supervisor.launch")

JOBS_SLICE = "aios-jobs.slice"
SUPERVISOR_SCOPE_PREFIX = "aios-jobsup-"  # not aios-job-*: `systemctl list-units aios-job-*` lists ranks
SUPERVISOR_SLICE = "system.slice"  # not the class's slice: its limits would throttle the supervisor
UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX is 256 with the NUL
TRAMPOLINE = f'echo 0 >"$0" 2>/dev/null || exit {LAUNCH_CGROUP_CODE}; cd "$1" || exit 126; shift; exec "$@"'
# Variables of the supervisor's own service or session that must not leak into rank units.
_UNIT_ENV_SKIP = frozenset({
    "INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
    "WATCHDOG_PID", "WATCHDOG_USEC", "SYSTEMD_EXEC_PID", "MANAGERPID", "_",
})


@dataclass
class RankProc:
    rank: int
    local_rank: int
    pid: int
    pidfd: int | None
    out_fd: int | None = None  # read end of the rank's stdout+stderr pipe (cgroup launcher)
    cgroup: Cgroup | None = None
    unit: str | None = None
    oom_before: int = 0
    status: ExitStatus | None = None
    systemd_result: str | None = None
    started: bool = True
    killed_by_us: bool = False
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchRequest:
    rank: int
    local_rank: int
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    cpus: tuple[int, ...]
    limits: RankLimits
    restart: int


class Launcher(Protocol):
    kind: str

    def prepare(self, nproc: int) -> dict[str, object]: ...
    def start(self, reqs: Sequence[LaunchRequest]) -> list[RankProc]: ...
    def reap(self, proc: RankProc) -> ExitStatus: ...
    def signal_all(self, procs: Sequence[RankProc], sig: int) -> None: ...
    def kill_all(self, procs: Sequence[RankProc]) -> None: ...
    def wait_empty(self, procs: Sequence[RankProc], timeout_s: float) -> bool: ...
    def leftover_pids(self, procs: Sequence[RankProc]) -> list[int]: ...
    def finish_gang(self, procs: Sequence[RankProc]) -> None: ...
    def cleanup(self) -> None: ...


def _oom_kills(cg: Cgroup | None) -> int:
    if cg is None:
        return 0
    text = cg.read_optional("memory.events")
    if not text:
        return 0
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == "oom_kill":
            return int(v)
    return 0


def wait_unpopulated(cgs: Sequence[Cgroup], timeout_s: float) -> bool:
    """Until every cgroup's cgroup.events says populated 0. The kernel signals changes of that
    file with POLLPRI (cgroup-v2.rst, "cgroup.events"); a 50 ms tick covers a missed edge."""
    deadline = time.monotonic() + timeout_s
    pending = list(cgs)
    while True:
        still = []
        for cg in pending:
            try:
                if cg.populated():
                    still.append(cg)
            except KernelError:
                continue  # removed: empty
        pending = still
        if not pending:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        fds = []
        try:
            poller = select.poll()
            for cg in pending:
                try:
                    fd = os.open(cg.fs.root.path(cg.file("cgroup.events")), os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                os.read(fd, 4096)
                fds.append(fd)
                poller.register(fd, select.POLLPRI)
            poller.poll(min(50.0, left * 1000))
        finally:
            for fd in fds:
                os.close(fd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


class CgroupLauncher:
    """Ranks in cgroups of our own under the cgroup v2 tree."""

    kind = "cgroup"

    def __init__(self, fs: CgroupFs, job_rel: str) -> None:
        self.fs = fs
        self.job_rel = job_rel
        self.job: Cgroup | None = None
        self.leaves: dict[int, Cgroup] = {}
        self._limits_state: dict[str, object] = {}
        self._setpriv = shutil.which("setpriv")
        self._taskset = shutil.which("taskset")

    def prepare(self, nproc: int) -> dict[str, object]:
        if self.fs.exists(self.job_rel):
            old = self.fs.cgroup(self.job_rel)
            if old.populated():
                # Our lock is held, so these belong to a supervisor that died: end them.
                log.warning("job_cgroup_stale", cgroup=str(old))
                old.kill()
                wait_unpopulated([old], 10.0)
        self.job = self.fs.create(self.job_rel, exist_ok=True)
        for lr in range(nproc):
            self.leaves[lr] = self.fs.create(f"{self.job_rel}/rank-{lr}", exist_ok=True)
        return {"cgroup": self.job.rel, "mount": self.fs.mount}

    def _apply_limits(self, leaf: Cgroup, limits: RankLimits) -> None:
        files = limits.cgroup_files()
        if not files or self._limits_state.get("applied") is False:
            return
        ctrl_of = {"cpu.weight": "cpu", "cpu.max": "cpu", "cpuset.cpus": "cpuset",
                   "memory.high": "memory", "memory.max": "memory"}
        wanted = sorted({ctrl_of[f] for f in files})
        try:
            self.fs.enable_controllers(leaf.rel, wanted)
            for name, value in files.items():
                leaf.write(name, value)
            self._limits_state.update(applied=True)
        except AiosError as exc:
            # The hybrid development hosts have no cpu/memory controllers in cgroup v2.
            self._limits_state.update(applied=False, reason=str(exc))
            log.warning("rank_limits_unavailable", cgroup=str(leaf), error=str(exc))

    def start(self, reqs: Sequence[LaunchRequest]) -> list[RankProc]:
        procs = []
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for req in reqs:
                leaf = self.leaves[req.local_rank]
                self._apply_limits(leaf, req.limits)
                prefix: list[str] = []
                if req.cpus and self._taskset:
                    prefix += [self._taskset, "-c", ",".join(map(str, req.cpus))]
                if self._setpriv:
                    prefix += [self._setpriv, "--pdeathsig", "KILL", "--"]
                r, w = os.pipe2(os.O_CLOEXEC)
                procs_file = str(self.fs.root.path(leaf.file("cgroup.procs")))
                argv = ["sh", "-c", TRAMPOLINE, procs_file, req.cwd, *prefix, *req.argv]
                try:
                    pid = os.posix_spawn(
                        "/bin/sh", argv, dict(req.env),
                        file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                      (os.POSIX_SPAWN_DUP2, w, 1),
                                      (os.POSIX_SPAWN_DUP2, w, 2)],
                        setsid=True,
                    )
                finally:
                    os.close(w)
                procs.append(RankProc(req.rank, req.local_rank, pid, _pidfd(pid), out_fd=r, cgroup=leaf,
                                      oom_before=_oom_kills(leaf)))
        finally:
            os.close(devnull)
        return procs

    @property
    def limits_state(self) -> dict[str, object]:
        return dict(self._limits_state)

    def reap(self, proc: RankProc) -> ExitStatus:
        if proc.status is None:
            if proc.pidfd is not None:
                res = os.waitid(os.P_PIDFD, proc.pidfd, os.WEXITED)
                assert res is not None
                proc.status = ExitStatus.from_waitid(res.si_code, res.si_status)
            else:
                _, st = os.waitpid(proc.pid, 0)
                code = os.waitstatus_to_exitcode(st)
                proc.status = ExitStatus(code >= 0, abs(code))
        return proc.status

    def oom_kills(self, proc: RankProc) -> int:
        return _oom_kills(proc.cgroup) - proc.oom_before

    def signal_all(self, procs: Sequence[RankProc], sig: int) -> None:
        for leaf in self.leaves.values():
            try:
                pids = leaf.procs()
            except AiosError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def kill_all(self, procs: Sequence[RankProc]) -> None:
        if self.job is not None:
            self.job.kill()

    def wait_empty(self, procs: Sequence[RankProc], timeout_s: float) -> bool:
        return self.job is None or wait_unpopulated([self.job], timeout_s)

    def leftover_pids(self, procs: Sequence[RankProc]) -> list[int]:
        out: list[int] = []
        for leaf in self.leaves.values():
            try:
                out += leaf.procs()
            except AiosError:
                pass
        return out

    def finish_gang(self, procs: Sequence[RankProc]) -> None:
        pass

    def cleanup(self) -> None:
        """Remove the rank leaves and the job cgroup (empty by now); the class cgroup and
        aios-jobs.slice stay for other jobs. Anything still inside (the supervisor failed
        between start and teardown) is killed first: no rank outlives its supervisor."""
        if self.job is not None:
            try:
                if self.job.populated():
                    self.job.kill()
                    wait_unpopulated([self.job], 10.0)
            except AiosError as exc:
                log.warning("cgroup_kill_failed", cgroup=str(self.job), error=str(exc))
        for leaf in self.leaves.values():
            try:
                self.fs.remove(leaf.rel)
            except AiosError as exc:
                log.warning("cgroup_remove_failed", cgroup=str(leaf), error=str(exc))
        if self.job is not None:
            try:
                self.fs.remove(self.job.rel)
            except AiosError as exc:
                log.warning("cgroup_remove_failed", cgroup=str(self.job), error=str(exc))


# -- systemd -------------------------------------------------------------------------------------


def unit_escape(name: str) -> str:
    """systemd-escape for one slice path component: '-' separates slice levels."""
    out = []
    for ch in name:
        if ch.isalnum() or ch in ":_.":
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return "".join(out)


def jobs_slice(cls: str) -> str:
    """aios-<class>-jobs.slice: under aios-<class>.slice (the class), under aios.slice."""
    return f"aios-{unit_escape(cls)}-jobs.slice"


def unit_name(key: str, restart: int, rank: int) -> str:
    return f"aios-job-{unit_escape(key)}-g{restart}-r{rank}.service"


def own_cgroup() -> str:
    """This process's cgroup v2 path, relative to the mount."""
    return parse_proc_cgroup(SysRoot("/").read_text("/proc/self/cgroup")).get("", "").strip("/")


def supervisor_scope_name(key: str, pid: int) -> str:
    """The scope that holds the supervisor: the pid makes it unique per supervisor, so a new one
    never collides with a dead one's scope that systemd has not collected yet. Plain characters
    only (others become '_'; the pid keeps it unique): the name also travels inside systemd-run's
    --property=BindsTo=, whose parser unescapes backslashes, so unit_escape's '\\x2d' for '-' arrived
    as 'x2d' and named a unit that does not exist (seen in the VM: every rank failed to start)."""
    plain = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in key)
    return f"{SUPERVISOR_SCOPE_PREFIX}{plain}-{pid}.scope"


def systemd_run_argv(
    unit: str,
    slice_name: str,
    req: LaunchRequest,
    job_key: str,
    stop_grace_s: float,
    bind_to: str | None = None,
) -> list[str]:
    """The systemd-run command line for one rank. Pure, so tests can read it. `bind_to`: the
    supervisor's scope; BindsTo= stops the rank when the scope goes inactive (its supervisor is
    gone), After= makes that strict (systemd.unit(5): the rank can only be active while the scope
    is, and it stops before the scope is taken down)."""
    argv = [
        "systemd-run", "--quiet", "--no-ask-password",
        f"--unit={unit}", f"--slice={slice_name}",
        "--service-type=exec",
        "--property=RemainAfterExit=yes",
        "--property=KillMode=control-group",
        f"--property=TimeoutStopSec={max(1, round(stop_grace_s))}s",
        f"--property=LogExtraFields=JOB={job_key}",
        f"--property=LogExtraFields=RANK={req.rank}",
        f"--property=LogExtraFields=RESTART={req.restart}",
        f"--property=SyslogIdentifier=aios-job-{job_key}",
        f"--working-directory={req.cwd}",
    ]
    if bind_to is not None:
        argv += [f"--property=BindsTo={bind_to}", f"--property=After={bind_to}"]
    for prop in req.limits.systemd_properties():
        argv.append(f"--property={prop}")
    if req.cpus and not req.limits.allowed_cpus:
        argv.append("--property=AllowedCPUs=" + ",".join(map(str, req.cpus)))
    for k, v in sorted(req.env.items()):
        if k in _UNIT_ENV_SKIP or "\n" in v or not k:
            continue
        argv.append(f"--setenv={k}={v}")
    argv.append("--")
    argv += list(req.argv)
    return argv


class SystemdLauncher:
    """One transient service per rank (systemd-run), in aios-<class>-jobs.slice."""

    kind = "systemd"

    def __init__(self, fs: CgroupFs, job_key: str, cls: str, stop_grace_s: float) -> None:
        self.fs = fs
        self.key = job_key
        self.slice = jobs_slice(cls)
        self.grace = stop_grace_s
        self.units: list[str] = []
        self.scope: str | None = None  # the supervisor's own scope, which every rank binds to

    def prepare(self, nproc: int) -> dict[str, object]:
        if not shutil.which("systemd-run"):
            raise AiosError("systemd is PID 1 but systemd-run is not installed; use --launcher cgroup")
        longest = max(unit_name(self.key, 99999, nproc * 1024), supervisor_scope_name(self.key, 2**22), key=len)
        if len(longest) > UNIT_NAME_MAX:
            raise AiosError(f"job {self.key}: its unit names would be {len(longest)} characters, over systemd's "
                            f"{UNIT_NAME_MAX} (each '-' of the name takes 4, as \\x2d); pick a shorter --name")
        self.scope = self._supervisor_scope()
        return {"slice": self.slice, "scope": self.scope}

    def _supervisor_scope(self) -> str:
        """Move this process (the supervisor) into a scope of its own, unless it is in one already
        (a second job of the same process)."""
        pid = os.getpid()
        mine = own_cgroup()
        unit, _ = systemd.unit_of_cgroup(mine)
        if unit and unit.startswith(SUPERVISOR_SCOPE_PREFIX) and unit.endswith(f"-{pid}.scope"):
            return unit
        scope = supervisor_scope_name(self.key, pid)
        try:
            with systemd.SystemdBus() as bus:
                cgroup = systemd.start_process_scope(bus, scope, [pid], f"aios-host supervisor of job {self.key}",
                                                     SUPERVISOR_SLICE)
        except systemd.SystemdError as exc:
            raise AiosError(f"{exc}; the ranks cannot be bound to the supervisor without it "
                            "(use --launcher cgroup where the system bus is not reachable)") from None
        log.info("supervisor_scope", scope=scope, cgroup=cgroup, previous=mine)
        return scope

    def start(self, reqs: Sequence[LaunchRequest]) -> list[RankProc]:
        names = [unit_name(self.key, r.restart, r.rank) for r in reqs]
        # A unit of that name left by a crashed supervisor would make systemd-run fail.
        systemd.reset_failed(names)
        results = systemd.run_transient([systemd_run_argv(u, self.slice, r, self.key, self.grace, self.scope)
                                         for u, r in zip(names, reqs, strict=True)])
        errors = []
        for u, err in zip(names, results, strict=True):
            if err is not None:
                errors.append(f"{u}: {err}")
            else:
                self.units.append(u)
        shows = systemd.show(names, ["Id", "MainPID", "ControlGroup"]) if self.units else []
        by_id = {b.get("Id"): b for b in shows}
        procs = []
        for u, r in zip(names, reqs, strict=True):
            b = by_id.get(u, {})
            pid = int(b.get("MainPID") or 0)
            cg_path = b.get("ControlGroup") or ""
            cg = Cgroup(self.fs, cg_path.strip("/")) if cg_path else None
            proc = RankProc(r.rank, r.local_rank, pid, _pidfd(pid) if pid else None, cgroup=cg, unit=u,
                            oom_before=_oom_kills(cg))
            if u not in self.units:
                proc.started = False
                proc.status = ExitStatus(True, 126)
            procs.append(proc)
        if errors:
            log.error("unit_start_failed", errors=errors)
        return procs

    def reap(self, proc: RankProc) -> ExitStatus:
        if proc.status is not None:
            return proc.status
        assert proc.unit is not None
        # systemd learns of the exit from SIGCHLD a moment after our pidfd fires.
        deadline = time.monotonic() + 10.0
        while True:
            b = systemd.show([proc.unit], ["ExecMainCode", "ExecMainStatus", "Result", "ActiveState"])[0]
            code = int(b.get("ExecMainCode") or 0)
            if code in (os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED) or time.monotonic() > deadline:
                proc.status = ExitStatus.from_systemd(code or os.CLD_KILLED,
                                                      int(b.get("ExecMainStatus") or signal.SIGKILL))
                proc.systemd_result = b.get("Result")
                return proc.status
            time.sleep(0.01)

    def oom_kills(self, proc: RankProc) -> int:
        return _oom_kills(proc.cgroup) - proc.oom_before

    def signal_all(self, procs: Sequence[RankProc], sig: int) -> None:
        units = [p.unit for p in procs if p.unit and p.started]
        systemd.kill(units, sig)

    def kill_all(self, procs: Sequence[RankProc]) -> None:
        for p in procs:
            if p.cgroup is None:
                continue
            try:
                p.cgroup.kill()
            except AiosError:
                if p.unit:  # cgroup already gone, or no cgroup.kill (< 5.14)
                    systemd.kill([p.unit], signal.SIGKILL)

    def wait_empty(self, procs: Sequence[RankProc], timeout_s: float) -> bool:
        return wait_unpopulated([p.cgroup for p in procs if p.cgroup is not None], timeout_s)

    def leftover_pids(self, procs: Sequence[RankProc]) -> list[int]:
        out: list[int] = []
        for p in procs:
            if p.cgroup is not None:
                try:
                    out += p.cgroup.procs()
                except AiosError:
                    pass
        return out

    def finish_gang(self, procs: Sequence[RankProc]) -> None:
        units = [p.unit for p in procs if p.unit and p.started]
        if units:
            systemd.stop_and_reset(units)
            for u in units:
                if u in self.units:
                    self.units.remove(u)

    def cleanup(self) -> None:
        if self.units:
            systemd.stop_and_reset(self.units)
            self.units = []
