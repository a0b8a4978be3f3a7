"""Which cgroups and processes each class covers on this host.

- match.cgroup / unit / slice: existing cgroups, found by glob on their path or name; the class's
  limits are written on them (divided equally when several match).
- otherwise (comm / exe / job, or nothing): the class cgroup <managed_root>/<name>, created by
  apply; processes matched by comm / exe / job label are moved into it.

match.job is answered from the supervisors' own records (/run/aios-host/jobs/<key>.json, written
by root): the ranks of every active job with that label, each checked against its recorded start
time, and their descendants. Not from AIOS_JOB= in /proc/PID/environ, which the ranks do carry:
any user can set an environment variable and so put a process of theirs into a protected class,
and reading other users' environ takes CAP_DAC_READ_SEARCH, which the service does without.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from aios_host.errors import AiosError
from aios_host.kernel.cgroup import Cgroup, CgroupFs
from aios_host.kernel.procfs import read_pid_stat
from aios_host.kernel.root import SysRoot
from aios_host.policy.regex import matcher
from aios_host.policy.schema import ClassSpec, Policy


@dataclass(frozen=True)
class ClassTarget:
    name: str
    cgroups: tuple[str, ...]  # rel paths written to
    owned: bool  # True: <managed_root>/<name>, created and removed by aios-host
    move_pids: tuple[int, ...] = ()  # processes to move into the owned cgroup


def _matches_existing(spec: ClassSpec) -> bool:
    m = spec.match
    return bool(m.cgroup or m.unit or m.slice)


_GLOB_CHARS = frozenset("*?[")


def _existing(fs: CgroupFs, spec: ClassSpec, all_cgroups: list[Cgroup],
              by_rel: dict[str, Cgroup]) -> tuple[str, ...]:
    m = spec.match
    found: list[str] = []
    globs = []
    for g in m.cgroup:
        g = g.strip("/")
        if _GLOB_CHARS.isdisjoint(g):  # a plain path: one lookup, not a match against every cgroup
            if g and g in by_rel:
                found.append(g)
        else:
            globs.append(g)
    if globs or m.unit or m.slice:
        for cg in all_cgroups:
            if not cg.rel:
                continue
            if any(fnmatch.fnmatchcase(cg.rel, g) for g in globs):
                found.append(cg.rel)
            elif m.unit and fnmatch.fnmatchcase(cg.name, m.unit):
                found.append(cg.rel)
            elif m.slice and cg.name == m.slice:
                found.append(cg.rel)
    # A cgroup matched together with its ancestor would be limited twice: keep the outermost.
    outer = [r for r in sorted(set(found)) if not any(r.startswith(o + "/") for o in found if o != r)]
    return tuple(outer)


def job_pids(root: SysRoot, label: str) -> set[int]:
    """The processes of the active jobs labelled `label`: their live ranks (pid and start time as
    the supervisor recorded them) and every descendant of those."""
    from aios_host.supervisor.state import JobStore

    store = JobStore(root)
    ranks = set()
    try:
        keys = store.keys()
    except OSError:  # /run/aios-host is root's (0700): a non-root `policy diff` sees no jobs
        return ranks
    for key in keys:
        try:
            st = store.load(key)
        except AiosError:
            continue  # being rewritten, or another version's: the next resolution sees it
        if not st.active or (st.label or st.name) != label:
            continue
        for r in st.ranks:
            if r.pid and r.pid_start is not None:
                stat = read_pid_stat(root, r.pid)
                if stat is not None and stat.start_ticks == r.pid_start and stat.state not in ("Z", "X"):
                    ranks.add(r.pid)
    if not ranks:
        return ranks
    children: dict[int, list[int]] = {}
    for entry in root.listdir("/proc"):
        if entry.isdigit():
            stat = read_pid_stat(root, int(entry))
            if stat is not None:
                children.setdefault(stat.ppid, []).append(int(entry))
    out, todo = set(), list(ranks)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


class _Procs:
    """/proc as one resolution sees it: listed once, each pid's comm and exe read at most once, so
    that N classes matched by comm cost one pass over the processes, not N."""

    def __init__(self, root: SysRoot) -> None:
        self.root = root
        self._pids: list[str] | None = None
        self._comm: dict[int, str] = {}
        self._exe: dict[int, str | None] = {}

    def pids(self) -> list[str]:
        if self._pids is None:
            self._pids = [e for e in self.root.listdir("/proc") if e.isdigit()]
        return self._pids

    def comm(self, pid: int) -> str:
        c = self._comm.get(pid)
        if c is None:
            c = self._comm[pid] = (self.root.read_optional(f"/proc/{pid}/comm") or "").strip()
        return c

    def exe(self, pid: int) -> str | None:
        if pid not in self._exe:
            try:
                self._exe[pid] = self.root.readlink(f"/proc/{pid}/exe")
            except Exception:  # noqa: BLE001 - kernel threads have no exe; gone pids too
                self._exe[pid] = None
        return self._exe[pid]


def _matching_pids(procs: _Procs, spec: ClassSpec) -> tuple[int, ...]:
    m = spec.match
    if not (m.comm or m.exe or m.job):
        return ()
    comm_re = matcher(m.comm) if m.comm else None
    exe_re = matcher(m.exe) if m.exe else None
    of_job = job_pids(procs.root, m.job) if m.job else None
    candidates = sorted(str(p) for p in of_job) if of_job is not None else procs.pids()
    pids = []
    for entry in candidates:
        if entry == "1":
            continue
        pid = int(entry)
        try:
            if comm_re and not comm_re(procs.comm(pid)):
                continue
            if exe_re:
                exe = procs.exe(pid)
                if exe is None or not exe_re(exe):
                    continue
        except OSError:
            continue  # exited while we looked
        pids.append(pid)
    return tuple(sorted(pids))


def resolve_targets(fs: CgroupFs, policy: Policy) -> dict[str, ClassTarget]:
    managed = policy.host.managed_root.strip("/")
    # The tree is walked only for classes that match existing cgroups, /proc only for the others.
    all_cgroups = list(fs.walk()) if any(_matches_existing(s) for s in policy.classes) else []
    by_rel = {cg.rel: cg for cg in all_cgroups}
    procs = _Procs(fs.root)
    targets = {}
    for spec in policy.classes:
        if _matches_existing(spec):
            targets[spec.name] = ClassTarget(spec.name, _existing(fs, spec, all_cgroups, by_rel), owned=False)
        else:
            targets[spec.name] = ClassTarget(
                spec.name, (f"{managed}/{spec.name}",), owned=True,
                move_pids=_matching_pids(procs, spec),
            )
    return targets
