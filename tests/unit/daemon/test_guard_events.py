"""memory.events in the memory guard, on a fake cgroup v2 host: each guarded class's counters
reach the view, the API's status and snapshot, `aios-host status` and the metrics; a rise of the
class's own max or oom count makes its time to OOM 0 for that tick (and escalates nothing); a
missing file or key leaves the fields None."""

from __future__ import annotations

import json

from aios_host import api, metrics
from aios_host.cli.status import render_status
from aios_host.daemon.service import make_handler
from tests.unit.daemon.test_guard_loop import MIB, class_mem, steady_daemon
from tests.unit.daemon.test_loop import CG, run_ticks

ROOT_PEER = api.Peer(1, 0, 0)
FIELDS = ("memory_events_high_total", "memory_events_max_total", "memory_events_oom_total",
          "memory_events_oom_kill_total")


def events(high=0, max_=0, oom=0, oom_kill=0, group: bool = True) -> str:
    return (f"low 0\nhigh {high}\nmax {max_}\noom {oom}\noom_kill {oom_kill}\n"
            + ("oom_group_kill 0\n" if group else ""))


def started(tmp_path, **batch_events):
    """A daemon whose three classes use steady memory (not growing: no time to OOM); batch has a
    memory.max and the given memory.events (both files)."""
    root, _, d, clock = steady_daemon(tmp_path)
    root.path(f"{CG}/batch/memory.max").write_text(f"{2048 * MIB}\n")
    text = events(**batch_events)
    class_mem(root, "batch", 2000 * MIB, events=text, events_local=text)
    run_ticks(d, clock, 2)
    return root, d, clock


def cls(d, name):
    return {c.name: c for c in d.view.classes}[name]


def test_the_counters_reach_the_view_status_snapshot_and_metrics(tmp_path):
    root, d, clock = started(tmp_path, high=7, max_=3, oom=1, oom_kill=2)
    b = cls(d, "batch")
    assert (b.memory_events_high_total, b.memory_events_max_total, b.memory_events_oom_total,
            b.memory_events_oom_kill_total) == (7, 3, 1, 2)
    assert b.seconds_to_oom is None  # counts that did not move since the last tick say nothing new
    assert [getattr(cls(d, "prot"), f) for f in FIELDS] == [0, 0, 0, 0]  # the VM capture's file

    handle = make_handler(d, root)
    snap = handle({"cmd": "snapshot"}, ROOT_PEER)
    assert {c["name"]: c["memory_events_oom_kill_total"] for c in snap["classes"]}["batch"] == 2
    st = handle({"cmd": "status"}, ROOT_PEER)["status"]
    json.dumps(st)
    listed = {c["name"]: c for c in st["memory_guard_classes"]}
    # batch is listed for its counts though calm; prot and cache (all 0, not growing) are not
    assert set(listed) == {"batch"}
    assert listed["batch"]["memory_events"] == {"high": 7, "max": 3, "oom": 1, "oom_kill": 2}
    line = next(ln for ln in render_status(st) if ln.strip().startswith("batch:"))
    assert line.strip() == "batch: ok, time to OOM -, memory.events high 7 max 3 oom 1 oom_kill 2"

    reg = metrics.make_registry(lambda: d.view)
    m = {(s.name, frozenset(s.labels.items())): s.value for fam in reg.collect() for s in fam.samples}
    lab = {"class": "batch", "cgroup": "/aios.slice/batch"}
    assert m[("aios_cgroup_memory_events_total", frozenset({**lab, "event": "oom_kill"}.items()))] == 2
    assert m[("aios_cgroup_memory_events_total", frozenset({**lab, "event": "high"}.items()))] == 7
    d.shutdown()


