"""The record of what aios-host changed: /run/aios-host/state.json.

Written before the first kernel write of an apply (atomic: temp file, fsync, rename, fsync of the
directory), so a crash at any point leaves a record that `policy rollback` can undo. /run is tmpfs:
after a reboot the kernel values are back to boot defaults and the record is gone with them.

Every read-modify-write of the file holds an exclusive flock on state.lock beside it, so a CLI
`policy apply`/`rollback` and the daemon never lose each other's records.

The daemon keeps ONE record for as long as it runs, and across its own crashes (DAEMON_RECORD): it
holds, per path, the value found before the daemon's FIRST change of it; later changes of the same
path only move `new`. After a SIGKILL the next start adopts that record, so the originals it
restores on exit are still the ones the host had before aios-host ever touched it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.policy.plan import Write

STATE_PATH = "/run/aios-host/state.json"
VERSION = 1
DAEMON_RECORD = "daemon"  # the id of the daemon's record
LIVE = ("in-progress", "applied")  # statuses whose writes are still in force on the host


def write_key(w: Write) -> tuple[str, str, str]:
    """What identifies one change: a path (and for a move which process, for an enable which
    controller: several of those share one path)."""
    return (w.op, w.path, w.new if w.op in ("move", "enable") else "")


@dataclass
class ApplyRecord:
    id: str
    policy: str
    status: str  # "in-progress" | "applied" | "undone" | "rolled-back"
    writes: list[Write]
    started_unix: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "policy": self.policy, "status": self.status,
            "started_unix": self.started_unix, "writes": [w.to_dict() for w in self.writes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ApplyRecord:
        return cls(d["id"], d["policy"], d["status"], [Write(**w) for w in d["writes"]],
                   d["started_unix"])


def _denied(path: str | os.PathLike[str]) -> AiosError:
    return AiosError(f"{path}: permission denied (needs root)")


class StateStore:
    """The journal file. Its errors never suggest removing it: it holds the only copy of the
    originals that `policy rollback` and the daemon's exit put back."""

    def __init__(self, root: SysRoot, path: str = STATE_PATH) -> None:
        self.path = Path(root.path(path))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive flock on state.lock for a whole read-modify-write (blocks until free)."""
        self._mkdir()
        lock = self.path.with_name("state.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except PermissionError:
            raise _denied(lock) from None
        except OSError as exc:
            raise AiosError(f"{lock}: cannot open the state lock ({os.strerror(exc.errno or 0)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _mkdir(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except PermissionError:
            raise _denied(self.path.parent) from None
        except OSError as exc:
            raise AiosError(f"{self.path.parent}: cannot create the state directory "
                            f"({os.strerror(exc.errno or 0)})") from None

    def _corrupt(self, reason: str) -> AiosError:
        # Not "remove it": the originals in it are what a rollback restores. Moving it aside is
        # named only as the explicit way to start afresh, and keeps the copy.
        return AiosError(f"{self.path}: corrupt journal ({reason}); it holds the originals that `aios-host "
                         f"policy rollback` restores: inspect and repair it, or to start afresh move it aside "
                         f"and keep the copy (mv {self.path} {self.path}.bad)")

    def load(self) -> list[ApplyRecord]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except PermissionError:
            raise _denied(self.path) from None
        except OSError as exc:
            raise AiosError(f"{self.path}: cannot read the journal ({os.strerror(exc.errno or 0)})") from None
        except ValueError as exc:  # not UTF-8
            raise self._corrupt(str(exc)) from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise self._corrupt(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise self._corrupt(f"a JSON {type(data).__name__}, not an object")
        if data.get("version") != VERSION:
            raise AiosError(f"{self.path}: state version {data.get('version')!r}, expected {VERSION}")
        try:
            return [ApplyRecord.from_dict(r) for r in data.get("applies", [])]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            reason = f"a record lacks {exc}" if isinstance(exc, KeyError) else f"bad record: {exc}"
            raise self._corrupt(reason) from None

    def save(self, records: list[ApplyRecord]) -> None:
        self._mkdir()
        tmp = self.path.with_suffix(f".tmp.{os.getpid()}")
        # One record per line, each by json's C encoder (indent= forces the pure-Python one: tens
        # of ms for the daemon's record under emulation, on every tick that writes).
        lines = ",\n".join(json.dumps(r.to_dict()) for r in records)
        body = f'{{"version": {VERSION}, "applies": [\n{lines}\n]}}\n'
        try:
            self._write_atomic(tmp, body)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, PermissionError):
                raise _denied(self.path) from None
            raise AiosError(f"{self.path}: cannot write the journal ({os.strerror(exc.errno or 0)})") from None

    def _write_atomic(self, tmp: Path, body: str) -> None:
        with open(tmp, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def begin(self, policy: str, writes: list[Write]) -> tuple[list[ApplyRecord], ApplyRecord]:
        records = self.load()
        rec = ApplyRecord(f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}", policy, "in-progress",
                          writes, time.time())
        records.append(rec)
        self.save(records)
        return records, rec


class JournaledValues(NamedTuple):
    """Per path, from the live records (CLI applies and the daemon's record alike, oldest first)."""

    original: dict[str, str]  # the value before aios-host's first change still in force
    last: dict[str, str]  # the value aios-host last wrote there


_JOURNALED_CACHE: dict[tuple[str, str], tuple[tuple[int, int, int], JournaledValues]] = {}


def journaled_values(store: StateStore, op: str) -> JournaledValues:
    """The journal's values of the paths written with `op`. Read without the lock: save() replaces
    the file by rename, so a read sees one whole version. decide() asks on every decision and the
    journal can hold thousands of cgroup writes: the answer is kept until the file changes (a
    rename gives it a new inode)."""
    try:
        st = store.path.stat()
    except FileNotFoundError:
        return JournaledValues({}, {})
    except PermissionError:
        raise _denied(store.path) from None
    except OSError as exc:
        raise AiosError(f"{store.path}: cannot read the journal ({os.strerror(exc.errno or 0)})") from None
    key = (str(store.path), op)
    version = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _JOURNALED_CACHE.get(key)
    if cached is None or cached[0] != version:
        out = JournaledValues({}, {})
        for rec in store.load():
            if rec.status in LIVE:
                for w in rec.writes:
                    if w.op == op:
                        if w.old is not None:
                            out.original.setdefault(w.path, w.old)
                        out.last[w.path] = w.new
        cached = _JOURNALED_CACHE[key] = (version, out)
    return JournaledValues(dict(cached[1].original), dict(cached[1].last))


class DaemonJournal:
    """The daemon's one record of originals (see the module docstring). Every method takes the lock."""

    def __init__(self, store: StateStore, policy: str) -> None:
        self.store = store
        self.policy = policy
        self._keys: dict[tuple[str, str, str], int] = {}

    def open(self) -> int:
        """Adopt the record a previous daemon left (a crash), or start one. Returns how many
        changes were adopted: those stay recorded with their first-ever originals."""
        with self.store.locked():
            records = self.store.load()
            rec = next((r for r in records if r.id == DAEMON_RECORD and r.status in LIVE), None)
            if rec is None:
                records = [r for r in records if r.id != DAEMON_RECORD]
                rec = ApplyRecord(DAEMON_RECORD, self.policy, "applied", [], time.time())
                records.append(rec)
                self.store.save(records)
            self._keys = {write_key(w): i for i, w in enumerate(rec.writes)}
            return len(rec.writes)

    def record(self, writes: Iterable[Write]) -> None:
        """Journal changes about to be made: a path seen before keeps its original `old`."""
        writes = list(writes)
        if not writes:
            return
        with self.store.locked():
            records = self.store.load()
            rec = self._mine(records)
            for w in writes:
                i = self._keys.get(write_key(w))
                if i is None:
                    self._keys[write_key(w)] = len(rec.writes)
                    rec.writes.append(w)
                else:
                    rec.writes[i] = rec.writes[i]._replace(new=w.new, reason=w.reason)
            rec.policy = self.policy
            self.store.save(records)

    def writes(self) -> list[Write]:
        with self.store.locked():
            return list(self._mine(self.store.load()).writes)

    def close(self, status: str = "rolled-back") -> None:
        """Drop the record once its originals are restored (or keep it: status "applied")."""
        with self.store.locked():
            records = self.store.load()
            if status == "applied":
                return
            self.store.save([r for r in records if r.id != DAEMON_RECORD])
            self._keys = {}

    def _mine(self, records: list[ApplyRecord]) -> ApplyRecord:
        rec = next((r for r in records if r.id == DAEMON_RECORD), None)
        if rec is None:  # removed behind our back (a CLI rollback): start again, nothing is lost
            rec = ApplyRecord(DAEMON_RECORD, self.policy, "applied", [], time.time())
            records.append(rec)
            self._keys = {}
        return rec

