"""The kernel layer and doctor on the real host running the tests (here: hybrid cgroups, 6.18)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import pytest

from aios_host.errors import KernelError
from aios_host.kernel.cgroup import CgroupFs, sample
from aios_host.kernel.root import SysRoot


@pytest.fixture
def fs():
    return CgroupFs(SysRoot("/"))


@pytest.fixture
def scratch(fs):
    rel = f"aios-hosttest-{os.getpid()}"
    cg = fs.create(rel)
    yield cg
    if cg.populated():
        cg.kill()
        deadline = time.monotonic() + 10
        while cg.populated() and time.monotonic() < deadline:
            time.sleep(0.05)
    fs.remove(rel)


def _cgroup2_mount_from_proc() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                return fields[4]
    raise AssertionError("no cgroup2 mount")


def test_doctor_agrees_with_the_kernel():
    out = subprocess.run([sys.executable, "-m", "aios_host", "doctor", "--json"],
                         capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    mount = _cgroup2_mount_from_proc()
    assert doc["cgroup2_mount"] == mount
    with open(f"{mount}/cgroup.controllers") as f:
        assert doc["controllers_available"] == f.read().split()
    build = f"/lib/modules/{platform.release()}/build/include/generated/utsrelease.h"
    if os.path.exists(build):
        matching = f'"{platform.release()}"' in open(build).read()
        assert doc["headers"] == ("matching" if matching else "fallback")
    else:
        assert doc["headers"] == "missing"
    status = {f["name"]: f["status"] for f in doc["features"]}
    assert status["cpufreq"] == ("ok" if os.path.isdir("/sys/devices/system/cpu/cpufreq/policy0") else "missing")
    with open("/proc/1/comm") as f:
        assert status["systemd"] == ("ok" if f.read().strip() == "systemd" else "missing")
    try:
        import bcc  # noqa: F401
        assert status["bcc"] == "ok"
    except ImportError:
        assert status["bcc"] == "missing"


def test_kill_ends_a_process_tree(scratch):
    procs = SysRoot("/").path(scratch.file("cgroup.procs"))

    def join():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    p = subprocess.Popen(["/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"], preexec_fn=join)
    deadline = time.monotonic() + 10
    while len(scratch.procs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(scratch.procs()) == 3 and scratch.populated()
    scratch.kill()
    assert p.wait(timeout=10) == -9
    while scratch.populated() and time.monotonic() < deadline + 10:
        time.sleep(0.05)
    assert scratch.procs() == ()


def test_moved_process_is_found_by_pid_and_sampled(fs, scratch):
    p = subprocess.Popen(["/bin/sleep", "1000"])
    try:
        scratch.write("cgroup.procs", str(p.pid))  # as the plan moves a process
        assert fs.cgroup_of_pid(p.pid).rel == scratch.rel
        s = sample(scratch)
        assert s.nr_procs == 1 and s.cpu_usage_usec is not None  # cpu.stat is there without controllers
        assert scratch.id == s.id == os.stat(SysRoot("/").path(scratch.kernel_path)).st_ino
    finally:
        p.kill()
        p.wait()


def test_writes_this_host_cannot_take_name_path_and_errno(fs, scratch):
    if "memory" in fs.cgroup("").controllers():
        pytest.skip("this host's cgroup v2 has the memory controller")
    with pytest.raises(KernelError) as exc:
        scratch.write("memory.high", str(1 << 30))
    assert exc.value.errno == 2 and exc.value.path.endswith(f"{scratch.rel}/memory.high")
    assert not SysRoot("/").exists(scratch.file("memory.high"))


def test_policy_apply_refused_up_front_where_controllers_are_missing(fs, tmp_path):
    if {"cpu", "memory", "io"} <= set(fs.cgroup("").controllers()):
        pytest.skip("this host's cgroup v2 has every controller")
    policies = os.path.join(os.path.dirname(__file__), "..", "..", "policies", "default.toml")
    before = [str(c) for c in fs.walk()]
    run = subprocess.run([sys.executable, "-m", "aios_host", "policy", "apply", "--sample-ms", "0", policies],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "nothing was changed" in run.stderr
    assert [str(c) for c in fs.walk()] == before  # not a single cgroup made
    dry = subprocess.run([sys.executable, "-m", "aios_host", "policy", "apply", "--dry-run", "--sample-ms", "0",
                          policies], capture_output=True, text=True)
    assert dry.returncode == 0 and "controller here" in dry.stdout


def test_energy_status_says_what_this_machine_has_and_why_not_the_rest():
    from tests.energy_honesty import PYTHON_CLI, check_against_the_machine, energy_status

    check_against_the_machine(energy_status(PYTHON_CLI))


def test_cgroup_events_changes_are_signalled_by_inotify(fs, scratch):
    """kernfs signals IN_MODIFY on cgroup.events when populated changes: the daemon's reader
    re-reads it only then (kernel/watch.py). The kernel sends it from a work item (kernfs_notify),
    rate-limited to one per 20 ms per file: it arrives within milliseconds, not synchronously."""
    from aios_host.kernel.watch import ModifyWatch

    def changed_within(seconds: float) -> set:
        deadline = time.monotonic() + seconds
        while not (got := w.changed()) and time.monotonic() < deadline:
            time.sleep(0.01)
        return got

    w = ModifyWatch()
    try:
        assert w.watch("scratch", str(SysRoot("/").path(scratch.file("cgroup.events"))))
        assert w.changed() == set()
        p = subprocess.Popen(["/bin/sleep", "1000"])
        try:
            scratch.write("cgroup.procs", str(p.pid))
            assert changed_within(2) == {"scratch"} and scratch.populated()
            time.sleep(0.1)
            assert w.changed() == set()  # told once
        finally:
            p.kill()
            p.wait()
        assert changed_within(10) == {"scratch"}
        assert not scratch.populated()
    finally:
        w.close()
