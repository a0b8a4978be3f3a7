import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_host.errors import ParseError
from aios_host.kernel import cgroup_format as fmt
from tests.unit.fixtures import HYBRID, VM, load


class TestCapturedFiles:
    """Every format parses what a real kernel printed (this host and the VM)."""

    def test_flat_keyed_cpu_stat_hybrid(self):
        stat = fmt.parse_flat_keyed(load(HYBRID, "cgroup/cpu.stat"))
        assert {"usage_usec", "user_usec", "system_usec"} <= stat.keys()
        assert all(isinstance(v, int) for v in stat.values())

    def test_pressure_hybrid(self):
        for res in ("cpu", "memory", "io"):
            p = fmt.parse_pressure(load(HYBRID, f"cgroup/{res}.pressure"))
            assert p.some.total_usec >= 0 and p.full is not None

    def test_cgroup_events_and_procs(self):
        ev = fmt.parse_flat_keyed(load(HYBRID, "cgroup/cgroup.events"))
        assert ev["populated"] == 1  # the capture had a live process in it
        assert len(fmt.parse_pids(load(HYBRID, "cgroup/cgroup.procs"))) >= 1

    def test_vm_cpu_max_and_weight(self):
        cm = fmt.parse_cpu_max(load(VM, "cgroup/cpu.max"))
        assert cm.period_usec > 0
        assert 1 <= fmt.parse_int(load(VM, "cgroup/cpu.weight")) <= 10000

    @pytest.mark.parametrize("name", ["memory.min", "memory.low", "memory.high", "memory.max",
                                      "memory.swap.max"])
    def test_vm_memory_limits(self, name):
        v = fmt.parse_limit(load(VM, f"cgroup/{name}"))
        assert v == fmt.MAX or v >= 0

    @pytest.mark.parametrize("name", ["memory.stat", "memory.events", "cpu.stat", "cgroup.stat"])
    def test_vm_flat_keyed(self, name):
        assert fmt.parse_flat_keyed(load(VM, f"cgroup/{name}"))

    def test_vm_io_weight_and_cpuset(self):
        assert fmt.parse_io_weight(load(VM, "cgroup/io.weight"))["default"] == 100
        assert fmt.parse_cpu_list(load(VM, "cgroup/cpuset.cpus.effective")) == (0, 1)

    def test_vm_io_max(self):
        limits = fmt.parse_io_max(load(VM, "cgroup/io.max"))
        assert limits and all(set(v) <= set(fmt.IO_MAX_KEYS) for v in limits.values())


class TestFormats:
    def test_cpu_max(self):
        assert fmt.parse_cpu_max("max 100000\n") == fmt.CpuMax(None, 100000)
        assert fmt.parse_cpu_max("50000 100000") == fmt.CpuMax(50000, 100000)
        assert fmt.parse_cpu_max("50000 100000").cores == 0.5
        with pytest.raises(ParseError, match="cpu.max"):
            fmt.parse_cpu_max("fast 100000")

    def test_limit(self):
        assert fmt.parse_limit("max\n") == "max"
        assert fmt.parse_limit("1073741824\n") == 1 << 30
        assert fmt.format_limit(fmt.MAX) == "max"
        with pytest.raises(ParseError):
            fmt.parse_limit("12Q")

    def test_nested_keyed_rejects_bare_tokens(self):
        with pytest.raises(ParseError, match="SUBKEY=VALUE"):
            fmt.parse_nested_keyed("8:0 rbps 5")

    def test_flat_keyed_rejects_three_columns(self):
        with pytest.raises(ParseError, match="KEY VALUE"):
            fmt.parse_flat_keyed("a 1 2")

    def test_io_max_round_trip(self):
        text = "8:16 rbps=2097152 wbps=max riops=max wiops=120\n"
        parsed = fmt.parse_io_max(text)
        assert parsed["8:16"]["rbps"] == 2097152 and parsed["8:16"]["wbps"] == "max"
        assert fmt.format_io_max_line("8:16", parsed["8:16"]) == text.strip()

    def test_pressure_without_full(self):
        # cpu.pressure had no "full" line before 5.13
        p = fmt.parse_pressure("some avg10=1.50 avg60=0.20 avg300=0.00 total=12345\n")
        assert p.full is None and p.some.avg10 == 1.5 and p.some.total_usec == 12345

    def test_pressure_missing_field(self):
        with pytest.raises(ParseError, match="some"):
            fmt.parse_pressure("some avg10=1.50 total=3\n")

    def test_cpu_list_examples(self):
        assert fmt.parse_cpu_list("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
        assert fmt.parse_cpu_list("\n") == ()
        assert fmt.format_cpu_list([3, 1, 2, 8]) == "1-3,8"
        with pytest.raises(ParseError, match="backwards"):
            fmt.parse_cpu_list("5-2")

    @given(st.sets(st.integers(0, 511)))
    def test_cpu_list_round_trip(self, ids):
        assert fmt.parse_cpu_list(fmt.format_cpu_list(ids)) == tuple(sorted(ids))


_avg = st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda x: f"{x:.2f}")


def _psi_line(key: str, avgs: tuple[str, str, str], total: int) -> str:
    return f"{key} avg10={avgs[0]} avg60={avgs[1]} avg300={avgs[2]} total={total}\n"


@given(st.tuples(_avg, _avg, _avg), st.integers(0, 2**64 - 1), st.none() | st.tuples(_avg, _avg, _avg),
       st.integers(0, 2**64 - 1))
def test_pressure_avg10s_agrees_with_parse_pressure_on_the_kernels_layout(some, some_total, full, full_total):
    text = _psi_line("some", some, some_total) + ("" if full is None else _psi_line("full", full, full_total))
    p = fmt.parse_pressure(text)
    assert fmt.pressure_avg10s(text) == (p.some.avg10, None if p.full is None else p.full.avg10)


@given(st.text(alphabet=" \t\nsomefulavg1036=.0-x9", max_size=80))
def test_pressure_avg10s_on_any_text_agrees_or_fails_as_parse_pressure_does(text):
    """Wherever parse_pressure reads a file, the fast reader gives the same avg10s; where the fast
    reader refuses one, parse_pressure refuses it too (the same ParseError)."""
    try:
        p = fmt.parse_pressure(text)
    except ParseError:
        p = None
    try:
        got = fmt.pressure_avg10s(text)
    except ParseError:
        assert p is None, text
        return
    if p is not None:
        assert got == (p.some.avg10, None if p.full is None else p.full.avg10), text
