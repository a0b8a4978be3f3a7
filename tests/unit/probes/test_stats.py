import pytest

from aios_host.kernel.root import SysRoot
from aios_host.probes.stats import (
    BPF_STATS_SYSCTL,
    ProgCounters,
    bpf_stats_enabled,
    overhead,
    parse_fdinfo,
    prog_counters,
    read_prog_counters,
)
from tests.unit.fixtures import put
from tests.unit.probes.fakes import load


def test_parse_captured_fdinfo():
    info = parse_fdinfo(load("prog_fdinfo.txt"))
    assert info["prog_type"] == "5" and info["run_cnt"] == "0" and info["prog_tag"] == "b0765da5a2e4d120"
    c = prog_counters(load("prog_fdinfo.txt"), "faults", "exceptions:page_fault_user")
    assert (c.prog_id, c.run_cnt, c.run_time_ns) == (366, 0, 0)


def test_read_from_a_root(tmp_path):
    put(tmp_path, "/proc/self/fdinfo/9", "prog_id:\t7\nrun_time_ns:\t5000\nrun_cnt:\t10\n")
    assert read_prog_counters(SysRoot(tmp_path), 9, "p", "x").run_time_ns == 5000


def test_overhead_math():
    before = [ProgCounters("sched", "sched:sched_switch", 1, 1000, 100_000)]
    after = [ProgCounters("sched", "sched:sched_switch", 1, 11_000, 1_100_000),
             ProgCounters("faults", "exceptions:page_fault_user", 2, 0, 0)]
    rows = {r.program: r for r in overhead(before, after, interval_s=2.0, ncpus=2)}
    sw = rows["sched:sched_switch"]
    assert sw.runs == 10_000 and sw.runs_per_s == 5000 and sw.ns_per_run == 100.0
    assert sw.cpu_pct == pytest.approx(1_000_000 / 2e9 * 100) and sw.host_cpu_pct == pytest.approx(sw.cpu_pct / 2)
    assert rows["exceptions:page_fault_user"].ns_per_run is None
    with pytest.raises(ValueError):
        overhead(before, after, 0, 1)


def test_bpf_stats_enabled_restores_the_recorded_value(tmp_path):
    p = put(tmp_path, BPF_STATS_SYSCTL, "0\n")
    root = SysRoot(tmp_path)
    with bpf_stats_enabled(root) as old:
        assert old == "0" and p.read_text() == "1"
    assert p.read_text() == "0"


def test_bpf_stats_restored_after_an_error(tmp_path):
    p = put(tmp_path, BPF_STATS_SYSCTL, "0\n")
    with pytest.raises(RuntimeError), bpf_stats_enabled(SysRoot(tmp_path)):
        raise RuntimeError("boom")
    assert p.read_text() == "0"


def test_bpf_stats_already_on_is_left_alone(tmp_path):
    p = put(tmp_path, BPF_STATS_SYSCTL, "1\n")
    with bpf_stats_enabled(SysRoot(tmp_path)) as old:
        assert old == "1"
    assert p.read_text() == "1\n"  # never written


def test_bpf_stats_absent(tmp_path):
    with bpf_stats_enabled(SysRoot(tmp_path)) as old:
        assert old is None
