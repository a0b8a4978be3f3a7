"""Which jobs the `auto` GPU power search follows, and how far each has got: read from the
supervisors' records (/run/aios-host/jobs/<key>.json, written by root once a second), as
policy/targets.py's match.job reads them, never from anything a rank's user could write.

A job belongs to an auto class when its record's class is the class's name, or its label is the
class's match.job. Its progress is the step every running rank has completed (the least of their
last_step: in a synchronous job the ranks are within a step of each other), its GPUs are the ones
its ranks were placed on (else the class's cpu.gpus). A record whose supervisor is gone (its lock
is free) is a job that has ended.
"""

from __future__ import annotations

from dataclasses import dataclass

from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.policy.schema import ClassEnergySpec, Policy
from aios_host.supervisor.state import JobState, JobStore

# Statuses of a job that still runs: the search holds its setting through a restart of the gang;
# "stopping" and every end status end it.
FOLLOWED = frozenset({"starting", "running", "restarting"})


@dataclass(frozen=True)
class AutoClass:
    name: str
    label: str | None  # match.job
    gpus: tuple[int, ...]  # cpu.gpus: the GPUs when the job's ranks name none
    spec: ClassEnergySpec


@dataclass(frozen=True)
class JobProgress:
    key: str
    cls: str  # the auto class it belongs to
    status: str  # as `job ls` shows it (a dead supervisor's job is not followed at all)
    restart: int  # the gang's restart count: steps start again from 0 after one
    step: int | None  # completed by every running rank; None before each has reported one
    gpus: tuple[int, ...]


def auto_classes(policy: Policy) -> tuple[AutoClass, ...]:
    return tuple(AutoClass(c.name, c.match.job, tuple(c.cpu.gpus), c.energy) for c in policy.classes
                 if c.energy.gpu_power_limit == "auto")


def class_of(st: JobState, classes: tuple[AutoClass, ...]) -> AutoClass | None:
    for c in classes:
        if st.cls == c.name or (c.label is not None and (st.label or st.name) == c.label):
            return c
    return None


def completed_step(st: JobState) -> int | None:
    running = [r for r in st.ranks if r.status == "running"]
    if not running or any(r.last_step is None for r in running):
        return None
    return min(r.last_step for r in running if r.last_step is not None)


def progress_of(st: JobState, cls: AutoClass, status: str | None = None) -> JobProgress:
    gpus = tuple(sorted({r.gpu for r in st.ranks if r.gpu is not None})) or cls.gpus
    return JobProgress(st.key, cls.name, status or st.status, st.restart, completed_step(st), gpus)


def followed_jobs(root: SysRoot, classes: tuple[AutoClass, ...]) -> list[JobProgress]:
    """The running jobs of the auto classes, from the supervisors' records."""
    if not classes:
        return []
    store = JobStore(root)
    try:
        keys = store.keys()
    except OSError:  # /run/aios-host unreadable: no jobs to follow
        return []
    out = []
    for key in keys:
        try:
            st = store.load(key)
            cls = class_of(st, classes)
            if cls is None or not st.active:
                continue
            status = store.live_status(st)  # a free lock: the supervisor is gone
        except AiosError:
            continue  # being rewritten, or another version's: the next tick reads it again
        if status in FOLLOWED:
            out.append(progress_of(st, cls, status))
    return out
