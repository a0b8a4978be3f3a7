"""Job state for `job ls | status | stop`: /run/aios-host/jobs/<key>.json, one file per job
instance (a job on one host; `<name>.node<k>` when a job spans hosts), written atomically by its
supervisor. /run/aios-host/jobs/<key>.lock is flocked by the live supervisor: a second `job run`
of the same name is refused, and a state file whose lock is free belongs to a dead supervisor.
The lock file holds "PID STARTTIME" of its holder, so that `job stop` signals the process that
holds the lock, not whatever process has the pid a stale state file names.
Rank logs: /var/log/aios-host/jobs/<key>/rank-<r>.log.

Only root can write these directories. State and lock files are made world-readable whatever the
umask, so that `job ls | status` work for every user (rank logs keep the umask's mode: they may
hold secrets); a non-root `job run | stop` fails with one line naming what it cannot write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aios_host.errors import AiosError, KernelError, NotFoundError
from aios_host.kernel.procfs import pid_alive, read_pid_stat
from aios_host.kernel.root import SysRoot

JOBS_RUN_DIR = "/run/aios-host/jobs"
JOBS_LOG_DIR = "/var/log/aios-host/jobs"
VERSION = 1
ACTIVE = frozenset({"starting", "running", "restarting", "stopping"})
DEAD = "dead (supervisor gone)"
NEEDS_ROOT = "job run and job stop need root"
# Pids are real processes even when --root points at a test tree: always the host's /proc.
HOST = SysRoot("/")


def pid_start(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None when it is gone."""
    st = read_pid_stat(HOST, pid)
    return st.start_ticks if st else None


def _os_error(op: str, path: Path, exc: OSError) -> KernelError:
    detail = NEEDS_ROOT if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
    return KernelError(op, path, exc.errno or errno.EIO, detail)


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """mkdir -p with `mode` on every directory it creates (mkdir's mode is masked by the umask;
    a root umask of 077 would hide job states from `job ls` of other users)."""
    missing = []
    p = path
    while True:
        try:
            os.stat(p)
            break
        except FileNotFoundError:
            missing.append(p)
            p = p.parent
        except OSError as exc:  # a parent we may not search, e.g. a 0700 /run/aios-host
            raise _os_error("stat", p, exc) from None
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
            os.chmod(d, mode)
        except FileExistsError:
            pass  # made by a concurrent `job run`
        except OSError as exc:
            raise _os_error("mkdir", d, exc) from None


@dataclass
class RankState:
    rank: int
    local_rank: int
    pid: int | None = None
    pid_start: int | None = None  # /proc/PID/stat starttime: tells the rank from a reused pid
    unit: str | None = None
    cgroup: str | None = None  # path relative to the cgroup2 mount
    cpus: list[int] = field(default_factory=list)
    gpu: int | None = None
    status: str = "starting"  # starting | running | exited | failed | killed
    exit: str | None = None
    last_step: int | None = None
    step_s: float | None = None


@dataclass
class JobState:
    key: str
    name: str
    node_rank: int
    nnodes: int
    nproc: int
    world_size: int
    supervisor_pid: int
    launcher: str  # "cgroup" | "systemd"
    backend: str
    cls: str
    label: str = ""  # what a policy class's match.job names (spec.label, else the job's name)
    guard_notice: str | None = None  # the memory guard's pre-kill signal to the ranks (spec)
    guard_grace_s: float = 10.0
    supervisor_start: int | None = None  # /proc/PID/stat starttime of supervisor_pid
    supervisor_unit: str | None = None  # systemd launcher: the scope the ranks are bound to
    status: str = "starting"  # starting | running | restarting | stopping | succeeded | failed | stopped
    restart: int = 0
    max_restarts: int = 0
    stop_grace: float = 10.0
    master_addr: str = ""
    master_port: int = 0
    cgroup: str | None = None  # the job instance's cgroup (cgroup launcher)
    cgroup_mount: str | None = None
    log_dir: str = ""
    spec_file: str | None = None
    command: list[str] = field(default_factory=list)
    started_unix: float = field(default_factory=time.time)
    updated_unix: float = field(default_factory=time.time)
    exit_code: int | None = None
    cause: dict[str, Any] | None = None
    causes: list[dict[str, Any]] = field(default_factory=list)  # one per ended gang, in order
    stragglers: list[dict[str, Any]] = field(default_factory=list)
    hangs: list[dict[str, Any]] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)
    ranks: list[RankState] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobState:
        d = dict(d)
        d.pop("version", None)
        ranks = [RankState(**r) for r in d.pop("ranks", [])]
        return cls(**d, ranks=ranks)


