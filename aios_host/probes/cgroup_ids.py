"""cgroup v2 ids -> cgroup paths.

bpf_get_current_cgroup_id() returns the kernfs id of the task's cgroup v2 directory, which is the
inode number of that directory on the cgroup2 mount (Cgroup.id). The index walks the tree once
and walks it again when asked about an id it does not know (a cgroup created since), at most
once per `min_refresh_s` so that a stream of ids of removed cgroups cannot make it walk on every
lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from aios_host.errors import KernelError
from aios_host.kernel.cgroup import CgroupFs
from aios_host.log import get_logger

UNKNOWN_ID = 0  # tasks the run-queue probe has not seen switch out yet
UNKNOWN_PATH = "(unknown)"

log = get_logger("aios_host.probes")


def walk_ids(fs: CgroupFs) -> dict[int, str]:
    """{cgroup id: "/path"} of every cgroup now in the tree ("/" is the root)."""
    out: dict[int, str] = {}
    for cg in fs.walk(""):
        try:
            out[cg.id] = str(cg)
        except KernelError:
            continue  # removed while we walked
    return out


class CgroupIndex:
    def __init__(
        self,
        fs: CgroupFs,
        min_refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fs = fs
        self.min_refresh_s = min_refresh_s
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._refreshed_at: float | None = None
        self._gone: set[int] = set()  # ids a walk did not find (see covering)

    def refresh(self) -> None:
        self._paths = walk_ids(self.fs)
        self._refreshed_at = self._clock()
        log.debug("cgroup_index_refresh", cgroups=len(self._paths), mount=self.fs.mount)

    def path(self, cgroup_id: int) -> str | None:
        """The path of a live cgroup, None for one that no longer exists (or never did)."""
        if cgroup_id == UNKNOWN_ID:
            return UNKNOWN_PATH
        p = self._paths.get(cgroup_id)
        if p is not None:
            return p
        now = self._clock()
        if self._refreshed_at is None or now - self._refreshed_at >= self.min_refresh_s:
            self.refresh()
            return self._paths.get(cgroup_id)
        return None

    def resolve(self, ids: Iterable[int]) -> dict[int, str]:
        """Paths for the ids that name live cgroups (and the unknown bucket)."""
        out = {}
        for i in ids:
            p = self.path(i)
            if p is not None:
                out[i] = p
        return out

    @property
    def known(self) -> dict[int, str]:
        return dict(self._paths)

    def covering(self, ids: Iterable[int]) -> Mapping[int, str]:
        """The index (read-only), walked again first when `ids` (a probe sample's cgroups) name a
        cgroup it has not seen, at most once per min_refresh_s. An id still unknown after a walk
        (its cgroup already removed) does not cause another; so a steady host never walks the tree
        here, and a new cgroup is found by the first sample that counts it. A known id keeps its
        path: the kernel renames cgroups on v1 hierarchies only, never on cgroup2."""
        ids = set(ids)
        ids.discard(UNKNOWN_ID)
        self._gone &= ids  # forget ids the probes forgot: the set stays as small as a sample
        new = [i for i in ids if i not in self._paths and i not in self._gone]
        if new and (self._refreshed_at is None or self._clock() - self._refreshed_at >= self.min_refresh_s):
            self.refresh()
            self._gone.update(i for i in new if i not in self._paths)
        return self._paths
