"""Job state for `job ls | status | stop`: /run/aios-host/jobs/<key>.json, one file per job
instance (a job on one host; `<name>.node<k>` when a job spans hosts), written atomically by its
supervisor. /run/aios-host/jobs/<key>.lock is flocked by the live supervisor: a second `job run`
of the same name is refused, and a state file whose lock is free belongs to a dead supervisor.
Rank logs: /var/log/aios-host/jobs/<key>/rank-<r>.log.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aios_host.errors import AiosError, NotFoundError
from aios_host.kernel.root import SysRoot

JOBS_RUN_DIR = "/run/aios-host/jobs"
JOBS_LOG_DIR = "/var/log/aios-host/jobs"
VERSION = 1
ACTIVE = frozenset({"starting", "running", "restarting", "stopping"})


@dataclass
class RankState:
    rank: int
    local_rank: int
    pid: int | None = None
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

    def lock(self, key: str) -> int:
        """Hold the instance's lock for the supervisor's life; refused if another holds it."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        path = self.dir / f"{key}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._holder(key)
            raise AiosError(f"job {key} is already running{holder}; stop it first "
                            f"(aios-host job stop {key.split('.node')[0]}) or pick another --name") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def is_locked(self, key: str) -> bool:
        """True while a live supervisor holds the instance's lock."""
        path = self.dir / f"{key}.lock"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _holder(self, key: str) -> str:
        try:
            st = self.load(key)
            return f" (supervisor pid {st.supervisor_pid}, {st.status})"
        except AiosError:
            return ""

    def save(self, st: JobState) -> None:
        st.updated_unix = time.time()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        path = self.state_path(st.key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(st.to_dict(), indent=1, sort_keys=True))
        os.rename(tmp, path)  # atomic on tmpfs; no fsync: /run does not survive a reboot anyway

    def load(self, key: str) -> JobState:
        path = self.state_path(key)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no job {key!r} on this host (aios-host job ls)") from None
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
        for p in (self.state_path(key), self.dir / f"{key}.lock"):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
