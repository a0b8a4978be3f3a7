"""Load the probe set (bpf/*.bpf.c) with bcc, read its maps and events.

One attach method for the whole set, chosen once and logged (`probe_attach_method`):
- "raw" (RAW_TRACEPOINT_PROBE, no tracepoint record is formatted: the cheap path) on 5.18+
  kernels (sched_switch's prev_state argument) when the one task_struct field the raw programs
  read, exit_code, has a trustworthy offset: from headers that match the running kernel
  (features.headers == "matching"), or else from the running kernel's own BTF
  (/sys/kernel/btf/vmlinux, btf.py; passed as -DTASK_EXIT_CODE_OFF). The sched programs
  dereference nothing (tasks are keyed by their task_struct pointer). With BTF, the raw
  tracepoints' argument lists are also checked against the kernel's btf_trace_<name> prototypes;
- "tracepoint" (TRACEPOINT_PROBE) otherwise: bcc generates each argument struct from the running
  kernel's tracefs format file and no kernel struct is dereferenced through headers, so the
  programs are right on a host whose headers are a fallback for another kernel.
Probes without a raw variant (blkio, oom) use tracepoint-format programs in both cases. Exit
codes come from task_struct.exit_code wherever its offset is known; only without it does proc
fall back to joining syscalls:sys_enter_exit* and signal:* (which slows every syscall down).

The C is configured with -D cflags built here from the running kernel's tracepoint formats
(tracefs.py) and from structs.py's sizes. Maps are read without clearing (ProbeSample holds
cumulative counters); events are decoded with structs.decode_event. Lost events are counted twice
over: the kernel's own failed sends (drops[DROP_EVENT], ring buffer or perf buffer) and the perf
buffer's lost-sample callback.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger
from aios_host.probes import structs, tracefs
from aios_host.probes.sample import ProbeSample, SampleBuilder
from aios_host.probes.specs import PROBE_NAMES, PROBES, ProbeSpec, get_spec
from aios_host.probes.stats import ProgCounters, read_prog_counters

log = get_logger("aios_host.probes")

BPF_DIR = Path(os.environ.get("AIOS_HOST_BPF_DIR") or Path(__file__).resolve().parents[2] / "bpf")

RAW_MIN_KERNEL = (5, 18)  # sched_switch passes prev_state (commit fa2c3254d7cf)
RINGBUF_MIN_KERNEL = (5, 8)


class ProbeError(AiosError):
    """The probes cannot be loaded here (privileges, bcc, tracefs, a program the kernel refused)."""


@dataclass(frozen=True)
class LoadOptions:
    attach: str = "auto"  # auto | raw | tracepoint
    events: str = "auto"  # auto | ringbuf | perf
    probes: tuple[str, ...] = PROBE_NAMES
    runq_preempted: bool = True  # time preempted tasks back onto the CPU too, as runqlat does
    max_cgroups: int = 4096
    max_hist: int = 16384
    max_tasks: int = 65536
    max_inflight: int = 8192
    event_pages: int = 16
    strict: bool = False  # raise on the first probe that fails instead of skipping it


@dataclass(frozen=True)
class AttachChoice:
    method: str  # "raw" | "tracepoint"
    reason: str
    task_offsets: str = "headers"  # where raw programs' task_struct offsets come from: headers | btf


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise AiosError(f"cannot read a kernel version from release {release!r}")
    return int(m.group(1)), int(m.group(2))


def choose_attach(requested: str, headers: str, release: str, btf_raw: bool = False) -> AttachChoice:
    """Pure: the attach method for `requested` ("auto" | "raw" | "tracepoint") on this kernel.
    btf_raw: the running kernel's BTF gave task_struct.exit_code and confirmed the raw
    tracepoint prototypes (KernelFacts.btf_raw)."""
    version = kernel_version(release)
    if requested == "tracepoint":
        return AttachChoice("tracepoint", "asked for tracepoint-format programs")
    new_enough = version >= RAW_MIN_KERNEL
    matching = headers == "matching"
    raw_ok = new_enough and (matching or btf_raw)
    offsets = "headers" if matching else "btf"
    if requested == "raw":
        if not raw_ok:
            raise ProbeError(
                f"raw tracepoints need kernel {RAW_MIN_KERNEL[0]}.{RAW_MIN_KERNEL[1]}+ and either "
                f"kernel headers matching kernel {release} or its BTF (/sys/kernel/btf/vmlinux) "
                f"(headers here: {headers}); use --attach tracepoint or auto"
            )
        return AttachChoice("raw", "asked for raw tracepoints", offsets)
    if requested != "auto":
        raise AiosError(f"attach method {requested!r}: expected auto, raw or tracepoint")
    if raw_ok and matching:
        return AttachChoice("raw", f"kernel headers match {release}: raw tracepoints")
    if raw_ok:
        return AttachChoice(
            "raw",
            f"kernel headers are {headers} for {release}: raw tracepoints that dereference no "
            "header struct (task_struct.exit_code at its offset in the kernel's BTF)",
            "btf",
        )
    if headers == "matching":
        return AttachChoice("tracepoint", f"kernel {release} is older than "
                            f"{RAW_MIN_KERNEL[0]}.{RAW_MIN_KERNEL[1]}: tracepoint-format programs")
    return AttachChoice(
        "tracepoint",
        f"kernel headers are {headers} for {release}: tracepoint-format programs, "
        "no kernel struct dereferences",
    )


def choose_events(requested: str, release: str) -> str:
    if requested in ("ringbuf", "perf"):
        return requested
    if requested != "auto":
        raise AiosError(f"event transport {requested!r}: expected auto, ringbuf or perf")
    return "ringbuf" if kernel_version(release) >= RINGBUF_MIN_KERNEL else "perf"


@dataclass(frozen=True)
class KernelFacts:
    """What the cflags and the attach choice depend on, read once from the running kernel."""

    release: str
    headers: str
    tracefs: str | None
    available: frozenset[str] = frozenset()  # "category:name" of every tracepoint the probes use
    switch_bits: tracefs.SwitchStateBits = tracefs.DEFAULT_SWITCH_BITS
    exit_has_group_dead: bool = False
    oom_has_memory: bool = False
    # from the running kernel's BTF, read only where the headers do not match the kernel:
    task_exit_code_off: int | None = None  # byte offset of task_struct.exit_code
    btf_raw: bool = False  # ...and the raw tracepoint prototypes are the ones the programs expect
    btf_note: str = ""  # why not, when BTF was looked at and found wanting


# ctx->args[] of the raw programs, exactly as btf.Btf.raw_tracepoint_params spells them
RAW_PROTOS: dict[str, tuple[str, ...]] = {
    "sched_wakeup": ("struct task_struct *",),
    "sched_wakeup_new": ("struct task_struct *",),
    "sched_switch": ("bool", "struct task_struct *", "struct task_struct *", "unsigned int"),
    "sched_process_exit": ("struct task_struct *",),
}


@dataclass(frozen=True)
class BtfFacts:
    exit_code_off: int | None = None  # task_struct.exit_code
    raw_ok: bool = False  # the raw tracepoint prototypes are the ones the programs expect
    note: str = ""  # why not, where BTF was looked at and found wanting


def read_btf_facts(root: SysRoot, exit_has_group_dead: bool) -> BtfFacts:
    """The task_struct offsets and raw tracepoint prototypes the programs need, from the running
    kernel's BTF; empty (with the reason) where there is none or it does not say."""
    from aios_host.probes import btf

    path = root.path(btf.VMLINUX_BTF)
    if not os.path.exists(path):
        return BtfFacts(note=f"no kernel BTF at {btf.VMLINUX_BTF}")
    try:
        b = btf.Btf.from_file(path)
        off = b.member_offset("task_struct", "exit_code")
        protos = {name: tuple(b.raw_tracepoint_params(name)) for name in RAW_PROTOS}
    except (OSError, btf.BtfError) as exc:
        return BtfFacts(note=f"kernel BTF: {exc}")
    expect = dict(RAW_PROTOS)
    if exit_has_group_dead:
        expect["sched_process_exit"] = ("struct task_struct *", "bool")
    bad = [f"{n}{protos[n]}" for n, want in expect.items() if protos[n] != want]
    if bad:
        return BtfFacts(off, False, "raw tracepoint prototypes differ: " + ", ".join(bad))
    return BtfFacts(off, True)


