"""The probe set: one bcc C file per probe under bpf/, what each attaches to, and how.

A probe with a raw variant compiles its RAW_TRACEPOINT_PROBE programs when the loader picks raw
tracepoints (kernel headers match the running kernel); the others always use tracepoint-format
programs, whose argument layout bcc takes from the running kernel's tracefs format files.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    source: str  # file under bpf/
    measures: str
    tracepoints: tuple[str, ...]  # tracepoint-format programs ("category:name")
    raw_tracepoints: tuple[str, ...] | None = None  # raw variant (names without category); None: none
    raw_keeps: tuple[str, ...] = ()  # tracepoint-format programs the raw variant still uses
    events: bool = False  # sends events through a ring/perf buffer
    # tracepoint-format programs needed only where no task_struct field can be read (no kernel BTF
    # and headers for another kernel): proc's syscall/signal join for exit codes
    no_task_fields: tuple[str, ...] = ()

    def attached(self, raw: bool, task_fields: bool = True) -> tuple[tuple[str, str], ...]:
        """(tracepoint, method) pairs for one attach choice; task_fields: task_struct fields can be
        read here (kernel BTF offsets, or headers that match the kernel)."""
        if raw and self.raw_tracepoints is not None:
            return tuple((f"{_category(self, t)}:{t}", "raw") for t in self.raw_tracepoints) + tuple(
                (t, "tracepoint") for t in self.raw_keeps
            )
        extra = () if task_fields else self.no_task_fields
        return tuple((t, "tracepoint") for t in self.tracepoints + extra)

    @property
    def all_tracepoints(self) -> tuple[str, ...]:
        return self.tracepoints + self.no_task_fields


def _category(spec: ProbeSpec, raw_name: str) -> str:
    for t in spec.tracepoints:
        cat, name = t.split(":", 1)
        if name == raw_name:
            return cat
    raise KeyError(f"{spec.name}: raw tracepoint {raw_name} has no tracepoint-format twin")


PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec(
        name="sched",
        source="sched.bpf.c",
        measures="run-queue latency (log2 usec), preemptions, on-CPU time",
        tracepoints=("sched:sched_wakeup", "sched:sched_wakeup_new", "sched:sched_switch"),
        raw_tracepoints=("sched_wakeup", "sched_wakeup_new", "sched_switch"),
    ),
    ProbeSpec(
        name="faults",
        source="faults.bpf.c",
        measures="user page faults",
        tracepoints=("exceptions:page_fault_user",),
        raw_tracepoints=("page_fault_user",),
    ),
    ProbeSpec(
        name="reclaim",
        source="reclaim.bpf.c",
        measures="direct and memcg reclaim stall time",
        tracepoints=(
            "vmscan:mm_vmscan_direct_reclaim_begin",
            "vmscan:mm_vmscan_direct_reclaim_end",
            "vmscan:mm_vmscan_memcg_reclaim_begin",
            "vmscan:mm_vmscan_memcg_reclaim_end",
        ),
        raw_tracepoints=(
            "mm_vmscan_direct_reclaim_begin",
            "mm_vmscan_direct_reclaim_end",
            "mm_vmscan_memcg_reclaim_begin",
            "mm_vmscan_memcg_reclaim_end",
        ),
    ),
    ProbeSpec(
        name="blkio",
        source="blkio.bpf.c",
        measures="block I/O latency (log2 usec) by issuing cgroup",
        tracepoints=("block:block_rq_issue", "block:block_rq_complete"),
    ),
    ProbeSpec(
        name="oom",
        source="oom.bpf.c",
        measures="OOM kills (events, victim's cgroup)",
        tracepoints=("oom:mark_victim", "sched:sched_process_exit"),
        events=True,
    ),
    ProbeSpec(
        name="proc",
        source="proc.bpf.c",
        measures="exec and exit with exit code / signal (events)",
        tracepoints=("sched:sched_process_exec", "sched:sched_process_exit"),
        no_task_fields=(
            "syscalls:sys_enter_exit_group",
            "syscalls:sys_enter_exit",
            "signal:signal_generate",
            "signal:signal_deliver",
        ),
        raw_tracepoints=("sched_process_exit",),
        raw_keeps=("sched:sched_process_exec",),
        events=True,
    ),
)

PROBE_NAMES = tuple(p.name for p in PROBES)


def get_spec(name: str) -> ProbeSpec:
    for p in PROBES:
        if p.name == name:
            return p
    raise KeyError(name)
