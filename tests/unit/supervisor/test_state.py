from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.errors import AiosError, NotFoundError
from aios_host.kernel.root import SysRoot
from aios_host.supervisor.state import JobState, JobStore, RankState


def _state(key: str, name: str) -> JobState:
    return JobState(key=key, name=name, node_rank=0, nnodes=1, nproc=2, world_size=2, supervisor_pid=1,
                    launcher="cgroup", backend="gloo", cls="training",
                    ranks=[RankState(0, 0, pid=10), RankState(1, 1, pid=11)])


def test_roundtrip_and_find(tmp_path: Path) -> None:
    store = JobStore(SysRoot(tmp_path))
    store.save(_state("a", "a"))
    store.save(_state("b.node0", "b"))
    store.save(_state("b.node1", "b"))
    store.save(_state("bb", "bb"))
    assert store.state_path("a") == tmp_path / "run/aios-host/jobs/a.json"
    assert store.rank_log("a", 1) == tmp_path / "var/log/aios-host/jobs/a/rank-1.log"
    loaded = store.load("a")
    assert loaded.ranks[1].pid == 11 and loaded.active
    assert [s.key for s in store.find("b")] == ["b.node0", "b.node1"]
    with pytest.raises(NotFoundError, match="no job 'c'"):
        store.find("c")


def test_lock_is_exclusive_and_tells_who_holds_it(tmp_path: Path) -> None:
    store = JobStore(SysRoot(tmp_path))
    store.save(_state("a", "a"))
    fd = store.lock("a")
    assert store.is_locked("a")
    with pytest.raises(AiosError, match=r"job a is already running \(supervisor pid 1, starting\)"):
        store.lock("a")
    import os

    os.close(fd)
    assert not store.is_locked("a")


def test_corrupt_state_is_one_line(tmp_path: Path) -> None:
    store = JobStore(SysRoot(tmp_path))
    store.dir.mkdir(parents=True)
    store.state_path("x").write_text("{not json")
    with pytest.raises(AiosError, match="unreadable job state"):
        store.load("x")
