"""Which cgroups and processes each class covers on this host.

- match.cgroup / unit / slice: existing cgroups, found by glob on their path or name; the class's
  limits are written on them (divided equally when several match).
- otherwise (comm / exe / job, or nothing): the class cgroup <managed_root>/<name>, created by
  apply; processes matched by comm / exe / job label are moved into it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from aios_host.kernel.cgroup import Cgroup, CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.policy.regex import compile_regex
from aios_host.policy.schema import ClassSpec, Policy

JOB_ENV = b"AIOS_JOB="


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


def _matching_pids(root: SysRoot, spec: ClassSpec) -> tuple[int, ...]:
    m = spec.match
    if not (m.comm or m.exe or m.job):
        return ()
    comm_re = compile_regex(m.comm) if m.comm else None
    exe_re = compile_regex(m.exe) if m.exe else None
    pids = []
    for entry in root.listdir("/proc"):
        if not entry.isdigit() or entry == "1":
            continue
        pid = int(entry)
        try:
            if comm_re and not comm_re.search((root.read_optional(f"/proc/{pid}/comm") or "").strip()):
                continue
            if exe_re:
                try:
                    exe = root.readlink(f"/proc/{pid}/exe")
                except Exception:  # noqa: BLE001 - kernel threads have no exe; gone pids too
                    continue
                if not exe_re.search(exe):
                    continue
            if m.job:
                env = root.path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if JOB_ENV + m.job.encode() not in env:
                    continue
        except OSError:
            continue  # exited while we looked
        pids.append(pid)
    return tuple(sorted(pids))


def resolve_targets(fs: CgroupFs, policy: Policy) -> dict[str, ClassTarget]:
    all_cgroups = list(fs.walk())
    by_rel = {cg.rel: cg for cg in all_cgroups}
    managed = policy.host.managed_root.strip("/")
    targets = {}
    for spec in policy.classes:
        if _matches_existing(spec):
            targets[spec.name] = ClassTarget(spec.name, _existing(fs, spec, all_cgroups, by_rel), owned=False)
        else:
            targets[spec.name] = ClassTarget(
                spec.name, (f"{managed}/{spec.name}",), owned=True,
                move_pids=_matching_pids(fs.root, spec),
            )
    return targets