def read_kernel_facts(root: SysRoot, headers: str | None = None) -> KernelFacts:
    from aios_host.kernel.procfs import read_osrelease

    release = read_osrelease(root)
    if headers is None:
        from aios_host.kernel.features import HostChecks, detect_features

        quiet = HostChecks(module_version=lambda name: None, nvml_gpu_count=lambda: None)
        headers = detect_features(root, quiet).headers
    tfs = tracefs.find_tracefs(root)
    if tfs is None:
        return KernelFacts(release=release, headers=headers, tracefs=None)
    wanted = {t for p in PROBES for t in p.all_tracepoints}
    available = frozenset(t for t in wanted if tracefs.tracepoint_exists(root, tfs, t))
    switch = tracefs.read_format(root, tfs, "sched:sched_switch")
    exit_fmt = tracefs.read_format(root, tfs, "sched:sched_process_exit")
    oom = tracefs.read_format(root, tfs, "oom:mark_victim")
    group_dead = bool(exit_fmt and exit_fmt.has("group_dead"))
    # matching headers give the raw programs their offsets: no need to read the BTF then
    bf = BtfFacts() if headers == "matching" else read_btf_facts(root, group_dead)
    return KernelFacts(
        release=release,
        headers=headers,
        tracefs=tfs,
        available=available,
        switch_bits=tracefs.switch_state_bits(switch) if switch else tracefs.DEFAULT_SWITCH_BITS,
        exit_has_group_dead=group_dead,
        oom_has_memory=bool(oom and oom.has("anon_rss")),
        task_exit_code_off=bf.exit_code_off,
        btf_raw=bf.raw_ok,
        btf_note=bf.note,
    )


