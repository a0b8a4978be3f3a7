"""The record of what aios-host changed: /run/aios-host/state.json.

Written before the first kernel write of an apply (atomic: temp file, fsync, rename, fsync of the
directory), so a crash at any point leaves a record that `policy rollback` can undo. /run is tmpfs:
after a reboot the kernel values are back to boot defaults and the record is gone with them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.policy.plan import Write

STATE_PATH = "/run/aios-host/state.json"
VERSION = 1


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


class StateStore:
    def __init__(self, root: SysRoot, path: str = STATE_PATH) -> None:
        self.path = Path(root.path(path))

    def load(self) -> list[ApplyRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise AiosError(f"{self.path}: unreadable state ({exc}); fix or remove it") from None
        if data.get("version") != VERSION:
            raise AiosError(f"{self.path}: state version {data.get('version')!r}, expected {VERSION}")
        return [ApplyRecord.from_dict(r) for r in data.get("applies", [])]

    def save(self, records: list[ApplyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(f".tmp.{os.getpid()}")
        body = json.dumps({"version": VERSION, "applies": [r.to_dict() for r in records]}, indent=1)
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
