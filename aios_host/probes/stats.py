"""BPF run-time statistics: per program runs/s, ns per run and the CPU it costs.

The kernel counts run_cnt and run_time_ns per program only while kernel.bpf_stats_enabled is 1
(timing every run costs two clock reads, so it is off by default). `bpf_stats_enabled()` records
the value before changing it and puts it back afterwards; the counters are read from
/proc/self/fdinfo/<prog fd> of the programs this process loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from aios_host.errors import ParseError
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger

BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"

log = get_logger("aios_host.probes")


def parse_fdinfo(text: str) -> dict[str, str]:
    """`key:\tvalue` lines of /proc/PID/fdinfo/FD."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class ProgCounters:
    probe: str
    program: str
    prog_id: int
    run_cnt: int
    run_time_ns: int


def prog_counters(fdinfo_text: str, probe: str, program: str) -> ProgCounters:
    info = parse_fdinfo(fdinfo_text)
    try:
        return ProgCounters(
            probe=probe,
            program=program,
            prog_id=int(info.get("prog_id", "0")),
            run_cnt=int(info.get("run_cnt", "0")),
            run_time_ns=int(info.get("run_time_ns", "0")),
        )
    except ValueError as exc:
        raise ParseError("bpf prog fdinfo", fdinfo_text, str(exc)) from exc


def read_prog_counters(root: SysRoot, fd: int, probe: str, program: str) -> ProgCounters:
    return prog_counters(root.read_text(f"/proc/self/fdinfo/{int(fd)}"), probe, program)


@dataclass(frozen=True)
class ProgOverhead:
    probe: str
    program: str
    prog_id: int
    runs: int
    runs_per_s: float
    ns_per_run: float | None
    cpu_pct: float  # of one CPU
    host_cpu_pct: float  # of all CPUs


def overhead(
    before: Sequence[ProgCounters], after: Sequence[ProgCounters], interval_s: float, ncpus: int
) -> list[ProgOverhead]:
    """Per program between two reads; programs are matched by (probe, program)."""
    if interval_s <= 0:
        raise ValueError("interval must be positive")
    start = {(c.probe, c.program): c for c in before}
    out = []
    for c in after:
        b = start.get((c.probe, c.program))
        runs = c.run_cnt - (b.run_cnt if b else 0)
        ns = c.run_time_ns - (b.run_time_ns if b else 0)
        cpu = ns / (interval_s * 1e9) * 100.0
        out.append(
            ProgOverhead(
                probe=c.probe,
                program=c.program,
                prog_id=c.prog_id,
                runs=runs,
                runs_per_s=runs / interval_s,
                ns_per_run=ns / runs if runs > 0 else None,
                cpu_pct=cpu,
                host_cpu_pct=cpu / max(1, ncpus),
            )
        )
    return out


def read_bpf_stats_enabled(root: SysRoot) -> str | None:
    text = root.read_optional(BPF_STATS_SYSCTL)
    return None if text is None else text.strip()


@contextmanager
def bpf_stats_enabled(root: SysRoot) -> Iterator[str | None]:
    """Turn kernel.bpf_stats_enabled on for the block; yields the value it had and restores it.

    None is yielded (and nothing written) on kernels without the sysctl (before 5.1).
    """
    old = read_bpf_stats_enabled(root)
    if old is None:
        log.warning("bpf_stats_unavailable", path=BPF_STATS_SYSCTL)
        yield None
        return
    changed = old != "1"
    if changed:
        root.write_text(BPF_STATS_SYSCTL, "1")
        log.info("bpf_stats_enable", path=BPF_STATS_SYSCTL, old=old, new="1")
    try:
        yield old
    finally:
        if changed:
            root.write_text(BPF_STATS_SYSCTL, old)
            log.info("bpf_stats_restore", path=BPF_STATS_SYSCTL, value=old)