def cflags_for(
    spec: ProbeSpec, method: str, events: str, facts: KernelFacts, options: LoadOptions
) -> list[str]:
    """Pure: the -I/-D flags one probe is compiled with."""
    if options.max_tasks <= 0 or options.max_tasks & (options.max_tasks - 1):
        raise AiosError(f"max_tasks {options.max_tasks}: must be a power of two (sched's enq slots)")
    flags = [
        f"-I{BPF_DIR}",
        f"-DHIST_SLOTS={structs.HIST_SLOTS}",
        f"-DCOMM_LEN={structs.COMM_LEN}",
        f"-DFILENAME_LEN={structs.FILENAME_LEN}",
        f"-DMAX_CGROUPS={options.max_cgroups}",
        f"-DMAX_HIST={options.max_hist}",
        f"-DMAX_TASKS={options.max_tasks}",
        f"-DMAX_INFLIGHT={options.max_inflight}",
        f"-DEVENT_PAGES={options.event_pages}",
    ]
    if method == "raw" and spec.raw_tracepoints is not None:
        flags.append("-DAIOS_RAW_TP")
    if spec.events and events == "perf":
        flags.append("-DAIOS_PERF_OUTPUT")
    if spec.name == "sched":
        if method != "raw":  # raw programs read prev_state raw; linux/sched.h has TASK_REPORT_MAX
            flags.append(f"-DTASK_REPORT_MAX={facts.switch_bits.report_max:#x}")
            flags.append(f"-DTASK_REPORT_DEAD={facts.switch_bits.dead:#x}")
        if not options.runq_preempted:
            flags.append("-DRUNQ_WAKEUP_ONLY")
    if spec.name == "proc" and facts.exit_has_group_dead:
        flags.append("-DEXIT_HAS_GROUP_DEAD")
    if spec.name == "proc" and facts.headers != "matching" and facts.task_exit_code_off is not None:
        flags.append(f"-DTASK_EXIT_CODE_OFF={facts.task_exit_code_off}")
    if spec.name == "oom" and facts.oom_has_memory:
        flags.append("-DOOM_HAS_MEMORY")
    return flags


