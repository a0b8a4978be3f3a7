"""Which jobs the auto search follows, from the supervisors' records: by class or match.job label,
only while their supervisor holds its lock, their progress and their GPUs."""

from __future__ import annotations

import os

import pytest

from aios_host.energy.auto_jobs import AutoClass, followed_jobs
from aios_host.kernel.root import SysRoot
from aios_host.policy.schema import ClassEnergySpec
from aios_host.supervisor.state import JobState, JobStore, RankState

AUTO = ClassEnergySpec(gpu_power_limit="auto")
CLASSES = (AutoClass("train", None, (), AUTO), AutoClass("tune", "llm", (5,), AUTO))
_LOCKS: list[int] = []


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    while _LOCKS:
        os.close(_LOCKS.pop())


def _job(store: JobStore, key: str, cls: str, *, label: str = "", status: str = "running", ranks=None,
         locked: bool = True) -> None:
    if locked:
        _LOCKS.append(store.lock(key))  # the live supervisor's
    store.save(JobState(key=key, name=key, node_rank=0, nnodes=1, nproc=2, world_size=2, supervisor_pid=os.getpid(),
                        launcher="cgroup", backend="nccl", cls=cls, label=label, status=status, restart=1,
                        ranks=ranks if ranks is not None else [
                            RankState(0, 0, gpu=1, status="running", last_step=41),
                            RankState(1, 1, gpu=0, status="running", last_step=40)]))


def test_jobs_of_auto_classes_by_class_or_label_while_their_supervisor_lives(tmp_path):
    root = SysRoot(tmp_path)
    store = JobStore(root)
    _job(store, "a", "train")
    _job(store, "b", "batch", label="llm", ranks=[RankState(0, 0, status="running", last_step=3)])
    _job(store, "c", "batch")  # not an auto class
    _job(store, "d", "train", locked=False)  # its supervisor died: its record still says running
    _job(store, "e", "train", status="stopping")
    _job(store, "f", "train", status="restarting", ranks=[RankState(0, 0, gpu=2, status="starting")])
    got = {j.key: j for j in followed_jobs(root, CLASSES)}
    assert sorted(got) == ["a", "b", "f"]
    a = got["a"]
    assert (a.cls, a.status, a.restart, a.step, a.gpus) == ("train", "running", 1, 40, (0, 1))  # the slower rank
    assert (got["b"].cls, got["b"].gpus, got["b"].step) == ("tune", (5,), 3)  # no rank GPU: the class's cpu.gpus
    assert (got["f"].status, got["f"].step, got["f"].gpus) == ("restarting", None, (2,))


def test_a_rank_without_a_step_yet_means_no_step(tmp_path):
    root = SysRoot(tmp_path)
    _job(JobStore(root), "a", "train", ranks=[RankState(0, 0, gpu=0, status="running", last_step=7),
                                             RankState(1, 1, gpu=1, status="running")])
    (j,) = followed_jobs(root, CLASSES)
    assert j.step is None


def test_no_auto_class_reads_nothing_and_an_unreadable_record_is_skipped(tmp_path):
    root = SysRoot(tmp_path)
    store = JobStore(root)
    _job(store, "a", "train")
    store.state_path("zz").write_text("{not json")
    assert followed_jobs(root, ()) == []
    assert [j.key for j in followed_jobs(root, CLASSES)] == ["a"]
    assert followed_jobs(SysRoot(tmp_path / "none"), CLASSES) == []
