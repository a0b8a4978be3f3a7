from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_host.errors import AiosError, NotFoundError
from aios_host.kernel.procfs import parse_pid_stat, pid_alive
from aios_host.kernel.root import SysRoot
from aios_host.supervisor.state import DEAD, HOST, JobState, JobStore, RankState, pid_start


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
    # the lock's holder, not the state file's pid (1): that state is an older supervisor's
    with pytest.raises(AiosError, match=rf"job a is already running \(supervisor pid {os.getpid()}, starting\)"):
        store.lock("a")
    os.close(fd)
    assert not store.is_locked("a")


def test_corrupt_state_is_one_line(tmp_path: Path) -> None:
    store = JobStore(SysRoot(tmp_path))
    store.dir.mkdir(parents=True)
    store.state_path("x").write_text("{not json")
    with pytest.raises(AiosError, match="unreadable job state"):
        store.load("x")


def test_adopted_lock_is_held_by_the_child_copy_only(tmp_path: Path) -> None:
    store = JobStore(SysRoot(tmp_path))
    parent = store.lock("a")
    child = os.dup(parent)  # what the detached supervisor inherits
    os.set_inheritable(child, True)
    os.close(parent)
    assert store.adopt_lock("a", child) == child
    assert not os.get_inheritable(child)  # ranks must not inherit it
    assert store.holder_pid("a") == os.getpid() and store.is_locked("a")
    with pytest.raises(AiosError, match="already running"):
        store.lock("a")
    other = os.open(tmp_path, os.O_RDONLY)
    with pytest.raises(AiosError, match=r"--lock-fd \d+: not the lock of job a"):
        store.adopt_lock("a", other)
    os.close(other)
    os.close(child)
    assert not store.is_locked("a") and store.holder_pid("a") is None


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_live_status(tmp_path: Path) -> None:
    store = JobStore(SysRoot(tmp_path))
    js = _state("a", "a")
    js.status, js.supervisor_pid = "running", os.getpid()
    js.ranks = [RankState(0, 0, pid=os.getpid(), pid_start=pid_start(os.getpid()), status="running"),
                RankState(1, 1, pid=_dead_pid(), status="running"),
                RankState(2, 2, pid=os.getpid(), pid_start=(pid_start(os.getpid()) or 0) + 1, status="running"),
                RankState(3, 3, pid=None, status="exited")]
    store.save(js)
    assert store.live_status(js) == DEAD  # no lock: no supervisor
    assert [store.live_rank_status(js, r) for r in js.ranks] == ["running (orphan)", "gone", "gone", "exited"]
    fd = store.lock("a")
    try:
        assert store.live_status(js) == "running"
        assert [store.live_rank_status(js, r) for r in js.ranks] == ["running"] * 3 + ["exited"]
        js.supervisor_pid = _dead_pid()  # the state is an older supervisor's; a new one holds the lock
        assert store.live_status(js) == f"starting (supervisor pid {os.getpid()})"
    finally:
        os.close(fd)
    js.status = "failed"
    assert store.live_status(js) == "failed"


@given(comm=st.text(alphabet=st.characters(blacklist_characters="\0\n"), max_size=16),
       state=st.sampled_from("RSDZTtXI"), start=st.integers(min_value=0, max_value=2**63))
def test_parse_pid_stat_any_comm(comm: str, state: str, start: int) -> None:
    fields = ["1", "1", "1", "0", "-1", "4194560", "0", "0", "0", "0", "1", "2", "0", "0", "20", "0", "1", "0"]
    text = f"4242 ({comm}) {state} {' '.join(fields)} {start} 1000 200\n"
    got = parse_pid_stat(text)
    assert (got.state, got.start_ticks) == (state, start)


@given(pid=st.integers(max_value=0))
def test_no_pid_at_or_below_zero_is_alive(pid: int) -> None:
    assert not pid_alive(HOST, pid)  # kill(0 or -N) would signal process groups


@given(delta=st.integers(min_value=1, max_value=2**40))
def test_a_reused_pid_is_not_the_recorded_process(delta: int) -> None:
    me, start = os.getpid(), pid_start(os.getpid())
    assert start is not None and pid_alive(HOST, me, start) and pid_alive(HOST, me)
    assert not pid_alive(HOST, me, start + delta)


def test_state_and_lock_files_are_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        store = JobStore(SysRoot(tmp_path))
        fd = store.lock("a")
        store.save(_state("a", "a"))
    finally:
        os.umask(old)
    os.close(fd)
    for p in (store.state_path("a"), store.lock_path("a")):
        assert p.stat().st_mode & 0o777 == 0o644, p
    d = store.dir
    while d != tmp_path:
        assert d.stat().st_mode & 0o777 == 0o755, d
        d = d.parent