@dataclass(frozen=True)
class ProbeStatus:
    name: str
    measures: str
    tracepoints: tuple[tuple[str, str], ...]  # (tracepoint, method)
    status: str  # ready | attached | unavailable | failed
    detail: str = ""


def task_fields_readable(facts: KernelFacts) -> bool:
    """Whether task_struct.exit_code can be read here (matching headers or the kernel's BTF)."""
    return facts.headers == "matching" or facts.task_exit_code_off is not None


def probe_statuses(facts: KernelFacts, choice: AttachChoice, names: Sequence[str]) -> list[ProbeStatus]:
    """Pure: which probes can attach here, before loading anything."""
    out = []
    for name in names:
        spec = get_spec(name)
        tps = spec.attached(choice.method == "raw", task_fields=task_fields_readable(facts))
        missing = [t for t, _ in tps if t not in facts.available]
        if facts.tracefs is None:
            st, why = "unavailable", "tracefs not mounted"
        elif missing:
            st, why = "unavailable", "missing tracepoint " + ", ".join(missing)
        else:
            st, why = "ready", ""
        out.append(ProbeStatus(name, spec.measures, tps, st, why))
    return out


def program_label(func_name: str) -> str:
    """bcc function name -> "category:name" as listed (raw programs get a "raw:" prefix)."""
    if func_name.startswith("tracepoint__"):
        cat, _, name = func_name[len("tracepoint__"):].partition("__")
        return f"{cat}:{name}"
    if func_name.startswith("raw_tracepoint__"):
        return "raw:" + func_name[len("raw_tracepoint__"):]
    return func_name


def import_bcc() -> Any:
    try:
        import bcc
    except ImportError as exc:
        raise ProbeError(
            f"bcc does not import ({exc}): apt-get install python3-bpfcc, and use a venv made with "
            "--system-site-packages"
        ) from exc
    return bcc


def preflight(root: SysRoot, facts: KernelFacts, euid: Callable[[], int] | None = None) -> None:
    """The one-line errors a user can act on, before any compile."""
    if (euid or os.geteuid)() != 0:
        raise ProbeError("eBPF probes need root (CAP_BPF, CAP_PERFMON and tracefs access): run as root")
    if facts.tracefs is None:
        raise ProbeError(
            "tracefs is not mounted (no events/sched/sched_switch under "
            f"{' or '.join(tracefs.TRACEFS_DIRS)}): mount -t tracefs nodev /sys/kernel/tracing"
        )
    if facts.headers == "missing":
        raise ProbeError(
            f"no kernel headers at /lib/modules/{facts.release}/build: bcc cannot compile "
            "(install linux-headers, or run `make headers` for the documented fallback)"
        )


@dataclass
class LoadedProbe:
    spec: ProbeSpec
    bpf: Any
    cflags: list[str]
    seconds: float
    programs: dict[str, int] = field(default_factory=dict)  # label -> prog fd


