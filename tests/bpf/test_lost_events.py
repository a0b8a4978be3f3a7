"""Lost events are counted: a burst of short processes against a one-page event buffer that
nobody reads while the burst runs. The product's own counts are checked: ProbeSet.lost_events
(the perf buffer's lost-sample callback) and drops["proc.event"] (the kernel side's failed sends,
either transport), against the events that did arrive."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.probes.loader import LoadOptions, ProbeSet
from tests.bpf.workloads import scratch_cgroups, spawn_in

pytestmark = [pytest.mark.bpf, pytest.mark.root]

BURST = 500  # processes; each is an exec and an exit event: 1000 events, ~20 fit in one page
# The buffer also takes the exec/exit events of every other process on the host during the
# burst: a quiet host adds a few; twice-counted failures would add ~2 * 2 * BURST.
OTHERS_SLACK = BURST // 2


@pytest.fixture(scope="module")
def fs():
    return CgroupFs(SysRoot("/"))


def drain(probes: ProbeSet, limit_s: float = 10.0) -> list:
    """Read until a poll brings nothing more (a host that never stops exec'ing: until limit_s)."""
    got: list = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        more = probes.poll(timeout_ms=100)
        if not more:
            break
        got += more
    return got


def one_process_per_cpu() -> list[int]:
    """Run /bin/true pinned to each CPU we may use, so that each CPU's buffer is written once more
    after the drain: a perf buffer reports what it lost (PERF_RECORD_LOST) only in front of the
    next sample it takes on that CPU. Returns their pids."""
    pids = []
    for cpu in sorted(os.sched_getaffinity(0)):
        p = subprocess.Popen(["/bin/true"], preexec_fn=lambda c=cpu: os.sched_setaffinity(0, {c}))
        assert p.wait(timeout=30) == 0
        pids.append(p.pid)
    return pids


@pytest.mark.parametrize("transport", ["perf", "ringbuf"])
def test_an_overflowed_one_page_buffer_counts_what_it_lost(fs, transport):
    opts = LoadOptions(probes=("proc",), events=transport, event_pages=1, strict=True)
    with ProbeSet(SysRoot("/"), opts) as probes:
        assert probes.events_transport == transport
        drain(probes)
        before = probes.read()
        with scratch_cgroups(fs, "burst") as cg:
            burst_id = cg["burst"].id
            # No poll while this runs: the kernel side fills the one page and then fails to send.
            burst = spawn_in(cg["burst"], ["sh", "-c", f"for i in $(seq {BURST}); do /bin/true; done"])
            assert burst.wait(timeout=300) == 0
            events = drain(probes)
            flushers = one_process_per_cpu()
            events += drain(probes)
        after = probes.read()

    ours = [e for e in events if e.cgroup_id == burst_id]
    dropped = after.drops.get("proc.event", 0) - before.drops.get("proc.event", 0)
    # What fit in the page before it overflowed arrived; most of the burst did not.
    assert 0 < len(ours) < 2 * BURST, len(ours)
    assert dropped > 0, after.drops
    # Every event of the burst either arrived or was counted as dropped (the count also has other
    # processes' events that failed to send, hence >=), and nothing was counted far beyond what
    # the host produced.
    assert len(ours) + dropped >= 2 * BURST, (len(ours), dropped)
    assert len(ours) + dropped <= 2 * BURST + 6 + OTHERS_SLACK, (len(ours), dropped)
    # The buffer works again after the overflow: the flushers' exits arrived.
    exited = {e.pid for e in events if e.kind == "exit"}
    assert set(flushers) <= exited, (flushers, sorted(exited)[-10:])
    if transport == "perf":
        # The lost-sample callback's total, as the sample reports it, is the kernel's count of
        # failed sends: every CPU's PERF_RECORD_LOST was flushed by one_process_per_cpu().
        lost = after.lost_events - before.lost_events
        assert after.lost_events == probes.lost_events and lost > 0
        assert lost == dropped, (lost, after.drops)
    else:
        # A ring buffer has no lost callback: its losses are the kernel side's drops only.
        assert after.lost_events == probes.lost_events == 0
