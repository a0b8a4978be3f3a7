"""match.job: the ranks the supervisors recorded (pid + start time) and their descendants, never
what a process's environment claims."""

from __future__ import annotations

import json
from pathlib import Path

from aios_host.kernel.root import SysRoot
from aios_host.policy.targets import job_pids
from aios_host.supervisor.state import JOBS_RUN_DIR, VERSION
from tests.unit.fixtures import put


def _proc(root: Path, pid: int, ppid: int, start: int, state: str = "S", comm: str = "python") -> None:
    # comm may hold ") " itself: the parser counts fields from the last ')'
    fields = [state, str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 10
    put(root, f"/proc/{pid}/stat", f"{pid} ({comm}) " + " ".join(fields) + "\n")
    put(root, f"/proc/{pid}/environ", "AIOS_JOB=train\0")


def _job(root: Path, key: str, label: str, status: str, ranks: list[tuple[int, int]]) -> None:
    state = {
        "version": VERSION, "key": key, "name": key, "node_rank": 0, "nnodes": 1, "nproc": len(ranks),
        "world_size": len(ranks), "supervisor_pid": 10, "launcher": "cgroup", "backend": "gloo", "cls": "",
        "label": label, "status": status,
        "ranks": [{"rank": i, "local_rank": i, "pid": p, "pid_start": s} for i, (p, s) in enumerate(ranks)],
    }
    put(root, f"{JOBS_RUN_DIR}/{key}.json", json.dumps(state))


def test_ranks_and_their_descendants_of_active_jobs_with_the_label(tmp_path: Path) -> None:
    _proc(tmp_path, 100, 10, 5000)  # rank 0
    _proc(tmp_path, 101, 10, 5001)  # rank 1
    _proc(tmp_path, 200, 100, 6000)  # rank 0's dataloader worker
    _proc(tmp_path, 201, 200, 6001, comm="a) b")  # ... and its child
    _proc(tmp_path, 300, 1, 7000)  # claims AIOS_JOB=train in its environ, is no rank
    _proc(tmp_path, 400, 10, 8000)  # a rank of a finished job
    _proc(tmp_path, 500, 10, 9999)  # pid reused: the recorded start time was 9000
    _job(tmp_path, "train", "train", "running", [(100, 5000), (101, 5001)])
    _job(tmp_path, "old", "train", "succeeded", [(400, 8000)])
    _job(tmp_path, "other", "infer", "running", [(300, 7000)])
    _job(tmp_path, "reused", "train", "running", [(500, 9000)])
    assert job_pids(SysRoot(str(tmp_path)), "train") == {100, 101, 200, 201}
    assert job_pids(SysRoot(str(tmp_path)), "infer") == {300}
    assert job_pids(SysRoot(str(tmp_path)), "nope") == set()


def test_a_job_without_a_label_is_matched_by_its_name(tmp_path: Path) -> None:
    _proc(tmp_path, 100, 10, 5000)
    _job(tmp_path, "train", "", "running", [(100, 5000)])
    assert job_pids(SysRoot(str(tmp_path)), "train") == {100}


def test_a_zombie_rank_is_not_matched(tmp_path: Path) -> None:
    _proc(tmp_path, 100, 10, 5000, state="Z")
    _job(tmp_path, "train", "train", "running", [(100, 5000)])
    assert job_pids(SysRoot(str(tmp_path)), "train") == set()
