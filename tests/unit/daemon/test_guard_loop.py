"""The memory guard inside the daemon's loop, on a fake cgroup v2 host: senpai owns an auto class's
memory.high (the plan does not fight it), the escalation tightens, freezes and kills the lowest
tier in order and never the protected class, thaws when safe, and everything is journaled and
restored."""

from __future__ import annotations

import json

from aios_host.actuate.state import StateStore
from aios_host.daemon.memguard import NOTICE_HEADROOM_BYTES
from tests.unit.daemon.test_loop import CG, Clock, make, run_ticks
from tests.unit.fixtures import FakeCgroupRoot, fake_v2_host, put

MIB = 1 << 20
POLICY = """
[host]
reserve_cores = 0
reserve_memory = 0
[memory_guard]
enabled = true
danger_available = "512M"
safe_available = "1G"
step_seconds = 2
thaw_seconds = 4
min_size = "16M"
[[class]]
name = "prot"
priority = 10
memory.protect = true
[[class]]
name = "cache"
priority = 5
memory.high = "auto"
[[class]]
name = "batch"
priority = 0
"""


def meminfo(root, available_mb: int) -> None:
    put(root.root, "/proc/meminfo", f"MemTotal: 8388608 kB\nMemAvailable: {available_mb * 1024} kB\n"
                                    "SwapTotal: 0 kB\nSwapFree: 0 kB\n")


