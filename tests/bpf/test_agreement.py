"""Our run-queue latency against references nobody here wrote.

1. perf sched timehist (linux-perf): its "sch delay" is wakeup -> switch-in, computed by perf from
   the same tracepoints, per task. Our sched probe with RUNQ_WAKEUP_ONLY, for the workload's
   cgroup, against perf's rows of the workload's pids.
2. bcc's runqlat-bpfcc, system-wide, same interval. runqlat reads task_struct fields (pid, tgid,
   __state) through the kernel headers; with fallback headers (6.1 headers on this 6.18 kernel)
   those offsets are wrong and its output is not a reference. The test then shows why and skips;
   the same comparison runs in the VM (tests/vm/test_probes_vm.py), whose headers match.

Tolerances (log2 histograms, usec): event counts within 10% of each other; p50 and p90 slots
within one log2 slot; the earth mover's distance between the normalized histograms <= 0.3 slot
(the start/end of each window move a few events). Total variation (<= 0.15) was used before and
failed CI once at 0.1506: in the VM (TCG, no KVM) two BPF programs on one tracepoint run one after
the other for several usec each, which moved 14% of runqlat's waits from the 8-15 to the 16-31 usec
slot; the earth mover's distance of that run was 0.18 slot, and a one-slot shift of everything is 1.
Short waits are compared as one slot (below 32 usec): perf prints msec with 3 decimals (1 usec
resolution), and perf's timestamps come from its own trace event while ours come from the BPF
program's callback on the same tracepoint, with perf's recording work in between; in CI runs this
put our short waits one log2 slot (about 8 usec) below perf's while the counts matched to 0.1% and
the millisecond slots matched slot for slot. The strict slot-by-slot comparison is the runqlat one
in the VM, where both sides are BPF programs on matching headers.
"""

from __future__ import annotations

import pytest

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.probes.loader import read_kernel_facts
from tests.bpf.workloads import (
    against_perf_timehist,
    against_runqlat,
    quantile_slot,
    runqlat_pids,
    slot_distance,
    start_runqlat,
)

COUNT_TOLERANCE = 0.10
SLOT_TOLERANCE = 1
SLOT_DISTANCE_TOLERANCE = 0.3


def assert_agree(ours, theirs, what):
    n_ours, n_theirs = sum(ours), sum(theirs)
    detail = f"{what}: ours {list(ours)[:22]} (n={n_ours}), theirs {list(theirs)[:22]} (n={n_theirs})"
    assert n_ours >= 200 and n_theirs >= 200, detail
    assert abs(n_ours - n_theirs) <= COUNT_TOLERANCE * max(n_ours, n_theirs), detail
    for q in (0.5, 0.9):
        assert abs(quantile_slot(ours, q) - quantile_slot(theirs, q)) <= SLOT_TOLERANCE, (q, detail)
    distance = slot_distance(ours, theirs)
    assert distance <= SLOT_DISTANCE_TOLERANCE, (distance, detail)


@pytest.fixture(scope="module")
def fs():
    return CgroupFs(SysRoot("/"))


PERF_FINE_SLOTS = 6  # slots 0..5 hold 0..31 usec: see the module docstring


def _below_32_usec_as_one(h):
    return (*([0] * (PERF_FINE_SLOTS - 1)), sum(h[:PERF_FINE_SLOTS]), *h[PERF_FINE_SLOTS:])


def test_wakeup_latency_agrees_with_perf_sched_timehist(fs, tmp_path):
    ours, theirs = against_perf_timehist(fs, str(tmp_path / "perf.data"))
    assert_agree(_below_32_usec_as_one(ours), _below_32_usec_as_one(theirs), "perf sched timehist sch delay")


def test_runq_latency_agrees_with_runqlat_bpfcc(fs):
    facts = read_kernel_facts(SysRoot("/"))
    if facts.headers != "matching":
        rq = start_runqlat(1, "-P")
        out = rq.communicate(timeout=60)[0]
        pid_max = int(open("/proc/sys/kernel/pid_max").read())
        pids = runqlat_pids(out)
        bogus = [p for p in pids if p > pid_max]
        if not pids or bogus:
            pytest.skip(
                f"runqlat-bpfcc is not a reference here: it reads task_struct through {facts.headers} "
                f"headers on kernel {facts.release}; with -P it reports pid(s) {bogus[:3] or pids[:3]} "
                f"(pid_max {pid_max}), i.e. every task's pid is read from a wrong offset. The agreement "
                "runs in the VM (tests/vm/test_probes_vm.py)"
            )
    ours, theirs = against_runqlat(fs)
    assert_agree(ours, theirs, "runqlat-bpfcc")