def test_a_rise_of_max_or_oom_makes_that_class_time_to_oom_zero_for_that_tick(tmp_path):
    root, d, clock = started(tmp_path, max_=3)
    assert cls(d, "batch").seconds_to_oom is None
    for rise in ({"max_": 5}, {"max_": 5, "oom": 1}):
        text = events(**rise)
        class_mem(root, "batch", 2000 * MIB, events=text, events_local=text)
        run_ticks(d, clock, 1)
        assert cls(d, "batch").seconds_to_oom == 0.0, rise  # at its memory.max, however flat its use
        assert cls(d, "prot").seconds_to_oom is None and cls(d, "cache").seconds_to_oom is None
        st = make_handler(d, root)({"cmd": "status"}, ROOT_PEER)["status"]
        assert {c["name"]: c["seconds_to_oom"] for c in st["memory_guard_classes"]}["batch"] == 0.0
        run_ticks(d, clock, 1)  # no rise since: back to what its slope says
        assert cls(d, "batch").seconds_to_oom is None
    # high and oom_kill alone are not its limit
    text = events(high=50, max_=5, oom=1, oom_kill=4)
    class_mem(root, "batch", 2000 * MIB, events=text, events_local=text)
    run_ticks(d, clock, 1)
    assert cls(d, "batch").seconds_to_oom is None
    # shown, not acted on: the host is safe, so nothing is tightened or frozen
    assert d.view.memory_guard == "watching" and cls(d, "batch").memory_guard == "ok"
    assert root.path(f"{CG}/batch/memory.high").read_text().strip() == "max"
    assert root.path(f"{CG}/batch/cgroup.freeze").read_text().strip() == "0"
    d.shutdown()


def test_a_rise_below_the_class_its_own_events_unchanged_is_not_its_limit(tmp_path):
    """A rank's cgroup inside the class hit its own memory.max: memory.events (hierarchical) rises,
    memory.events.local does not."""
    root, d, clock = started(tmp_path)
    class_mem(root, "batch", 2000 * MIB, events=events(max_=4, oom=1, oom_kill=1), events_local=events())
    run_ticks(d, clock, 1)
    b = cls(d, "batch")
    assert b.seconds_to_oom is None
    assert (b.memory_events_max_total, b.memory_events_oom_kill_total) == (4, 1)  # shown: the subtree's
    class_mem(root, "batch", 2000 * MIB, events=events(max_=5, oom=1, oom_kill=1), events_local=events(max_=1))
    run_ticks(d, clock, 1)
    assert cls(d, "batch").seconds_to_oom == 0.0


def test_without_memory_events_local_memory_events_decides(tmp_path):
    """Before 5.2 there is no memory.events.local and memory.events counted the cgroup's own."""
    root, d, clock = started(tmp_path, max_=1)
    root.path(f"{CG}/batch/memory.events.local").unlink()
    run_ticks(d, clock, 1)
    assert cls(d, "batch").seconds_to_oom is None
    class_mem(root, "batch", 2000 * MIB, events=events(max_=2))
    run_ticks(d, clock, 1)
    assert cls(d, "batch").seconds_to_oom == 0.0


def test_a_missing_file_or_key_leaves_the_fields_none_and_never_errors(tmp_path):
    root, d, clock = started(tmp_path)
    for f in ("memory.events", "memory.events.local"):
        root.path(f"{CG}/batch/{f}").unlink()
    # an older kernel's file: no oom_kill (before 4.13) and no oom_group_kill (before 4.19)
    old = "low 0\nhigh 2\nmax 1\noom 0\n"
    class_mem(root, "cache", 1000 * MIB, events=old, events_local=old)
    run_ticks(d, clock, 2)
    assert d.view.last_error is None
    assert [getattr(cls(d, "batch"), f) for f in FIELDS] == [None] * 4
    assert [getattr(cls(d, "cache"), f) for f in FIELDS] == [2, 1, 0, None]
    st = make_handler(d, root)({"cmd": "status"}, ROOT_PEER)["status"]
    line = next(ln for ln in render_status(st) if ln.strip().startswith("cache:"))
    assert line.strip() == "cache: ok, time to OOM -, memory.events high 2 max 1 oom 0"  # oom_kill unknown: left out
    reg = metrics.make_registry(lambda: d.view)
    got = {(s.labels["class"], s.labels["event"]) for fam in reg.collect() for s in fam.samples
           if s.name == "aios_cgroup_memory_events_total"}
    assert ("cache", "oom_kill") not in got and not any(c == "batch" for c, _ in got)
    assert ("cache", "max") in got

    # a class with no guard reading at all (no memory.current) keeps None too, as before
    root.path(f"{CG}/batch/memory.current").unlink()
    run_ticks(d, clock, 1)
    assert d.view.last_error is None and cls(d, "batch").memory_events_max_total is None
    d.shutdown()
