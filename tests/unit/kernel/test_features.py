import pytest

from aios_host.kernel.features import HostChecks, Status, detect_features
from aios_host.kernel.root import SysRoot
from tests.unit.fixtures import HYBRID, VM, fake_cgroup, fake_host, put

NO_MODULES = HostChecks(module_version=lambda name: None, nvml_gpu_count=lambda: None, euid=lambda: 0)
ALL_MODULES = HostChecks(module_version=lambda name: "0.26.0", nvml_gpu_count=lambda: None,
                         euid=lambda: 0)


def hybrid_host(root):
    """Like the dev/CI hosts: hybrid cgroups, no cpufreq, no systemd, headers are 6.1 on 6.18."""
    fake_host(root, HYBRID, pid1="process_api")
    put(root, "/proc/sys/kernel/osrelease", "6.18.44-test\n")
    fake_cgroup(root, "/sys/fs/cgroup/unified", HYBRID,
                {"cgroup.controllers": "hugetlb\n", "cgroup.subtree_control": "\n"})
    put(root, "/sys/kernel/btf/vmlinux", "")
    put(root, "/lib/modules/6.18.44-test/build/include/generated/utsrelease.h",
        '#define UTS_RELEASE "6.1.0-56-amd64"\n')
    return SysRoot(root)


def full_v2_host(root):
    """Like the VM: unified cgroup v2 with all controllers, systemd, matching headers, cpufreq."""
    fake_host(root, VM, pid1="systemd")
    put(root, "/proc/sys/kernel/osrelease", "6.1.0-56-amd64\n")
    fake_cgroup(root, "/sys/fs/cgroup", VM,
                {"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
                 "cgroup.subtree_control": "cpu memory pids\n"})
    put(root, "/sys/kernel/btf/vmlinux", "")
    put(root, "/sys/kernel/tracing/events/sched/sched_switch/format", "")
    put(root, "/sys/kernel/tracing/kprobe_events", "")
    put(root, "/lib/modules/6.1.0-56-amd64/build/include/generated/utsrelease.h",
        '#define UTS_RELEASE "6.1.0-56-amd64"\n')
    put(root, "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor", "schedutil\n")
    put(root, "/sys/devices/system/cpu/cpufreq/policy0/scaling_driver", "intel_pstate\n")
    put(root, "/run/dbus/system_bus_socket", "")
    put(root, "/run/systemd/journal/socket", "")
    return SysRoot(root)


def test_hybrid_host(tmp_path):
    f = detect_features(hybrid_host(tmp_path), ALL_MODULES)
    assert f.minimum_met and f.cgroup2_mount == "/sys/fs/cgroup/unified"
    assert f.get("cgroup2 controllers").status is Status.DEGRADED
    assert "missing: cpuset cpu io memory pids" in f.get("cgroup2 controllers").detail
    assert f.get("cgroup v1 hierarchies").status is Status.DEGRADED
    assert f.headers == "fallback" and f.get("kernel headers").status is Status.DEGRADED
    assert "tracepoint-format" in f.get("kernel headers").without
    for name in ("cpufreq", "rapl", "nvml", "systemd", "dbus", "journald", "tracepoints"):
        assert f.get(name).status is Status.MISSING, name
    assert f.get("bcc").status is Status.OK and f.get("btf").status is Status.OK


def test_full_v2_host(tmp_path):
    f = detect_features(full_v2_host(tmp_path), ALL_MODULES)
    assert f.cgroup2_mount == "/sys/fs/cgroup" and f.headers == "matching"
    assert f.controllers_enabled == ("cpu", "memory", "pids")
    ok = {i.name for i in f.items if i.status is Status.OK}
    assert {"cgroup2", "cgroup2 controllers", "psi", "btf", "tracepoints", "kprobes", "bcc",
            "kernel headers", "cpufreq", "systemd", "dbus", "journald", "root"} <= ok
    with pytest.raises(KeyError):
        f.get("cgroup v1 hierarchies")


def test_without_bcc_or_headers(tmp_path):
    root = hybrid_host(tmp_path)
    (tmp_path / "lib").rename(tmp_path / "lib.gone")
    f = detect_features(root, NO_MODULES)
    assert f.get("bcc").status is Status.MISSING and f.headers == "missing"
    assert f.get("journald").status is Status.MISSING


def test_no_cgroup2(tmp_path):
    put(tmp_path, "/proc/self/mountinfo", "22 1 0:5 / /proc rw - proc proc rw\n")
    put(tmp_path, "/proc/sys/kernel/osrelease", "6.1.0\n")
    f = detect_features(SysRoot(tmp_path), NO_MODULES)
    assert not f.minimum_met and f.get("cgroup2").status is Status.MISSING
