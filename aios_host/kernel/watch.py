"""Files watched for modification with inotify(7), so a loop re-reads them only when they change.

The kernel signals IN_MODIFY on a cgroup's cgroup.events when "populated" or "frozen" changes
(kernfs_notify; this is how systemd learns that a unit's cgroup became empty). A loop that reads
cgroup.events of 1000 cgroups every other second can instead read the few that changed. When the
watched file goes away (its cgroup removed) the kernel sends IN_IGNORED: that also counts as a
change, and the caller's next read finds the file gone.

Where a watch cannot be added (no inotify, the file absent, fs.inotify.max_user_watches reached)
`watch()` says False and the caller keeps reading on its own schedule: a watch is an optimisation,
never the only way to learn a value.
"""

from __future__ import annotations

import errno
from collections.abc import Hashable

from inotify_simple import INotify, flags

from aios_host.log import get_logger

log = get_logger("aios_host.kernel.watch")

_MASK = flags.MODIFY | flags.DELETE_SELF


class ModifyWatch:
    """inotify watches by key (the caller's name for a file): `changed()` says which were
    modified (or removed) since it was last asked. Non-blocking: it never waits."""

    def __init__(self) -> None:
        self._ino: INotify | None
        try:
            self._ino = INotify(nonblocking=True)
        except OSError as exc:  # EMFILE (max_user_instances) or no inotify in this kernel
            log.warning("inotify_unavailable", error=str(exc), effect="files are re-read on a schedule")
            self._ino = None
        self._key_of: dict[int, Hashable] = {}  # wd -> key
        self._wd_of: dict[Hashable, int] = {}  # key -> wd
        self._said_full = False

    def watch(self, key: Hashable, host_path: str) -> bool:
        """Watch the file at host_path under `key`; False when it cannot be watched."""
        if self._ino is None:
            return False
        if key in self._wd_of:
            return True
        try:
            wd = self._ino.add_watch(host_path, _MASK)
        except OSError as exc:
            if exc.errno == errno.ENOSPC and not self._said_full:
                self._said_full = True  # once: the next ones fall back the same way
                log.warning("inotify_watches_exhausted", path=host_path,
                            hint="raise fs.inotify.max_user_watches; until then files are re-read on a schedule")
            return False
        # Two paths to one inode (a cgroup matched twice) share one wd: the last key wins, and the
        # other's reads stay on their schedule through watched() being False for it.
        old = self._key_of.get(wd)
        if old is not None:
            self._wd_of.pop(old, None)
        self._key_of[wd] = key
        self._wd_of[key] = wd
        return True

    def watched(self, key: Hashable) -> bool:
        return key in self._wd_of

    def forget(self, key: Hashable) -> None:
        wd = self._wd_of.pop(key, None)
        if wd is None or self._ino is None:
            return
        self._key_of.pop(wd, None)
        try:
            self._ino.rm_watch(wd)
        except OSError:
            pass  # EINVAL: the kernel dropped it already (the file was removed)

    def changed(self) -> set[Hashable]:
        """The keys whose files were modified or removed since the last call."""
        if self._ino is None or not self._key_of:
            return set()
        out: set[Hashable] = set()
        for ev in self._ino.read(timeout=0):
            key = self._key_of.get(ev.wd)
            if key is None:
                continue
            out.add(key)
            if ev.mask & flags.IGNORED:  # the watch is gone with its file: forget it here too
                self._key_of.pop(ev.wd, None)
                self._wd_of.pop(key, None)
        return out

    def __len__(self) -> int:
        return len(self._wd_of)

    def close(self) -> None:
        if self._ino is not None:
            self._ino.close()
            self._ino = None
        self._key_of.clear()
        self._wd_of.clear()
