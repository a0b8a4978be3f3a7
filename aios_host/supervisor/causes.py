"""Why a gang ended: the rank that failed (of several, the likeliest root cause: root_cause), and
how (exit code, signal, OOM kill, hang).

Pure: takes what the launcher observed (waitid's si_code/si_status, or systemd's ExecMainCode /
ExecMainStatus / Result, and the oom_kill counter of memory.events before and after) and says
what happened. The job's exit status follows shells and srun: the rank's exit code, 128+signal
for a signal (137 for SIGKILL and OOM kills), 124 for a hang (as timeout(1)), 143 when stopped.
"""

from __future__ import annotations

import os
import signal
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class CauseKind(StrEnum):
    SUCCESS = "success"  # every rank exited 0
    EXIT = "exit"  # a rank exited non-zero
    SIGNAL = "signal"  # a rank was killed by a signal we did not send
    OOM = "oom"  # the kernel's OOM killer took a rank (memory.events oom_kill went up)
    MEMORY_GUARD = "memory_guard"  # aios-host's memory guard killed the class cgroup the rank was in
    HANG = "hang"  # no heartbeat within heartbeat_timeout
    LAUNCH = "launch"  # the rank could not be started (cgroup, cwd, exec)
    PEER = "peer"  # another host's rank failed (multi-host gang)
    STOPPED = "stopped"  # `job stop`, SIGTERM or SIGINT to the supervisor


@dataclass(frozen=True)
class ExitStatus:
    """How one process ended: exited with `code`, or killed by signal `code`."""

    exited: bool
    code: int

    @classmethod
    def from_waitid(cls, si_code: int, si_status: int) -> ExitStatus:
        if si_code == os.CLD_EXITED:
            return cls(True, si_status)
        return cls(False, si_status)  # CLD_KILLED, CLD_DUMPED

    @classmethod
    def from_systemd(cls, exec_main_code: int, exec_main_status: int) -> ExitStatus:
        """ExecMainCode is the siginfo si_code (1 exited, 2 killed, 3 dumped)."""
        return cls(exec_main_code == os.CLD_EXITED, exec_main_status)

    @property
    def ok(self) -> bool:
        return self.exited and self.code == 0

    def __str__(self) -> str:
        return f"exit {self.code}" if self.exited else f"killed by {signal_name(self.code)}"


def signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


@dataclass(frozen=True)
class Cause:
    kind: CauseKind
    rank: int | None = None
    code: int | None = None  # exit code, or signal number for SIGNAL/OOM
    detail: str = ""
    node: int | None = None

    def describe(self) -> str:
        who = f"rank {self.rank}" if self.rank is not None else "the job"
        if self.node is not None and self.kind is not CauseKind.PEER:
            who += f" on node {self.node}"
        text = {
            CauseKind.SUCCESS: "all ranks exited 0",
            CauseKind.EXIT: f"{who} exited with status {self.code}",
            CauseKind.SIGNAL: f"{who} was killed by {signal_name(self.code or 0)}",
            CauseKind.OOM: f"{who} was killed by the OOM killer (memory.events oom_kill)",
            CauseKind.MEMORY_GUARD: f"{who} was killed by the memory guard, with its gang",
            CauseKind.HANG: f"{who} made no progress (no heartbeat)",
            CauseKind.LAUNCH: f"{who} could not be started",
            CauseKind.PEER: f"a rank on node {self.node} failed",
            CauseKind.STOPPED: "stopped on request",
        }[self.kind]
        return f"{text}: {self.detail}" if self.detail else text

    @property
    def exit_code(self) -> int:
        """The status `aios-host job run` exits with for this cause."""
        if self.kind is CauseKind.SUCCESS:
            return 0
        if self.kind is CauseKind.EXIT:
            return self.code or 1
        if self.kind in (CauseKind.SIGNAL, CauseKind.OOM, CauseKind.MEMORY_GUARD):
            return 128 + (self.code or signal.SIGKILL)
        if self.kind is CauseKind.HANG:
            return 124
        if self.kind is CauseKind.STOPPED:
            return 143
        if self.kind is CauseKind.PEER:
            return self.code or 1
        return 127 if self.code == 127 else 126  # LAUNCH, as sh: 126 cannot run, 127 not found

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value, "text": self.describe()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cause:
        return cls(CauseKind(d["kind"]), d.get("rank"), d.get("code"), d.get("detail", ""), d.get("node"))


