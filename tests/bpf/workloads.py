"""Workloads placed in known cgroup v2 cgroups, and reference tools (runqlat-bpfcc, perf sched),
shared by tests/bpf (this host) and tests/vm/test_probes_vm.py (the VM).

Each workload process first writes its own pid into the cgroup's cgroup.procs and then execs, so
the process is in the cgroup before it does anything measurable, and its pid is the Popen pid.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from aios_host.kernel.cgroup import Cgroup, CgroupFs
from aios_host.probes.structs import HIST_SLOTS, slot_of

RUNQLAT = shutil.which("runqlat-bpfcc") or "/usr/sbin/runqlat-bpfcc"
PERF = shutil.which("perf") or "/usr/bin/perf"

SPIN = "while :; do :; done"
# 0.5 ms of work, 1 ms of sleep: many wakeups that must queue behind the spinners.
SLEEPER = ("import time\nend = time.monotonic() + {secs}\nwhile time.monotonic() < end:\n"
           "    t = time.perf_counter()\n    while time.perf_counter() - t < 0.0005: pass\n"
           "    time.sleep(0.001)\n")
# One fault per 4 KiB page: transparent huge pages off for this process (PR_SET_THP_DISABLE = 41;
# Debian kernels default to THP "always", which faults in 2 MiB at a time).
TOUCH = ("import ctypes, sys\nctypes.CDLL(None).prctl(41, 1, 0, 0, 0)\nn = int(sys.argv[1])\n"
         "b = bytearray(n * 4096)\nfor i in range(0, n * 4096, 4096): b[i] = 1\n")


@contextmanager
def scratch_cgroups(fs: CgroupFs, *names: str) -> Iterator[dict[str, Cgroup]]:
    """Fresh cgroups aios-probetest-<pid>/<name>; killed and removed afterwards."""
    top = f"aios-probetest-{os.getpid()}"
    made = {n: fs.create(f"{top}/{n}") for n in names}
    try:
        yield made
    finally:
        for cg in made.values():
            if fs.exists(cg.rel):
                if cg.populated():
                    cg.kill()
                deadline = time.monotonic() + 10
                while cg.populated() and time.monotonic() < deadline:
                    time.sleep(0.05)
                fs.remove(cg.rel)
        fs.remove(top)


def spawn_in(cg: Cgroup, argv: Sequence[str]) -> subprocess.Popen:
    procs = cg.fs.root.path(cg.file("cgroup.procs"))
    cmd = f"echo $$ > {shlex.quote(str(procs))} && exec {shlex.join(argv)}"
    return subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.DEVNULL)


def spinners(cg: Cgroup, n: int) -> list[subprocess.Popen]:
    return [spawn_in(cg, ["sh", "-c", SPIN]) for _ in range(n)]


def sleepers(cg: Cgroup, n: int, secs: float) -> list[subprocess.Popen]:
    return [spawn_in(cg, [sys.executable, "-c", SLEEPER.format(secs=secs)]) for _ in range(n)]


def toucher(cg: Cgroup, pages: int) -> subprocess.Popen:
    return spawn_in(cg, [sys.executable, "-c", TOUCH, str(pages)])


def stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()


# -- histogram comparison --------------------------------------------------------------------------


def normalized(h: Sequence[int]) -> list[float]:
    total = sum(h)
    return [c / total for c in h] if total else [0.0] * len(h)


def slot_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """Earth mover's distance between the two normalized histograms, in log2 slots: how far, on
    average, an event must move to turn one into the other. 0 same shape; 1 one whole slot apart.

    Unlike total variation it does not jump when a few usec move a crowd of events across a slot
    boundary (8|16 usec), and it still grows with any real shift of the distribution."""
    from itertools import accumulate

    ca = accumulate(normalized(a))
    cb = accumulate(normalized(b))
    return sum(abs(x - y) for x, y in zip(ca, cb, strict=True))


def quantile_slot(h: Sequence[int], q: float) -> int:
    from aios_host.model.hist import percentile_slot

    s = percentile_slot(h, q)
    assert s is not None, "empty histogram"
    return s


# -- runqlat-bpfcc ---------------------------------------------------------------------------------

_HIST_LINE = re.compile(r"^\s*(\d+)\s*->\s*(\d+)\s*:\s*(\d+)\s*\|")


def parse_log2_hist(text: str) -> tuple[int, ...]:
    """bcc's print_log2_hist output -> slots (the line "lo -> hi" is slot (hi + 1).bit_length() - 1)."""
    h = [0] * HIST_SLOTS
    for line in text.splitlines():
        m = _HIST_LINE.match(line)
        if m:
            hi = int(m.group(2))
            h[min((hi + 1).bit_length() - 1, HIST_SLOTS - 1)] += int(m.group(3))
    return tuple(h)


