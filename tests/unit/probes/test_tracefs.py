import pytest

from aios_host.errors import ParseError
from aios_host.kernel.root import SysRoot
from aios_host.probes import tracefs
from tests.unit.probes.fakes import fake_probe_host, load


def test_parse_sched_switch_of_6_18():
    fmt = tracefs.parse_format(load("sched_sched_switch.format"))
    assert fmt.name == "sched_switch"
    assert fmt.fields["prev_state"].type == "long" and fmt.fields["prev_state"].size == 8
    assert fmt.fields["prev_comm"].type == "char" and fmt.fields["prev_comm"].size == 16
    assert fmt.fields["next_pid"].offset == 56 and fmt.fields["next_pid"].signed
    assert fmt.has("common_pid")


def test_switch_state_bits_from_the_print_flags():
    bits = tracefs.switch_state_bits(tracefs.parse_format(load("sched_sched_switch.format")))
    assert bits == tracefs.SwitchStateBits(report_max=0x100, dead=0x30)


def test_switch_state_bits_default_without_a_flag_table():
    fmt = tracefs.TracepointFormat("sched_switch", 1, {}, 'print fmt: "prev_state=%ld"')
    assert tracefs.switch_state_bits(fmt) == tracefs.DEFAULT_SWITCH_BITS


def test_group_dead_is_new_in_6_16():
    new = tracefs.parse_format(load("sched_sched_process_exit.format"))
    old = tracefs.parse_format(load("sched_sched_process_exit_6.1.format"))
    assert new.has("group_dead") and new.fields["group_dead"].type == "bool"
    assert not old.has("group_dead")


def test_mark_victim_memory_fields_and_data_loc():
    fmt = tracefs.parse_format(load("oom_mark_victim.format"))
    assert fmt.has("anon_rss") and fmt.has("oom_score_adj")
    assert fmt.fields["comm"].type == "__data_loc char[]"


def test_garbage_is_a_parse_error():
    with pytest.raises(ParseError):
        tracefs.parse_format("hello\n")


def test_find_and_read_through_a_root(tmp_path):
    fake_probe_host(tmp_path)
    root = SysRoot(tmp_path)
    assert tracefs.find_tracefs(root) == "/sys/kernel/tracing"
    assert tracefs.tracepoint_exists(root, "/sys/kernel/tracing", "block:block_rq_issue")
    assert tracefs.read_format(root, "/sys/kernel/tracing", "nope:nothing") is None
    assert tracefs.read_format(root, "/sys/kernel/tracing", "sched:sched_switch").name == "sched_switch"


def test_no_tracefs(tmp_path):
    fake_probe_host(tmp_path, tracefs=False)
    assert tracefs.find_tracefs(SysRoot(tmp_path)) is None
