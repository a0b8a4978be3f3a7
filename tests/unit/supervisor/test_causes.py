"""Why a gang ended, and the status `job run` exits with."""

from __future__ import annotations

import os
import signal

from aios_host.supervisor.causes import Cause, CauseKind, ExitStatus, classify, root_cause


def test_exit_status_from_waitid_and_systemd() -> None:
    assert ExitStatus.from_waitid(os.CLD_EXITED, 3) == ExitStatus(True, 3)
    assert ExitStatus.from_waitid(os.CLD_KILLED, 9) == ExitStatus(False, 9)
    assert ExitStatus.from_waitid(os.CLD_DUMPED, 11) == ExitStatus(False, 11)
    assert ExitStatus.from_systemd(1, 0).ok
    assert ExitStatus.from_systemd(2, 15) == ExitStatus(False, 15)
    assert str(ExitStatus(False, 9)) == "killed by SIGKILL" and str(ExitStatus(True, 2)) == "exit 2"


def test_classification() -> None:
    assert classify(0, ExitStatus(True, 0)).kind is CauseKind.SUCCESS
    c = classify(2, ExitStatus(True, 3))
    assert (c.kind, c.rank, c.exit_code) == (CauseKind.EXIT, 2, 3)
    c = classify(1, ExitStatus(False, signal.SIGSEGV))
    assert c.kind is CauseKind.SIGNAL and c.exit_code == 128 + signal.SIGSEGV
    assert "SIGSEGV" in c.describe()
    # SIGKILL + oom_kill went up in the rank's memory.events: the OOM killer
    c = classify(1, ExitStatus(False, signal.SIGKILL), oom_kills=1)
    assert c.kind is CauseKind.OOM and c.exit_code == 137 and "OOM" in c.describe()
    assert classify(1, ExitStatus(False, signal.SIGKILL)).kind is CauseKind.SIGNAL
    assert classify(1, ExitStatus(False, signal.SIGKILL), systemd_result="oom-kill").kind is CauseKind.OOM
    assert classify(1, ExitStatus(False, signal.SIGKILL), killed_by_us=True).kind is CauseKind.PEER
    assert classify(1, ExitStatus(True, 125)).kind is CauseKind.LAUNCH
    assert classify(1, ExitStatus(True, 126), started=False).kind is CauseKind.LAUNCH


def test_exit_codes_follow_shells() -> None:
    assert Cause(CauseKind.SUCCESS).exit_code == 0
    assert Cause(CauseKind.HANG, 1).exit_code == 124
    assert Cause(CauseKind.STOPPED).exit_code == 143
    assert Cause(CauseKind.EXIT, 0, 5).exit_code == 5


def test_roundtrip() -> None:
    c = Cause(CauseKind.SIGNAL, 3, 9, "x", node=1)
    assert Cause.from_dict(c.to_dict()) == c
    assert c.to_dict()["text"] == "rank 3 on node 1 was killed by SIGKILL: x"


def test_root_cause_prefers_the_rank_that_broke_the_collective() -> None:
    peer_err = Cause(CauseKind.EXIT, 0, 1)  # gloo "Connection reset by peer" -> RuntimeError -> exit 1
    culprit = Cause(CauseKind.EXIT, 1, 3)
    c = root_cause([peer_err, culprit])
    assert c.rank == 1 and c.code == 3 and c.detail == "also: rank 0 exited with status 1"
    killed = Cause(CauseKind.SIGNAL, 2, 9)
    assert root_cause([culprit, killed]).rank == 2
    assert root_cause([Cause(CauseKind.OOM, 3, 9), killed]).rank == 3  # the first of equals
    assert root_cause([culprit]) == culprit


def test_root_cause_takes_sigabrt_for_collateral() -> None:
    # gloo's I/O thread throws when the peer's socket closes -> std::terminate -> SIGABRT.
    aborted = Cause(CauseKind.SIGNAL, 0, 6)
    culprit = Cause(CauseKind.EXIT, 1, 3)
    c = root_cause([aborted, culprit])
    assert c.rank == 1 and c.code == 3 and c.detail == "also: rank 0 was killed by SIGABRT"
    assert root_cause([aborted, Cause(CauseKind.SIGNAL, 2, 9)]).rank == 2


def test_a_rank_killed_by_the_memory_guard_names_it(tmp_path):
    import json
    import signal as sig

    from aios_host.kernel.root import SysRoot
    from aios_host.supervisor.causes import GUARD_KILLS, CauseKind, ExitStatus, classify, guard_kill_of

    root = SysRoot(tmp_path)
    path = root.path(GUARD_KILLS)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"cgroup": "/aios.slice/batch", "at_unix": 1000.0, "class": "batch",
                                 "reason": "available 300 MiB < 512 MiB", "pids": [4242, 4343]}]))
    rank_cg = "/aios.slice/batch/aios-jobs.slice/j/rank-1"
    why = guard_kill_of(root, rank_cg, since_unix=900.0)
    assert why is not None and "/aios.slice/batch" in why
    assert guard_kill_of(root, rank_cg, since_unix=1100.0) is None  # a kill before this job started
    assert guard_kill_of(root, "/aios.slice/batchy/rank-0", since_unix=0) is None  # not an ancestor
    # a rank the daemon had moved into the class (match.job): known by its pid, not its unit's cgroup
    moved = guard_kill_of(root, "/aios.slice/aios-jobs.slice/rank-1.service", since_unix=900.0, pid=4343)
    assert moved is not None and "/aios.slice/batch" in moved
    assert guard_kill_of(root, "/aios.slice/aios-jobs.slice/rank-1.service", since_unix=900.0, pid=99) is None
    cause = classify(1, ExitStatus(False, sig.SIGKILL), guard_kill=why)
    assert cause.kind is CauseKind.MEMORY_GUARD and cause.exit_code == 137
    assert "memory guard" in cause.describe()
    assert classify(1, ExitStatus(True, 1), guard_kill=why).kind is CauseKind.EXIT  # not a SIGKILL: not ours