def class_mem(root, cls: str, current: int, stall_usec: int = 0, unevictable: int = 0,
              events: str | None = None, events_local: str | None = None) -> None:
    """A class cgroup's memory files; memory.events(.local) only when given (a made class cgroup
    has the VM's captured ones, all 0)."""
    put(root.root, f"{CG}/{cls}/memory.current", f"{current}\n")
    for f, text in (("memory.events", events), ("memory.events.local", events_local)):
        if text is not None:
            put(root.root, f"{CG}/{cls}/{f}", text)
    put(root.root, f"{CG}/{cls}/memory.stat", f"anon 0\nshmem 0\nunevictable {unevictable}\n")
    put(root.root, f"{CG}/{cls}/memory.pressure",
        f"some avg10=0.00 avg60=0.00 avg300=0.00 total={stall_usec}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    put(root.root, f"{CG}/{cls}/cgroup.events", "populated 1\nfrozen 0\n")
    for f, v in (("memory.high", "max\n"), ("memory.max", "max\n"), ("cgroup.freeze", "0\n"), ("cgroup.kill", "")):
        if not root.path(f"{CG}/{cls}/{f}").exists():
            put(root.root, f"{CG}/{cls}/{f}", v)


def setup(tmp_path):
    fake_v2_host(tmp_path / "root", cpus=4)
    (tmp_path / "p.toml").write_text(POLICY)
    root = FakeCgroupRoot.make(tmp_path / "root")
    meminfo(root, 6000)
    return root, tmp_path


def steady_daemon(tmp_path):
    """A started daemon whose three classes use steady memory (prot 800M, cache 1000M, batch 2000M)."""
    root, tmp = setup(tmp_path)
    clock = Clock()
    d = make((root, tmp), clock, hold_ticks=1, cooldown_s=0)
    run_ticks(d, clock, 2)  # class cgroups made
    for cls, cur in (("prot", 800 * MIB), ("cache", 1000 * MIB), ("batch", 2000 * MIB)):
        class_mem(root, cls, cur)
    return root, tmp, d, clock


def test_senpai_owns_an_auto_class_and_the_escalation_goes_in_order(tmp_path):
    root, tmp, d, clock = steady_daemon(tmp_path)
    run_ticks(d, clock, 1)
    assert int(root.path(f"{CG}/cache/memory.high").read_text()) == 1000 * MIB  # senpai starts at usage
    run_ticks(d, clock, 13)  # calm: senpai probes down every 6 ticks, the plan never writes it back
    assert int(root.path(f"{CG}/cache/memory.high").read_text()) < 1000 * MIB
    assert root.path(f"{CG}/batch/cgroup.freeze").read_text().strip() == "0"

    put(root.root, f"{CG}/batch/cgroup.procs", "4242\n")
    put(root.root, f"{CG}/batch/rank-1/cgroup.procs", "4343\n")  # the subtree's processes count too
    meminfo(root, 300)  # danger: below 512M available
    steps = []
    for _ in range(8):
        run_ticks(d, clock, 1)
        steps.append((root.path(f"{CG}/batch/memory.high").read_text().strip(),
                      root.path(f"{CG}/batch/cgroup.freeze").read_text().strip(),
                      root.path(f"{CG}/batch/cgroup.kill").read_text().strip()))
    assert steps[0] == (str(2000 * MIB), "0", "")  # tightened to what it uses
    assert ("1", "") in {(f, k) for _, f, k in steps}  # then frozen
    assert steps[-1][1:] == ("1", "1")  # then killed (the whole class cgroup)
    assert root.path(f"{CG}/prot/cgroup.freeze").read_text().strip() == "0"  # protected: untouched
    assert root.path(f"{CG}/prot/memory.high").read_text().strip() == "max"
    states = {c.name: c.memory_guard for c in d.view.classes}
    assert states["batch"] == "kill" and states["prot"] == "ok" and d.view.memory_guard.startswith("danger")
    kills = json.loads(root.path("/run/aios-host/guard-kills.json").read_text())
    assert kills[-1]["cgroup"].endswith("/batch") and kills[-1]["class"] == "batch"
    assert kills[-1]["pids"] == [4242, 4343]  # for supervisors of ranks moved in by match.job

    meminfo(root, 6000)  # safe again: thaw after thaw_seconds
    run_ticks(d, clock, 6)
    assert root.path(f"{CG}/batch/cgroup.freeze").read_text().strip() == "0"
    assert {c.name: c.memory_guard for c in d.view.classes}["batch"] == "ok"
    # handed back as it was: left tightened, the class's next workload would be throttled below any
    # danger and never acted on
    assert root.path(f"{CG}/batch/memory.high").read_text().strip() == "max"


def test_the_guard_writes_are_restored_on_exit(tmp_path):
    root, tmp = setup(tmp_path)
    clock = Clock()
    d = make((root, tmp), clock, hold_ticks=1, cooldown_s=0)
    run_ticks(d, clock, 2)
    for cls, cur in (("prot", 800 * MIB), ("cache", 1000 * MIB), ("batch", 2000 * MIB)):
        class_mem(root, cls, cur)
    meminfo(root, 300)
    run_ticks(d, clock, 4)  # tightened and frozen
    assert root.path(f"{CG}/batch/cgroup.freeze").read_text().strip() == "1"
    record = {w.path: w for r in StateStore(root).load() for w in r.writes}
    assert record[f"{CG}/batch/cgroup.freeze"].old == "0"  # journaled before the freeze
    assert record[f"{CG}/batch/memory.high"].old == "max"
    d.restore()
    freeze = root.path(f"{CG}/batch/cgroup.freeze")
    assert not freeze.exists() or freeze.read_text().strip() == "0"  # thawed (or the class cgroup removed)
    assert StateStore(root).load() == []


def test_dry_run_logs_what_the_guard_would_do_and_writes_nothing(tmp_path):
    root, tmp = setup(tmp_path)
    clock = Clock()
    d = make((root, tmp), clock, hold_ticks=1, cooldown_s=0, dry_run=True)
    run_ticks(d, clock, 2)
    root.path(f"{CG}").mkdir(parents=True, exist_ok=True)
    for cls, cur in (("prot", 800 * MIB), ("cache", 1000 * MIB), ("batch", 2000 * MIB)):
        root.path(f"{CG}/{cls}").mkdir(parents=True, exist_ok=True)
        class_mem(root, cls, cur)
    meminfo(root, 300)
    run_ticks(d, clock, 8)
    assert root.path(f"{CG}/batch/cgroup.freeze").read_text().strip() == "0"
    assert root.path(f"{CG}/batch/memory.high").read_text().strip() == "max"


def test_a_job_that_asked_for_a_notice_is_thawed_signalled_and_killed_after_its_grace(tmp_path):
    """The rank is a real process (its SIGUSR1 handler writes a checkpoint file); the fake host's
    records say it is rank 0 of a job with guard_notice = "SIGUSR1" and a grace of 3 s, inside
    the batch class."""
    import signal
    import subprocess
    import sys
    import time

    from aios_host.supervisor.state import JOBS_RUN_DIR, VERSION

    ckpt = tmp_path / "ckpt"
    rank = subprocess.Popen([sys.executable, "-c",
                             "import signal, sys, time\n"
                             f"signal.signal(signal.SIGUSR1, lambda *_: open({str(ckpt)!r}, 'w').write('saved'))\n"
                             "print('ready', flush=True)\n"
                             "while True: time.sleep(0.05)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert rank.stdout.readline().strip() == "ready"
        root, tmp = setup(tmp_path)
        clock = Clock()
        d = make((root, tmp), clock, hold_ticks=1, cooldown_s=0)
        run_ticks(d, clock, 2)
        for cls, cur in (("prot", 800 * MIB), ("cache", 1000 * MIB), ("batch", 2000 * MIB)):
            class_mem(root, cls, cur)
        put(root.root, f"{CG}/batch/cgroup.procs", f"{rank.pid}\n")
        stat = " ".join(["S", "1"] + ["0"] * 17 + ["777"] + ["0"] * 10)
        put(root.root, f"/proc/{rank.pid}/stat", f"{rank.pid} (python) {stat}\n")
        put(root.root, f"{JOBS_RUN_DIR}/ckptjob.json", json.dumps({
            "version": VERSION, "key": "ckptjob", "name": "ckptjob", "node_rank": 0, "nnodes": 1, "nproc": 1,
            "world_size": 1, "supervisor_pid": 1, "launcher": "systemd", "backend": "gloo", "cls": "batch",
            "status": "running", "guard_notice": "SIGUSR1", "guard_grace_s": 3.0,
            "ranks": [{"rank": 0, "local_rank": 0, "pid": rank.pid, "pid_start": 777}]}))
        meminfo(root, 300)  # danger
        seen, highs = [], []
        for _ in range(9):
            run_ticks(d, clock, 1)
            seen.append((root.path(f"{CG}/batch/cgroup.freeze").read_text().strip(),
                         root.path(f"{CG}/batch/cgroup.kill").read_text().strip(),
                         {c.name: c.memory_guard for c in d.view.classes}["batch"]))
            highs.append(root.path(f"{CG}/batch/memory.high").read_text().strip())
        states = [s for _, _, s in seen]
        assert states.index("freeze") < states.index("notice") < states.index("kill"), seen
        at_notice = seen[states.index("notice")]
        assert at_notice[:2] == ("0", ""), seen  # thawed to take the signal, not yet killed
        # tightened to its use, then raised just above it for the notice (a gang throttled above
        # memory.high could not run its handler within the grace in the VM)
        assert highs[states.index("freeze")] == str(2000 * MIB), highs
        assert highs[states.index("notice")] == str(2000 * MIB + NOTICE_HEADROOM_BYTES), highs
        deadline = time.monotonic() + 5
        while not ckpt.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ckpt.read_text() == "saved"  # the real process got SIGUSR1
        # the kill came 3 ticks (the grace, 1 s a tick) after the notice
        assert states.index("kill") - states.index("notice") == 3, seen
        assert seen[-1][1] == "1"
    finally:
        rank.send_signal(signal.SIGKILL)
        rank.wait()


def test_a_policy_reload_in_the_middle_of_an_escalation_still_thaws_and_releases(tmp_path):
    """The VM found it: a reload right after a kill gave the guard a fresh state, and the frozen
    class stayed frozen (and tightened) for good; the next job moved into it never ran."""
    root, tmp = setup(tmp_path)
    clock = Clock()
    d = make((root, tmp), clock, hold_ticks=1, cooldown_s=0)
    run_ticks(d, clock, 2)
    for cls, cur in (("prot", 800 * MIB), ("cache", 1000 * MIB), ("batch", 2000 * MIB)):
        class_mem(root, cls, cur)
    meminfo(root, 300)
    run_ticks(d, clock, 4)  # tightened and frozen
    assert root.path(f"{CG}/batch/cgroup.freeze").read_text().strip() == "1"
    (tmp / "p.toml").write_text(POLICY.replace('thaw_seconds = 4', 'thaw_seconds = 3'))
    d._reload = True
    meminfo(root, 6000)  # safe from here on
    run_ticks(d, clock, 8)
    assert root.path(f"{CG}/batch/cgroup.freeze").read_text().strip() == "0"
    assert root.path(f"{CG}/batch/memory.high").read_text().strip() == "max"
    assert {c.name: c.memory_guard for c in d.view.classes}["batch"] == "ok"


def test_host_memory_pressure_full_starts_the_escalation_when_the_policy_asks(tmp_path):
    """MemAvailable stays high; /proc/pressure/memory's full avg10 crosses danger_pressure_full."""
    root, tmp = setup(tmp_path)
    (tmp / "p.toml").write_text(POLICY.replace('thaw_seconds = 4', 'thaw_seconds = 4\ndanger_pressure_full = 20'))
    clock = Clock()
    d = make((root, tmp), clock, hold_ticks=1, cooldown_s=0)
    run_ticks(d, clock, 2)
    for cls, cur in (("prot", 800 * MIB), ("cache", 1000 * MIB), ("batch", 2000 * MIB)):
        class_mem(root, cls, cur)
    put(root.root, "/proc/pressure/memory", "some avg10=40.00 avg60=9.00 avg300=2.00 total=900000\n"
                                            "full avg10=5.00 avg60=1.00 avg300=0.20 total=300000\n")
    run_ticks(d, clock, 3)
    assert root.path(f"{CG}/batch/memory.high").read_text().strip() == "max"  # 5% < 20%: calm
    put(root.root, "/proc/pressure/memory", "some avg10=90.00 avg60=30.00 avg300=9.00 total=9000000\n"
                                            "full avg10=35.00 avg60=10.00 avg300=3.00 total=3000000\n")
    run_ticks(d, clock, 1)
    assert root.path(f"{CG}/batch/memory.high").read_text().strip() == str(2000 * MIB)  # tightened
    assert d.view.memory_guard == "danger: memory pressure full avg10 35.0% >= 20%"
