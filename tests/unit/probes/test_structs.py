"""ctypes mirrors of bpf/aios.h: sizes, golden bytes, and the constants the C and Python share."""

import ctypes
import re
import signal
from pathlib import Path

import pytest

from aios_host.probes import structs
from aios_host.probes.structs import (
    EventDecodeError,
    ExecEvent,
    ExitEvent,
    OomEvent,
    decode_event,
    slot_of,
)

BPF = Path(__file__).resolve().parents[3] / "bpf"

# Written once with struct.pack("<QQIIII16s...") from the C layout (x86_64, little endian) and
# pasted here: a change of layout in the mirror or the C breaks these, not the other way round.
GOLDEN_EXIT = bytes.fromhex(
    "15cd5b0700000000ff0400000000000002000000921000009310000000000000736c656570000000"
    "000000000000000000000000090000000300000000000000"
)
GOLDEN_EXEC = bytes.fromhex(
    "88130000000000000100000000000000010000004d0000004d000000e8030000736800000000000000"
    "000000000000004c000000000000002f7573722f62696e2f7368" + "00" * 117
)
GOLDEN_OOM = bytes.fromhex(
    "2823000000000000140500000000000003000000f4010000f501000000000000686f67000000000000"
    "00000000000000ff04000000000000272300000000000000001000000000000000080000000000000400"
    "000000000000000000000000009cffffff01000000"
)


@pytest.mark.parametrize(
    ("cls", "size"),
    [
        (structs.HistKey, 16),
        (structs.SchedStats, 24 + 8 * structs.HIST_SLOTS),
        (structs.ReclaimStats, 32),
        (structs.EventHdr, 48),
        (structs.ExecEventC, 48 + 8 + structs.FILENAME_LEN),
        (structs.ExitEventC, 64),
        (structs.OomEventC, 104),
    ],
)
def test_sizes(cls, size):
    assert ctypes.sizeof(cls) == size


def test_golden_blob_sizes_match_the_mirrors():
    assert len(GOLDEN_EXIT) == ctypes.sizeof(structs.ExitEventC)
    assert len(GOLDEN_EXEC) == ctypes.sizeof(structs.ExecEventC)
    assert len(GOLDEN_OOM) == ctypes.sizeof(structs.OomEventC)


def test_exit_event_golden():
    ev = decode_event(GOLDEN_EXIT)
    assert ev == ExitEvent(ts_ns=123456789, cgroup_id=1279, pid=4242, tid=4243, uid=0, comm="sleep",
                           exit_code=0, signal=9, how="signal", core_dumped=False)
    assert ev.status == "killed by SIGKILL"


def test_exec_event_golden():
    ev = decode_event(GOLDEN_EXEC)
    assert ev == ExecEvent(ts_ns=5000, cgroup_id=1, pid=77, tid=77, uid=1000, comm="sh", old_pid=76,
                           filename="/usr/bin/sh")


def test_oom_event_golden():
    ev = decode_event(GOLDEN_OOM)
    assert isinstance(ev, OomEvent)
    assert (ev.pid, ev.tid, ev.comm, ev.cgroup_id, ev.trigger_cgroup_id) == (500, 501, "hog", 1300, 1279)
    assert (ev.total_vm_kb, ev.anon_rss_kb, ev.file_rss_kb, ev.shmem_rss_kb) == (1048576, 524288, 1024, 0)
    assert ev.oom_score_adj == -100 and ev.mark_ns == 8999


def test_oom_without_memory_fields_reads_none():
    raw = bytearray(GOLDEN_OOM)
    raw[-4:] = b"\0\0\0\0"  # has_memory = 0: a kernel whose mark_victim has only pid (< 6.8)
    ev = decode_event(bytes(raw))
    assert ev.anon_rss_kb is None and ev.oom_score_adj is None


def test_exit_status_text():
    base = decode_event(GOLDEN_EXIT)
    from dataclasses import replace

    assert replace(base, signal=0, exit_code=3, how="exit_group").status == "exited 3"
    assert replace(base, signal=11, core_dumped=True).status == "killed by SIGSEGV (core dumped)"
    assert replace(base, signal=0, how="unknown").status == "exited (status unknown)"
    assert replace(base, signal=40).status == "killed by signal 40"


def test_a_longer_buffer_is_fine_a_shorter_or_unknown_one_is_not():
    # perf buffers pad samples to 8 bytes; ring buffers do not.
    assert decode_event(GOLDEN_EXIT + b"\0" * 4).signal == 9
    with pytest.raises(EventDecodeError, match="shorter than its header"):
        decode_event(GOLDEN_EXIT[:20])
    with pytest.raises(EventDecodeError, match="expected 64"):
        decode_event(GOLDEN_EXIT[:60])
    bad = bytearray(GOLDEN_EXIT)
    bad[16] = 9
    with pytest.raises(EventDecodeError, match="unknown event kind 9"):
        decode_event(bytes(bad))


def _bcc_log2l(v: int) -> int:
    """bcc's bpf_log2l, transcribed from its helpers.h."""

    def log2(x: int) -> int:
        r = int(x > 0xFFFF) << 4
        x >>= r
        shift = int(x > 0xFF) << 3
        x >>= shift
        r |= shift
        shift = int(x > 0xF) << 2
        x >>= shift
        r |= shift
        shift = int(x > 0x3) << 1
        x >>= shift
        r |= shift
        return r | (x >> 1)

    hi = v >> 32
    return log2(hi) + 33 if hi else log2(v) + 1


@pytest.mark.parametrize("usec", [0, 1, 2, 3, 4, 7, 8, 1023, 1024, 65535, 10**6, 2**31 - 1])
def test_slot_of_matches_bpf_log2l(usec):
    assert slot_of(usec) == min(_bcc_log2l(usec), structs.HIST_SLOTS - 1)


def test_fatal_signal_mask_in_proc_bpf_matches_signal_7():
    text = (BPF / "proc.bpf.c").read_text()
    mask = int(re.search(r"#define FATAL_SIGNALS_MASK (0x[0-9A-Fa-f]+)ULL", text).group(1), 16)
    not_fatal = {signal.SIGCHLD, signal.SIGCONT, signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN,
                 signal.SIGTTOU, signal.SIGURG, signal.SIGWINCH}
    expected = sum(1 << s for s in range(1, 32) if s not in not_fatal)
    assert mask == expected


def test_c_defaults_match_python_sizes():
    header = (BPF / "aios.h").read_text()
    for name in ("HIST_SLOTS", "COMM_LEN", "FILENAME_LEN"):
        m = re.search(rf"#define {name} (\d+)", header)
        assert m and int(m.group(1)) == getattr(structs, name), name
    for kind, value in (("EVENT_EXEC", structs.EVENT_EXEC), ("EVENT_EXIT", structs.EVENT_EXIT),
                        ("EVENT_OOM", structs.EVENT_OOM)):
        assert re.search(rf"#define {kind} {value}\b", header)
    for i, name in enumerate(structs.DROP_KINDS[:3]):
        assert re.search(rf"#define DROP_{name.upper()} {i}\b", header), name
    c_names = {"unknown": "UNKNOWN", "exit_group": "GROUP", "exit": "LEADER", "signal": "SIGNAL", "task": "TASK"}
    for code, how in structs.EXIT_HOW.items():
        assert re.search(rf"#define EXIT_HOW_{c_names[how]} {code}\b", header), how
