"""The BTF reader: offsets and raw tracepoint prototypes from a built blob and, where this host has
one, from the running kernel's /sys/kernel/btf/vmlinux."""

import os
import struct

import pytest

from aios_host.kernel.root import SysRoot
from aios_host.probes import btf
from aios_host.probes.btf import Btf, BtfError
from aios_host.probes.loader import BtfFacts, read_btf_facts
from tests.unit.probes.btfblob import BtfBuilder, kernel_like


def test_member_offsets_through_anonymous_members():
    b = Btf(kernel_like())
    assert b.member_offset("task_struct", "pid") == 8
    assert b.member_offset("task_struct", "exit_code") == 20  # 128 bits + 32 inside the union
    assert b.member_bit_offset("task_struct", "in_iowait") == 97  # bitfield in a kind_flag struct
    with pytest.raises(BtfError, match="bitfield"):
        b.member_offset("task_struct", "in_iowait")
    with pytest.raises(BtfError, match="no member 'nope'"):
        b.member_offset("task_struct", "nope")
    with pytest.raises(BtfError, match="no BTF type 'mm_struct'"):
        b.member_offset("mm_struct", "pgd")


def test_raw_tracepoint_params_drop_the_probe_data_argument():
    b = Btf(kernel_like())
    assert b.raw_tracepoint_params("sched_switch") == [
        "bool", "struct task_struct *", "struct task_struct *", "unsigned int"]
    assert b.raw_tracepoint_params("sched_process_exit") == ["struct task_struct *", "bool"]
    with pytest.raises(BtfError, match="btf_trace_nope"):
        b.raw_tracepoint_params("nope")


def test_bad_blobs():
    with pytest.raises(BtfError, match="shorter"):
        Btf(b"\x9f\xeb")
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0" * 32)
    good = kernel_like()
    with pytest.raises(BtfError, match="version"):
        Btf(good[:2] + b"\x02" + good[3:])
    with pytest.raises(BtfError, match="past the end"):
        Btf(good[:-4])
    b = BtfBuilder()
    b.types += struct.pack("<III", 0, 31 << 24, 0)  # kind 31 does not exist
    b.count += 1
    with pytest.raises(BtfError, match="unknown BTF kind 31"):
        Btf(b.blob())


def test_big_endian_blob_reads_the_same():
    b = BtfBuilder()
    i32 = b.int_("int", 4)
    b.struct("task_struct", 8, [("pid", i32, 0), ("exit_code", i32, 32)])
    le = b.blob()
    # re-encode every u32 (and the header's u16 magic) big-endian: all fields here are u32 but the first 4 bytes
    be = struct.pack(">HBB", btf.BTF_MAGIC, 1, 0) + b"".join(
        struct.pack(">I", x) for x in struct.unpack_from("<" + "I" * ((24 - 4 + len(b.types)) // 4), le, 4))
    be += bytes(b.strs)
    assert Btf(be).member_offset("task_struct", "exit_code") == 4


def _root_with(tmp_path, blob):
    p = tmp_path / "sys/kernel/btf/vmlinux"
    p.parent.mkdir(parents=True)
    p.write_bytes(blob)
    return SysRoot(tmp_path)


def test_read_btf_facts(tmp_path):
    assert read_btf_facts(_root_with(tmp_path / "a", kernel_like()), exit_has_group_dead=True) == BtfFacts(20, True, "")
    f = read_btf_facts(_root_with(tmp_path / "b", kernel_like(False)), exit_has_group_dead=True)
    assert (f.exit_code_off, f.raw_ok) == (20, False) and "sched_process_exit" in f.note
    f = read_btf_facts(_root_with(tmp_path / "c", kernel_like(switch_state="long")), False)
    assert (f.exit_code_off, f.raw_ok) == (20, False) and "sched_switch" in f.note
    assert read_btf_facts(SysRoot(tmp_path / "none"), True) == BtfFacts(
        note="no kernel BTF at /sys/kernel/btf/vmlinux")
    f = read_btf_facts(_root_with(tmp_path / "d", b"junk" * 10), True)
    assert f.exit_code_off is None and not f.raw_ok and "magic" in f.note


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="no /sys/kernel/btf/vmlinux here")
def test_the_running_kernels_btf():
    b = Btf.from_file("/sys/kernel/btf/vmlinux")
    off = b.member_offset("task_struct", "exit_code")
    assert 0 < off < 16384 and off % 4 == 0
    assert b.member_offset("task_struct", "pid") != off
    assert b.raw_tracepoint_params("sched_switch")[1:3] == ["struct task_struct *"] * 2
    assert b.raw_tracepoint_params("sched_wakeup") == ["struct task_struct *"]
