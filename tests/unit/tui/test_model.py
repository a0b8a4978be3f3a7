"""model.py: the pure builders and the row ordering (sort, filter, tree and flat)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_host.tui.model import (
    COLUMN_IDS,
    HISTORY_LEN,
    CgroupReading,
    HostReading,
    Psi,
    Row,
    ViewState,
    daemon_rows,
    daemon_state,
    decision_of,
    events_of,
    host_stats,
    job_view,
    jobs_in_order,
    local_rows,
    parent_path,
    push_history,
    rate,
    sort_rows,
    step_sort,
    visible_rows,
)
from tests.unit.tui.fakes import JOBS, daemon_classes, local_tree


def test_host_cpu_usage_is_the_busy_share_between_two_readings():
    a = HostReading(4, cpu_busy_ticks=100, cpu_total_ticks=1000, memory_total_bytes=8 << 30,
                    memory_available_bytes=6 << 30)
    b = HostReading(4, cpu_busy_ticks=400, cpu_total_ticks=1400, memory_total_bytes=8 << 30,
                    memory_available_bytes=2 << 30, memory=Psi(3.5, 1.0))
    assert host_stats(None, b).cpu_usage_percent is None  # nothing to divide by yet
    h = host_stats(a, b)
    assert h.cpu_usage_percent == pytest.approx(75.0)
    assert h.memory_used_percent == pytest.approx(75.0)
    assert h.memory.some_percent == 3.5


def test_history_keeps_the_last_samples_and_skips_unmeasured_ones():
    hist: dict = {}
    for i in range(HISTORY_LEN + 5):
        hist = push_history(hist, host_stats(None, HostReading(1, 0, 0, 100, 100 - i)))
    assert len(hist["memory_used_percent"]) == HISTORY_LEN
    assert hist["memory_used_percent"][-1] == pytest.approx(HISTORY_LEN + 4)
    assert hist["cpu_usage_percent"] == ()  # never measured: no first reading to diff against


def test_rate_of_a_counter_that_restarted_counts_from_zero():
    assert rate(100, 300, 2.0) == 100.0
    assert rate(500, 40, 2.0) == 20.0  # the cgroup was made again: its counter starts over
    assert rate(None, 40, 2.0) is None and rate(1, 2, 0.0) is None


def test_parent_paths():
    assert [parent_path(p) for p in ("/", "/a", "/a/b")] == [None, "/", "/a"]


def test_local_rows_have_tree_keys_and_rates_only_with_a_previous_reading():
    first = local_rows(local_tree(1.0), {}, 0.0)
    assert all(r.cpu_usage_cores is None and r.faults_per_second is None for r in first)
    prev = {r.path: r for r in local_tree(1.0)}
    rows = {r.key: r for r in local_rows(local_tree(2.0), prev, 2.0)}
    training = rows["cgroup:/aios.slice/training"]
    assert training.parent == "cgroup:/aios.slice" and training.name == "training"
    assert training.cpu_usage_cores == pytest.approx(4000 / 2.0)  # 4000 s more CPU time in 2 s
    assert training.faults_per_second == pytest.approx(1e6)
    assert training.memory_high_bytes == 45056 << 20 and training.cpu_max_cores == 48.0
    assert rows["cgroup:/"].parent is None


def test_daemon_rows_put_each_class_over_its_cgroups():
    tree = {r.path: r for r in local_tree(1.0)}
    prev = {c["name"]: c for c in daemon_classes(1.0)}
    rows = daemon_rows(daemon_classes(2.0), prev, tree, {}, 2.0)
    assert [r.key for r in rows] == ["class:training", "class:training:/aios.slice/training",
                                     "class:inference", "class:inference:/aios.slice/inference",
                                     "class:batch", "class:batch:/aios.slice/batch"]
    batch = rows[4]
    assert batch.kind == "class" and batch.cpu_allocation_cores == 1.5 and batch.cpu_usage_cores == 2.0
    assert batch.faults_per_second == pytest.approx(9e5 / 2)  # the probe counter's rate
    assert batch.reclaim_seconds_per_second == pytest.approx(0.2)
    assert batch.runq_p99_seconds == pytest.approx(0.061)
    # limits from the cgroups read locally; memory.high "max" there: no limit for the class either
    assert batch.memory_max_bytes == 512 << 20 and batch.memory_high_bytes is None
    assert batch.nr_procs == 3  # the cgroup's processes, not the API's populated bit
    assert rows[5].parent == "class:batch" and rows[5].cpu_usage_cores is None  # no previous reading


def test_a_class_cgroup_not_readable_here_is_a_blank_row():
    rows = daemon_rows(daemon_classes()[:1], {}, {}, {}, 1.0)
    assert rows[1].path == "/aios.slice/training" and rows[1].memory_current_bytes is None
    assert rows[0].nr_procs is None and rows[0].memory_max_bytes is None


def test_daemon_state_decision_and_jobs_from_api_replies():
    st = daemon_state({"verdict": "degraded", "mode": "observe-only", "mode_reason": "not root", "pid": 7,
                       "policy_path": "p.toml", "policy_description": "", "interval_seconds": 1.0,
                       "ticks_total": 3, "last_tick_seconds": 0.002, "last_decision_unix": None,
                       "last_writes": [{"path": "x"}], "writes_total": 0, "writes_failed_total": 0})
    assert st.mode_reason == "not root" and st.last_writes_count == 1 and st.memory_guard == "off"
    d = decision_of({"last_decision_unix": 5.0, "writes": [{"op": "write", "path": "/a/cpu.max", "new": "max",
                                                            "reason": "r", "available": False}],
                     "pending": 2, "unavailable": 1, "drift": [{}, {}]},
                    {"bindings": [{"kind": "capacity", "resource": "cpu", "cls": None, "tier": 1, "dual": 0.5,
                                   "to": ["a", "b"]}]})
    assert d.writes[0].available is False and d.pending_writes == 2 and d.drift_files == 2
    assert d.bindings[0].shadow_price == 0.5 and d.bindings[0].to == ("a", "b")


def test_job_view_step_times_and_stragglers():
    j = job_view(JOBS[0])
    assert j.world_size == 8 and j.step_median_seconds == pytest.approx(0.182)
    assert j.step_max_seconds == pytest.approx(0.182 * 2.4)
    assert j.stragglers_total == 1 and j.stragglers[0].rank == 5
    ordered = jobs_in_order(job_view(x) for x in reversed(JOBS))
    assert [x.key for x in ordered] == ["eval-nightly", "llama-ft", "old-run"]  # running first, newest first


def test_events_from_journal_json_skip_what_is_not_json():
    text = ('{"__REALTIME_TIMESTAMP": "1700000000000000", "PRIORITY": "4", "MESSAGE": "memory_guard_tighten"}\n'
            '{"__REALTIME_TIMESTAMP": "1700000001000000", "MESSAGE": [104, 105]}\n'
            '{"__REALTIME_TIME')
    ev = events_of(text)
    assert [(e.time_unix, e.priority, e.message) for e in ev] == [
        (1700000000.0, 4, "memory_guard_tighten"), (1700000001.0, 6, "hi")]


# -- ordering ----------------------------------------------------------------------------------------


def _row(path: str, cpu: float | None = None, parent: str | None = None) -> Row:
    return Row(key="cgroup:" + path, kind="cgroup", name=path.rsplit("/", 1)[-1] or "/", path=path,
               parent=parent, cpu_usage_cores=cpu)


def test_step_sort_stops_at_either_end_in_the_columns_natural_direction():
    v = ViewState(sort_column="name", descending=False)
    assert step_sort(v, -1) is v
    right = step_sort(v, 1)
    assert right.sort_column == COLUMN_IDS[1] and right.descending
    assert step_sort(right, -1) == ViewState(sort_column="name", descending=False)
    last = ViewState(sort_column=COLUMN_IDS[-1])
    assert step_sort(last, 1) is last


def test_rows_without_a_value_sort_last_in_both_directions():
    rows = [_row("/a", 1.0), _row("/b", None), _row("/c", 3.0)]
    assert [r.path for r in sort_rows(rows, "cpu_usage_cores", True)] == ["/c", "/a", "/b"]
    assert [r.path for r in sort_rows(rows, "cpu_usage_cores", False)] == ["/a", "/c", "/b"]


def test_tree_view_sorts_siblings_and_keeps_children_under_their_parent():
    rows = [_row("/", 9), _row("/a", 1, "cgroup:/"), _row("/a/x", 5, "cgroup:/a"), _row("/b", 2, "cgroup:/")]
    shown = visible_rows(rows, ViewState(sort_column="cpu_usage_cores", descending=True, tree=True))
    assert [(r.path, d) for r, d in shown] == [("/", 0), ("/b", 1), ("/a", 1), ("/a/x", 2)]
    flat = visible_rows(rows, ViewState(sort_column="cpu_usage_cores", descending=True, tree=False))
    assert [(r.path, d) for r, d in flat] == [("/", 0), ("/a/x", 0), ("/b", 0), ("/a", 0)]


def test_a_filter_keeps_the_matches_and_in_the_tree_their_ancestors():
    rows = [_row("/", 9), _row("/a", 1, "cgroup:/"), _row("/a/x", 5, "cgroup:/a"), _row("/b", 2, "cgroup:/")]
    tree = visible_rows(rows, ViewState(tree=True, filter_text="X"))
    assert [r.path for r, _ in tree] == ["/", "/a", "/a/x"]
    flat = visible_rows(rows, ViewState(tree=False, filter_text="x"))
    assert [r.path for r, _ in flat] == ["/a/x"]
    assert visible_rows(rows, ViewState(filter_text="nothing-like-it")) == []


PATHS = st.lists(st.lists(st.sampled_from("abc"), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p)),
                 max_size=20, unique=True)


@settings(max_examples=200, deadline=None)
@given(paths=PATHS, cpu=st.lists(st.one_of(st.none(), st.floats(0, 64)), min_size=20, max_size=20),
       column=st.sampled_from(["name", "cpu_usage_cores"]), descending=st.booleans(), tree=st.booleans())
def test_every_row_shown_once_and_every_child_after_its_parent(paths, cpu, column, descending, tree):
    # every ancestor present, as a walk of cgroupfs gives them
    full = sorted({"/"} | {p[:i] for p in paths for i in range(2, len(p) + 1) if i == len(p) or p[i] == "/"})
    rows = [_row(p, cpu[i % len(cpu)], None if p == "/" else "cgroup:" + (parent_path(p) or "/"))
            for i, p in enumerate(full)]
    shown = visible_rows(rows, ViewState(sort_column=column, descending=descending, tree=tree))
    assert sorted(r.key for r, _ in shown) == sorted(r.key for r in rows)
    if tree:
        seen: dict[str, int] = {}
        for r, depth in shown:
            if r.parent is not None:
                assert r.parent in seen and depth == seen[r.parent] + 1
            seen[r.key] = depth


def test_column_ids_are_row_fields():
    fields = set(Row.__dataclass_fields__)
    assert set(COLUMN_IDS) <= fields


def test_reading_defaults_are_unmeasured():
    r = CgroupReading("/x")
    assert r.cpu_usage_usec is None and r.cpu.some_percent is None