class ProbeSet:
    """The loaded probes. Use as a context manager; close() detaches everything."""

    def __init__(
        self,
        root: SysRoot | None = None,
        options: LoadOptions | None = None,
        facts: KernelFacts | None = None,
    ) -> None:
        self.root = root or SysRoot("/")
        self.options = options or LoadOptions()
        self.facts = facts
        self.choice: AttachChoice | None = None
        self.events_transport = ""
        self.loaded: dict[str, LoadedProbe] = {}
        self.statuses: dict[str, ProbeStatus] = {}
        self.lost_events = 0
        self.startup_s = 0.0
        self._events: list[structs.Event] = []
        self._decode_errors = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> ProbeSet:
        if not self.loaded:
            self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> ProbeSet:
        t0 = time.monotonic()
        unknown = [n for n in self.options.probes if n not in PROBE_NAMES]
        if unknown:
            raise AiosError(f"unknown probe {unknown[0]!r}; probes: {', '.join(PROBE_NAMES)}")
        facts = self.facts or read_kernel_facts(self.root)
        self.facts = facts
        preflight(self.root, facts)
        bcc = import_bcc()
        self.choice = choose_attach(self.options.attach, facts.headers, facts.release, facts.btf_raw)
        self.events_transport = choose_events(self.options.events, facts.release)
        log.info("probe_attach_method", method=self.choice.method, reason=self.choice.reason,
                 events=self.events_transport, kernel=facts.release, headers=facts.headers,
                 task_offsets=self.choice.task_offsets if self.choice.method == "raw" else None,
                 task_exit_code_off=facts.task_exit_code_off,
                 exit_codes="task_struct" if task_fields_readable(facts) else "syscall+signal tracepoints",
                 btf_note=facts.btf_note or None)
        for st in probe_statuses(facts, self.choice, self.options.probes):
            if st.status != "ready":
                self.statuses[st.name] = st
                log.warning("probe_unavailable", probe=st.name, detail=st.detail)
                if self.options.strict:
                    raise ProbeError(f"probe {st.name}: {st.detail}")
                continue
            self._load_one(bcc, get_spec(st.name), st)
        if not self.loaded:
            raise ProbeError("no probe could be attached: " + "; ".join(
                f"{s.name}: {s.detail}" for s in self.statuses.values()))
        self.startup_s = time.monotonic() - t0
        log.info("probes_attached", probes=sorted(self.loaded), seconds=round(self.startup_s, 3))
        return self

    def _load_one(self, bcc: Any, spec: ProbeSpec, st: ProbeStatus) -> None:
        assert self.choice is not None and self.facts is not None
        flags = cflags_for(spec, self.choice.method, self.events_transport, self.facts, self.options)
        t = time.monotonic()
        try:
            b = bcc.BPF(src_file=str(BPF_DIR / spec.source).encode(), cflags=flags)
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception for compile/load/attach
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.statuses[spec.name] = ProbeStatus(spec.name, spec.measures, st.tracepoints, "failed", detail)
            log.error("probe_load_failed", probe=spec.name, source=spec.source, error=detail)
            if self.options.strict:
                raise ProbeError(f"probe {spec.name} ({BPF_DIR / spec.source}): {detail}") from exc
            return
        lp = LoadedProbe(spec, b, flags, time.monotonic() - t)
        lp.programs = {program_label(k.decode() if isinstance(k, bytes) else k): f.fd
                       for k, f in b.funcs.items()}
        if spec.events:
            self._open_events(lp)
        self.loaded[spec.name] = lp
        self.statuses[spec.name] = ProbeStatus(spec.name, spec.measures, st.tracepoints, "attached")
        log.info("probe_attach", probe=spec.name, method=self.choice.method,
                 programs=sorted(lp.programs), seconds=round(lp.seconds, 3))

    def _open_events(self, lp: LoadedProbe) -> None:
        table = lp.bpf[b"events"]
        if self.events_transport == "perf":

            def on_sample(cpu: int, data: Any, size: int) -> None:
                self._on_event(ctypes.string_at(data, size))

            def on_lost(count: int) -> None:
                self.lost_events += int(count)
                log.warning("probe_events_lost", probe=lp.spec.name, count=int(count))

            table.open_perf_buffer(on_sample, page_cnt=self.options.event_pages, lost_cb=on_lost)
        else:

            def on_ring(ctx: Any, data: Any, size: int) -> int:
                self._on_event(ctypes.string_at(data, size))
                return 0

            table.open_ring_buffer(on_ring)

    def _on_event(self, raw: bytes) -> None:
        try:
            self._events.append(structs.decode_event(raw))
        except structs.EventDecodeError as exc:
            self._decode_errors += 1
            log.error("probe_event_undecodable", error=str(exc), size=len(raw))

    def close(self) -> None:
        for lp in self.loaded.values():
            try:
                lp.bpf.cleanup()
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.warning("probe_cleanup_failed", probe=lp.spec.name, error=str(exc))
        self.loaded.clear()

    # -- reading ---------------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 0) -> list[structs.Event]:
        """Events that arrived since the last poll, waiting up to timeout_ms for the first."""
        with_events = [lp for lp in self.loaded.values() if lp.spec.events]
        if not with_events and timeout_ms > 0 and not self._events:
            time.sleep(timeout_ms / 1000)  # nothing to wait on: a caller's poll loop must not spin
        for i, lp in enumerate(with_events):
            wait = timeout_ms if i == 0 and not self._events else 0
            if self.events_transport == "perf":
                lp.bpf.perf_buffer_poll(timeout=wait)
            else:
                lp.bpf.ring_buffer_poll(timeout=wait)
        out, self._events = self._events, []
        return out

    def read(self) -> ProbeSample:
        b = SampleBuilder()
        drops: dict[str, int] = {}
        for name, lp in self.loaded.items():
            t = lp.bpf
            if name == "sched":
                for k, v in t[b"sched_stats"].items():
                    b.add(k.value, oncpu_ns=sum(x.oncpu_ns for x in v),
                          switches=sum(x.switches for x in v), preempt=sum(x.preempt for x in v))
                    runq = [sum(col) for col in zip(*(x.runq for x in v), strict=True)]  # per slot, over CPUs
                    b.add_hist_counts(k.value, "runq_hist", runq)
            elif name == "faults":
                for k, v in t[b"fault_count"].items():
                    b.add(k.value, faults=sum(v))
            elif name == "reclaim":
                for k, v in t[b"reclaim_stats"].items():
                    b.add(k.value, direct_reclaim_ns=sum(x.direct_ns for x in v),
                          direct_reclaim_count=sum(x.direct_count for x in v),
                          memcg_reclaim_ns=sum(x.memcg_ns for x in v),
                          memcg_reclaim_count=sum(x.memcg_count for x in v))
            elif name == "blkio":
                for k, v in t[b"blk_hist"].items():
                    b.add_hist(k.cgroup_id, "blk_hist", k.slot, sum(v))
            elif name == "oom":
                for k, v in t[b"oom_kills"].items():
                    b.add(k.value, oom_kills=sum(v))
            for k, v in t[b"drops"].items():
                n = sum(v)
                if n:
                    drops[f"{name}.{structs.DROP_KINDS[k.value]}"] = n
        return ProbeSample(
            t_ns=time.monotonic_ns(),
            cgroups=b.build(),
            drops=drops,
            lost_events=self.lost_events,
            attach=self.choice.method if self.choice else "",
        )

    def prune(self, live_ids: Iterable[int]) -> int:
        """Delete map entries of cgroups that no longer exist; returns how many were deleted. The
        daemon calls it every PROBE_PRUNE_EVERY_S (the maps are not LRU: they would fill)."""
        keep = set(live_ids) | {0}
        n = 0
        tables = {"sched": ("sched_stats",), "faults": ("fault_count",),
                  "reclaim": ("reclaim_stats",), "blkio": ("blk_hist",), "oom": ("oom_kills",)}
        for name, lp in self.loaded.items():
            for tname in tables.get(name, ()):
                table = lp.bpf[tname.encode()]
                for k in list(table.keys()):
                    cg = k.cgroup_id if hasattr(k, "cgroup_id") else k.value
                    if cg not in keep:
                        del table[k]
                        n += 1
        return n

    def programs(self) -> list[tuple[str, str, int]]:
        """(probe, program label, prog fd) of every loaded program."""
        return [(name, label, fd) for name, lp in self.loaded.items() for label, fd in sorted(lp.programs.items())]

    def prog_counters(self) -> list[ProgCounters]:
        return [read_prog_counters(self.root, fd, probe, label) for probe, label, fd in self.programs()]
