"""ctypes mirrors of the structs in bpf/aios.h, and pure decoders for the events.

Each struct is mirrored once, here. tests/unit/probes/test_structs.py checks every size and parses
a golden byte blob; tests/bpf checks that bcc's own view of each map's key and value (compiled
from the C) has the same size and field offsets as these mirrors.

Sizes that are -D cflags of the C (HIST_SLOTS, FILENAME_LEN, COMM_LEN) are defined here and passed
to the compiler by the loader, so the C and the mirror cannot disagree.
"""

from __future__ import annotations

import ctypes
import signal as signal_mod
from dataclasses import dataclass
from typing import Literal

HIST_SLOTS = 32  # log2 buckets; slot k holds [2^(k-1), 2^k - 1] usec, slot 1 also holds 0
COMM_LEN = 16
FILENAME_LEN = 128

EVENT_EXEC, EVENT_EXIT, EVENT_OOM = 1, 2, 3

# exit_event.how
EXIT_HOW = {0: "unknown", 1: "exit_group", 2: "exit", 3: "signal", 4: "task"}

# drops[] indexes
DROP_KINDS = ("event", "task_map", "stats_map", "reserved")

u32, u64, s32 = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32


class HistKey(ctypes.Structure):
    _fields_ = [("cgroup_id", u64), ("slot", u64)]


class SchedStats(ctypes.Structure):
    _fields_ = [("oncpu_ns", u64), ("switches", u64), ("preempt", u64), ("runq", u64 * HIST_SLOTS)]


class ReclaimStats(ctypes.Structure):
    _fields_ = [("direct_ns", u64), ("direct_count", u64), ("memcg_ns", u64), ("memcg_count", u64)]


class EventHdr(ctypes.Structure):
    _fields_ = [
        ("ts_ns", u64),
        ("cgroup_id", u64),
        ("kind", u32),
        ("pid", u32),
        ("tid", u32),
        ("uid", u32),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


class ExecEventC(ctypes.Structure):
    _fields_ = [("h", EventHdr), ("old_pid", u32), ("_pad", u32), ("filename", ctypes.c_char * FILENAME_LEN)]


class ExitEventC(ctypes.Structure):
    _fields_ = [("h", EventHdr), ("exit_code", s32), ("signal", s32), ("how", u32), ("core_dumped", u32)]


class OomEventC(ctypes.Structure):
    _fields_ = [
        ("h", EventHdr),
        ("trigger_cgroup_id", u64),
        ("mark_ns", u64),
        ("total_vm_kb", u64),
        ("anon_rss_kb", u64),
        ("file_rss_kb", u64),
        ("shmem_rss_kb", u64),
        ("oom_score_adj", s32),
        ("has_memory", u32),
    ]


# -- decoded events (plain values) ------------------------------------------------------------


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ExecEvent:
    ts_ns: int
    cgroup_id: int
    pid: int
    tid: int
    uid: int
    comm: str
    old_pid: int
    filename: str
    kind: Literal["exec"] = "exec"


@dataclass(frozen=True)
class ExitEvent:
    ts_ns: int
    cgroup_id: int
    pid: int
    tid: int
    uid: int
    comm: str
    exit_code: int
    signal: int
    how: str
    core_dumped: bool
    kind: Literal["exit"] = "exit"

    @property
    def status(self) -> str:
        if self.signal:
            try:
                name = signal_mod.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}" + (" (core dumped)" if self.core_dumped else "")
        if self.how == "unknown":
            return "exited (status unknown)"
        return f"exited {self.exit_code}"


@dataclass(frozen=True)
class OomEvent:
    ts_ns: int
    cgroup_id: int
    pid: int
    tid: int
    uid: int
    comm: str
    trigger_cgroup_id: int
    mark_ns: int
    total_vm_kb: int | None
    anon_rss_kb: int | None
    file_rss_kb: int | None
    shmem_rss_kb: int | None
    oom_score_adj: int | None
    kind: Literal["oom"] = "oom"


Event = ExecEvent | ExitEvent | OomEvent

_SIZES = {EVENT_EXEC: ctypes.sizeof(ExecEventC), EVENT_EXIT: ctypes.sizeof(ExitEventC),
          EVENT_OOM: ctypes.sizeof(OomEventC)}
_KIND_OFFSET = EventHdr.kind.offset


class EventDecodeError(ValueError):
    """An event whose kind or size does not match bpf/aios.h: a stale build or a bug, not input."""


def decode_event(data: bytes) -> Event:
    """One event as the kernel wrote it (ring buffer or perf buffer sample)."""
    if len(data) < ctypes.sizeof(EventHdr):
        raise EventDecodeError(f"event of {len(data)} bytes is shorter than its header")
    kind = int.from_bytes(data[_KIND_OFFSET:_KIND_OFFSET + 4], "little")
    size = _SIZES.get(kind)
    if size is None:
        raise EventDecodeError(f"unknown event kind {kind}")
    if len(data) < size:
        raise EventDecodeError(f"event kind {kind}: {len(data)} bytes, expected {size}")
    if kind == EVENT_EXEC:
        e = ExecEventC.from_buffer_copy(data[:size])
        return ExecEvent(**_hdr(e.h), old_pid=e.old_pid, filename=_text(bytes(e.filename)))
    if kind == EVENT_EXIT:
        x = ExitEventC.from_buffer_copy(data[:size])
        return ExitEvent(**_hdr(x.h), exit_code=x.exit_code, signal=x.signal,
                         how=EXIT_HOW.get(x.how, str(x.how)), core_dumped=bool(x.core_dumped))
    o = OomEventC.from_buffer_copy(data[:size])
    mem = bool(o.has_memory)
    return OomEvent(
        **_hdr(o.h),
        trigger_cgroup_id=o.trigger_cgroup_id,
        mark_ns=o.mark_ns,
        total_vm_kb=o.total_vm_kb if mem else None,
        anon_rss_kb=o.anon_rss_kb if mem else None,
        file_rss_kb=o.file_rss_kb if mem else None,
        shmem_rss_kb=o.shmem_rss_kb if mem else None,
        oom_score_adj=o.oom_score_adj if mem else None,
    )


def _hdr(h: EventHdr) -> dict[str, object]:
    return {"ts_ns": h.ts_ns, "cgroup_id": h.cgroup_id, "pid": h.pid, "tid": h.tid, "uid": h.uid,
            "comm": _text(bytes(h.comm))}


def slot_of(usec: int) -> int:
    """The histogram slot the C puts `usec` in: bcc's bpf_log2l (0 and 1 share slot 1), capped."""
    return min(max(1, int(usec).bit_length()), HIST_SLOTS - 1)
