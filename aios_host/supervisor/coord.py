"""The agents of one job on several hosts agree through torch's own c10d TCPStore.

aios-host on each host is the local agent (like torchrun's elastic agent): node 0's agent hosts a
TCPStore on hosts[0]:rdzv_port, the others connect to it. Keys are per gang generation g:

    g<g>/port      MASTER_PORT of generation g (node 0 reserves it; the others wait for it)
    g<g>/nfail     add()ed by every agent whose local gang failed; the one that gets 1 writes
    g<g>/cause     the cause (JSON), so every host reports the same first failure
    g<g>/nok       add()ed by every agent whose local ranks all exited 0
    exit           add()ed by every agent at the end; node 0 keeps the store up until all did

The ranks themselves rendezvous with torch.distributed's env:// (TCPStore on MASTER_ADDR:
MASTER_PORT, hosted by global rank 0), exactly as under torchrun. One host failing ends the gang
on every host within one poll interval of the agents, instead of waiting for collective timeouts.
A single-host job uses LocalCoordinator and never imports torch.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from aios_host.errors import AiosError
from aios_host.log import get_logger
from aios_host.supervisor.causes import Cause

log = get_logger("aios_host.supervisor.coord")

POLL_S = 0.1


class LocalCoordinator:
    nnodes = 1
    node_rank = 0
    poll_s: float | None = None

    def start(self) -> None:
        pass

    def publish_port(self, gen: int, port: int) -> None:
        pass

    def wait_port(self, gen: int, timeout_s: float) -> int:
        raise AssertionError("a single-host job reserves its own port")

    def announce_failure(self, gen: int, cause: Cause) -> Cause:
        return cause

    def peer_failure(self, gen: int) -> Cause | None:
        return None

    def report_success(self, gen: int) -> None:
        pass

    def all_succeeded(self, gen: int) -> bool:
        return True

    def close(self, timeout_s: float = 0.0) -> None:
        pass


class StoreCoordinator:
    poll_s = POLL_S

    def __init__(self, master: str, port: int, nnodes: int, node_rank: int, job: str,
                 timeout_s: float = 300.0) -> None:
        self.master = master
        self.port = port
        self.nnodes = nnodes
        self.node_rank = node_rank
        self.job = job
        self.timeout_s = timeout_s
        self.store: Any = None
        self._failed: dict[int, Cause] = {}

    def start(self) -> None:
        from torch.distributed import TCPStore

        try:
            self.store = TCPStore(
                self.master, self.port, world_size=None, is_master=self.node_rank == 0,
                timeout=timedelta(seconds=self.timeout_s), wait_for_workers=False,
            )
        except (RuntimeError, OSError) as exc:
            role = "host" if self.node_rank == 0 else "reach"
            raise AiosError(f"job {self.job}: cannot {role} the agents' store at {self.master}:{self.port} "
                            f"({exc}); check hosts and rdzv_port") from None
        # Every agent must run the same job: a node 1 of another spec would corrupt the gang.
        self.store.set(f"spec/{self.node_rank}", self.job)
        log.info("agents_store", master=self.master, port=self.port, node=self.node_rank)

    def _k(self, gen: int, what: str) -> str:
        return f"{self.job}/g{gen}/{what}"

    def publish_port(self, gen: int, port: int) -> None:
        self.store.set(self._k(gen, "port"), str(port))

    def wait_port(self, gen: int, timeout_s: float) -> int:
        key = self._k(gen, "port")
        deadline = time.monotonic() + timeout_s
        while not self.store.check([key]):
            if time.monotonic() > deadline:
                raise AiosError(f"job {self.job}: node 0 published no MASTER_PORT within {timeout_s:g}s")
            time.sleep(0.02)
        return int(self.store.get(key).decode())

    def announce_failure(self, gen: int, cause: Cause) -> Cause:
        """Record our failure; return the gang's first failure (ours if we were first)."""
        n = self.store.add(self._k(gen, "nfail"), 1)
        if n == 1:
            self.store.set(self._k(gen, "cause"), json.dumps(cause.to_dict()))
            self._failed[gen] = cause
            return cause
        return self._read_cause(gen) or cause

    def _read_cause(self, gen: int) -> Cause | None:
        key = self._k(gen, "cause")
        deadline = time.monotonic() + 10.0
        while not self.store.check([key]):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        try:
            return Cause.from_dict(json.loads(self.store.get(key).decode()))
        except (ValueError, KeyError):
            return None

    def peer_failure(self, gen: int) -> Cause | None:
        if gen in self._failed:
            return self._failed[gen]
        if not self.store.check([self._k(gen, "nfail")]):
            return None
        cause = self._read_cause(gen)
        if cause is not None:
            self._failed[gen] = cause
        return cause

    def report_success(self, gen: int) -> None:
        self.store.add(self._k(gen, "nok"), 1)

    def all_succeeded(self, gen: int) -> bool:
        return int(self.store.add(self._k(gen, "nok"), 0)) >= self.nnodes

    def close(self, timeout_s: float = 30.0) -> None:
        if self.store is None:
            return
        try:
            self.store.add(f"{self.job}/exit", 1)
            if self.node_rank == 0:
                # Keep the store up until every agent has read what it needs.
                deadline = time.monotonic() + timeout_s
                while int(self.store.add(f"{self.job}/exit", 0)) < self.nnodes:
                    if time.monotonic() > deadline:
                        log.warning("agents_exit_timeout", job=self.job)
                        break
                    time.sleep(0.05)
        except (RuntimeError, OSError) as exc:
            log.info("agents_store_closed", error=str(exc))
        self.store = None
