"""The probe set on the VM's Debian 6.1 kernel, whose headers match: the raw tracepoint path.

Few tests, one compile of the probe set (bcc takes 5-6 s per program under TCG). Here runqlat-bpfcc
reads task_struct through matching headers, so it is a reference: our system-wide run-queue
histogram must agree with it (tolerances in tests/bpf/test_agreement.py).
"""

from __future__ import annotations

import signal
import sys
import time

import pytest

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.model import build_snapshot
from aios_host.probes.loader import LoadOptions, ProbeSet
from tests.bpf.test_agreement import assert_agree
from tests.bpf.workloads import against_runqlat, scratch_cgroups, spawn_in, spinners, stop, toucher


@pytest.fixture(scope="module")
def fs():
    return CgroupFs(SysRoot("/"))


@pytest.fixture(scope="module")
def probes():
    with ProbeSet(SysRoot("/"), LoadOptions(strict=True)) as p:
        yield p


def test_matching_headers_choose_raw_tracepoints(probes):
    assert probes.facts.headers == "matching", probes.facts
    assert probes.choice.method == "raw"
    assert "raw:sched_switch" in probes.loaded["sched"].programs
    assert "raw:sched_process_exit" in probes.loaded["proc"].programs
    assert "sched:sched_process_exec" in probes.loaded["proc"].programs  # tracepoint in both modes


def test_spinners_and_faults_are_charged_to_their_cgroups(probes, fs):
    with scratch_cgroups(fs, "busy", "touch") as cg:
        busy_id, touch_id = cg["busy"].id, cg["touch"].id
        spin = spinners(cg["busy"], 3)
        try:
            time.sleep(2.0)
            s0 = probes.read()
            p = toucher(cg["touch"], 5000)
            assert p.wait(timeout=120) == 0
            time.sleep(1.0)
            s1 = probes.read()
        finally:
            stop(spin)
    snap = build_snapshot(s0, s1, {busy_id: "/busy", touch_id: "/touch"})
    by_path = {c.path: c for c in snap.cgroups}
    busy, touch = by_path["/busy"], by_path["/touch"]
    print("vm snapshot", busy, touch, sep="\n")
    assert busy.runq_count >= 20, busy
    assert busy.runq_p99_usec >= 1000, busy
    assert busy.preemptions_per_s > 0, busy
    assert touch.faults_per_s * snap.interval_s >= 5000, touch
    assert busy.faults_per_s < touch.faults_per_s / 2, (busy, touch)


def test_exit_status_from_task_exit_code(probes, fs):
    probes.poll(0)
    code = ("import os, threading, time\n"
            "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(7))).start()\n"
            "time.sleep(30)\n")
    with scratch_cgroups(fs, "proc") as cg:
        three = spawn_in(cg["proc"], ["sh", "-c", "exit 3"])
        seven = spawn_in(cg["proc"], [sys.executable, "-c", code])
        killed = spawn_in(cg["proc"], ["sleep", "100"])
        termed = spawn_in(cg["proc"], ["sleep", "100"])
        time.sleep(2.0)
        killed.send_signal(signal.SIGKILL)
        termed.send_signal(signal.SIGTERM)
        for p in (three, seven, killed, termed):
            p.wait(timeout=60)
        pids = {p.pid for p in (three, seven, killed, termed)}
        got, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline and len({e.pid for e in got if e.kind == "exit"} & pids) < 4:
            got += probes.poll(timeout_ms=200)
        cg_id = cg["proc"].id
    exits = {e.pid: e for e in got if e.kind == "exit" and e.pid in pids}
    assert {e.how for e in exits.values()} == {"task"}
    assert (exits[three.pid].exit_code, exits[three.pid].signal) == (3, 0)
    assert (exits[seven.pid].exit_code, exits[seven.pid].signal) == (7, 0)
    assert exits[killed.pid].signal == signal.SIGKILL
    assert exits[termed.pid].signal == signal.SIGTERM
    assert {e.cgroup_id for e in exits.values()} == {cg_id}


def test_runq_latency_agrees_with_runqlat_bpfcc(probes, fs):
    ours, theirs = against_runqlat(fs, seconds=5, probes=probes)
    print("runqlat agreement", list(ours), list(theirs))
    assert_agree(ours, theirs, "runqlat-bpfcc")
