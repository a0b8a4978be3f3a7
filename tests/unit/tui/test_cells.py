"""cells.py: units, colour levels, sparklines, header and panel lines."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aios_host.tui.cells import (
    COLUMNS,
    SPARK,
    ago,
    cell_text,
    column_title,
    daemon_line,
    decision_lines,
    fmt_bytes,
    fmt_cores,
    fmt_count,
    fmt_ms,
    gpu_lines,
    jobs_lines,
    level,
    row_details,
    sparkline,
)
from aios_host.tui.model import COLUMN_IDS, Row, ViewState, WriteView
from tests.unit.tui.fakes import T0, daemon_model, local_model


def text(line) -> str:
    return "".join(t for t, _ in line)


def test_columns_match_the_models_sortable_ids():
    assert tuple(c.id for c in COLUMNS) == COLUMN_IDS


@pytest.mark.parametrize(("value", "shown"), [
    (None, ""), (512, "512B"), (4096, "4.0K"), (1.5 * 2**20, "1.5M"), (230 * 2**20, "230M"),
    (23.4 * 2**30, "23.4G"), (2**41, "2.0T")])
def test_bytes(value, shown):
    assert fmt_bytes(value) == shown


def test_cores_ms_counts():
    assert [fmt_cores(v) for v in (None, 0.123, 12.34, 1234.5)] == ["", "0.12", "12.3", "1234"]
    assert [fmt_ms(v) for v in (None, 0.0004, 0.061, 2.0)] == ["", "0.40", "61.0", "2000"]
    assert [fmt_count(v) for v in (3, 1500, 2.5e6, 0.5)] == ["3", "1.5k", "2.5M", "0.5"]


def _r(**kw) -> Row:
    return Row(key="cgroup:/x", kind="cgroup", name="x", path="/x", **kw)


def test_memory_is_judged_against_its_lowest_limit():
    assert level("memory_current_bytes", _r(memory_current_bytes=80, memory_high_bytes=100)) is None
    assert level("memory_current_bytes", _r(memory_current_bytes=95, memory_high_bytes=100)) == "warn"
    assert level("memory_current_bytes", _r(memory_current_bytes=95, memory_high_bytes=200,
                                            memory_max_bytes=95)) == "crit"
    assert level("memory_current_bytes", _r(memory_current_bytes=10**12)) is None  # no limit, no colour


def test_cpu_against_its_limit_then_its_allocation():
    assert level("cpu_usage_cores", _r(cpu_usage_cores=2.0, cpu_max_cores=2.0)) == "crit"
    assert level("cpu_usage_cores", _r(cpu_usage_cores=1.3, cpu_allocation_cores=1.0)) == "warn"
    assert level("cpu_usage_cores", _r(cpu_usage_cores=1.1, cpu_allocation_cores=1.0)) is None


def test_thresholds_of_pressure_runq_and_ooms():
    assert level("psi_cpu_some_percent", _r(psi_cpu_some_percent=9.9)) is None
    assert level("psi_cpu_some_percent", _r(psi_cpu_some_percent=10.0)) == "warn"
    assert level("psi_memory_full_percent", _r(psi_memory_full_percent=20.0)) == "crit"
    assert level("runq_p99_seconds", _r(runq_p99_seconds=0.006)) == "warn"
    assert level("oom_kills_total", _r(oom_kills_total=0)) is None
    assert level("oom_kills_total", _r(oom_kills_total=1)) == "crit"
    assert level("name", _r(memory_guard="freeze")) == "crit"


def test_names_are_indented_in_the_tree_and_whole_paths_when_flat():
    row = Row(key="cgroup:/a/b", kind="cgroup", name="b", path="/a/b")
    col = COLUMNS[0]
    assert cell_text(col, row, 2, tree=True) == "    b"
    assert cell_text(col, row, 2, tree=False) == "/a/b"


def test_sort_marker_in_the_title():
    cpu = COLUMNS[COLUMN_IDS.index("cpu_usage_cores")]
    assert column_title(cpu, ViewState(sort_column="cpu_usage_cores", descending=True)) == "CPU▼"
    assert column_title(cpu, ViewState(sort_column="cpu_usage_cores", descending=False)) == "CPU▲"
    assert column_title(cpu, ViewState(sort_column="name")) == "CPU"


def test_sparkline_scales_and_keeps_the_newest_on_the_right():
    assert sparkline([]) == ""
    assert sparkline([0, 50, 100]) == SPARK[0] + SPARK[4] + SPARK[-1]
    assert sparkline(range(100), width=5, hi=None)[-1] == SPARK[-1]
    assert len(sparkline(range(100), width=5)) == 5


def test_ago():
    assert [ago(None, T0), ago(T0 - 12, T0), ago(T0 - 600, T0), ago(T0 - 7300, T0)] == [
        "never", "12 s ago", "10 min ago", "2 h ago"]


def test_no_gpu_and_no_daemon_say_so():
    m = local_model(gpu_note="no GPU (NVML not loadable)")
    assert text(gpu_lines(m)[0]) == "gpu no GPU (NVML not loadable)"
    assert "not running" in text(daemon_line(m)) and "local snapshot" in text(daemon_line(m))
    assert text(decision_lines(m)[0]) == "last plan no daemon: nothing decided"
    assert text(jobs_lines(m)[0]) == "jobs none"


def test_daemon_header_and_panels():
    m = daemon_model()
    line = text(daemon_line(m))
    assert "active, pid 4242" in line and "training first" in line and "12 s ago at 22:13:08, 3 writes" in line
    assert [text(g).split()[0] for g in gpu_lines(m)] == ["gpu0", "gpu1"]
    assert "612 W" in text(gpu_lines(m)[0])
    dec = [text(x) for x in decision_lines(m)]
    assert dec[0].startswith("last plan 12 s ago: 3 writes, 1 pending")
    prices = [x for x in dec if x.startswith("  ") and ":cpu tier" in x]
    assert prices[0].endswith("0.0625")  # highest shadow price first
    jobs = [text(x) for x in jobs_lines(m, limit=2)]
    assert "1, last: rank 5 2.4x" in jobs[2] and jobs[-1].startswith("... 1 more")


def test_a_degraded_daemon_names_its_mode_and_error():
    m = daemon_model()
    m = replace(m, daemon=replace(m.daemon, verdict="degraded", mode="observe-only", mode_reason="not root",
                                  last_error="tick failed"))
    line = daemon_line(m)
    assert "degraded, mode observe-only (not root)" in text(line)
    assert ("tick failed", "crit") in line


def test_details_give_units_and_a_classes_cgroups():
    m = daemon_model()
    batch = next(r for r in m.rows if r.key == "class:batch")
    d = dict(row_details(batch, m))
    assert d["memory_high_bytes"] == "no limit (max)"
    assert d["memory_max_bytes"] == f"{512 << 20} (512M)"
    assert d["runq_p99_seconds"] == "0.061 (61.0 ms)"
    assert d["cgroups"] == "/aios.slice/batch"


def test_plan_lines_say_what_each_write_does():
    m = daemon_model()
    writes = (WriteView("mkdir", "/sys/fs/cgroup/aios.slice/batch", "", "class batch: class cgroup"),
              WriteView("write", "/sys/fs/cgroup/aios.slice/batch/cpu.max", "200000 100000\n", "cpu: 2 cores",
                        available=False))
    m = replace(m, decision=replace(m.decision, writes=writes))
    lines = decision_lines(m)
    assert text(lines[1]) == "  mkdir /sys/fs/cgroup/aios.slice/batch  class batch: class cgroup"
    assert text(lines[2]) == "  /sys/fs/cgroup/aios.slice/batch/cpu.max = 200000 100000  cpu: 2 cores"
    assert lines[2][0][1] == "dim"  # this host cannot take it


def test_row_cells_are_cell_text_and_level_of_every_column():
    """row_cells' shortcuts (blank cells and unruled columns have no level) give what the
    per-cell functions give, on every row of the fakes."""
    from aios_host.tui.cells import row_cells

    for m in (local_model(), daemon_model()):
        for r in m.rows:
            for tree, indent in ((True, 2), (False, 0)):
                want = [(cell_text(c, r, indent, tree), level(c.id, r) if cell_text(c, r, indent, tree) else None)
                        for c in COLUMNS]
                assert row_cells(r, indent, tree) == want
