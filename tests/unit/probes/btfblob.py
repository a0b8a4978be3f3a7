"""Build small BTF blobs for tests (the layout of include/uapi/linux/btf.h)."""

from __future__ import annotations

import struct

from aios_host.probes import btf


class BtfBuilder:
    def __init__(self) -> None:
        self.strs = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strs)
        self.strs += name.encode() + b"\0"
        return off

    def _add(self, name: str, kind: int, vlen: int, size_or_type: int, extra: bytes = b"",
             kind_flag: bool = False) -> int:
        info = (kind << 24) | vlen | (1 << 31 if kind_flag else 0)
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def int_(self, name: str, size: int) -> int:
        return self._add(name, btf.INT, 0, size, struct.pack("<I", size * 8))

    def ptr(self, to: int) -> int:
        return self._add("", btf.PTR, 0, to)

    def modifier(self, kind: int, to: int, name: str = "") -> int:
        return self._add(name, kind, 0, to)

    def struct(self, name: str, size: int, members: list[tuple[str, int, int]], union: bool = False,
               kind_flag: bool = False) -> int:
        extra = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self._add(name, btf.UNION if union else btf.STRUCT, len(members), size, extra, kind_flag)

    def enum(self, name: str, values: list[tuple[str, int]]) -> int:
        extra = b"".join(struct.pack("<Ii", self.s(n), v) for n, v in values)
        return self._add(name, btf.ENUM, len(values), 4, extra)

    def func_proto(self, ret: int, params: list[tuple[str, int]]) -> int:
        extra = b"".join(struct.pack("<II", self.s(n), t) for n, t in params)
        return self._add("", btf.FUNC_PROTO, len(params), ret, extra)

    def blob(self) -> bytes:
        hdr_len = 24
        hdr = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, hdr_len, 0, len(self.types),
                          len(self.types), len(self.strs))
        return hdr + bytes(self.types) + bytes(self.strs)


def kernel_like(exit_has_group_dead: bool = True, switch_state: str = "unsigned int") -> bytes:
    """A tiny 'vmlinux': task_struct with exit_code inside an anonymous union (byte 20), and the
    btf_trace_* typedefs of the raw tracepoints the probes read."""
    b = BtfBuilder()
    i32 = b.int_("int", 4)
    u32 = b.int_(switch_state, 4)
    boolean = b.int_("bool", 1)
    b.enum("pid_type", [("PIDTYPE_PID", 0), ("PIDTYPE_TGID", 1)])
    inner = b.struct("", 8, [("exit_code", i32, 32), ("exit_signal", i32, 0)], union=True)
    # kind_flag: member offsets carry a bitfield size in their top 8 bits
    flags = b.struct("", 4, [("in_execve", u32, (1 << 24) | 0), ("in_iowait", u32, (1 << 24) | 1)],
                     kind_flag=True)
    task = b.struct("task_struct", 64, [("pid", i32, 64), ("", flags, 96), ("", inner, 128)])
    task_p = b.ptr(b.modifier(btf.CONST, task))
    void_p = b.ptr(0)

    def trace(name: str, params: list[tuple[str, int]]) -> None:
        proto = b.func_proto(0, [("__data", void_p), *params])
        b.modifier(btf.TYPEDEF, b.ptr(proto), f"btf_trace_{name}")

    trace("sched_switch", [("preempt", boolean), ("prev", task_p), ("next", task_p), ("prev_state", u32)])
    trace("sched_wakeup", [("p", task_p)])
    trace("sched_wakeup_new", [("p", task_p)])
    trace("sched_process_exit", [("p", task_p), *([("group_dead", boolean)] if exit_has_group_dead else [])])
    return b.blob()
