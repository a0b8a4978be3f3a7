"""The probe set on this host's kernel: workloads in known cgroup v2 cgroups, real bcc programs."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.model import build_snapshot
from aios_host.probes import structs
from aios_host.probes.collect import sample_cgroups
from aios_host.probes.loader import LoadOptions, ProbeSet
from aios_host.probes.stats import bpf_stats_enabled, overhead, read_bpf_stats_enabled
from tests.bpf.workloads import scratch_cgroups, spawn_in, spinners, stop, toucher


@pytest.fixture(scope="module")
def fs():
    return CgroupFs(SysRoot("/"))


@pytest.fixture(scope="module")
def probes():
    with ProbeSet(SysRoot("/"), LoadOptions(strict=True)) as p:
        yield p


def snapshot_over(probes, fs, ids, seconds):
    """Probe and cgroupfs samples around `seconds` (cpu.stat usage_usec is the kernel's own count
    of on-CPU time: a reference for the sched probe's)."""
    c0 = sample_cgroups(fs, ids.values())
    s0 = probes.read()
    time.sleep(seconds)
    s1 = probes.read()
    c1 = sample_cgroups(fs, ids.values())
    return build_snapshot(s0, s1, ids, c0, c1)


def wait_events(probes, want, timeout=10.0):
    """Poll until want(events so far) is true; returns the events."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += probes.poll(timeout_ms=100)
        if want(got):
            return got
    return got


def test_every_probe_attached_with_the_chosen_method(probes):
    assert set(probes.loaded) == {"sched", "faults", "reclaim", "blkio", "oom", "proc"}
    raw_here = probes.facts.headers == "matching" or probes.facts.btf_raw
    assert probes.choice.method == ("raw" if raw_here else "tracepoint")
    if raw_here:  # the cheap path: no tracepoint record formatted, no syscall tracepoint enabled
        labels = {label for _, label, _ in probes.programs()}
        assert {"raw:sched_switch", "raw:sched_wakeup", "raw:sched_process_exit"} <= labels
        assert not any(label.startswith(("syscalls:", "signal:")) for label in labels)
    assert all(s.status == "attached" for s in probes.statuses.values())


@pytest.mark.parametrize(
    ("probe", "table", "side", "mirror"),
    [
        ("sched", "sched_stats", "Leaf", structs.SchedStats),
        ("reclaim", "reclaim_stats", "Leaf", structs.ReclaimStats),
        ("blkio", "blk_hist", "Key", structs.HistKey),
    ],
)
def test_bcc_tables_match_the_ctypes_mirrors(probes, probe, table, side, mirror):
    t = probes.loaded[probe].bpf[table.encode()]
    bcc_type = getattr(t, "sLeaf", t.Leaf) if side == "Leaf" else t.Key  # per-CPU: sLeaf is one CPU's
    assert ctypes.sizeof(bcc_type) == ctypes.sizeof(mirror)
    theirs = {name: getattr(bcc_type, name).offset for name, *_ in bcc_type._fields_}
    ours = {name: getattr(mirror, name).offset for name, *_ in mirror._fields_}
    assert theirs == ours


def test_spinners_raise_runq_latency_of_their_own_cgroup_only(probes, fs):
    with scratch_cgroups(fs, "busy", "idle") as cg:
        quiet = spawn_in(cg["idle"], ["sh", "-c", "while :; do sleep 0.05; done"])
        spin = spinners(cg["busy"], 3)  # 3 spinners, 2 CPUs: each waits for a CPU about 1/3 of the time
        try:
            time.sleep(1.0)
            ids = {cg["busy"].id: str(cg["busy"]), cg["idle"].id: str(cg["idle"])}
            snap = snapshot_over(probes, fs, ids, 3.0)
        finally:
            stop([*spin, quiet])
    busy, idle = (next(c for c in snap.cgroups if c.path.endswith("/busy")),
                  next(c for c in snap.cgroups if c.path.endswith("/idle")))
    assert busy.runq_count >= 50, busy
    assert busy.runq_p99_usec >= 1000, busy  # a time slice or more behind the other spinners
    assert busy.preemptions_per_s >= 50, busy
    # on-CPU time agrees with the kernel's cpu.stat usage_usec of the same cgroup (other work on a
    # shared host decides how much the spinners get, not this test)
    assert busy.oncpu_cores == pytest.approx(busy.cpu_usage_cores, rel=0.15), busy
    assert idle.oncpu_cores < 0.3 and idle.oncpu_cores < busy.oncpu_cores / 2, idle
    if idle.runq_count:
        assert idle.runq_p50_usec < busy.runq_p50_usec / 4, (idle, busy)


def test_page_faults_land_on_the_touching_cgroup(probes, fs):
    pages = 20_000
    with scratch_cgroups(fs, "touch", "other") as cg:
        touch_id, other_id = cg["touch"].id, cg["other"].id
        s0 = probes.read()
        p = toucher(cg["touch"], pages)
        assert p.wait(timeout=60) == 0
        s1 = probes.read()
    assert s1.counters(touch_id).faults - s0.counters(touch_id).faults >= pages
    assert s1.counters(other_id).faults == 0


def _exits(events, pids):
    return {e.pid: e for e in events if e.kind == "exit" and e.pid in pids}


def test_exit_code_and_killing_signals(probes, fs):
    probes.poll(0)
    with scratch_cgroups(fs, "proc") as cg:
        three = spawn_in(cg["proc"], ["sh", "-c", "exit 3"])
        killed = spawn_in(cg["proc"], ["sleep", "100"])
        termed = spawn_in(cg["proc"], ["sleep", "100"])
        time.sleep(0.5)
        killed.send_signal(signal.SIGKILL)
        termed.send_signal(signal.SIGTERM)
        for p in (three, killed, termed):
            p.wait()
        pids = {three.pid, killed.pid, termed.pid}
        events = wait_events(probes, lambda ev: len(_exits(ev, pids)) == 3)
        cg_id = cg["proc"].id
    exits = _exits(events, pids)
    assert (exits[three.pid].exit_code, exits[three.pid].signal) == (3, 0)
    assert exits[three.pid].status == "exited 3"
    assert exits[killed.pid].signal == signal.SIGKILL and exits[killed.pid].status == "killed by SIGKILL"
    assert exits[termed.pid].signal == signal.SIGTERM  # delivered through the SIGKILL fast path
    assert {e.cgroup_id for e in exits.values()} == {cg_id}
    execs = [e for e in events if e.kind == "exec" and e.pid == killed.pid]
    assert execs and execs[-1].filename.endswith("sleep") and execs[-1].cgroup_id == cg_id


def test_a_process_exits_once_with_the_status_of_its_group(probes, fs):
    code = ("import os, threading, time\n"
            "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(7))).start()\n"
            "[threading.Thread(target=time.sleep, args=(5,), daemon=True).start() for _ in range(3)]\n"
            "time.sleep(5)\n")
    probes.poll(0)
    with scratch_cgroups(fs, "threads") as cg:
        p = spawn_in(cg["threads"], [sys.executable, "-c", code])
        assert p.wait(timeout=30) == 7
        events = wait_events(probes, lambda ev: bool(_exits(ev, {p.pid})))
    exits = [e for e in events if e.kind == "exit" and e.pid == p.pid]
    assert len(exits) == 1 and exits[0].exit_code == 7 and exits[0].signal == 0


def test_block_io_latency_by_issuing_cgroup(probes, fs, tmp_path):
    st = os.stat(tmp_path)
    if os.major(st.st_dev) == 0:
        pytest.skip(f"{tmp_path} is not on a block device")
    target = tmp_path / "direct.bin"
    with scratch_cgroups(fs, "io") as cg:
        s0 = probes.read()
        p = spawn_in(cg["io"], ["dd", "if=/dev/zero", f"of={target}", "bs=64k", "count=64",
                                "oflag=direct", "status=none"])
        assert p.wait(timeout=60) == 0
        p = spawn_in(cg["io"], ["dd", f"if={target}", "of=/dev/null", "bs=64k", "iflag=direct",
                                "status=none"])
        assert p.wait(timeout=60) == 0
        time.sleep(0.2)
        s1 = probes.read()
        snap = build_snapshot(s0, s1, {cg["io"].id: "/io"})
    io = {c.path: c for c in snap.cgroups}["/io"]
    assert io.blk_ios >= 64, io  # 64 direct writes + 64 direct reads, maybe merged or split
    assert io.blk_p99_usec is not None and io.blk_p99_usec > 0


def test_overhead_stats_and_the_sysctl_is_restored(probes, fs):
    root = SysRoot("/")
    before_value = read_bpf_stats_enabled(root)
    with bpf_stats_enabled(root) as old:
        assert old == before_value and read_bpf_stats_enabled(root) == "1"
        c0 = probes.prog_counters()
        t0 = time.monotonic()
        subprocess.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do /bin/true; done"], check=True)
        time.sleep(0.5)
        c1 = probes.prog_counters()
        rows = {(r.probe, r.program): r for r in overhead(c0, c1, time.monotonic() - t0, os.cpu_count() or 1)}
    assert read_bpf_stats_enabled(root) == before_value
    switch = next(r for (probe, prog), r in rows.items() if probe == "sched" and prog.endswith("sched_switch"))
    assert switch.runs > 0 and 0 < switch.ns_per_run < 100_000
    execs = next(r for (probe, prog), r in rows.items() if prog == "sched:sched_process_exec")
    assert execs.runs >= 8


def test_prune_forgets_cgroups_that_are_gone(probes, fs):
    with scratch_cgroups(fs, "gone") as cg:
        gone = cg["gone"].id
        spawn_in(cg["gone"], ["sh", "-c", "for i in 1 2 3; do /bin/true; done"]).wait()
        time.sleep(0.1)
        assert gone in probes.read().cgroups
    live = {c.id for c in fs.walk("")}
    assert probes.prune(live) > 0
    assert gone not in probes.read().cgroups


def test_nothing_dropped_or_lost_under_this_load(probes):
    s = probes.read()
    assert s.lost_events == 0
    assert not {k: v for k, v in s.drops.items() if not k.endswith("task_map")}, s.drops


def test_exit_codes_from_tracepoint_format_programs_too(fs):
    """proc as a tracepoint-format program (--attach tracepoint): the status still comes from
    task_struct.exit_code (BTF offset or matching headers) where it can, else from the join."""
    with ProbeSet(SysRoot("/"), LoadOptions(attach="tracepoint", probes=("proc",), strict=True)) as p, \
            scratch_cgroups(fs, "tp") as cg:
        labels = {label for _, label, _ in p.programs()}
        if p.facts.task_exit_code_off is not None:
            assert labels == {"sched:sched_process_exec", "sched:sched_process_exit"}
        three = spawn_in(cg["tp"], ["sh", "-c", "exit 3"])
        termed = spawn_in(cg["tp"], ["sleep", "100"])
        time.sleep(0.5)
        termed.send_signal(signal.SIGTERM)
        for q in (three, termed):
            q.wait()
        exits = _exits(wait_events(p, lambda ev: len(_exits(ev, {three.pid, termed.pid})) == 2),
                       {three.pid, termed.pid})
    assert (exits[three.pid].exit_code, exits[three.pid].signal) == (3, 0)
    assert exits[termed.pid].signal == signal.SIGTERM
    if p.facts.task_exit_code_off is not None:
        assert {e.how for e in exits.values()} == {"task"}
