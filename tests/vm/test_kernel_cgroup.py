"""The kernel layer against a real cgroup v2 tree with every controller (the QEMU VM)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from aios_host.errors import KernelError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.cgroup import CgroupFs, sample
from aios_host.kernel.root import SysRoot


@pytest.fixture
def fs():
    return CgroupFs(SysRoot("/"))


@pytest.fixture
def leaf(fs):
    """/aios-vmtest-PID/leaf with cpu, cpuset, io, memory enabled top-down; removed afterwards."""
    top = f"aios-vmtest-{os.getpid()}"
    fs.create(f"{top}/leaf")
    fs.enable_controllers(f"{top}/leaf", ["cpu", "cpuset", "io", "memory"])
    cg = fs.cgroup(f"{top}/leaf")
    yield cg
    if SysRoot("/").exists(cg.file("cgroup.kill")):
        cg.kill()
    _wait_empty(cg)
    fs.remove(f"{top}/leaf")
    fs.remove(top)


def _wait_empty(cg, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while cg.populated() and time.monotonic() < deadline:
        time.sleep(0.05)


def _spawn_in(cg, *argv: str) -> subprocess.Popen:
    """Start a process that joins `cg` before exec, so everything it forks is in there too."""
    procs = SysRoot("/").path(cg.file("cgroup.procs"))

    def join() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return subprocess.Popen(argv, preexec_fn=join)


def test_controllers_enabled_top_down(fs, leaf):
    assert {"cpu", "cpuset", "io", "memory"} <= set(leaf.controllers())
    assert {"cpu", "cpuset", "io", "memory"} <= set(leaf.parent.subtree_control())


def test_write_and_read_back(leaf):
    """Values as the plan writes them, read back through the parsers the product reads them with."""
    leaf.write("cpu.max", "50000 100000")
    assert fmt.parse_cpu_max(leaf.read("cpu.max")) == fmt.CpuMax(50_000, 100_000)
    leaf.write("cpu.weight", "250")
    assert leaf.read("cpu.weight").strip() == "250"
    leaf.write("memory.max", str(512 << 20))
    leaf.write("memory.high", str(256 << 20))
    assert fmt.parse_limit(leaf.read("memory.high"), "memory.high") == 256 << 20
    assert fmt.parse_limit(leaf.read("memory.max"), "memory.max") == 512 << 20
    leaf.write("memory.low", str(64 << 20))
    assert fmt.parse_limit(leaf.read("memory.low"), "memory.low") == 64 << 20
    leaf.write("cpuset.cpus", "0")
    assert fmt.parse_cpu_list(leaf.read("cpuset.cpus")) == (0,)
    assert fmt.parse_cpu_list(leaf.read("cpuset.cpus.effective")) == (0,)
    leaf.write("cpuset.mems", "0")
    assert fmt.parse_cpu_list(leaf.read("cpuset.mems")) == (0,)
    leaf.write("io.weight", "default 300")
    assert fmt.parse_io_weight(leaf.read("io.weight"))["default"] == 300
    leaf.write("memory.max", "max")
    assert fmt.parse_limit(leaf.read("memory.max"), "memory.max") == fmt.MAX


def test_rejected_value_names_path_and_errno(leaf):
    with pytest.raises(KernelError) as exc:
        leaf.write("cpu.max", "0 100000")
    assert exc.value.errno == errno.EINVAL
    assert exc.value.path.endswith(f"{leaf.rel}/cpu.max")
    assert "EINVAL" in str(exc.value) and "cpu.max" in str(exc.value)
    assert fmt.parse_cpu_max(leaf.read("cpu.max")).quota_usec is None  # unchanged


def test_mistyped_control_file_is_enoent_not_created(leaf):
    with pytest.raises(KernelError) as exc:
        leaf.write("cpu.maks", "max")
    assert exc.value.errno == errno.ENOENT


def test_kill_ends_a_process_tree(leaf):
    p = _spawn_in(leaf, "/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait")
    deadline = time.monotonic() + 10
    while len(leaf.procs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(leaf.procs()) == 3 and leaf.populated()
    leaf.kill()
    p.wait(timeout=10)
    _wait_empty(leaf)
    assert leaf.procs() == () and not leaf.populated()
    assert p.returncode == -9


def test_moved_process_and_its_cgroup_sample(fs, leaf):
    # cgroup v2 does not move memory charges with a process: what it had is charged where it was.
    # So the child allocates (and touches) 8 MiB only after the move, and that must show here.
    child = ("import sys; sys.stdin.readline(); b = bytearray(8 << 20); "
             "print('allocated', flush=True); sys.stdin.readline()")
    p = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        leaf.write("cgroup.procs", str(p.pid))  # as the plan moves a process
        assert p.pid in leaf.procs()
        assert fs.cgroup_of_pid(p.pid).rel == leaf.rel
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "allocated"
        s = sample(leaf)  # what `aios-host snapshot` and the probe views read
        assert s.memory_current_bytes is not None and s.memory_current_bytes >= 8 << 20
        assert s.nr_procs == 1 and s.cpu_usage_usec is not None and s.cpu_some_avg10 is not None
    finally:
        p.kill()
        p.wait()


def test_doctor_reports_everything_present():
    out = subprocess.run(
        [sys.executable, "-m", "aios_host", "doctor", "--json"],
        capture_output=True, text=True, check=True,
    )
    doc = json.loads(out.stdout)
    status = {f["name"]: f["status"] for f in doc["features"]}
    assert doc["cgroup2_mount"] == "/sys/fs/cgroup"
    assert {"cpu", "cpuset", "io", "memory", "pids"} <= set(doc["controllers_available"])
    assert doc["headers"] == "matching"
    for name in ("cgroup2", "cgroup2 controllers", "psi", "btf", "bcc", "kernel headers",
                 "systemd", "dbus", "journald", "root"):
        assert status[name] == "ok", (name, doc)