# The launch wrapper exits with these before exec'ing the rank (see launch.py); 126/127 are also
# what a shell returns for "cannot execute" / "not found", so only 125 is unambiguously ours.
LAUNCH_CGROUP_CODE = 125
LAUNCH_FAILURE_CODES = {125: "could not join its cgroup", 126: "could not run (cwd or permission)",
                        127: "command not found"}


def classify(
    rank: int,
    status: ExitStatus,
    *,
    oom_kills: int = 0,
    systemd_result: str | None = None,
    killed_by_us: bool = False,
    started: bool = True,
    guard_kill: str | None = None,
) -> Cause:
    """The cause of one rank's end. `oom_kills`: increase of memory.events oom_kill in its cgroup
    during this run; `systemd_result`: the unit's Result= (oom-kill, signal, exit-code, ...)."""
    if status.ok:
        return Cause(CauseKind.SUCCESS, rank)
    if guard_kill is not None and not status.exited and status.code == signal.SIGKILL:
        return Cause(CauseKind.MEMORY_GUARD, rank, status.code, guard_kill)
    if not status.exited and (oom_kills > 0 or systemd_result == "oom-kill") and status.code == signal.SIGKILL:
        return Cause(CauseKind.OOM, rank, status.code)
    if systemd_result == "oom-kill":
        # systemd-oomd or the unit's OOMPolicy=kill: the whole unit was taken down.
        return Cause(CauseKind.OOM, rank, signal.SIGKILL, f"unit Result=oom-kill ({status})")
    if killed_by_us:
        return Cause(CauseKind.PEER, rank, status.code, str(status))
    if status.exited:
        if not started or status.code == LAUNCH_CGROUP_CODE:
            return Cause(CauseKind.LAUNCH, rank, status.code, LAUNCH_FAILURE_CODES.get(status.code, ""))
        return Cause(CauseKind.EXIT, rank, status.code)
    return Cause(CauseKind.SIGNAL, rank, status.code)


GUARD_KILLS = "/run/aios-host/guard-kills.json"  # written by the daemon (daemon/guard.py)


def guard_kill_of(root: Any, cgroup: str, since_unix: float, pid: int | None = None) -> str | None:
    """The memory guard's record of a kill of `cgroup` or an ancestor since `since_unix`, or of a
    cgroup that held `pid` (a rank the daemon moved into a class cgroup by match.job), as the
    detail of the cause ("memory guard killed /aios.slice/batch: available 300 MiB < 512 MiB")."""
    import json

    try:
        kills = json.loads(root.read_optional(GUARD_KILLS) or "[]")
    except ValueError:
        return None
    for k in reversed(kills if isinstance(kills, list) else []):
        if not isinstance(k, dict):
            continue
        cg, at = str(k.get("cgroup", "")), k.get("at_unix", 0)
        pids = k.get("pids")
        held = pid is not None and isinstance(pids, list) and pid in pids
        if isinstance(at, int | float) and at >= since_unix and (held or cgroup == cg or cgroup.startswith(cg + "/")):
            return f"memory guard killed {cg}: {k.get('reason', '')}"
    return None


def root_cause(failures: list[Cause]) -> Cause:
    """Of several ranks found failed at once, the likeliest root cause: an OOM kill or a signal
    nobody in the gang sent, then an exit code other than 1, then exit 1 or SIGABRT (what a rank
    whose peer vanished in the middle of a collective ends with: an uncaught RuntimeError from
    gloo/NCCL, or std::terminate when gloo's I/O thread throws). Ties go to the first observed.
    The others are named in the detail."""
    def rank_of(c: Cause) -> int:
        if c.kind is CauseKind.SIGNAL and c.code == signal.SIGABRT:
            return 2
        if c.kind in (CauseKind.MEMORY_GUARD, CauseKind.OOM, CauseKind.SIGNAL, CauseKind.LAUNCH, CauseKind.HANG):
            return 0
        if c.kind is CauseKind.EXIT and c.code != 1:
            return 1
        return 2

    best = min(failures, key=rank_of)  # min() keeps the first of equals
    others = [c for c in failures if c is not best and c.rank is not None]
    if not others:
        return best
    also = ", ".join(f"rank {c.rank} {c.describe().split(' ', 2)[2]}" for c in others)
    detail = f"{best.detail}; " if best.detail else ""
    return Cause(best.kind, best.rank, best.code, f"{detail}also: {also}", best.node)
