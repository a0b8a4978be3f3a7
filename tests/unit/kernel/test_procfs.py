import pytest

from aios_host.errors import ParseError
from aios_host.kernel import procfs
from tests.unit.fixtures import HYBRID, VM, load


def test_mountinfo_hybrid_host_has_cgroup2_under_unified():
    mounts = procfs.parse_mountinfo(load(HYBRID, "proc/mountinfo"))
    assert [m.mount_point for m in mounts if m.fs_type == "cgroup2"] == ["/sys/fs/cgroup/unified"]
    v1 = {o for m in mounts if m.fs_type == "cgroup" for o in m.super_options}
    assert {"cpu", "memory", "cpuset"} <= v1


def test_mountinfo_vm_has_cgroup2_at_sys_fs_cgroup():
    mounts = procfs.parse_mountinfo(load(VM, "proc/mountinfo"))
    assert [m.mount_point for m in mounts if m.fs_type == "cgroup2"] == ["/sys/fs/cgroup"]


def test_mountinfo_unescapes_spaces():
    line = "40 23 0:37 / /mnt/with\\040space rw - tmpfs tmpfs rw\n"
    assert procfs.parse_mountinfo(line)[0].mount_point == "/mnt/with space"


def test_mountinfo_garbage_is_a_parse_error():
    with pytest.raises(ParseError):
        procfs.parse_mountinfo("not a mountinfo line\n")


def test_meminfo_is_in_bytes():
    info = procfs.parse_meminfo(load(HYBRID, "proc/meminfo"))
    assert info["MemTotal"] > 1 << 30 and info["MemTotal"] % 1024 == 0
    assert procfs.parse_meminfo("HugePages_Total:       0\n") == {"HugePages_Total": 0}


def test_proc_cgroup_v2_entry():
    assert procfs.parse_proc_cgroup("0::/system.slice/x.service\n") == {"": "/system.slice/x.service"}
    hybrid = procfs.parse_proc_cgroup(load(HYBRID, "proc/self_cgroup"))
    assert "" in hybrid and "cpu" in hybrid