def start_runqlat(seconds: int, *extra: str) -> subprocess.Popen:
    """runqlat-bpfcc [extra] SECONDS 1; returns once it has attached (it prints "Tracing ...")."""
    # runqlat-bpfcc is a Python script: unbuffered, or "Tracing" arrives only when it exits
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([RUNQLAT, *extra, str(seconds), "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env)
    assert p.stdout is not None
    line = p.stdout.readline()
    if "Tracing" not in line:
        p.kill()
        raise RuntimeError(f"runqlat-bpfcc did not start: {line!r}{p.stdout.read()}")
    return p


def runqlat_pids(text: str) -> list[int]:
    """The `pid = N` section headers of runqlat-bpfcc -P output."""
    return [int(m) for m in re.findall(r"^pid = (\d+)", text, re.M)]


# -- perf sched timehist ---------------------------------------------------------------------------


def perf_sched_record(path: str) -> subprocess.Popen:
    p = subprocess.Popen([PERF, "sched", "record", "-o", path], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # perf has no "attached" message; it enables its events well within this
    return p


def perf_sch_delays_usec(path: str, pids: Sequence[int]) -> list[int]:
    """perf sched timehist's "sch delay" (wakeup -> switch-in) of each switch-out of `pids`.

    timehist prints one row per switch-out; a row whose run did not start with a wakeup (the task
    had been preempted, or its wakeup came before perf started) shows a delay of 0.000 ms. Those
    rows are not wakeups and are left out (a real wakeup below 0.5 usec would be too; our probe
    saw none in that range here).
    """
    out = subprocess.run(
        [PERF, "sched", "timehist", "-i", path, "-p", ",".join(map(str, pids))],
        capture_output=True, text=True, check=True,
    ).stdout
    delays = []
    for line in out.splitlines():
        # time cpu task[tid/pid] wait-time sch-delay run-time
        parts = line.split()
        if len(parts) < 6 or not re.match(r"^\d+\.\d+$", parts[0]):
            continue
        # annotation rows (migrations, wakeups with -w) do not end in the three time columns
        if not all(re.match(r"^\d+\.\d+$", p) for p in parts[-3:]):
            continue
        delay_ms = float(parts[-2])
        if delay_ms > 0:
            delays.append(round(delay_ms * 1000))
    return delays


def delays_to_hist(delays_usec: Sequence[int]) -> tuple[int, ...]:
    h = [0] * HIST_SLOTS
    for d in delays_usec:
        h[slot_of(d)] += 1
    return tuple(h)


# -- the two agreement measurements (host: tests/bpf, VM: tests/vm) ----------------------------------


def against_perf_timehist(fs: CgroupFs, perf_data: str, secs: float = 2.0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Wakeup -> switch-in latency of one workload cgroup: (ours, perf sched timehist's "sch delay").

    Our sched probe is loaded with runq_preempted=False (RUNQ_WAKEUP_ONLY): perf's sch delay only
    times wakeups. The workload (4 sleepers that wake every ~1.5 ms, 2 spinners) starts after
    both tools are recording and is over before either stops, so both see all of it.
    """
    from aios_host.kernel.root import SysRoot
    from aios_host.model.hist import hist_delta
    from aios_host.probes.loader import LoadOptions, ProbeSet

    opts = LoadOptions(probes=("sched",), runq_preempted=False, strict=True)
    with ProbeSet(SysRoot("/"), opts) as probes, scratch_cgroups(fs, "mix") as cg:
        cg_id = cg["mix"].id
        perf = perf_sched_record(perf_data)
        try:
            s0 = probes.read()
            sleep = sleepers(cg["mix"], 4, secs)
            spin = spinners(cg["mix"], 2)
            for p in sleep:
                p.wait(timeout=60)
            stop(spin)
            time.sleep(0.3)
            s1 = probes.read()
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
    ours = hist_delta(s0.counters(cg_id).runq_hist, s1.counters(cg_id).runq_hist)
    theirs = delays_to_hist(perf_sch_delays_usec(perf_data, [p.pid for p in sleep + spin]))
    return ours, theirs


def against_runqlat(fs: CgroupFs, seconds: int = 3, probes=None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """System-wide run-queue latency over one interval: (ours, runqlat-bpfcc's), the same workload
    (3 spinners and 2 sleepers in a cgroup) running for both. Both time wakeups and preemptions.
    `probes`: a loaded ProbeSet with the sched probe in its default mode (else one is loaded)."""
    from contextlib import nullcontext

    from aios_host.kernel.root import SysRoot
    from aios_host.model.hist import hist_delta
    from aios_host.probes.loader import LoadOptions, ProbeSet

    own = probes is None
    ctx = ProbeSet(SysRoot("/"), LoadOptions(probes=("sched",), strict=True)) if own else nullcontext(probes)
    with ctx as probes, scratch_cgroups(fs, "load") as cg:
        work: list[subprocess.Popen] = []
        try:
            rq = start_runqlat(seconds)  # compiles before the workload competes with it
            s0 = probes.read()
            deadline = time.monotonic() + seconds
            work = spinners(cg["load"], 3) + sleepers(cg["load"], 2, seconds + 30)
            time.sleep(max(0.0, deadline - time.monotonic()))
            s1 = probes.read()
            out = rq.communicate(timeout=120)[0]
        finally:
            stop(work)
    deltas = [hist_delta(s0.counters(i).runq_hist, s1.counters(i).runq_hist)
              for i in set(s0.cgroups) | set(s1.cgroups)]
    ours = tuple(sum(slot) for slot in zip(*deltas, strict=True))  # summed slot by slot
    return ours, parse_log2_hist(out)
