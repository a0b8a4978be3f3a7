"""The ranks' rendezvous store after a restart, hosted before they start (as torchrun's agent does).

Under plain env:// rendezvous global rank 0 hosts the TCPStore, and the other ranks, started at
the same moment, often try to connect before it listens; torch then backs off and retries, which
costs them 0.1-0.35 s here. torchrun avoids that: its agent creates a fresh TCPStore before it
starts (or restarts) the workers and tells them with TORCHELASTIC_USE_AGENT_STORE=True, so every
rank is a client of a store that already listens.

A single-host supervisor never imports torch itself (it stays small and starts fast), so this
helper process does it: started with the first generation of a job that may restart, it imports
torch while that generation runs, and before each later generation the supervisor has it open a
fresh store on the job's MASTER_PORT. The first generation keeps rank 0 as host (waiting for the
helper's import would delay the launch by seconds). Whenever the helper is not ready or fails, the
generation falls back to rank 0 hosting: the helper only ever makes a restart faster.

Protocol, one line each way, on the helper's stdin/stdout:
    helper -> "up"                   torch is imported
    "open PORT WORLD_SIZE"           drop the previous store, listen on PORT -> "ready PORT" | "error ..."
    "close"                          drop the store, free the port -> "closed"
    EOF                              exit
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import time
from datetime import timedelta

from aios_host.log import get_logger

log = get_logger("aios_host.supervisor.storehost")

REPLY_TIMEOUT_S = 5.0


class StoreHost:
    """The supervisor's handle on the helper process."""

    def __init__(self, pid: int, to_fd: int, from_fd: int) -> None:
        self.pid = pid
        self._to = to_fd
        self._from = from_fd
        self._buf = b""
        self.up = False
        self.failed = False
        self.port: int | None = None  # of the store it holds now

    @classmethod
    def spawn(cls, env: dict[str, str], stderr_path: str = os.devnull) -> StoreHost | None:
        """Start the helper (it dies with the supervisor: PR_SET_PDEATHSIG through setpriv). Its
        stderr goes to `stderr_path` (the job's log directory), not to the user's terminal: a
        helper that cannot start only means that restarts use rank 0's store."""
        prefix = [p, "--pdeathsig", "KILL", "--"] if (p := shutil.which("setpriv")) else []
        argv = [*prefix, sys.executable, "-m", "aios_host.supervisor.storehost"]
        to_r, to_w = os.pipe2(os.O_CLOEXEC)
        from_r, from_w = os.pipe2(os.O_CLOEXEC)
        try:
            err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError:
            err = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            pid = os.posix_spawn(argv[0], argv, env, file_actions=[
                (os.POSIX_SPAWN_DUP2, to_r, 0), (os.POSIX_SPAWN_DUP2, from_w, 1), (os.POSIX_SPAWN_DUP2, err, 2)])
        except OSError as exc:
            log.warning("storehost_spawn_failed", error=str(exc))
            for fd in (to_w, from_r):
                os.close(fd)
            return None
        finally:
            for fd in (to_r, from_w, err):
                os.close(fd)
        return cls(pid, to_w, from_r)

    def _line(self, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = max(0.0, deadline - time.monotonic())  # 0: one look, never a wait
            if not select.select([self._from], [], [], left)[0]:
                return None
            chunk = os.read(self._from, 4096)
            if not chunk:
                self.failed = True
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").strip()

    def ready(self) -> bool:
        """Whether the helper has imported torch (never blocks)."""
        if not self.up and not self.failed:
            line = self._line(0.0)
            if line == "up":
                self.up = True
            elif line is not None:
                self.failed = True
        return self.up and not self.failed

    def _ask(self, command: str, want: str) -> bool:
        try:
            os.write(self._to, (command + "\n").encode())
        except OSError:
            self.failed = True
            return False
        line = self._line(REPLY_TIMEOUT_S)
        if line != want:
            log.warning("storehost_failed", command=command, reply=line)
            self.failed = True
            return False
        return True

    def open(self, port: int, world_size: int) -> bool:
        self.port = None
        if self.ready() and self._ask(f"open {port} {world_size}", f"ready {port}"):
            self.port = port
        return self.port is not None

    def close_store(self) -> None:
        """Free the port of the store it holds, if any (before the supervisor binds it again)."""
        if self.port is not None and not self.failed:
            self._ask("close", "closed")
        self.port = None

    def stop(self) -> None:
        """EOF on its stdin ends it; SIGKILL if it has not gone within a second."""
        for fd in (self._to, self._from):
            with contextlib.suppress(OSError):
                os.close(fd)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)


def main() -> int:
    """The helper itself: hold one TCPStore at a time, as told on stdin."""
    from torch.distributed import TCPStore

    out = sys.stdout
    out.write("up\n")
    out.flush()
    held: list[TCPStore] = []
    for line in sys.stdin:
        cmd, *args = line.split()
        held.clear()  # every command starts by dropping the previous generation's store
        if cmd == "open":
            port, world = int(args[0]), int(args[1])
            try:
                held.append(TCPStore("127.0.0.1", port, world, True, timedelta(seconds=300),
                                     wait_for_workers=False))
                out.write(f"ready {port}\n")
            except Exception as exc:  # noqa: BLE001 - reported to the supervisor, which falls back
                out.write(f"error {type(exc).__name__}: {exc}".replace("\n", " ") + "\n")
        elif cmd == "close":
            out.write("closed\n")
        else:
            out.write(f"error unknown command {cmd!r}\n")
        out.flush()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    raise SystemExit(main())