class JobStore:
    def __init__(self, root: SysRoot) -> None:
        self.root = root
        self.dir = Path(root.path(JOBS_RUN_DIR))
        self.log_root = Path(root.path(JOBS_LOG_DIR))

    def state_path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def log_dir(self, key: str) -> Path:
        return self.log_root / key

    def rank_log(self, key: str, rank: int) -> Path:
        return self.log_dir(key) / f"rank-{rank}.log"

    def run_dir(self, key: str) -> Path:
        """Per-instance runtime files: the health socket, the detached spec."""
        return self.dir / key

    def lock_path(self, key: str) -> Path:
        return self.dir / f"{key}.lock"

    def lock(self, key: str) -> int:
        """Hold the instance's lock for the supervisor's life; refused if another holds it. Taken
        before anything of the instance is written: of two `job run` of one name, the loser has
        changed nothing."""
        make_dirs(self.dir)
        path = self.lock_path(key)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise _os_error("open", path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AiosError(f"job {key} is already running{self._holder(key)}; stop it first "
                                f"(aios-host job stop {key.split('.node')[0]}) or pick another --name") from None
            if self._same_file(fd, path):
                break
            os.close(fd)  # `job stop` removed the file between our open and flock: the new one counts
        self._write_holder(fd)
        return fd

    def adopt_lock(self, key: str, fd: int) -> int:
        """Take over the lock that `job run --detach` took for this instance and handed to us (the
        detached supervisor) as an inherited fd: the lock never lapses between the two."""
        path = self.lock_path(key)
        if not self._same_file(fd, path):
            raise AiosError(f"--lock-fd {fd}: not the lock of job {key} ({path})")
        # A rank that inherited the fd would keep the job "locked" after the supervisor died.
        os.set_inheritable(fd, False)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: a no-op that proves it
        except BlockingIOError:
            raise AiosError(f"--lock-fd {fd}: job {key}'s lock is held by another process") from None
        self._write_holder(fd)
        return fd

    @staticmethod
    def _same_file(fd: int, path: Path) -> bool:
        try:
            a, b = os.fstat(fd), os.stat(path)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    @staticmethod
    def _write_holder(fd: int) -> None:
        os.fchmod(fd, 0o644)  # readable by `job ls` of any user whatever the umask
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {pid_start(os.getpid()) or 0}\n".encode(), 0)

    def is_locked(self, key: str) -> bool:
        """True while a live supervisor holds the instance's lock."""
        path = self.lock_path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error("open", path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def holder_pid(self, key: str) -> int | None:
        """The pid of the process that holds the instance's lock, None when the lock is free or
        its holder cannot be told (it is between taking the lock and writing its pid)."""
        if not self.is_locked(key):
            return None
        try:
            pid_s, start_s = self.lock_path(key).read_text().split()
            pid, start = int(pid_s), int(start_s)
        except (OSError, ValueError):
            return None
        return pid if pid > 1 and pid_alive(HOST, pid, start or None) else None

    def live_status(self, st: JobState) -> str:
        """The status `job ls | status` show: the recorded one, unless the supervisor that should
        write it is gone (its lock is free), or another supervisor of the name has started since."""
        if not st.active:
            return st.status
        if not self.is_locked(st.key):
            return DEAD
        holder = self.holder_pid(st.key)
        if holder is not None and holder != st.supervisor_pid:
            return f"starting (supervisor pid {holder})"
        return st.status

    def live_rank_status(self, st: JobState, rs: RankState) -> str:
        """A rank's status; with its supervisor gone, what /proc says of the recorded pid instead."""
        if rs.status not in ("starting", "running") or self.live_status(st) != DEAD:
            return rs.status
        return "running (orphan)" if pid_alive(HOST, rs.pid, rs.pid_start) else "gone"

    def require_writable(self, action: str) -> None:
        """One line before anything is done, when this user cannot change job states."""
        if not os.access(self.dir, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            raise AiosError(f"{self.dir}: not writable by uid {os.geteuid()}; aios-host job {action} needs root")

    def _holder(self, key: str) -> str:
        pid = self.holder_pid(key)
        if pid is None:
            return ""
        try:
            st = self.load(key)
        except AiosError:
            st = None
        if st is not None and st.supervisor_pid == pid:
            return f" (supervisor pid {pid}, {st.status})"
        return f" (supervisor pid {pid}, starting)"

    def save(self, st: JobState) -> None:
        st.updated_unix = time.time()
        make_dirs(self.dir)
        path = self.state_path(st.key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps(st.to_dict(), indent=1, sort_keys=True).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.fchmod(fd, 0o644)
                os.write(fd, data)
            finally:
                os.close(fd)
            os.rename(tmp, path)  # atomic on tmpfs; no fsync: /run does not survive a reboot anyway
        except OSError as exc:
            raise _os_error("write", path, exc) from None

    def write_private(self, key: str, data: dict[str, Any]) -> Path:
        """A file for one detached supervisor (its spec), under a name no other `job run` uses."""
        make_dirs(self.dir)
        path = self.dir / f".{key}.spec.{os.getpid()}.{time.monotonic_ns()}.json"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, json.dumps(data, allow_nan=False).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error("write", path, exc) from None
        return path

    def load(self, key: str) -> JobState:
        path = self.state_path(key)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no job {key!r} on this host (aios-host job ls)") from None
        except PermissionError as exc:
            raise KernelError("read", path, exc.errno or errno.EACCES, "run as root") from None
        except (OSError, ValueError) as exc:
            raise AiosError(f"{path}: unreadable job state ({exc}); remove it") from None
        if data.get("version") != VERSION:
            raise AiosError(f"{path}: job state version {data.get('version')!r}, expected {VERSION}")
        try:
            return JobState.from_dict(data)
        except TypeError as exc:
            raise AiosError(f"{path}: malformed job state ({exc}); remove it") from None

    def keys(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def find(self, name: str) -> list[JobState]:
        """The instances of job `name` on this host: `name` itself and `name.node<k>`."""
        keys = [k for k in self.keys() if k == name or k.startswith(f"{name}.node")]
        if not keys:
            raise NotFoundError(f"no job {name!r} on this host (aios-host job ls)")
        return [self.load(k) for k in keys]

    def remove(self, key: str) -> None:
        for p in (self.state_path(key), self.lock_path(key)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
